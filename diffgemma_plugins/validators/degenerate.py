"""``builtin.degenerate_block``: collapsed canvases, long same-token runs, newline floods, empty blocks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from diffgemma_engine.api.validation import BlockView, Severity, Violation

from ..validator_registry import ValidationContext
from ._text import token_span

NEWLINE_FLOOD = re.compile(r"\n(?:[ \t]*\n){5,}")  # six or more line breaks with nothing between them


@dataclass(frozen=True)
class DegenerateThresholds:
    min_run: int = 16  # identical tokens in a row
    max_decorative_run_chars: int = 80  # a one-line run of punctuation up to this width is a ruler, not a collapse
    min_empty_tokens: int = 16  # a whitespace-only block at least this long is empty
    min_diversity_tokens: int = 96
    min_distinct_ratio: float = 0.1


class DegenerateBlock:
    """Flags blocks that collapsed: FATAL when the whole canvas is one token; ERROR for a run of 16+ identical
    tokens (one-line punctuation rulers excepted), 6+ line breaks in a row, a whitespace-only block without
    EOS, or fewer than 10% distinct tokens over 96+ tokens."""

    name = "builtin.degenerate_block"
    stage = 0
    cost = 0.2
    default_enabled = True
    scope = "block"

    def __init__(self, thresholds: DegenerateThresholds = DegenerateThresholds()) -> None:
        self.thresholds = thresholds

    def validate(self, block: BlockView, ctx: ValidationContext) -> list[Violation]:
        ids = block.token_ids
        limits = self.thresholds
        if len(ids) == block.canvas_length >= limits.min_run and len(set(ids)) == 1:
            return [
                Violation(
                    self.name, "collapsed_block", f"the whole canvas is token {ids[0]}",
                    spans=((0, len(ids)),), severity=Severity.FATAL, repairable=False,
                )
            ]  # fmt: skip
        violations = self._runs(block) + self._floods(block)
        if block.eos_position is None and len(ids) >= limits.min_empty_tokens and not block.text.strip():
            violations.append(Violation(self.name, "empty_block", "the block is only whitespace", spans=((0, len(ids)),)))
        distinct = len(set(ids))
        if len(ids) >= limits.min_diversity_tokens and distinct < limits.min_distinct_ratio * len(ids):
            violations.append(
                Violation(
                    self.name, "low_diversity", f"only {distinct} distinct tokens in {len(ids)}",
                    spans=((0, len(ids)),), metadata={"distinct": distinct},
                )
            )  # fmt: skip
        return violations

    def _runs(self, block: BlockView) -> list[Violation]:
        violations = []
        ids, start = block.token_ids, 0
        for position in range(1, len(ids) + 1):
            if position < len(ids) and ids[position] == ids[start]:
                continue
            if position - start >= self.thresholds.min_run and not self._decorative(block, start, position):
                violations.append(
                    Violation(
                        self.name, "token_run", f"token {ids[start]} repeated {position - start} times",
                        spans=((start + 1, position),), metadata={"token_id": ids[start], "length": position - start},
                    )
                )  # fmt: skip
            start = position
        return violations

    def _decorative(self, block: BlockView, start: int, end: int) -> bool:
        first, last = block.token_offsets[start][0], block.token_offsets[end - 1][1]
        run_text = block.text[first:last]
        return (
            not any(char.isalnum() for char in run_text)
            and "\n" not in run_text
            and len(run_text) <= self.thresholds.max_decorative_run_chars
        )

    def _floods(self, block: BlockView) -> list[Violation]:
        return [
            Violation(
                self.name, "newline_flood", f"{match.group().count(chr(10))} line breaks in a row",
                spans=(token_span(block, match.start(), match.end()),),
            )
            for match in NEWLINE_FLOOD.finditer(block.text)
        ]  # fmt: skip
