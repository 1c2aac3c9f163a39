"""Block checks off the engine's worker thread, so a slow validator delays only its own request.

When a block of a request with validators finishes denoising, the core hands the check (the checker's
``check`` and, for a failure, ``decide``) to a :class:`ValidationPool` thread and the sequence waits in
the *validating* state; the worker keeps stepping every other sequence. When the check is done the pool
wakes the worker, which applies the judgement (commit, repair, regenerate, give up) on its own thread.
The request's ``timeout`` is enforced while it waits, and so is a per-block limit
(``EngineConfig.validation_timeout``), which fails the request with :class:`ValidatorTimeoutError` naming
the validator that was running. A check that is abandoned keeps its pool thread until it returns; the
threads are daemons, so none of them can hold up the interpreter's exit.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_VALIDATION_WORKERS = 4
DEFAULT_VALIDATION_TIMEOUT_S = 60.0
INLINE_WAIT_S = 0.05
"""How long a step waits for the checks it started: fast checks settle in the step that finished their block
(keeping batches the same as a synchronous check would), slow ones leave the step after this long."""


@dataclass(eq=False)
class ValidationJob:
    """One block check of one sequence."""

    sequence: Any
    check: Callable[[], Any]
    apply: Callable[[Any], None]
    checker: Any
    started_at: float = field(default_factory=time.perf_counter)
    outcome: Any = None
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def running_validator(self) -> str | None:
        """The validator the checker is running now, if it says (``ValidatorChecker.running_validator``)."""
        return getattr(self.checker, "running_validator", None)


class ValidationPool:
    """A few daemon threads running block checks; the worker thread collects the finished ones."""

    def __init__(self, workers: int = DEFAULT_VALIDATION_WORKERS,
                 timeout: float | None = DEFAULT_VALIDATION_TIMEOUT_S,
                 wake: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.workers = workers
        self.timeout = timeout
        self.wake = wake or (lambda: None)
        self._queue: queue.SimpleQueue[ValidationJob | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._finished: deque[ValidationJob] = deque()
        self.pending: dict[int, ValidationJob] = {}  # id(sequence) -> its check in flight

    def submit(self, sequence: Any, check: Callable[[], Any], apply: Callable[[Any], None], checker: Any) -> ValidationJob:
        job = ValidationJob(sequence, check, apply, checker)
        self.pending[id(sequence)] = job
        if len(self._threads) < self.workers:
            thread = threading.Thread(target=self._serve, name=f"diffgemma-validate-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._queue.put(job)
        return job

    def forget(self, sequence: Any) -> None:
        """The sequence ended (failed, cancelled, timed out): its check's judgement will be dropped."""
        self.pending.pop(id(sequence), None)

    def is_validating(self, sequence: Any) -> bool:
        return id(sequence) in self.pending

    @property
    def has_finished(self) -> bool:
        return bool(self._finished)

    def wait(self, jobs: list[ValidationJob], timeout: float) -> None:
        """Wait up to ``timeout`` seconds in all for ``jobs`` to finish."""
        deadline = time.perf_counter() + timeout
        for job in jobs:
            if not job.finished.wait(max(0.0, deadline - time.perf_counter())):
                return

    def collect(self) -> list[ValidationJob]:
        """Finished checks whose sequence still waits for them, oldest first."""
        ready = []
        while self._finished:
            job = self._finished.popleft()
            if self.pending.get(id(job.sequence)) is job:
                del self.pending[id(job.sequence)]
                ready.append(job)
        return ready

    def overdue(self, now: float) -> list[ValidationJob]:
        if self.timeout is None:
            return []
        return [job for job in self.pending.values() if not job.finished.is_set() and now > job.started_at + self.timeout]

    def next_due(self) -> float | None:
        """When the earliest check in flight runs over the per-block limit (``perf_counter`` time)."""
        if self.timeout is None or not self.pending:
            return None
        return min(job.started_at for job in self.pending.values()) + self.timeout

    def close(self, timeout: float = 2.0) -> None:
        """Stop the threads, waiting up to ``timeout`` seconds in all for checks still running.

        A check in native code (a regex, a schema) must not outlive the engine: at interpreter exit a daemon
        thread still inside an extension while the runtime tears down aborts the process."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _serve(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self.pending.get(id(job.sequence)) is job:  # skip checks whose request already ended
                try:
                    job.outcome = job.check()
                except BaseException as error:  # handed to the worker, which fails the request with it
                    job.error = error
            job.finished.set()
            self._finished.append(job)
            self.wake()
