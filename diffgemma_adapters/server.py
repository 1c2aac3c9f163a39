"""An OpenAI-compatible HTTP server over the shared engine (``diffgemma serve``).

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, ``GET /health``,
``GET /metrics`` (Prometheus text). Streaming uses server-sent events with one delta per committed block.
DiffusionGemma's own knobs (``max_denoising_steps``, ``entropy_bound``, ``t_min``, ``t_max``,
``stability_threshold``, ``confidence_threshold``, ``adaptive_stopping``), ``seed``, ``validators``,
``validator_options`` and ``on_validation_failure`` are accepted as extra request fields; the validation
summary comes back in a ``validation`` field. Errors are OpenAI-shaped. A client that disconnects cancels
its generation. The server binds to loopback by default; ``api_key`` enables bearer authentication.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from diffgemma_engine import (
    BlockEvent,
    BlockValidationError,
    DiffGemmaError,
    EngineDeadError,
    EngineOverloadedError,
    FinalEvent,
    GenerationResult,
    InvalidRequestError,
    RequestCancelledError,
    RequestTimeoutError,
)

from ._params import GenerationSettings, sampling_params

DEFAULT_MAX_REQUEST_BYTES = 1_000_000
EXTRA_FIELDS = ("max_denoising_steps", "entropy_bound", "t_min", "t_max", "stability_threshold",
                "confidence_threshold", "adaptive_stopping", "seed", "validators", "validator_options",
                "on_validation_failure", "temperature", "timeout")
IGNORED_FIELDS = frozenset({"model", "messages", "prompt", "stream", "stream_options", "stop", "max_tokens",
                            "max_completion_tokens", "n", "response_format", "user", "top_p",
                            "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "logit_bias",
                            "parallel_tool_calls", "store", "metadata", "service_tier"})


class ApiError(Exception):
    """An error to send as an OpenAI-shaped JSON body."""

    def __init__(self, status: int, message: str, kind: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


@dataclass
class Metrics:
    """Counters and gauges exported at ``/metrics``."""

    requests: Counter = field(default_factory=Counter)  # (endpoint, status) -> count
    prompt_tokens: int = 0
    completion_tokens: int = 0
    denoising_steps: int = 0
    repairs: int = 0
    validation_failures: int = 0
    cancelled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, result: GenerationResult) -> None:
        with self.lock:
            self.prompt_tokens += result.usage.prompt_tokens
            self.completion_tokens += result.usage.completion_tokens
            self.denoising_steps += result.stats.denoising_steps
            self.repairs += result.stats.repairs
            self.validation_failures += int(not result.validation.passed)

    def count(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.requests[(endpoint, status)] += 1

    def render(self, engine: Any) -> str:
        scheduler = engine.core.scheduler
        lines = [
            "# HELP diffgemma_requests_total HTTP requests by endpoint and status.",
            "# TYPE diffgemma_requests_total counter",
        ]
        with self.lock:
            for (endpoint, status), value in sorted(self.requests.items()):
                lines.append(f'diffgemma_requests_total{{endpoint="{endpoint}",status="{status}"}} {value}')
            scalars = [
                ("prompt_tokens_total", "counter", "Prompt tokens of finished requests.", self.prompt_tokens),
                ("completion_tokens_total", "counter", "Generated tokens of finished requests.", self.completion_tokens),
                ("denoising_steps_total", "counter", "Denoising steps of finished requests.", self.denoising_steps),
                ("repairs_total", "counter", "Block repairs and regenerations.", self.repairs),
                ("validation_failures_total", "counter", "Responses with a block that failed validation.",
                 self.validation_failures),
                ("cancelled_total", "counter", "Generations cancelled by a client disconnect.", self.cancelled),
                ("queue_depth", "gauge", "Requests waiting for a running slot.", len(scheduler.waiting)),
                ("running", "gauge", "Requests being denoised.", len(scheduler.running)),
            ]
        for name, kind, help_text, value in scalars:
            lines += [f"# HELP diffgemma_{name} {help_text}", f"# TYPE diffgemma_{name} {kind}", f"diffgemma_{name} {value}"]
        return "\n".join(lines) + "\n"


def create_app(engine: Any, *, api_key: str | None = None,
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> FastAPI:
    """The FastAPI application serving ``engine`` (a :class:`diffgemma_engine.Engine`)."""
    app = FastAPI(title="diffgemma", version="1")
    settings = GenerationSettings(engine=engine, on_validation_failure="return_flagged")
    metrics = Metrics()
    app.state.metrics = metrics

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        try:
            if api_key is not None and path.startswith("/v1/"):
                header = request.headers.get("authorization", "")
                given = header[7:] if header.lower().startswith("bearer ") else ""
                if not hmac.compare_digest(given.encode(), api_key.encode()):
                    raise ApiError(401, "missing or invalid API key", "authentication_error", code="invalid_api_key")
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_request_bytes:
                raise ApiError(413, f"request body over {max_request_bytes} bytes", "invalid_request_error")
        except ApiError as error:
            metrics.count(path, error.status)
            return error.response()
        response = await call_next(request)
        if not isinstance(response, StreamingResponse) or path in ("/health", "/metrics", "/v1/models"):
            metrics.count(path, response.status_code)
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, error: RequestValidationError):
        return ApiError(400, f"malformed request: {error.errors()[:3]}", "invalid_request_error").response()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return error.response()

    @app.get("/health")
    async def health():
        alive = engine.is_alive
        return JSONResponse({"status": "ok" if alive else "dead", "model": engine.model_name},
                            status_code=200 if alive else 503)

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(engine), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.model_name, "object": "model", "created": 0,
                                            "owned_by": "diffgemma"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _json_body(request, max_request_bytes)
        messages = _chat_messages(body.get("messages"))
        return await _complete(request, body, {"messages": messages}, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _json_body(request, max_request_bytes)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ApiError(400, "prompt must be a string", "invalid_request_error", param="prompt")
        return await _complete(request, body, {"prompt": prompt}, chat=False)

    async def _complete(request: Request, body: Mapping[str, Any], inputs: dict, chat: bool):
        endpoint = request.url.path
        try:
            params = _params(settings, body)
            handle = engine.submit(params=params, **inputs)
        except Exception as error:
            raise _api_error(error) from error
        created, completion_id = int(time.time()), f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _sse(handle, request, metrics, endpoint, chat, completion_id, created, engine.model_name,
                          include_usage)
            return StreamingResponse(events, media_type="text/event-stream")
        result = await _await_or_cancel(handle, request, metrics)
        if result is None:
            metrics.count(endpoint, 499)
            return JSONResponse({}, status_code=499)
        metrics.record(result)
        return _response(result, chat, completion_id, created, engine.model_name)

    return app


async def _json_body(request: Request, limit: int) -> dict:
    raw = await request.body()
    if len(raw) > limit:
        raise ApiError(413, f"request body over {limit} bytes", "invalid_request_error")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"request body is not valid JSON: {error}", "invalid_request_error") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", "invalid_request_error")
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported", "invalid_request_error", param="n")
    unknown = sorted(set(body) - IGNORED_FIELDS - set(EXTRA_FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}", "invalid_request_error", param=unknown[0])
    return body


def _chat_messages(messages: object) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", "invalid_request_error", param="messages")
    converted = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiError(400, f"messages[{index}] must be an object", "invalid_request_error", param="messages")
        role = {"developer": "system", "function": "tool"}.get(message.get("role"), message.get("role"))
        content = message.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict)
                              and part.get("type") == "text")
        if content is None:
            content = ""
        converted.append({"role": role, "content": content})
    return converted


def _params(settings: GenerationSettings, body: Mapping[str, Any]):
    options = {name: body[name] for name in EXTRA_FIELDS if name in body}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop
    response_format = body.get("response_format") or {}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    schema = None
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
    elif kind not in (None, "text", "json_object"):
        raise InvalidRequestError("response_format", f"unsupported type {kind!r}")
    return sampling_params(settings, stop, json_schema=schema, json_output=kind in ("json_object", "json_schema"),
                           **options)


def _api_error(error: BaseException) -> ApiError:
    if isinstance(error, ApiError):
        return error
    if isinstance(error, InvalidRequestError):
        return ApiError(400, str(error), "invalid_request_error", param=error.field)
    if isinstance(error, EngineOverloadedError):
        return ApiError(429, str(error), "rate_limit_error", code="engine_overloaded")
    if isinstance(error, EngineDeadError):
        return ApiError(503, str(error), "server_error", code="engine_dead")
    if isinstance(error, BlockValidationError):
        return ApiError(422, str(error), "validation_error", code=type(error).__name__)
    if isinstance(error, RequestTimeoutError):
        return ApiError(408, str(error), "timeout_error", code="request_timeout")
    if isinstance(error, DiffGemmaError) and isinstance(error, ValueError):
        return ApiError(400, str(error), "invalid_request_error")
    return ApiError(500, f"{type(error).__name__}: {error}", "server_error")


async def _await_or_cancel(handle, request: Request, metrics: Metrics) -> GenerationResult | None:
    """The result, or ``None`` if the client went away first (the generation is then cancelled)."""
    task = asyncio.ensure_future(handle.aresult())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.1)
            if done:
                try:
                    return task.result()
                except Exception as error:
                    raise _api_error(error) from error
            if await request.is_disconnected():
                handle.cancel()
                with metrics.lock:
                    metrics.cancelled += 1
                return None
    finally:
        if not task.done():
            task.cancel()


async def _sse(handle, request: Request, metrics: Metrics, endpoint: str, chat: bool, completion_id: str,
               created: int, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    """Server-sent events: one chunk per committed block; cancellation when the client goes away."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta_text: str | None, finish: str | None, first: bool = False, extra: dict | None = None) -> bytes:
        if chat:
            delta = {"role": "assistant", "content": ""} if first else ({"content": delta_text} if delta_text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta_text or "", "finish_reason": finish}
        payload = {"id": completion_id, "object": kind, "created": created, "model": model, "choices": [choice]}
        payload.update(extra or {})
        return f"data: {json.dumps(payload)}\n\n".encode()

    status = 200
    try:
        if chat:
            yield chunk(None, None, first=True)
        async for event in handle:
            if isinstance(event, BlockEvent) and event.text:
                yield chunk(event.text, None)
            elif isinstance(event, FinalEvent):
                result = event.result
                metrics.record(result)
                yield chunk(None, _finish_reason(result), extra={"validation": _validation(result)})
                if include_usage:
                    usage = {"id": completion_id, "object": kind, "created": created, "model": model,
                             "choices": [], "usage": _usage(result)}
                    yield f"data: {json.dumps(usage)}\n\n".encode()
        yield b"data: [DONE]\n\n"
    except (RequestCancelledError, asyncio.CancelledError):
        status = 499
        raise
    except Exception as error:
        api = _api_error(error)
        status = api.status
        yield f"data: {json.dumps({'error': {'message': api.message, 'type': api.kind, 'code': api.code}})}\n\n".encode()
    finally:
        if not handle.done:
            handle.cancel()
            with metrics.lock:
                metrics.cancelled += 1
            status = 499
        metrics.count(endpoint, status)


def _finish_reason(result: GenerationResult) -> str:
    return "content_filter" if result.finish_reason == "validation_failed" else result.finish_reason


def _usage(result: GenerationResult) -> dict[str, int]:
    return {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens,
            "total_tokens": result.usage.total_tokens}


def _validation(result: GenerationResult) -> dict[str, Any]:
    summary = result.validation
    return {"passed": summary.passed, "repairs": summary.repairs, "extra_steps": summary.extra_steps,
            "flags": list(summary.flags), "blocks": len(summary.blocks)}


def _response(result: GenerationResult, chat: bool, completion_id: str, created: int, model: str) -> dict:
    finish = _finish_reason(result)
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": finish,
                  "logprobs": None}
    else:
        choice = {"index": 0, "text": result.text, "finish_reason": finish, "logprobs": None}
    return {"id": completion_id, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": model, "choices": [choice], "usage": _usage(result), "validation": _validation(result),
            "system_fingerprint": f"seed-{result.seed}"}


def serve(model: str | None = None, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, **engine_settings: Any) -> None:
    """Run the server in the foreground (``diffgemma serve``); ``engine_settings`` go to ``get_engine``
    (``device``, ``quantization``, ``offload``, ``max_running``, ...)."""
    import uvicorn

    from diffgemma_engine import get_engine

    engine = get_engine(model, **engine_settings)
    app = create_app(engine, api_key=api_key, max_request_bytes=max_request_bytes)
    uvicorn.run(app, host=host, port=port, log_level="info")
