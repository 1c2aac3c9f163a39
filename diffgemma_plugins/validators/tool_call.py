"""``builtin.tool_call``: a tool call names a bound tool and its arguments match that tool's schema (a
forced call, or - with ``anywhere`` - every call the model chooses to write)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from diffgemma_engine.api.validation import BlockView, Violation

from ..validator_registry import ValidationContext
from ._text import token_span
from .gemma_syntax import CALL_OPEN, parse_value, value_prefix_end
from .json_output import _schema_validator

CALL_START = f"{CALL_OPEN}call:"


@dataclass(frozen=True)
class ToolCallOptions:
    schemas: Mapping[str, Any]  # tool name -> a jsonschema validator of its arguments
    prefill: str
    anywhere: bool = False  # calls may appear anywhere in the response (or not at all)


@dataclass(frozen=True)
class _Problem:
    offset: int  # in prefill + committed text + block text
    code: str
    message: str
    whole_arguments: bool = False  # the arguments parse but break the schema: renoise them all


class ToolCallOutput:
    """The response is one tool call, ``<|tool_call>call:NAME{arguments}``, in Gemma 4's call syntax (as the
    adapters write it for a forced ``tool_choice``). Every block must keep the call possible: the name a
    prefix of a bound tool's name, then the arguments a prefix of a value (``tool_call_invalid``, on the
    first character that breaks it: ``unknown tool`` or bad syntax). Once the arguments object is closed it
    must be valid against that tool's ``parameters`` JSON Schema (``tool_call_schema``, all argument tokens of
    the block renoised), and at the final block the call must be complete (``tool_call_incomplete``).
    Text after the call is not checked.

    With ``anywhere`` (a call the model may or may not write, as with ``tool_choice="auto"``), the response
    is free text, and every ``<|tool_call>call:`` in it starts a call held to the same rules; a response
    without a call passes.

    Options: ``tools`` (required): tool name -> the JSON Schema of its arguments; ``prefill``: the text the
    model's turn was prefilled with (it starts with ``<|tool_call>call:`` unless ``anywhere``);
    ``anywhere`` (default false). Needs ``jsonschema``.
    """

    name = "builtin.tool_call"
    stage = 1
    cost = 1.0
    default_enabled = False
    scope = "block"

    def parse_options(self, options: Mapping[str, Any]) -> ToolCallOptions:
        unknown = set(options) - {"tools", "prefill", "anywhere"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; accepted: ['anywhere', 'prefill', 'tools']")
        tools = options.get("tools")
        if not isinstance(tools, Mapping) or not tools or not all(isinstance(name, str) for name in tools):
            raise ValueError("tools must be a non-empty mapping of tool name -> JSON Schema of its arguments")
        anywhere = options.get("anywhere", False)
        if not isinstance(anywhere, bool):
            raise ValueError(f"anywhere must be true or false, got {anywhere!r}")
        prefill = options.get("prefill", "" if anywhere else CALL_START)
        if not isinstance(prefill, str) or not (anywhere or prefill.startswith(CALL_START)):
            raise ValueError(f"prefill must be a string starting with {CALL_START!r}, got {prefill!r}")
        schemas = {name: _schema_validator(schema) for name, schema in tools.items()}
        return ToolCallOptions(schemas, prefill, anywhere)

    def validate(self, block: BlockView, ctx: ValidationContext) -> list[Violation]:
        options: ToolCallOptions = ctx.options
        head = options.prefill + block.committed_text
        find = find_problem_anywhere if options.anywhere else find_problem
        problem = find(head + block.text, options.schemas, final=block.is_final)
        if problem is None:
            return []
        start = problem.offset - len(head)
        if problem.code == "tool_call_incomplete":
            if block.eos_position is None:
                return [Violation(self.name, problem.code, problem.message, repairable=False)]
            return [Violation(self.name, problem.code, problem.message, spans=((block.eos_position, block.canvas_length),))]
        if start < 0 and not problem.whole_arguments:
            return []  # broken in committed text: nothing this block does can fix it
        if problem.whole_arguments:
            span = token_span(block, max(start, 0), len(block.text))
        else:
            span = token_span(block, start, start + 1)
        return [Violation(self.name, problem.code, problem.message, spans=(span,), metadata={"char": max(start, 0)})]


def find_problem(text: str, schemas: Mapping[str, Any], *, final: bool) -> _Problem | None:
    """The first problem of ``text`` (a call being written, from ``<|tool_call>call:``), or ``None``."""
    return _check_call(text, schemas, final=final)[0]


def find_problem_anywhere(text: str, schemas: Mapping[str, Any], *, final: bool) -> _Problem | None:
    """The first problem of any call in ``text`` (free text with calls in it), or ``None``."""
    start = text.find(CALL_START)
    while start != -1:
        problem, end = _check_call(text[start:], schemas, final=final)
        if problem is not None:
            return replace(problem, offset=start + problem.offset)
        if end is None:  # a call still being written, sound so far
            return None
        start = text.find(CALL_START, start + end)
    return None


def _check_call(text: str, schemas: Mapping[str, Any], *, final: bool) -> tuple[_Problem | None, int | None]:
    """The first problem of the call ``text`` starts with, and where its arguments end once they are
    complete and sound (``None`` while it is still being written)."""
    base = len(CALL_START)
    rest = text[base:]
    brace = rest.find("{")
    name = rest if brace == -1 else rest[:brace]
    common = max(_common_prefix(name, tool) for tool in schemas)
    if common < len(name) or (brace != -1 and name not in schemas):
        bound = sorted(schemas)
        message = f"unknown tool {name!r}: the call must name one of {bound}"
        return _Problem(base + common, "tool_call_invalid", message), None
    if brace == -1:
        incomplete = _Problem(len(text), "tool_call_incomplete", "the response ends before the call's arguments")
        return (incomplete if final else None), None
    arguments = rest[brace:]
    end, bad = value_prefix_end(arguments)
    if bad is not None:
        return _Problem(base + brace + bad, "tool_call_invalid", f"the arguments of {name} do not parse here"), None
    if end is None:
        incomplete = _Problem(len(text), "tool_call_incomplete", "the response ends inside the call's arguments")
        return (incomplete if final else None), None
    value = parse_value(arguments[:end])
    if not isinstance(value, dict):
        return _Problem(base + brace, "tool_call_invalid", f"the arguments of {name} are not an object"), None
    errors = sorted(schemas[name].iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        path = "/" + "/".join(map(str, errors[0].absolute_path))
        message = f"{len(errors)} schema error(s) in the arguments of {name}; first at {path}: {errors[0].message}"
        return _Problem(base + brace, "tool_call_schema", message, whole_arguments=True), None
    return None, base + brace + end


def _common_prefix(a: str, b: str) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length
