"""The model's text formats for tools and structured output, shared by every adapter.

Tools use Gemma 4's native syntax (the tokens are Gemma 4 control tokens; with a tokenizer that lacks them,
as ``tiny-random``'s, they are plain text and everything works the same):

- declarations, placed in the system turn::

      <|tool>declaration:get_weather{description:<|"|>Weather of a city<|"|>,parameters:{...}}<tool|>

- a call, written by the model::

      <|tool_call>call:get_weather{city:<|"|>London<|"|>}<tool_call|>

- a result, sent back to the model in a ``tool`` turn::

      <|tool_response>response:get_weather{value:<|"|>15 C, sunny<|"|>}<tool_response|>

Values are written like JSON except that object keys are bare and strings are delimited by ``<|"|>``.
The parser also accepts JSON-quoted strings and quoted keys, so a JSON-speaking model is understood too.

Nothing here imports an engine or a framework: it works on strings and token ids. The value syntax itself
(reading and prefix-checking) lives in :mod:`diffgemma_plugins.validators.gemma_syntax`, which the
``builtin.tool_call`` validator shares.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from diffgemma_plugins.validators.gemma_syntax import (
    CALL_CLOSE,
    CALL_OPEN,
    QUOTE,
    RESPONSE_CLOSE,
    RESPONSE_OPEN,
    TOOL_CLOSE,
    TOOL_OPEN,
    parse_value,
)

CALL_MARKERS = (CALL_OPEN, CALL_CLOSE, QUOTE)
"""The tokens a call is written with; they survive decoding even where they are special tokens."""
REPLACEMENT = "\ufffd"

_BARE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


# -- writing -------------------------------------------------------------------------------------------


def encode_value(value: Any) -> str:
    """``value`` (JSON-like data) in the native syntax."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"cannot encode the non-finite number {value!r}")
        return json.dumps(value)
    if isinstance(value, str):
        return f"{QUOTE}{value}{QUOTE}"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_encode_key(k)}:{encode_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(encode_value(v) for v in value) + "]"
    raise ValueError(f"cannot encode a {type(value).__name__} as a tool value")


def _encode_key(key: object) -> str:
    text = str(key)
    return text if _BARE_KEY.match(text) else f"{QUOTE}{text}{QUOTE}"


def declare_tools(tools: Sequence[Mapping[str, Any]]) -> str:
    """Declarations of OpenAI-format tools (``{"type": "function", "function": {...}}``), one per line."""
    lines = []
    for tool in tools:
        function = tool.get("function", tool)
        body: dict[str, Any] = {}
        if function.get("description"):
            body["description"] = function["description"]
        body["parameters"] = function.get("parameters") or {"type": "object", "properties": {}}
        lines.append(f"{TOOL_OPEN}declaration:{function['name']}{encode_value(body)}{TOOL_CLOSE}")
    return "\n".join(lines)


def format_tool_call(name: str, args: Mapping[str, Any]) -> str:
    """A call as the model writes it."""
    return f"{CALL_OPEN}call:{name}{encode_value(dict(args))}{CALL_CLOSE}"


def format_tool_response(name: str, content: str) -> str:
    """A tool's result as the model reads it. JSON objects are passed as objects, anything else as text."""
    try:
        value = json.loads(content)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        value = {"value": content}
    return f"{RESPONSE_OPEN}response:{name}{encode_value(value)}{RESPONSE_CLOSE}"


SCHEMA_INSTRUCTION = "Answer with a JSON object that follows this JSON schema: "


def schema_instruction(schema: Mapping[str, Any]) -> str:
    """The system-turn line that tells the model which JSON schema its answer must follow.

    Structured output is enforced by the ``builtin.json`` validator, which repairs invalid blocks in place;
    this line is what lets the model know the keys and types before it writes them (a schema the model
    never sees can only be met by luck). The schema is written compactly, in its own key order."""
    return SCHEMA_INSTRUCTION + json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


# -- reading -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A call the model made. ``args`` is ``None`` (and ``error`` says why) when it could not be parsed."""

    name: str
    args: dict[str, Any] | None
    raw_args: str
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.args is not None and self.error is None


def _parse_call(body: str) -> ToolCall:
    """``body`` is what stands between the call markers: ``call:NAME{...}``."""
    text = body.strip()
    if text.startswith("call:"):
        text = text[len("call:") :]
    brace = text.find("{")
    name = (text if brace == -1 else text[:brace]).strip()
    raw_args = "" if brace == -1 else text[brace:]
    if not name:
        return ToolCall(name="", args=None, raw_args=body, error="the call names no tool")
    if brace == -1:
        return ToolCall(name=name, args={}, raw_args="")
    try:
        args = parse_value(raw_args)
    except ValueError as error:
        return ToolCall(name=name, args=None, raw_args=raw_args, error=str(error))
    if not isinstance(args, dict):
        return ToolCall(name=name, args=None, raw_args=raw_args, error="arguments are not an object")
    return ToolCall(name=name, args=args, raw_args=raw_args)


def split_tool_calls(raw: str, *, final: bool = True) -> tuple[str, list[ToolCall]]:
    """Split model output into its visible text and its tool calls.

    Text inside call markers is never visible. With ``final=False`` (a stream in progress) an unclosed call
    and a trailing partial call marker are held back instead of being parsed or shown.
    """
    visible: list[str] = []
    calls: list[ToolCall] = []
    position = 0
    while True:
        start = raw.find(CALL_OPEN, position)
        if start == -1:
            tail = raw[position:]
            if not final:
                tail = tail[: len(tail) - _partial_marker(tail)]
            visible.append(tail)
            break
        visible.append(raw[position:start])
        end = raw.find(CALL_CLOSE, start)
        if end == -1:
            if final:  # the model stopped inside a call (EOS or length): parse what is there
                calls.append(_parse_call(raw[start + len(CALL_OPEN) :]))
            break
        calls.append(_parse_call(raw[start + len(CALL_OPEN) : end]))
        position = end + len(CALL_CLOSE)
    return "".join(visible), calls


def _partial_marker(text: str) -> int:
    for length in range(min(len(text), len(CALL_OPEN) - 1), 0, -1):
        if CALL_OPEN.startswith(text[-length:]):
            return length
    return 0


# -- assembling a response from committed blocks ----------------------------------------------------------


def marker_decoder(tokenizer: Any) -> Callable[[Sequence[int]], str]:
    """``decode(ids)`` that drops special tokens like the engine's text does, except the call markers.

    The engine decodes with ``skip_special_tokens=True``, which erases Gemma 4's tool markers (they are
    special tokens there). This decoder drops every other special token *id* before decoding, so the text
    around the markers is exactly the engine's text. (With a tokenizer that lacks the markers, such as
    ``tiny-random``'s, they are ordinary text and nothing changes.)
    """
    unknown = getattr(tokenizer, "unk_token_id", None)
    markers = {tokenizer.convert_tokens_to_ids(marker) for marker in CALL_MARKERS} - {unknown, None}
    drop = frozenset(getattr(tokenizer, "all_special_ids", ())) - markers

    def decode(token_ids: Sequence[int]) -> str:
        return tokenizer.decode([i for i in token_ids if i not in drop], skip_special_tokens=False)

    return decode


class ToolCallAssembler:
    """Turns a tool-enabled response's committed tokens into append-only visible text and tool calls.

    ``decode`` must keep the tool markers (see :func:`marker_decoder`). ``prefill`` is text the request
    forced at the start of the model's turn (a forced tool call); it is part of the raw output.
    ``tool_names`` are the tools offered: a call naming another is invalid ("unknown tool"). ``max_calls``
    keeps only the first calls (``parallel_tool_calls=False``: 1).
    """

    def __init__(
        self,
        decode: Callable[[Sequence[int]], str],
        prefill: str = "",
        *,
        tool_names: Sequence[str] | None = None,
        max_calls: int | None = None,
    ) -> None:
        self._decode = decode
        self._prefill = prefill
        self._names = None if tool_names is None else tuple(tool_names)
        self._max_calls = max_calls
        self._token_ids: list[int] = []
        self.emitted = ""

    def add_block(self, token_ids: Sequence[int]) -> str:
        """Add one committed block; returns the newly visible text (possibly empty)."""
        self._token_ids.extend(token_ids)
        return self._advance(final=False)

    def finish(self, token_ids: Sequence[int]) -> tuple[str, list[ToolCall]]:
        """Settle the response from its final token ids; returns the last visible text and the calls."""
        self._token_ids = list(token_ids)
        delta = self._advance(final=True)
        _, calls = split_tool_calls(self._raw(final=True), final=True)
        if self._max_calls is not None:
            calls = calls[: self._max_calls]
        return delta, [self._checked(call) for call in calls]

    def _checked(self, call: ToolCall) -> ToolCall:
        if self._names is None or not call.valid or call.name in self._names:
            return call
        error = f"unknown tool {call.name!r}; the tools are {list(self._names)}"
        return dataclasses.replace(call, args=None, error=error)

    def _raw(self, final: bool) -> str:
        raw = self._prefill + self._decode(self._token_ids)
        return raw if final else raw.rstrip(REPLACEMENT)

    def _advance(self, final: bool) -> str:
        visible, _ = split_tool_calls(self._raw(final), final=final)
        if not visible.startswith(self.emitted):  # cannot happen for append-only blocks; never retract text
            return ""
        delta, self.emitted = visible[len(self.emitted) :], visible
        return delta
