"""Which sequences run: FIFO admission into a running set bounded by a request count and a token
budget. No torch.

Back-pressure (how many requests may wait at all) is the service's job: it refuses new requests with
``EngineOverloadedError`` before they reach the core, so the core never drops accepted work.
"""

from __future__ import annotations

from collections import deque

from diffgemma_engine.loop.sequence import Sequence


class Scheduler:
    """FIFO admission; every running sequence in its denoise phase steps every engine step.

    A waiting request is admitted while fewer than ``max_running`` run and, when ``max_running_tokens``
    is set, while the running requests' token budgets (:attr:`Sequence.budget_tokens`) plus its own stay
    within it. A request larger than the whole budget is admitted alone, so nothing waits forever.
    """

    def __init__(self, max_running: int, max_running_tokens: int | None = None) -> None:
        self.max_running = max_running
        self.max_running_tokens = max_running_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, sequence: Sequence) -> None:
        self.waiting.append(sequence)

    def admit(self) -> list[Sequence]:
        """Move waiting sequences into free running slots; returns the newly admitted ones."""
        admitted = []
        while self.waiting and len(self.running) < self.max_running and self._fits(self.waiting[0]):
            sequence = self.waiting.popleft()
            self.running.append(sequence)
            admitted.append(sequence)
        return admitted

    @property
    def running_tokens(self) -> int:
        return sum(sequence.budget_tokens for sequence in self.running)

    def _fits(self, sequence: Sequence) -> bool:
        if self.max_running_tokens is None or not self.running:
            return True
        return self.running_tokens + sequence.budget_tokens <= self.max_running_tokens

    def denoising(self) -> list[Sequence]:
        return [s for s in self.running if s.block is not None and not s.block.done]

    def remove(self, sequence: Sequence) -> None:
        sequence.release()
        if sequence in self.running:
            self.running.remove(sequence)
        elif sequence in self.waiting:
            self.waiting.remove(sequence)

    def all(self) -> list[Sequence]:
        return [*self.running, *self.waiting]

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)
