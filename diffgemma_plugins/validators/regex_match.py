"""``builtin.regex``: the response (or each block) must match, contain, or avoid a regular expression."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffgemma_engine.validation import BlockView, Violation

from ..registry import ValidationContext
from ._text import merge_spans, token_span

MODES = ("fullmatch", "search", "forbid")
SCOPES = ("final", "block")
FLAGS = {"IGNORECASE": re.IGNORECASE, "MULTILINE": re.MULTILINE, "DOTALL": re.DOTALL, "VERBOSE": re.VERBOSE}
OPTION_NAMES = ("pattern", "mode", "scope", "flags")


@dataclass(frozen=True)
class RegexOptions:
    pattern: re.Pattern[str]
    mode: str = "fullmatch"
    scope: str = "final"


class RegexMatch:
    """Options: ``pattern`` (required), ``mode`` (``fullmatch`` default: the text must match it whole;
    ``search``: must contain a match; ``forbid``: must not contain one), ``scope`` (``final`` default: the
    whole response, checked at the final block; ``block``: each block's own text), ``flags`` (names from
    IGNORECASE, MULTILINE, DOTALL, VERBOSE). ``forbid`` points at the matches; the other modes at the block."""

    name = "builtin.regex"
    stage = 1
    cost = 1.0
    default_enabled = False
    scope = "block"

    def parse_options(self, options: Mapping[str, Any]) -> RegexOptions:
        unknown = set(options) - set(OPTION_NAMES)
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; accepted: {list(OPTION_NAMES)}")
        pattern, mode, scope = options.get("pattern"), options.get("mode", "fullmatch"), options.get("scope", "final")
        if not isinstance(pattern, str):
            raise ValueError(f"pattern must be a string (it is required), got {pattern!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        flags, names = 0, options.get("flags", ())
        if isinstance(names, str):
            raise ValueError(f"flags must be a list of flag names, got the string {names!r}")
        for flag in names:
            if flag not in FLAGS:
                raise ValueError(f"unknown regex flag {flag!r}; accepted: {sorted(FLAGS)}")
            flags |= FLAGS[flag]
        try:
            compiled = re.compile(pattern, flags)
        except re.error as error:
            raise ValueError(f"pattern does not compile: {error}") from error
        return RegexOptions(compiled, mode, scope)

    def validate(self, block: BlockView, ctx: ValidationContext) -> list[Violation]:
        options: RegexOptions = ctx.options
        if options.scope == "final" and not block.is_final:
            return []
        prefix = block.committed_text if options.scope == "final" else ""
        subject = prefix + block.text
        whole_block = ((0, len(block.token_ids)),)
        shown = options.pattern.pattern[:60]
        if options.mode == "fullmatch" and not options.pattern.fullmatch(subject):
            return [Violation(self.name, "regex_mismatch", f"the text does not match {shown!r}", spans=whole_block)]
        if options.mode == "search" and not options.pattern.search(subject):
            return [Violation(self.name, "regex_missing", f"the text never matches {shown!r}", spans=whole_block)]
        if options.mode != "forbid":
            return []
        matches = [m for m in options.pattern.finditer(subject) if m.end() > m.start()]
        if not matches:
            return []
        offset = len(prefix)
        in_block = [token_span(block, max(m.start(), offset) - offset, m.end() - offset) for m in matches if m.end() > offset]
        return [
            Violation(
                self.name, "regex_forbidden", f"{len(matches)} forbidden match(es) of {shown!r}",
                spans=merge_spans(in_block), repairable=len(in_block) == len(matches),
            )
        ]  # fmt: skip
