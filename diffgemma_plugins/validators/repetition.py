"""``builtin.repeated_ngram`` and ``builtin.boundary_duplication``: text the model already wrote, again."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from diffgemma_engine.api.validation import BlockView, Violation

from ..validator_registry import ValidationContext
from ._text import CodeRegions, fence_open_after, look_back, merge_spans, token_span

WORD = re.compile(r"\w+(?:['’]\w+)*")
SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)", re.MULTILINE)


@dataclass(frozen=True)
class NgramThresholds:
    n: int = 6  # words per n-gram
    min_count: int = 3  # non-overlapping occurrences that make a repetition
    min_sentence_words: int = 8  # a sentence this long seen twice is a repetition
    look_back_chars: int = 2048  # about 512 tokens of committed text


class RepeatedNgram:
    """Flags a 6-word sequence occurring 3+ times (non-overlapping), or an 8+ word sentence occurring twice,
    within the block plus ~512 tokens of committed text. Code is ignored. The spans are every repeat after
    the first that lies in the block."""

    name = "builtin.repeated_ngram"
    stage = 2
    cost = 1.0
    default_enabled = True
    scope = "block"

    def __init__(self, thresholds: NgramThresholds = NgramThresholds()) -> None:
        self.thresholds = thresholds

    def validate(self, block: BlockView, ctx: ValidationContext) -> list[Violation]:
        context = look_back(block.committed_text, self.thresholds.look_back_chars)
        offset = len(context)
        text = context + block.text
        before_context = block.committed_text[: len(block.committed_text) - offset]
        code = CodeRegions(text, starts_in_fence=fence_open_after(before_context))
        words = [m for m in WORD.finditer(text) if m.start() not in code]
        violations = self._ngrams(block, words, offset) + self._sentences(block, text, code, offset)
        return violations

    def _ngrams(self, block: BlockView, words: list[re.Match[str]], offset: int) -> list[Violation]:
        n = self.thresholds.n
        starts: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for index in range(len(words) - n + 1):
            key = tuple(w.group().lower() for w in words[index : index + n])
            if not starts[key] or index >= starts[key][-1] + n:
                starts[key].append(index)
        spans, examples = [], []
        for key, indexes in starts.items():
            if len(indexes) < self.thresholds.min_count:
                continue
            repeats = [(words[i].start(), words[i + n - 1].end()) for i in indexes[1:]]
            in_block = [(s - offset, e - offset) for s, e in repeats if s >= offset]
            if in_block:
                examples.append(" ".join(key))
                spans += [token_span(block, s, e) for s, e in in_block]
        if not spans:
            return []
        return [
            Violation(
                self.name, "repeated_ngram", f"repeated word sequence: {examples[0]!r}",
                spans=merge_spans(spans), metadata={"ngrams": tuple(examples)},
            )
        ]  # fmt: skip

    def _sentences(self, block: BlockView, text: str, code: CodeRegions, offset: int) -> list[Violation]:
        seen: set[str] = set()
        spans, examples = [], []
        for match in SENTENCE.finditer(text):
            if code.overlaps(match.start(), match.end()):
                continue
            words = [w.lower() for w in WORD.findall(match.group())]
            if len(words) < self.thresholds.min_sentence_words:
                continue
            normalised = " ".join(words)
            if normalised in seen and match.start() >= offset:
                spans.append(token_span(block, match.start() - offset, match.end() - offset))
                examples.append(match.group().strip())
            seen.add(normalised)
        if not spans:
            return []
        return [
            Violation(
                self.name, "repeated_sentence", f"sentence written twice: {examples[0][:80]!r}",
                spans=merge_spans(spans),
            )
        ]  # fmt: skip


@dataclass(frozen=True)
class BoundaryThresholds:
    min_tokens: int = 8  # length of the duplicated token sequence
    head_tokens: int = 64  # how much of the block's head is compared
    head_slack: int = 4  # the duplicate must start within this many tokens of the block's start
    tail_tokens: int = 128  # how much committed text it is compared with
    min_word_chars: int = 12  # the duplicate must carry this many letters or digits


class BoundaryDuplication:
    """Flags a block whose head (its first 64 tokens, duplicate starting within 4 tokens of the start)
    repeats 8+ consecutive tokens of the last 128 committed tokens. Not checked inside code fences."""

    name = "builtin.boundary_duplication"
    stage = 2
    cost = 0.5
    default_enabled = True
    scope = "block"

    def __init__(self, thresholds: BoundaryThresholds = BoundaryThresholds()) -> None:
        self.thresholds = thresholds

    def validate(self, block: BlockView, ctx: ValidationContext) -> list[Violation]:
        limits = self.thresholds
        tail = block.committed_token_ids[-limits.tail_tokens :]
        head = block.token_ids[: limits.head_tokens]
        if len(tail) < limits.min_tokens or len(head) < limits.min_tokens or fence_open_after(block.committed_text):
            return []
        start, length = _longest_common_run(head, tail, limits.head_slack)
        if length < limits.min_tokens:
            return []
        first, last = block.token_offsets[start][0], block.token_offsets[start + length - 1][1]
        duplicate = block.text[first:last]
        if sum(char.isalnum() for char in duplicate) < limits.min_word_chars:
            return []
        return [
            Violation(
                self.name, "boundary_duplication", f"the block restates the committed text: {duplicate.strip()[:80]!r}",
                spans=((start, start + length),), metadata={"tokens": length},
            )
        ]  # fmt: skip


def _longest_common_run(head: tuple[int, ...], tail: tuple[int, ...], slack: int) -> tuple[int, int]:
    """The longest run of ``head`` starting within ``slack`` positions that also occurs in ``tail``."""
    best_start, best_length = 0, 0
    previous = [0] * (len(tail) + 1)
    for i, token in enumerate(head):
        current = [0] * (len(tail) + 1)
        for j, other in enumerate(tail):
            if token == other:
                current[j + 1] = previous[j] + 1
                start = i - current[j + 1] + 1
                if start <= slack and current[j + 1] > best_length:
                    best_start, best_length = start, current[j + 1]
        previous = current
    return best_start, best_length
