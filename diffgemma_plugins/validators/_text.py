"""Small text helpers shared by the built-in validators: code regions, look-back windows, span mapping."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable

from diffgemma_engine.api.validation import BlockView

FENCE_LINE = re.compile(r"^[ \t]{0,3}(?:```|~~~)", re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]+`")


def fence_open_after(text: str) -> bool:
    """Whether ``text`` ends inside a fenced code block (an odd number of fence lines)."""
    return len(FENCE_LINE.findall(text)) % 2 == 1


class CodeRegions:
    """The character ranges of ``text`` that are code: fenced blocks and inline backtick spans."""

    def __init__(self, text: str, *, starts_in_fence: bool = False) -> None:
        ranges: list[tuple[int, int]] = []
        fence_start: int | None = 0 if starts_in_fence else None
        prose_start = 0
        for fence in FENCE_LINE.finditer(text):
            if fence_start is None:
                ranges.extend(_inline_code(text, prose_start, fence.start()))
                fence_start = fence.start()
            else:
                line_end = text.find("\n", fence.end())
                prose_start = len(text) if line_end < 0 else line_end
                ranges.append((fence_start, prose_start))
                fence_start = None
        if fence_start is None:
            ranges.extend(_inline_code(text, prose_start, len(text)))
        else:
            ranges.append((fence_start, len(text)))
        ranges.sort()
        self._starts = [start for start, _ in ranges]
        self._ranges = ranges

    def __contains__(self, position: int) -> bool:
        index = bisect.bisect_right(self._starts, position) - 1
        return index >= 0 and position < self._ranges[index][1]

    def overlaps(self, start: int, end: int) -> bool:
        index = bisect.bisect_right(self._starts, end - 1) - 1
        return index >= 0 and self._ranges[index][1] > start


def _inline_code(text: str, start: int, end: int) -> Iterable[tuple[int, int]]:
    return (match.span() for match in INLINE_CODE.finditer(text, start, end))


def look_back(committed: str, limit: int) -> str:
    """The last ``limit`` characters of ``committed``, starting at a word boundary."""
    if len(committed) <= limit:
        return committed
    tail = committed[-limit:]
    if committed[-limit - 1].isspace() or tail[0].isspace():
        return tail
    cut = re.search(r"\s", tail)
    return tail[cut.start() :] if cut else ""


def token_span(block: BlockView, start: int, end: int) -> tuple[int, int]:
    """The token span covering characters ``[start, end)`` of ``block.text``."""
    return block.char_span_to_tokens(start, max(end, start + 1))


def merge_spans(spans: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((start, end) for start, end in merged)
