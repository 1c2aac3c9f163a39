"""Counters an engine reports about itself: torch-free values read by ``/metrics`` and health reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrefixCacheStats:
    """Cumulative counters since the engine started.

    ``cached_prompt_tokens`` were served from the cache, ``computed_prompt_tokens`` were encoded
    (their sum is every prompt token admitted). ``stored_bytes`` is the cache's size now.
    """

    cached_prompt_tokens: int
    computed_prompt_tokens: int
    hits: int  # prompts that reused at least one block
    lookups: int  # prompts prefilled
    stored_blocks: int
    stored_bytes: int
    evicted_blocks: int
    budget_bytes: int
    dropped_sliding_blocks: int = 0  # interior blocks whose sliding-layer KV was freed under pressure


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of an engine's load: what ``/metrics`` exports as gauges.

    ``waiting`` counts requests accepted but not yet running (queued for a running slot, or handed to
    the worker and not yet seen by the scheduler); ``running`` those being denoised now, at most
    ``max_running``. ``prefix_cache`` is ``None`` where the engine has no prefix cache to report (a
    remote engine).
    """

    running: int
    waiting: int
    max_running: int
    prefix_cache: PrefixCacheStats | None = None
