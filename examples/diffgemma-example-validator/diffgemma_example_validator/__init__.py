"""An example diffgemma plugin: the ``example.no_shouting`` validator."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from diffgemma_plugins import BlockView, ValidationContext, Violation, hookimpl

CAPS_WORD = r"\b[A-Z][A-Z']+\b"
CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)


class NoShouting:
    """Flags ``min_words`` (default 3) or more ALL-CAPS words in a row. Acronyms alone ("NASA", "HTTP API")
    are fine; "PLEASE STOP SHOUTING" is not."""

    name = "example.no_shouting"
    stage = 0  # cheap, text-level: runs with the first built-ins
    cost = 0.2
    default_enabled = False  # requests opt in with "+example.no_shouting"
    scope = "block"

    def parse_options(self, options: Mapping[str, Any]) -> int:
        unknown = set(options) - {"min_words"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; accepted: ['min_words']")
        min_words = options.get("min_words", 3)
        if isinstance(min_words, bool) or not isinstance(min_words, int) or min_words < 2:
            raise ValueError(f"min_words must be an int >= 2, got {min_words!r}")
        return min_words

    def validate(self, block: BlockView, ctx: ValidationContext) -> Iterator[Violation]:
        min_words: int = ctx.options
        shouting = re.compile(rf"{CAPS_WORD}(?:[ \t,]+{CAPS_WORD}){{{min_words - 1},}}")
        code = [m.span() for m in CODE.finditer(block.text)]
        for match in shouting.finditer(block.text):
            if any(start <= match.start() < end for start, end in code):
                continue
            yield Violation(
                validator=self.name,
                code="shouting",
                message=f"{len(match.group().split())} capitalised words in a row: {match.group()[:40]!r}",
                spans=(block.char_span_to_tokens(match.start(), match.end()),),
            )


@hookimpl
def diffgemma_register_validators(register):
    register(NoShouting())
