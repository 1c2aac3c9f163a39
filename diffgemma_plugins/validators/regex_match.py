"""``builtin.regex``: the response (or each block) must match, contain, or avoid a regular expression.

Patterns often come from clients (``validator_options`` over HTTP), so they are compiled by RE2
(``google-re2``), whose matching time is linear in the text: no pattern can backtrack catastrophically.
RE2 lacks the Python ``re`` features that need backtracking (lookarounds, backreferences, atomic groups,
possessive quantifiers, conditionals) and the VERBOSE flag; a pattern using them is refused with a clear
``InvalidRequestError``. Python's ``\\Z`` is accepted and means RE2's ``\\z`` (the very end of the text).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import re2

from diffgemma_engine.api.validation import BlockView, Violation

from ..validator_registry import ValidationContext
from ._text import merge_spans, token_span

MODES = ("fullmatch", "search", "forbid")
SCOPES = ("final", "block")
FLAGS = {"IGNORECASE": "i", "MULTILINE": "m", "DOTALL": "s"}
UNSUPPORTED_FLAGS = {"VERBOSE": "write the pattern without insignificant whitespace and comments"}
OPTION_NAMES = ("pattern", "mode", "scope", "flags")
MAX_PATTERN_CHARS = 10_000
MAX_PROGRAM_BYTES = 8 << 20  # RE2's memory budget for one compiled pattern
BACKTRACKING_FEATURES = "lookarounds, backreferences, atomic groups, possessive quantifiers and conditionals"
_PYTHON_END_OF_TEXT = re.compile(r"(?<!\\)((?:\\\\)*)\\Z")


@dataclass(frozen=True)
class RegexOptions:
    pattern: Any  # a compiled RE2 pattern (``re2._Regexp``): ``fullmatch``, ``search``, ``finditer``, ``pattern``
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
        inline_flags = _inline_flags(options.get("flags", ()))
        return RegexOptions(compile_linear(pattern, inline_flags), mode, scope)

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


def _inline_flags(names: object) -> str:
    """The flag names as an RE2 inline-flag group (``"(?is)"``), or ``""``."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f"flags must be a list of flag names, got {names!r}")
    letters = []
    for flag in names:
        if flag in UNSUPPORTED_FLAGS:
            raise ValueError(
                f"flag {flag} is not supported by the linear-time regex engine (RE2): {UNSUPPORTED_FLAGS[flag]}"
            )
        if flag not in FLAGS:
            raise ValueError(f"unknown regex flag {flag!r}; accepted: {sorted(FLAGS)}")
        letters.append(FLAGS[flag])
    return f"(?{''.join(sorted(set(letters)))})" if letters else ""


def compile_linear(pattern: str, inline_flags: str = "") -> Any:
    """``pattern`` compiled by RE2 (linear-time matching); ``ValueError`` naming the ``pattern`` option if it
    is too long, does not compile, or needs a backtracking feature RE2 lacks."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"pattern is {len(pattern)} characters long; at most {MAX_PATTERN_CHARS} are accepted")
    options = re2.Options()
    options.log_errors = False
    options.max_mem = MAX_PROGRAM_BYTES
    try:
        return re2.compile(inline_flags + _PYTHON_END_OF_TEXT.sub(r"\1\\z", pattern), options)
    except re2.error as error:
        reason = error.args[0].decode("utf-8", "replace") if error.args and isinstance(error.args[0], bytes) else str(error)
        raise ValueError(
            f"pattern {pattern[:60]!r} is not accepted by the linear-time regex engine (RE2): {reason}. "
            f"RE2 has no {BACKTRACKING_FEATURES}, which let a pattern take exponential time"
        ) from None
