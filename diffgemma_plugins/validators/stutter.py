"""``builtin.stutter``: a word or short phrase immediately repeated ("the the", "in the in the")."""

from __future__ import annotations

import re

from diffgemma_engine.api.validation import BlockView, Violation

from ..validator_registry import ValidationContext
from ._text import CodeRegions, fence_open_after, look_back, merge_spans, token_span

# One to three words, then the same words again (case-insensitively), separated by spaces or tabs only.
STUTTER = re.compile(r"\b((?:\w+(?:'\w+)?[ \t]+){0,2}\w+(?:'\w+)?)(?:[ \t]+\1\b)+", re.IGNORECASE)

# Words that English (and informal writing) legitimately doubles.
ALLOWED_REPEATS = frozenset(
    """
    that had is was do does did can will would very really so no yes oh ah ha haha he hee ho bye
    now there well knock chop hush wait go come more many far long again tut bang boom la na da
    please thank fast slow round never ever same away pretty
    """.split()
)
LOOK_BACK_CHARS = 64


class Stutter:
    """Flags immediate repeats of a word or a 2-3 word phrase, outside code, unless every repeated word is
    on the allow-list (``that that``, ``had had``, ``very very``, ...) or the repeat is a number."""

    name = "builtin.stutter"
    stage = 0
    cost = 0.3
    default_enabled = True
    scope = "block"

    def validate(self, block: BlockView, ctx: ValidationContext) -> list[Violation]:
        context = look_back(block.committed_text, LOOK_BACK_CHARS)
        offset = len(context)
        text = context + block.text
        before_context = block.committed_text[: len(block.committed_text) - offset]
        code = CodeRegions(text, starts_in_fence=fence_open_after(before_context))
        found: dict[str, list[tuple[int, int]]] = {}
        for match in STUTTER.finditer(text):
            words = match.group(1).lower().split()
            if all(w in ALLOWED_REPEATS or w.isdigit() for w in words) or match.start() in code:
                continue
            repeat_start = match.start() + len(match.group(1))
            if match.end() <= offset:
                continue
            start = max(repeat_start, offset) - offset
            found.setdefault(match.group(1).lower(), []).append(token_span(block, start, match.end() - offset))
        return [
            Violation(self.name, "stutter", f"{phrase!r} repeated back to back", spans=merge_spans(spans))
            for phrase, spans in found.items()
        ]
