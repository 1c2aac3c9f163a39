"""The FastAPI application of ``diffgemma serve``: routes over the shared engine.

Every request is parsed strictly (:mod:`.requests`), checked against the operator's limits (:mod:`.prepare`), prepared
(chat template, tools, response format) and tokenized in a worker thread — never on the event loop — and
submitted to the engine. :mod:`.guard` sits in front of every route (host, origin, key, content type,
body size, disconnects, metrics).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from diffgemma_engine import BlockEvent, EngineDeadError, FinalEvent, RequestStream

from ..request import PreparedRequest
from ..settings import GenerationSettings
from . import openai_wire as wire
from . import requests
from .guard import AccessPolicy, Guard, allowed_host_set
from .metrics import ServerMetrics
from .prepare import DEFAULT_MAX_DENOISING_STEPS, ServerLimits, call_from_request, renames, submit

DEFAULT_MAX_REQUEST_BYTES = 1_000_000
DEFAULT_PREPARE_THREADS = 4
ENGINE_WATCH_INTERVAL = 0.5

logger = logging.getLogger("diffgemma.server")


@dataclass
class ServerState:
    """What the running app keeps between requests: in-flight generations and the lifecycle."""

    engine: Any
    limits: ServerLimits
    model_names: tuple[str, ...]
    prepare_threads: int = DEFAULT_PREPARE_THREADS
    on_engine_dead: Callable[[], None] | None = None
    in_flight: set[RequestStream] = field(default_factory=set)
    shutting_down: bool = False
    engine_dead: bool = False
    _executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The pool that renders and tokenizes prompts (made on first use, released at shutdown)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(self.prepare_threads,
                                                                   thread_name_prefix="diffgemma-prepare")
        return self._executor

    def start(self) -> None:
        self.shutting_down = False

    def stop(self) -> None:
        self.begin_shutdown()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def begin_shutdown(self) -> None:
        """Refuse new requests and cancel every in-flight generation (each ends with a 503 / error event)."""
        self.shutting_down = True
        for handle in list(self.in_flight):
            handle.cancel()

    def check_engine(self) -> None:
        if self.engine_dead or self.shutting_down or self.engine.is_alive:
            return
        self.engine_dead = True
        logger.critical("the engine is dead; the server stops so that a supervisor can restart it")
        if self.on_engine_dead is not None:
            self.on_engine_dead()


def create_app(
    engine: Any,
    *,
    api_key: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_denoising_steps: int | None = DEFAULT_MAX_DENOISING_STEPS,
    max_new_tokens: int | None = None,
    allowed_hosts: Iterable[str] | None = None,
    protect_observability: bool = False,
    served_model_names: Sequence[str] = (),
    body_timeout: float = 30.0,
    prepare_threads: int = DEFAULT_PREPARE_THREADS,
    on_engine_dead: Callable[[], None] | None = None,
) -> FastAPI:
    """The FastAPI application serving ``engine`` (a :class:`diffgemma_engine.Engine`).

    ``api_key``: bearer key of ``/v1/*`` (and of ``/health`` and ``/metrics`` with
    ``protect_observability``). ``allowed_hosts``: names the ``Host``/``Origin`` headers may carry
    (default: loopback names; ``"*"`` for any). ``max_denoising_steps`` / ``max_new_tokens``: per-request
    caps (``None``: none). ``served_model_names``: the model ids ``/v1/models`` lists and requests may
    name (default: the engine's model name). ``on_engine_dead`` is called once when the engine dies
    (``serve`` stops the server with a non-zero exit status).
    """
    limits = ServerLimits(max_denoising_steps=max_denoising_steps, max_new_tokens=max_new_tokens)
    names = tuple(dict.fromkeys(served_model_names or (engine.model_name,)))
    state = ServerState(engine, limits, names, prepare_threads=prepare_threads, on_engine_dead=on_engine_dead)
    settings = GenerationSettings(engine=engine, on_validation_failure="return_flagged")
    metrics = ServerMetrics(engine)
    policy = AccessPolicy(api_key=api_key, allowed_hosts=allowed_host_set(allowed_hosts),
                          protect_observability=protect_observability, max_request_bytes=max_request_bytes,
                          body_timeout=body_timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start()
        watchdog = asyncio.ensure_future(_watch_engine(state))
        try:
            yield
        finally:
            watchdog.cancel()
            state.stop()

    app = FastAPI(title="diffgemma", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.server = state
    app.state.metrics = metrics
    app.add_middleware(Guard, policy=policy, metrics=metrics)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            api = wire.ApiError(404, f"no route {request.url.path!r}", "invalid_request_error", code="not_found")
        elif error.status_code == 405:
            api = wire.ApiError(405, f"method {request.method} is not allowed here", "invalid_request_error",
                                code="method_not_allowed")
        else:
            api = wire.ApiError(error.status_code, str(error.detail), "invalid_request_error")
        return _error_response(api)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error_response(wire.invalid("malformed request"))

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        state.check_engine()
        status = "shutting_down" if state.shutting_down else ("ok" if engine.is_alive else "dead")
        body: dict[str, Any] = {"status": status}
        if policy.api_key is None or policy.key_matches(request.headers.get("authorization", "")):
            body["model"] = names[0]
        return JSONResponse(body, status_code=200 if status == "ok" else 503,
                            headers=None if status == "ok" else {"retry-after": "5"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        payload, media_type = metrics.render()
        return Response(payload, media_type=media_type)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        context = engine.context_length
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "diffgemma",
                                            "max_model_len": context} for name in names]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _complete(request, chat=False)

    async def _complete(request: Request, chat: bool) -> Response:
        rename: dict[str, str] = {}
        try:
            _check_serving(state)
            raw = await request.body()
            parsed = requests.parse_request(requests.ChatCompletionRequest if chat else requests.CompletionRequest, raw)
            requests.refuse_unsupported(parsed)
            if parsed.model is not None and parsed.model not in names:
                raise wire.ApiError(404, f"the model {parsed.model!r} does not exist; this server serves "
                                         f"{', '.join(map(repr, names))}", "invalid_request_error",
                                    param="model", code="model_not_found")
            rename = renames(parsed, chat)
            call = call_from_request(parsed, chat, state.limits, metrics, engine)
            prepared, handle = await _in_thread(state, lambda: submit(settings, call))
        except Exception as error:
            api = wire.api_error(error, rename)
            if isinstance(error, EngineDeadError):
                state.check_engine()
            if api.status >= 500 and not isinstance(error, (wire.ApiError, EngineDeadError)):
                logger.error("error preparing a request", exc_info=error)
            return _error_response(api)
        state.in_flight.add(handle)
        if state.shutting_down:  # submitted while the shutdown began: cancelled like the others
            handle.cancel()
        reply = wire.Reply(id=f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", created=int(time.time()),
                           model=parsed.model or names[0], chat=chat)
        if parsed.stream:
            include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
            events = _sse(state, metrics, prepared, handle, reply, include_usage, rename)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        return await _answer(state, metrics, prepared, handle, reply, rename)

    return app


async def _in_thread(state: ServerState, work: Callable[[], tuple[PreparedRequest, RequestStream]]):
    """Run ``work`` in the preparation pool; a request submitted after its client left is cancelled."""
    future = asyncio.get_running_loop().run_in_executor(state.executor, work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(_cancel_submitted)
        raise


def _cancel_submitted(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result()[1].cancel()


def _check_serving(state: ServerState) -> None:
    if state.shutting_down:
        raise wire.ApiError(503, "the server is shutting down", "server_error", code="server_shutting_down",
                            retry_after=5)
    state.check_engine()
    if state.engine_dead:
        raise wire.ApiError(503, "the engine is dead; the server is restarting", "server_error",
                            code="engine_dead", retry_after=5)


async def _answer(state: ServerState, metrics: ServerMetrics, prepared: PreparedRequest, handle: RequestStream,
                  reply: wire.Reply, rename: dict[str, str]) -> Response:
    try:
        result = await handle.aresult()
    except Exception as error:
        if isinstance(error, EngineDeadError):
            state.check_engine()
        return _error_response(wire.api_error(error, rename))
    finally:  # a task cancelled because the client left ends here with the generation still running
        _release(state, metrics, handle)
    metrics.record(result)
    assembler = prepared.tool_assembler()
    content, calls = (result.text, []) if assembler is None else assembler.finish(result.token_ids)
    calls = calls if prepared.parallel_tool_calls else calls[:1]
    return JSONResponse(wire.response_body(reply, result, content, calls))


async def _sse(state: ServerState, metrics: ServerMetrics, prepared: PreparedRequest, handle: RequestStream,
               reply: wire.Reply, include_usage: bool, rename: dict[str, str]) -> AsyncIterator[bytes]:
    """Server-sent events: one chunk per committed block; an error becomes an error event; always ``[DONE]``."""
    assembler = prepared.tool_assembler()
    try:
        if reply.chat:
            yield wire.sse(wire.chunk(reply, role=True))
        async for event in handle:
            if isinstance(event, BlockEvent):
                text = event.text if assembler is None else assembler.add_block(event.token_ids)
                if text:
                    yield wire.sse(wire.chunk(reply, text=text))
            elif isinstance(event, FinalEvent):
                result = event.result
                metrics.record(result)
                calls: list[Any] = []
                if assembler is not None:
                    text, calls = assembler.finish(result.token_ids)
                    calls = calls if prepared.parallel_tool_calls else calls[:1]
                    if text:
                        yield wire.sse(wire.chunk(reply, text=text))
                    if calls:
                        yield wire.sse(wire.chunk(reply, tool_calls=calls))
                yield wire.sse(wire.chunk(reply, finish=wire.finish_reason(result, bool(calls)),
                                          extra={"validation": wire.validation(result)}))
                if include_usage:
                    yield wire.sse(wire.usage_chunk(reply, result))
    except Exception as error:
        if isinstance(error, EngineDeadError):
            state.check_engine()
        api = wire.api_error(error, rename)
        if api.status >= 500 and api.code == "internal_error":
            logger.error("error while streaming", exc_info=error)
        yield wire.sse({"error": {**api.body()["error"], "status": api.status}})
    finally:  # closed early (the client left): the generation is cancelled
        _release(state, metrics, handle)
    yield wire.sse("[DONE]")


def _release(state: ServerState, metrics: ServerMetrics, handle: RequestStream) -> None:
    if not handle.done:
        metrics.cancelled.inc()
        handle.cancel()
    state.in_flight.discard(handle)


def _error_response(error: wire.ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


async def _watch_engine(state: ServerState) -> None:
    while True:
        await asyncio.sleep(ENGINE_WATCH_INTERVAL)
        state.check_engine()
