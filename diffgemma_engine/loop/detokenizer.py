"""Incremental detokenization with stop strings, at block granularity.

The response text is always ``decode(all generated ids)``; each block emits the new suffix. A trailing
incomplete UTF-8 sequence (decoded as U+FFFD) is held back until the next block completes it, so
concatenated deltas equal the final text. Stop strings are searched anywhere in the new text, including
across block boundaries; the text is cut before the first one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class Detokenized:
    """The outcome of adding one block, computed without changing the detokenizer (see ``apply``)."""

    delta: str  # new text to emit
    token_ids: tuple[int, ...]  # the block's tokens that belong to the response (cut at a stop string)
    stop: str | None  # the stop string found, if any
    all_token_ids: tuple[int, ...]
    text: str


class Detokenizer:
    """Tracks one response's tokens and text."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(stop)
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self.token_ids: list[int] = []
        self.text = ""  # emitted so far

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def apply(self, outcome: Detokenized) -> None:
        """Make a previewed block part of the response."""
        self.token_ids = list(outcome.all_token_ids)
        self.text = outcome.text

    def preview(self, block_ids: Sequence[int], final: bool) -> Detokenized:
        """What adding a block's tokens would give; ``final`` flushes held-back characters."""
        previous_count = len(self.token_ids)
        candidate_ids = self.token_ids + list(block_ids)
        full = self.decode(candidate_ids)
        stop, cut = self._find_stop(full)
        if stop is not None:
            kept = self._tokens_within(candidate_ids, previous_count, cut)
            kept_ids = tuple(candidate_ids[:kept])
            return Detokenized(full[len(self.text) : cut], kept_ids[previous_count:], stop, kept_ids, full[:cut])
        end = len(full)
        if not final:
            while end > len(self.text) and full[end - 1] == REPLACEMENT:
                end -= 1
            end -= self._partial_stop_suffix(full[len(self.text) : end])
        return Detokenized(full[len(self.text) : end], tuple(block_ids), None, tuple(candidate_ids), full[:end])

    def _find_stop(self, full: str) -> tuple[str | None, int]:
        if not self._stop:
            return None, -1
        search_from = len(self.text)  # emitted text never holds the start of a stop string
        best: tuple[int, str] | None = None
        for stop in self._stop:
            found = full.find(stop, search_from)
            if found != -1 and (best is None or found < best[0]):
                best = (found, stop)
        if best is None:
            return None, -1
        return best[1], best[0]

    def _partial_stop_suffix(self, pending: str) -> int:
        """Length of the longest tail of ``pending`` that could begin a stop string (held back)."""
        for length in range(min(len(pending), self._longest_stop - 1), 0, -1):
            tail = pending[-length:]
            if any(stop.startswith(tail) for stop in self._stop):
                return length
        return 0

    def _tokens_within(self, ids: list[int], start: int, cut: int) -> int:
        """The number of tokens whose decoded text ends at or before character ``cut``."""
        kept = start
        for count in range(start + 1, len(ids) + 1):
            if len(self.decode(ids[:count]).rstrip(REPLACEMENT)) > cut:
                break
            kept = count
        return kept

    def offsets(self, block_ids: Sequence[int]) -> tuple[str, tuple[tuple[int, int], ...]]:
        """A block's own text and per-token ``(start, end)`` character offsets into it."""
        spans = []
        previous = 0
        for count in range(1, len(block_ids) + 1):
            length = len(self.decode(block_ids[:count]).rstrip(REPLACEMENT))
            length = max(length, previous)
            spans.append((previous, length))
            previous = length
        return self.decode(block_ids), tuple(spans)
