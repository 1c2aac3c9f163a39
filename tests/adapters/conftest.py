"""Fixtures for the adapter tests: the shared tiny-random engine, engines that record or script requests,
a second tiny checkpoint on disk (for per-call model overrides), and an event-loop ticker."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from adapter_support import RecordingEngine, Submitted  # noqa: F401  (re-exported for the fixtures)

from diffgemma_engine import (
    BlockEvent,
    Engine,
    FinalEvent,
    GenerationResult,
    GenerationStats,
    RequestStream,
    SamplingParams,
    Usage,
    get_engine,
)

FAST = {"model": "tiny-random", "max_tokens": 24, "max_denoising_steps": 4, "seed": 3}
"""Adapter settings for tests that are not about output quality: a few cheap denoising steps, seeded."""


@pytest.fixture
def shared_engine() -> Engine:
    """The process-wide tiny-random engine every ``model="tiny-random"`` adapter resolves to.

    Looked up per test: a test that shuts the shared engines down (the CLI's) must not leave later tests
    holding a dead engine.
    """
    return get_engine("tiny-random")


class ScriptedEngine(RecordingEngine):
    """Answers each request with the next scripted text, split into blocks of ``block`` tokens.

    Everything else (tokenizer, chat template, context length) is the real tiny-random engine's, so the
    adapters format prompts exactly as for a real model; only the model's output is scripted.
    """

    def __init__(self, engine: Engine, outputs: Sequence[str], block: int = 8, finish_reason: str = "stop") -> None:
        super().__init__(engine)
        self.outputs = list(outputs)
        self.block = block
        self.finish_reason = finish_reason
        self._ids = itertools.count()

    def submit(self, prompt: str | None = None, params: SamplingParams | None = None, **kwargs: Any) -> RequestStream:
        if not self.outputs:
            raise AssertionError("the scripted engine ran out of outputs")
        request_id = f"scripted-{next(self._ids)}"
        tokenizer = self.inner.tokenizer
        prompt_ids = tokenizer(prompt or self.inner.render_chat(kwargs["messages"]), add_special_tokens=False)["input_ids"]
        ids = list(tokenizer(self.outputs.pop(0), add_special_tokens=False)["input_ids"])
        handle = RequestStream(request_id, lambda _id, _error: None)
        self.requests.append(Submitted(prompt, params, kwargs.get("messages"), handle))
        for index, start in enumerate(range(0, len(ids), self.block)):
            block = ids[start : start + self.block]
            text = tokenizer.decode(block, skip_special_tokens=True)
            handle.push(BlockEvent(request_id, index, text, tuple(block), steps=1))
        result = GenerationResult(
            request_id=request_id,
            text=tokenizer.decode(ids, skip_special_tokens=True),
            token_ids=tuple(ids),
            finish_reason=self.finish_reason,
            usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(ids)),
            stats=GenerationStats(blocks=max(1, -(-len(ids) // self.block))),
            seed=0,
        )
        handle.push(FinalEvent(result))
        return handle


@pytest.fixture
def recording_engine(shared_engine: Engine) -> RecordingEngine:
    return RecordingEngine(shared_engine)


@pytest.fixture
def scripted(shared_engine: Engine):
    """``scripted("out1", "out2", ...)`` -> a :class:`ScriptedEngine` answering with those texts in turn."""

    def make(*outputs: str, **kwargs: Any) -> ScriptedEngine:
        return ScriptedEngine(shared_engine, outputs, **kwargs)

    return make


@dataclass
class Ticker:
    """Counts event-loop turns while it runs: a blocked loop stops the count."""

    interval: float = 0.002
    ticks: int = 0
    _task: asyncio.Task | None = field(default=None, repr=False)

    async def __aenter__(self) -> Ticker:
        async def tick() -> None:
            while True:
                await asyncio.sleep(self.interval)
                self.ticks += 1

        self._task = asyncio.get_running_loop().create_task(tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def ticks_during(awaitable: Any) -> tuple[Any, int, float]:
    """Await ``awaitable`` while a ticker runs; returns (result, ticks, seconds)."""
    async with Ticker() as ticker:
        start = time.perf_counter()
        result = await awaitable
        elapsed = time.perf_counter() - start
    return result, ticker.ticks, elapsed


def wait_done(handle: RequestStream, timeout: float = 30.0) -> None:
    """Wait until ``handle`` has ended (result, error or cancellation)."""
    deadline = time.monotonic() + timeout
    while not handle.done and time.monotonic() < deadline:
        time.sleep(0.005)


@pytest.fixture
def fast() -> dict[str, Any]:
    """A fresh copy of :data:`FAST`."""
    return dict(FAST)


@pytest.fixture
def measure_ticks():
    """``await measure_ticks(coro)`` -> (result, ticks, seconds); see :func:`ticks_during`."""
    return ticks_during


@pytest.fixture
def until_done():
    """``until_done(handle)`` waits (bounded) for a request to end; see :func:`wait_done`."""
    return wait_done
