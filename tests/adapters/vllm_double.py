"""A vLLM conformance test double: an OpenAI-compatible server that refuses, streams and fails the way vLLM's
DiffusionGemma serving does, for testing :class:`~diffgemma_adapters.remote.RemoteEngine` without a GPU.

Written from vLLM's source (read through the code search, vllm-project/vllm; file at the commit read):

Refusals (HTTP 400 before any generation):

- ``vllm/sampling_params.py`` (00388f65), ``SamplingParams._validate_diffusion``: for a diffusion model,
  ``temperature != 1.0``, ``min_p > 0``, ``seed is not None``, ``min_tokens > 0``, ``logit_bias``,
  ``bad_words`` or ``allowed_token_ids`` raise ``VLLMValidationError`` ("The temperature, min_p, seed,
  min_tokens, logit_bias, bad_words, and allowed_token_ids sampling parameters are not yet supported with
  diffusion models."). Added by vLLM PR #45418; PR #47980 shows every request of an eval harness that sent
  ``seed=42`` / ``temperature=0`` answered 400. ``__post_init__`` first maps ``seed == -1`` to ``None``.
  -> :meth:`VLLMDouble.refusal`.
- same file, ``SamplingParams._validate_structured_outputs``: structured outputs (``response_format``
  ``json_schema`` / ``json_object``, or ``structured_outputs``) are refused for diffusion models with a 400
  (vLLM PR #45468, fixing issue #45436's HTTP 500). -> :meth:`VLLMDouble.refusal`.
- ``vllm/entrypoints/serve/engine/protocol.py``: ``ErrorResponse(error=ErrorInfo(message, type, param,
  code: int))``, ``code`` being the HTTP status; validation errors have ``type`` ``"BadRequestError"``.
  Unknown request fields are ignored (``OpenAIBaseModel`` logs them), so sampler fields vLLM does not know
  (``t_min``, ``max_denoising_steps`` ...) are accepted and have no effect. -> :func:`error_body`.

Streaming (``vllm/entrypoints/openai/chat_completion/serving.py`` (006c49d4),
``chat_completion_stream_generator``):

- the first chat chunk carries ``delta = {"role": "assistant", "content": ""}``;
- one ``RequestOutput`` per engine step; a diffusion step commits a whole canvas, so one chunk per canvas,
  with ``delta.content`` the text released since the last chunk — possibly ``""`` (a chunk is still sent
  when the output has new token ids);
- the finishing chunk has ``finish_reason = output.finish_reason or "stop"`` and ``stop_reason`` (the stop
  string, a stop token id, or ``None`` for EOS); ``"abort"`` passes through unchanged (vLLM issue #57082);
- with ``stream_options.continuous_usage_stats`` every chunk carries ``usage`` with the running
  ``completion_tokens``; with ``include_usage`` a last chunk with ``choices: []`` carries the totals;
- then ``data: [DONE]`` — also after an error event.
- ``vllm/entrypoints/generate/base/serving.py`` (015d1c9b): ``_raise_if_error`` turns an output with
  ``finish_reason == "error"`` into ``GenerationError("Internal server error")``, streamed by
  ``_convert_generation_error_to_streaming_response`` as ``{"error": {..., "type": "InternalServerError",
  "code": 500}}``; any other exception in the generator is streamed by ``create_streaming_error_response``
  with its default ``type`` ``"BadRequestError"``, ``code`` 400. (Older releases and the token-serving path
  sent ``finish_reason: "error"`` itself; :attr:`Fault.kind` ``"error_finish"`` plays that.)

Stop strings (``SamplingParams.__post_init__`` and ``vllm/v1/engine/detokenizer.py``,
``IncrementalDetokenizer.get_next_output_text``): with ``stop`` set (and not
``include_stop_str_in_output``) the last ``max(len(s) for s in stop) - 1`` characters of the output are
held back from every delta until the response finishes, so a canvas' text is split across chunks; a stop
string found in the output truncates it there and finishes with ``finish_reason "stop"`` and
``stop_reason`` the string.

``/v1/models`` lists the model with ``owned_by: "vllm"`` and ``max_model_len`` (``ModelCard``).

The "model" is a deterministic stand-in: the ``i``-th token of a response to a prompt is a word picked by
hashing ``(prompt, i)``, with a space before it; a chat request's prompt is its messages in the plain Gemma
turn format. ``split`` additionally cuts each canvas' chunk into several (as a re-chunking proxy would).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")

DIFFUSION_REFUSAL = ("The temperature, min_p, seed, min_tokens, logit_bias, bad_words, and allowed_token_ids "
                     "sampling parameters are not yet supported with diffusion models.")
STRUCTURED_REFUSAL = ("Structured outputs are not yet supported for diffusion language models. Remove the "
                      "structured output constraint (e.g. `response_format`, `structured_outputs`) from the request.")


@dataclass
class Fault:
    """A failure injected before canvas ``at_canvas`` is sent: ``"abort"`` (finish_reason "abort"),
    ``"error_finish"`` (finish_reason "error"), ``"error_event"`` (an InternalServerError event, code 500)
    or ``"bad_request_event"`` (a BadRequestError event, code 400)."""

    kind: str
    at_canvas: int


@dataclass
class Seen:
    """One request the double received: its endpoint, body and the content of every chunk it sent."""

    endpoint: str
    body: dict[str, Any]
    chunks: list[str]


def error_body(message: str, kind: str = "BadRequestError", code: int = 400) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def chat_prompt(messages: list[Mapping[str, Any]]) -> str:
    turns = []
    for message in messages:
        role = "model" if message["role"] == "assistant" else message["role"]
        turns.append(f"<|turn>{role}\n{str(message['content']).strip()}<turn|>\n")
    return "".join(turns) + "<|turn>model\n"


class VLLMDouble:
    """The double's state and its FastAPI ``app``."""

    def __init__(self, *, model: str = "google/diffusiongemma-26B-A4B-it", canvas_length: int = 8,
                 max_model_len: int = 2048) -> None:
        self.model = model
        self.canvas_length = canvas_length
        self.max_model_len = max_model_len
        self.app = self._build()
        self.reset()

    def reset(self) -> None:
        self.requests: list[Seen] = []
        self.model_listings = 0
        self.fault: Fault | None = None
        self.split = 1
        self.eos_after: int | None = None  # tokens after which the model writes EOS
        self.lists_models = True  # False: /v1/models answers 404, as some OpenAI-compatible proxies do

    # -- the "model" ---------------------------------------------------------------------------------

    def tokens(self, prompt: str, count: int) -> list[str]:
        """The first ``count`` tokens the double answers ``prompt`` with."""
        out = []
        for index in range(count):
            digest = hashlib.sha256(f"{prompt}|{index}".encode()).digest()
            out.append(" " + WORDS[digest[0] % len(WORDS)])
        return out

    def response_length(self, prompt: str, max_tokens: int | None) -> int:
        limit = max_tokens if max_tokens is not None else self.max_model_len - len(prompt.split())
        return min(limit, self.eos_after) if self.eos_after is not None else limit

    # -- refusals --------------------------------------------------------------------------------------

    def refusal(self, body: Mapping[str, Any]) -> JSONResponse | None:
        """vLLM's 400 for a body a diffusion model cannot take, or ``None``."""
        seed = body.get("seed")
        temperature = body.get("temperature")
        if ((temperature is not None and temperature != 1.0) or (body.get("min_p") or 0) > 1e-5
                or (seed is not None and seed != -1) or (body.get("min_tokens") or 0) > 0
                or body.get("logit_bias") or body.get("bad_words") or body.get("allowed_token_ids")):
            return JSONResponse(error_body(DIFFUSION_REFUSAL), status_code=400)
        response_format = body.get("response_format") or {}
        if response_format.get("type") in ("json_schema", "json_object") or body.get("structured_outputs"):
            return JSONResponse(error_body(STRUCTURED_REFUSAL), status_code=400)
        if body.get("model") not in (None, self.model):
            return JSONResponse(error_body(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404),
                                status_code=404)
        return None

    # -- the app ---------------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> Any:
            self.model_listings += 1
            if not self.lists_models:
                return JSONResponse(error_body("Not Found", "NotFoundError", 404), status_code=404)
            return {"object": "list", "data": [{"id": self.model, "object": "model", "created": int(time.time()),
                                                "owned_by": "vllm", "root": self.model, "parent": None,
                                                "max_model_len": self.max_model_len, "permission": []}]}

        @app.get("/version")
        async def version() -> dict[str, str]:
            return {"version": "0.24.0"}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            return self._respond("chat", body, chat_prompt(body.get("messages") or []))

        @app.post("/v1/completions")
        async def completions(request: Request) -> Any:
            body = await request.json()
            return self._respond("completions", body, str(body.get("prompt") or ""))

        return app

    def _respond(self, endpoint: str, body: dict[str, Any], prompt: str) -> Any:
        seen = Seen(endpoint, body, [])
        self.requests.append(seen)
        refused = self.refusal(body)
        if refused is not None:
            return refused
        if not body.get("stream"):
            return JSONResponse(error_body("the double only streams"), status_code=400)
        return StreamingResponse(self._stream(endpoint, body, prompt, seen), media_type="text/event-stream")

    async def _stream(self, endpoint: str, body: dict[str, Any], prompt: str, seen: Seen) -> AsyncIterator[str]:
        chat = endpoint == "chat"
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        continuous = include_usage and bool(options.get("continuous_usage_stats"))
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        hold_back = max((len(s) for s in stops), default=1) - 1
        prompt_tokens = len(prompt.split())
        length = self.response_length(prompt, body.get("max_tokens"))
        tokens = self.tokens(prompt, length)
        canvases = [tokens[i:i + self.canvas_length] for i in range(0, len(tokens), self.canvas_length)]
        eos = self.eos_after is not None and length == self.eos_after

        def chunk(content: str | None, finish: str | None, stop_reason: Any, count: int, role: bool = False) -> str:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": content}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": content, "logprobs": None, "finish_reason": finish}
            if finish is not None:
                choice["stop_reason"] = stop_reason
            data: dict[str, Any] = {"id": "double-1", "object": "chat.completion.chunk" if chat else "text_completion",
                                    "created": 0, "model": self.model, "choices": [choice]}
            if continuous:
                data["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": count,
                                 "total_tokens": prompt_tokens + count}
            if not role:
                seen.chunks.append(content or "")
            return f"data: {json.dumps(data)}\n\n"

        if chat:
            yield chunk("", None, None, 0, role=True)
        output, released, count = "", 0, 0
        for index, canvas in enumerate(canvases):
            if self.fault is not None and self.fault.at_canvas == index:
                kind = self.fault.kind
                if kind in ("abort", "error_finish"):
                    yield chunk("", "abort" if kind == "abort" else "error", None, count)
                else:
                    event = (error_body("Internal server error", "InternalServerError", 500) if kind == "error_event"
                             else error_body("bad input found mid-stream"))
                    yield f"data: {json.dumps(event)}\n\n"
                    yield "data: [DONE]\n\n"
                    return
                break
            output += "".join(canvas)
            finished, finish, stop_reason = index == len(canvases) - 1, None, None
            for stop in stops:
                position = output.find(stop)
                if position != -1:
                    output, finished, finish, stop_reason = output[:position], True, "stop", stop
                    break
            if finished and finish is None:
                finish = "stop" if eos else "length"
            end = len(output) if finished else max(len(output) - hold_back, released)
            delta, released = output[released:end], end
            start_count = count
            count += len(canvas)
            pieces = max(1, self.split)
            cut = [len(delta) * j // pieces for j in range(pieces + 1)]
            for j in range(pieces):
                last = j == pieces - 1
                running = count if last else start_count + (len(canvas) * (j + 1)) // pieces
                yield chunk(delta[cut[j]:cut[j + 1]], finish if last else None, stop_reason, running)
            if finished:
                break
        if include_usage:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count, "total_tokens": prompt_tokens + count}
            yield f"data: {json.dumps({'id': 'double-1', 'object': 'chunk', 'created': 0, 'model': self.model, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
