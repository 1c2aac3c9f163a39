"""The OpenAI wire format of ``diffgemma serve``: errors and response bodies.

Every error names the field in the client's vocabulary (``max_tokens``, not the engine's ``max_new_tokens``).
The request side (strict request models, their checks and conversion to turns) is :mod:`.requests`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from diffgemma_engine import (
    BlockValidationError,
    DiffGemmaError,
    EngineDeadError,
    EngineOverloadedError,
    GenerationResult,
    InvalidRequestError,
    RequestCancelledError,
    RequestTimeoutError,
)
from diffgemma_engine.api.errors import GenerationTooLongError, PromptTooLongError

from ..request import result_view

OPENAI_NAMED_ENGINE_FIELDS = {
    "max_new_tokens": "max_tokens",
    "stop": "stop",
    "seed": "seed",
    "on_exhausted": "on_validation_failure",
}
"""SamplingParams fields that travel under an OpenAI (or adapter) name."""


# -- errors ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error sent as an OpenAI-shaped JSON body: ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, kind: str, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"retry-after": str(self.retry_after)}


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param=param, code=code)


def api_error(error: BaseException, rename: Mapping[str, str] | None = None) -> ApiError:
    """The HTTP error for an exception raised while serving a request.

    ``rename`` maps engine field names to the names this request used (``max_new_tokens`` ->
    ``max_tokens`` or ``max_completion_tokens``, ``prompt`` -> ``messages`` for a chat request).
    """
    if isinstance(error, ApiError):
        return error
    if isinstance(error, InvalidRequestError):
        field = client_field(error.field, rename)
        message = str(error)
        if message.startswith(f"{error.field}:"):
            message = f"{field}:{message[len(error.field) + 1:]}"
        code = "context_length_exceeded" if isinstance(error, (PromptTooLongError, GenerationTooLongError)) else None
        return invalid(message, param=field, code=code)
    if isinstance(error, EngineOverloadedError):
        return ApiError(429, str(error), "rate_limit_error", code="engine_overloaded", retry_after=1)
    if isinstance(error, EngineDeadError):
        return ApiError(503, str(error), "server_error", code="engine_dead", retry_after=5)
    if isinstance(error, BlockValidationError):
        return ApiError(422, str(error), "validation_error", code=type(error).__name__)
    if isinstance(error, RequestTimeoutError):
        return ApiError(408, str(error), "timeout_error", code="request_timeout")
    if isinstance(error, RequestCancelledError):
        return ApiError(503, "the request was cancelled: the server is shutting down", "server_error",
                        code="server_shutting_down", retry_after=5)
    if isinstance(error, DiffGemmaError) and isinstance(error, ValueError):
        return invalid(str(error))
    if isinstance(error, DiffGemmaError):  # the server's own failure (a crashed worker or validator)
        return ApiError(500, str(error), "server_error", code=type(error).__name__)
    return ApiError(500, "internal server error", "server_error", code="internal_error")


def client_field(field: str, rename: Mapping[str, str] | None = None) -> str:
    """An engine field's name in the client's vocabulary."""
    if rename and field in rename:
        return rename[field]
    return OPENAI_NAMED_ENGINE_FIELDS.get(field, field)


def validation_error(error: ValidationError, prefix: str = "") -> ApiError:
    """A pydantic error as a 400 naming the first offending field."""
    first = error.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return invalid(f"the request body is not valid JSON: {first['msg']}", code="invalid_json")
    param = _param(first["loc"], prefix)
    if first["type"] == "extra_forbidden":
        return invalid(f"unknown field {param!r}", param=param, code="unknown_field")
    if first["type"] == "missing":
        return invalid(f"{param}: is required", param=param)
    return invalid(f"{param}: {first['msg']}", param=param)


_UNION_LABELS = {"str", "int", "float", "bool", "list", "dict", "tuple", "none", "literal"}


def _param(loc: Sequence[Any], prefix: str = "") -> str:
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        label = str(part)
        if "[" in label or "(" in label or "=" in label or "-" in label or label.split("[")[0].lower() in _UNION_LABELS or label.startswith("function-"):
            continue  # a union member's label, not a field
        text = f"{text}.{label}" if text else label
    return text or "body"


# -- responses -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What identifies one response on the wire."""

    id: str
    created: int
    model: str
    chat: bool

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"


def finish_reason(result: GenerationResult, has_calls: bool = False) -> str:
    if result.finish_reason == "validation_failed":
        return "content_filter"
    if has_calls and result.finish_reason == "stop":
        return "tool_calls"
    return result.finish_reason


def usage(result: GenerationResult) -> dict[str, Any]:
    """OpenAI ``usage``, with ``prompt_tokens_details.cached_tokens`` (the adapters' one result view)."""
    return result_view("", result)["usage"]


def validation(result: GenerationResult) -> dict[str, Any]:
    """The ``validation`` summary every response carries (the adapters' one result view)."""
    return result_view("", result)["validation"]


def wire_tool_calls(calls: Sequence[Any]) -> list[dict[str, Any]]:
    """Parsed calls as OpenAI ``tool_calls``; a call whose arguments did not parse carries its raw text."""
    return [{"id": call.id, "type": "function",
             "function": {"name": call.name,
                          "arguments": json.dumps(call.args, ensure_ascii=False) if call.valid else call.raw_args}}
            for call in calls]


def response_body(reply: Reply, result: GenerationResult, content: str, calls: Sequence[Any]) -> dict[str, Any]:
    finish = finish_reason(result, bool(calls))
    if reply.chat:
        message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
        if calls:
            message["tool_calls"] = wire_tool_calls(calls)
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    else:
        choice = {"index": 0, "text": content, "finish_reason": finish, "logprobs": None}
    return {"id": reply.id, "object": reply.object, "created": reply.created, "model": reply.model,
            "choices": [choice], "usage": usage(result), "validation": validation(result),
            "system_fingerprint": f"seed-{result.seed}"}


def chunk(reply: Reply, *, text: str | None = None, role: bool = False, tool_calls: Sequence[Any] = (),
          finish: str | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    if reply.chat:
        delta: dict[str, Any] = {}
        if role:
            delta = {"role": "assistant", "content": ""}
        elif text:
            delta = {"content": text}
        if tool_calls:
            delta["tool_calls"] = [{"index": index, **call} for index, call in enumerate(wire_tool_calls(tool_calls))]
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish}
    payload = {"id": reply.id, "object": reply.chunk_object, "created": reply.created, "model": reply.model,
               "choices": [choice]}
    payload.update(extra or {})
    return payload


def usage_chunk(reply: Reply, result: GenerationResult) -> dict[str, Any]:
    return {"id": reply.id, "object": reply.chunk_object, "created": reply.created, "model": reply.model,
            "choices": [], "usage": usage(result)}


def sse(payload: Mapping[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()
