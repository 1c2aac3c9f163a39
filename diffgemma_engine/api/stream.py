"""RequestStream: the caller's handle on one request — a sync and an async iterator of events.

The engine's worker thread pushes events; any number of threads or event loops may wait. Sync and
async consumption share one implementation: a lock-protected deque, a condition for threads, and
futures resolved with ``call_soon_threadsafe`` for event loops.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator

from diffgemma_engine.api.errors import DiffGemmaError, RequestCancelledError
from diffgemma_engine.api.outputs import Event, FinalEvent, GenerationResult


class RequestStream:
    """Events of one request, in order, ending with a :class:`FinalEvent` or an exception."""

    def __init__(self, request_id: str, cancel: Callable[[str, BaseException], None]) -> None:
        self.request_id = request_id
        self._cancel = cancel
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._events: deque[Event | BaseException] = deque()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None
        self._done = False

    # -- producer side (worker thread) ---------------------------------------------------------------

    def push(self, item: Event | BaseException) -> None:
        with self._lock:
            if self._done:
                return
            if isinstance(item, FinalEvent):
                self._result, self._done = item.result, True
            elif isinstance(item, BaseException):
                self._error, self._done = item, True
            self._events.append(item)
            self._ready.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_wake, future)
            except RuntimeError:  # that consumer's event loop is closed; nobody is waiting there
                pass

    # -- consumer side -------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Stop this request's generation at the next engine step; waiting consumers get an error."""
        if not self._done:
            self._cancel(self.request_id, RequestCancelledError(f"request {self.request_id} was cancelled"))

    def result(self, timeout: float | None = None) -> GenerationResult:
        """Block until the request ends; return its result or raise its error."""
        with self._lock:
            if not self._ready.wait_for(lambda: self._done, timeout=timeout):
                raise TimeoutError(f"request {self.request_id} did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result

    def __iter__(self) -> Iterator[Event]:
        while True:
            with self._lock:
                self._ready.wait_for(lambda: bool(self._events))
                item = self._events.popleft()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, FinalEvent):
                return

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._aiterate()

    async def _aiterate(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                item = self._events.popleft() if self._events else None
                if item is None:
                    future = loop.create_future()
                    self._waiters.append((loop, future))
            if item is None:
                await future
                continue
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, FinalEvent):
                return

    async def aresult(self) -> GenerationResult:
        """Await the request's end without blocking the event loop."""
        async for event in self:
            if isinstance(event, FinalEvent):
                return event.result
        raise DiffGemmaError(f"request {self.request_id} ended without a result")  # unreachable by contract


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
