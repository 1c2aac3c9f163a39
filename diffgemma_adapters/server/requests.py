"""The OpenAI request side of ``diffgemma serve``: strict request models, their checks, and conversion.

Requests are parsed from the raw bytes by pydantic in strict mode (``extra="forbid"``): a wrong type is a
400, never a coercion (``stream: "yes"``, ``n: true`` and ``response_format: "json"`` are refused), and
invalid JSON (lone surrogates, nesting deeper than the parser's limit) is a 400 too. Errors are
:class:`.openai_wire.ApiError`, naming the field in the client's vocabulary.

DiffusionGemma's own request fields are derived from :class:`diffgemma_engine.SamplingParams`: every
field of it is accepted under its own name, except the few that have an OpenAI name (``max_tokens``,
``stop``, ``seed``, ``on_validation_failure``) and ``draft_events`` (servers stream committed blocks only).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, create_model

from diffgemma_engine import SamplingParams

from ..chat import Turn
from .openai_wire import OPENAI_NAMED_ENGINE_FIELDS, invalid, validation_error

MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 1024
MAX_LIST_ITEMS = 256
"""Upper bound of list-valued fields (tools, validators, stop token ids): a body within the size limit can
still hold a list long enough to slow every block's checks; these bounds keep each request's cost small."""

NOT_OVER_HTTP = {"draft_events": "servers stream committed blocks only, never drafts"}
"""SamplingParams fields a server cannot honour."""


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


def requested_tool_choice(request: ChatCompletionRequest) -> str | None:
    """The request's ``tool_choice`` as a name or keyword, for :func:`diffgemma_adapters.request.resolve_tool_choice`
    (the one reading of it); given without ``tools`` it is refused here, naming the field."""
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
