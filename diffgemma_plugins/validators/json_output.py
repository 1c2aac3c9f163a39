"""``builtin.json``: the response is JSON: a completable prefix while streaming, valid (and schema-valid) at the end."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffgemma_engine.api.validation import BlockView, Violation

from ..validator_registry import ValidationContext
from ._structure import JsonPrefixScanner, JsonState, strip_code_fence
from ._text import token_span

STATE_KEY = "json"
MISSING_JSONSCHEMA = "the 'schema' option needs the jsonschema package (pip install jsonschema)"
TOO_DEEP = "the document nests too deeply to check"


@dataclass(frozen=True)
class JsonOptions:
    allow_code_fence: bool = True
    schema_validator: Any = None  # a jsonschema validator, when a schema was given


class JsonOutput:
    """Every block must keep the response a prefix of some JSON document (optionally inside a ```json fence):
    the first character that makes that impossible is an ERROR (``json_invalid``). At the final block the
    document must be complete (``json_incomplete``) and, with a ``schema`` option, valid against that JSON
    Schema (``json_schema``). The schema is untrusted: its ``$ref``s must resolve inside it (no network or
    file access), reference cycles that never descend into the document are refused, and its regexes run
    on RE2 (see ``_json_schema``)."""

    name = "builtin.json"
    stage = 1
    cost = 1.0
    default_enabled = False
    scope = "block"

    def parse_options(self, options: Mapping[str, Any]) -> JsonOptions:
        unknown = set(options) - {"schema", "allow_code_fence"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; accepted: ['allow_code_fence', 'schema']")
        allow_fence = options.get("allow_code_fence", True)
        if not isinstance(allow_fence, bool):
            raise ValueError(f"allow_code_fence must be a bool, got {allow_fence!r}")
        schema = options.get("schema")
        return JsonOptions(allow_fence, None if schema is None else _schema_validator(schema))

    def validate(self, block: BlockView, ctx: ValidationContext) -> list[Violation]:
        options: JsonOptions = ctx.options
        scanner = JsonPrefixScanner(allow_code_fence=options.allow_code_fence)
        state = ctx.state.get(STATE_KEY)
        if not isinstance(state, JsonState) or state.consumed != len(block.committed_text):
            state, _ = scanner.scan(JsonState(), block.committed_text)
        if state.error:  # already broken in committed text: nothing this block does can fix it
            ctx.state[STATE_KEY] = state
            return []
        state, bad = scanner.scan(state, block.text)
        ctx.state[STATE_KEY] = state
        if bad is not None:
            return [
                Violation(
                    self.name, "json_invalid", f"not JSON any more: {state.error}",
                    spans=(token_span(block, bad, bad + 1),), metadata={"char": bad},
                )
            ]  # fmt: skip
        if not block.is_final:
            return []
        return self._final(block, state, options)

    def _final(self, block: BlockView, state: JsonState, options: JsonOptions) -> list[Violation]:
        whole_block = ((0, len(block.token_ids)),)
        if not state.complete:
            if block.eos_position is None:
                return [Violation(self.name, "json_incomplete", "the response ends inside the JSON document", repairable=False)]
            tail = ((block.eos_position, block.canvas_length),)
            return [Violation(self.name, "json_incomplete", "the response ends inside the JSON document", spans=tail)]
        try:
            document = json.loads(strip_code_fence(block.committed_text + block.text))
        except ValueError as error:
            return [Violation(self.name, "json_invalid", f"does not parse: {error}", spans=whole_block)]
        except RecursionError:
            return [Violation(self.name, "json_invalid", TOO_DEEP, spans=whole_block, repairable=False)]
        if options.schema_validator is None:
            return []
        try:
            errors = sorted(options.schema_validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
        except RecursionError:
            return [Violation(self.name, "json_schema", TOO_DEEP, spans=whole_block, repairable=False)]
        if not errors:
            return []
        paths = tuple("/" + "/".join(map(str, e.absolute_path)) for e in errors)
        return [
            Violation(
                self.name, "json_schema", f"{len(errors)} schema error(s); first at {paths[0]}: {errors[0].message}",
                spans=whole_block, metadata={"paths": paths},
            )
        ]  # fmt: skip


def _schema_validator(schema: Any) -> Any:
    try:
        import jsonschema  # noqa: F401  (a runtime dependency; a broken install gets the clear message below)

        from ._json_schema import safe_schema_validator
    except ImportError as error:
        raise ValueError(MISSING_JSONSCHEMA) from error
    return safe_schema_validator(schema)
