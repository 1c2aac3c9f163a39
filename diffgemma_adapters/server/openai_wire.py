"""The OpenAI wire format of ``diffgemma serve``: strict request models, errors and response bodies.

Requests are parsed from the raw bytes by pydantic in strict mode (``extra="forbid"``): a wrong type is a
400, never a coercion (``stream: "yes"``, ``n: true`` and ``response_format: "json"`` are refused), and
invalid JSON (lone surrogates, nesting deeper than the parser's limit) is a 400 too. Every error names the
field in the client's vocabulary (``max_tokens``, not the engine's ``max_new_tokens``).

DiffusionGemma's own request fields are derived from :class:`diffgemma_engine.SamplingParams`: every
field of it is accepted under its own name, except the few that have an OpenAI name (``max_tokens``,
``stop``, ``seed``, ``on_validation_failure``) and ``draft_events`` (servers stream committed blocks only).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, create_model

from diffgemma_engine import (
    BlockValidationError,
    DiffGemmaError,
    EngineDeadError,
    EngineOverloadedError,
    GenerationResult,
    InvalidRequestError,
    RequestCancelledError,
    RequestTimeoutError,
    SamplingParams,
)
from diffgemma_engine.api.errors import GenerationTooLongError, PromptTooLongError

from ..chat import Turn
from ..request import result_view

MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 1024
MAX_LIST_ITEMS = 256
"""Upper bound of list-valued fields (tools, validators, stop token ids): a body within the size limit can
still hold a list long enough to slow every block's checks; these bounds keep each request's cost small."""

OPENAI_NAMED_ENGINE_FIELDS = {
    "max_new_tokens": "max_tokens",
    "stop": "stop",
    "seed": "seed",
    "on_exhausted": "on_validation_failure",
}
"""SamplingParams fields that travel under an OpenAI (or adapter) name."""

NOT_OVER_HTTP = {"draft_events": "servers stream committed blocks only, never drafts"}
"""SamplingParams fields a server cannot honour."""


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


# -- request models --------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class StreamOptions(_Strict):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class JsonSchemaFormat(_Strict):
    name: Annotated[str, Field(max_length=256)] = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatText(_Strict):
    type: Literal["text"]


class ResponseFormatJsonObject(_Strict):
    type: Literal["json_object"]


class ResponseFormatJsonSchema(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


def _kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"type={kind}" if isinstance(kind, str) else None


ResponseFormat = Annotated[
    Annotated[ResponseFormatText, Tag("type=text")]
    | Annotated[ResponseFormatJsonObject, Tag("type=json_object")]
    | Annotated[ResponseFormatJsonSchema, Tag("type=json_schema")],
    Discriminator(_kind, custom_error_type="invalid_type",
                  custom_error_message="must be an object with type 'text', 'json_object' or 'json_schema'"),
]

_TOOL_NAME = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class FunctionDefinition(_Strict):
    name: _TOOL_NAME
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: _TOOL_NAME


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(_Strict):
    name: _TOOL_NAME
    arguments: str


class ToolCallIn(_Strict):
    id: Annotated[str, Field(max_length=256)]
    type: Literal["function"]
    function: FunctionCall


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    """One chat message (every role's fields; which ones a role may use is checked in :func:`to_turns`)."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[Any] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    tool_calls: Annotated[list[ToolCallIn], Field(max_length=MAX_LIST_ITEMS)] | None = None
    tool_call_id: Annotated[str, Field(max_length=256)] | None = None
    refusal: str | None = None


def _engine_fields() -> dict[str, Any]:
    """Every SamplingParams field a client may set under its own name, with its strict type."""
    hints = typing.get_type_hints(SamplingParams)
    derived: dict[str, Any] = {}
    for spec in fields(SamplingParams):
        if spec.name in OPENAI_NAMED_ENGINE_FIELDS or spec.name in NOT_OVER_HTTP:
            continue
        hint = hints[spec.name]
        origin = typing.get_origin(hint)
        if origin is tuple:  # JSON arrays, bounded
            hint = Annotated[list[typing.get_args(hint)[0]], Field(max_length=MAX_LIST_ITEMS)]
        elif origin in (Mapping, dict) or hint is Mapping:
            hint = dict[str, Any]
        derived[spec.name] = (hint | None, None)
    return derived


ENGINE_FIELDS: tuple[str, ...] = tuple(_engine_fields())
"""The SamplingParams fields accepted as request fields under their own names (derived, not listed)."""


class _CommonRequest(_Strict):
    model: Annotated[str, Field(max_length=1024)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: int | None = None
    stop: Any = None  # a string or a list of strings, checked by :func:`stop_strings` (clearer errors than a union's)
    seed: int | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, float] | None = None
    user: Annotated[str, Field(max_length=1024)] | None = None
    on_validation_failure: Literal["raise", "return_flagged", "truncate"] | None = None


_ChatBase = create_model("_ChatBase", __base__=_CommonRequest, **_engine_fields())
_CompletionBase = create_model("_CompletionBase", __base__=_CommonRequest, **_engine_fields())


class ChatCompletionRequest(_ChatBase):  # type: ignore[misc, valid-type]
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_LIST_ITEMS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    modalities: list[str] | None = None


class CompletionRequest(_CompletionBase):  # type: ignore[misc, valid-type]
    prompt: str | list[Any]
    logprobs: int | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
    response_format: ResponseFormat | None = None


def parse_request(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise validation_error(error) from None


# -- request checks and conversion ---------------------------------------------------------------------


def refuse_unsupported(request: Any) -> None:
    """400s for standard fields this server cannot honour; silence would give a wrong answer."""
    if request.n not in (None, 1):
        raise invalid("n: only n=1 is supported", param="n")
    if request.logit_bias:
        raise invalid("logit_bias: is not supported by block diffusion", param="logit_bias")
    logprobs = getattr(request, "logprobs", None)
    if logprobs not in (None, False, 0):
        raise invalid("logprobs: log probabilities are not available from a diffusion sampler", param="logprobs")
    if getattr(request, "top_logprobs", None) not in (None, 0):
        raise invalid("top_logprobs: log probabilities are not available from a diffusion sampler",
                      param="top_logprobs")
    if getattr(request, "echo", None):
        raise invalid("echo: is not supported", param="echo")
    if getattr(request, "suffix", None):
        raise invalid("suffix: is not supported (no fill-in-the-middle)", param="suffix")
    if getattr(request, "best_of", None) not in (None, 1):
        raise invalid("best_of: only best_of=1 is supported", param="best_of")
    if request.stream_options is not None and not request.stream:
        raise invalid("stream_options: only allowed with stream=true", param="stream_options")


def completion_prompt(request: CompletionRequest) -> str:
    prompt = request.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise invalid("prompt: must be a string or a list of one string (no batches, no token ids)",
                          param="prompt")
        prompt = prompt[0]
    return prompt


_UNSUPPORTED_PARTS = {"image_url": "image", "input_image": "image", "input_audio": "audio", "file": "file"}


def to_turns(messages: Sequence[Message]) -> list[Turn]:
    """Chat messages as :class:`Turn` values: names, assistant tool calls and tool results kept."""
    turns = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message.role
        if message.tool_calls is not None and role != "assistant":
            raise invalid(f"{where}.tool_calls: only assistant messages carry tool calls", param=f"{where}.tool_calls")
        if message.tool_call_id is not None and role != "tool":
            raise invalid(f"{where}.tool_call_id: only tool messages have one", param=f"{where}.tool_call_id")
        content = _text(message.content, where)
        if role in ("tool", "function") and message.tool_call_id is None and message.name is None:
            raise invalid(f"{where}: a tool message needs tool_call_id (or name)", param=f"{where}.tool_call_id")
        if role == "user" and message.content is None:
            raise invalid(f"{where}.content: a user message needs content", param=f"{where}.content")
        calls = tuple(_tool_call(call, f"{where}.tool_calls[{number}]")
                      for number, call in enumerate(message.tool_calls or ()))
        turns.append(Turn(role, content, name=message.name, tool_calls=calls, tool_call_id=message.tool_call_id))
    return turns


def stop_strings(stop: Any) -> list[str]:
    """``stop`` as a list: one non-empty string, or at most :data:`MAX_STOP_STRINGS` of them."""
    values = [stop] if isinstance(stop, str) else stop
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise invalid("stop: must be a string or a list of strings", param="stop")
    if len(values) > MAX_STOP_STRINGS:
        raise invalid(f"stop: at most {MAX_STOP_STRINGS} stop strings", param="stop")
    if any(not value for value in values):
        raise invalid("stop: stop strings must not be empty", param="stop")
    if any(len(value) > MAX_STOP_LENGTH for value in values):
        raise invalid(f"stop: a stop string has at most {MAX_STOP_LENGTH} characters", param="stop")
    return values


def _text(content: str | list[Any] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for number, part in enumerate(content):
        param = f"{where}.content[{number}]"
        if not isinstance(part, dict):
            raise invalid(f"{param}: must be a content part object such as {{'type': 'text', 'text': ...}}",
                          param=param)
        kind = part.get("type")
        if isinstance(kind, str) and kind in _UNSUPPORTED_PARTS:
            raise invalid(f"{param}: {_UNSUPPORTED_PARTS[kind]} content is not supported; this model reads text only",
                          param=param, code="unsupported_content")
        if kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
            continue
        try:
            texts.append(TextPart.model_validate(part).text)
        except ValidationError as error:
            raise validation_error(error, prefix=param) from None
    return "".join(texts)


def _tool_call(call: ToolCallIn, where: str) -> tuple[str, Mapping[str, Any], str]:
    try:
        args = json.loads(call.function.arguments) if call.function.arguments.strip() else {}
    except ValueError:
        args = None
    if not isinstance(args, dict):
        param = f"{where}.function.arguments"
        raise invalid(f"{param}: must be a JSON object", param=param)
    return call.function.name, args, call.id


def tool_choice(request: ChatCompletionRequest) -> str | None:
    choice = request.tool_choice
    if choice is None:
        return None
    if not request.tools:
        raise invalid("tool_choice: given without tools", param="tool_choice")
    return choice.function.name if isinstance(choice, NamedToolChoice) else choice


def response_format(request: Any) -> dict[str, Any] | None:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    schema = fmt.json_schema.schema_
    return {"type": "json_object"} if schema is None else {"type": "json_schema", "schema": schema}


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
