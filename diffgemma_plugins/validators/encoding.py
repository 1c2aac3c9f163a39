"""``builtin.utf8_integrity``: replacement characters and stray control characters from broken byte sequences."""

from __future__ import annotations

import re

from diffgemma_engine.api.validation import BlockView, Violation

from ..validator_registry import ValidationContext
from ._text import merge_spans, token_span

REPLACEMENT = "\ufffd"
CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


class Utf8Integrity:
    """Flags U+FFFD (a byte sequence that did not decode) and C0 control characters other than tab, newline,
    vertical tab, form feed and carriage return. A U+FFFD in the last token of a non-final block is left
    alone: a character split across two blocks decodes whole once the next block is committed."""

    name = "builtin.utf8_integrity"
    stage = 0
    cost = 0.1
    default_enabled = True
    scope = "block"

    def validate(self, block: BlockView, ctx: ValidationContext) -> list[Violation]:
        deferred_from = len(block.text)
        if not block.is_final and block.token_offsets:
            deferred_from = block.token_offsets[-1][0]
        broken = [i for i, char in enumerate(block.text) if char == REPLACEMENT and i < deferred_from]
        controls = [m.start() for m in CONTROL.finditer(block.text)]
        violations = []
        if broken:
            violations.append(
                Violation(
                    self.name, "replacement_character", f"{len(broken)} undecodable byte sequence(s) (U+FFFD)",
                    spans=merge_spans(token_span(block, i, i + 1) for i in broken),
                )
            )  # fmt: skip
        if controls:
            shown = ", ".join(sorted({repr(block.text[i]) for i in controls}))
            violations.append(
                Violation(
                    self.name, "control_character", f"control characters in the text: {shown}",
                    spans=merge_spans(token_span(block, i, i + 1) for i in controls),
                )
            )  # fmt: skip
        return violations
