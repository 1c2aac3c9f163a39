"""Automatic prefix caching: encoder KV of prompt prefixes shared across requests by content.

The cache is a tree of fixed-size token blocks. A block is keyed by its parent block and its own token
ids, so a block's key names the whole prefix that ends with it — two prompts share a block exactly when
they share every token up to its end. Each block holds the keys and values its tokens produced in every
encoder layer (full-attention and sliding-window layers alike; restoring a prefix keeps only the last
``sliding_window - 1`` tokens of a sliding layer, as computing it would).

A block in use by a running sequence is pinned (reference count); unpinned leaf blocks are evicted least
recently used first, so the stored bytes never exceed the budget. No torch operations happen here
beyond measuring tensor sizes: the model runner slices and concatenates.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

DEFAULT_BLOCK_TOKENS = 64
"""Tokens per cached block: the granularity of sharing (a prefix is reused up to its last whole block)."""


@dataclass(eq=False)
class CachedBlock:
    """One block of ``block_tokens`` tokens: its KV in every encoder layer (``[1, heads, block, dim]``)."""

    parent: CachedBlock | None
    tokens: tuple[int, ...]
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    nbytes: int
    depth: int  # blocks before this one
    pins: int = 0
    children: int = 0
    last_used: int = 0
    serial: int = field(default_factory=itertools.count().__next__)

    @property
    def end(self) -> int:
        """Tokens of the prefix that ends with this block."""
        return (self.depth + 1) * len(self.tokens)


@dataclass
class PromptTokenCounters:
    """Running totals the model runner keeps for every prefill, cache on or off."""

    prompts: int = 0
    hits: int = 0
    cached: int = 0
    computed: int = 0

    def add(self, cached: int, computed: int) -> None:
        self.prompts += 1
        self.hits += cached > 0
        self.cached += cached
        self.computed += computed


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


class PrefixCache:
    """Content-addressed blocks of encoder KV with pinning and LRU eviction within ``budget_bytes``."""

    def __init__(self, budget_bytes: int, block_tokens: int = DEFAULT_BLOCK_TOKENS) -> None:
        if block_tokens < 1:
            raise ValueError("block_tokens must be positive")
        self.budget_bytes = int(budget_bytes)
        self.block_tokens = block_tokens
        self._blocks: dict[tuple[int, tuple[int, ...]], CachedBlock] = {}
        self._evictable: dict[int, CachedBlock] = {}  # unpinned leaves, by serial
        self._clock = itertools.count(1)
        self.stored_bytes = 0
        self.evicted_blocks = 0

    # -- lookup ------------------------------------------------------------------------------------

    def match(self, token_ids: Sequence[int], limit: int | None = None) -> list[CachedBlock]:
        """The longest chain of cached blocks that starts ``token_ids`` (at most ``limit`` tokens); pins
        every block returned (release with :meth:`release`)."""
        size = self.block_tokens
        usable = len(token_ids) if limit is None else min(limit, len(token_ids))
        chain: list[CachedBlock] = []
        parent: CachedBlock | None = None
        for start in range(0, usable - size + 1, size):
            block = self._blocks.get((_serial(parent), tuple(token_ids[start:start + size])))
            if block is None:
                break
            chain.append(block)
            parent = block
        for block in chain:
            self._pin(block)
        return chain

    def lookup(self, parent: CachedBlock | None, tokens: Sequence[int]) -> CachedBlock | None:
        return self._blocks.get((_serial(parent), tuple(tokens)))

    # -- insertion and pinning -----------------------------------------------------------------------

    def insert(self, parent: CachedBlock | None, tokens: Sequence[int], keys: Sequence[torch.Tensor],
               values: Sequence[torch.Tensor]) -> CachedBlock | None:  # fmt: skip
        """Store one block after ``parent`` and pin it; ``None`` (nothing stored) when it cannot fit even
        after evicting every unpinned leaf. An existing identical block is pinned and returned instead."""
        tokens = tuple(tokens)
        existing = self.lookup(parent, tokens)
        if existing is not None:
            self._pin(existing)
            return existing
        nbytes = sum(t.numel() * t.element_size() for t in (*keys, *values))
        if not self._make_room(nbytes, keep=parent):
            return None
        block = CachedBlock(parent, tokens, tuple(keys), tuple(values), nbytes,
                            depth=0 if parent is None else parent.depth + 1)  # fmt: skip
        self._blocks[(_serial(parent), tokens)] = block
        self.stored_bytes += nbytes
        if parent is not None:
            parent.children += 1
            self._evictable.pop(parent.serial, None)
        self._pin(block)
        return block

    def release(self, chain: Sequence[CachedBlock]) -> None:
        """Unpin blocks pinned by :meth:`match` or :meth:`insert`; unpinned leaves become evictable."""
        now = next(self._clock)
        for block in chain:
            block.pins -= 1
            block.last_used = now
            if block.pins == 0 and block.children == 0 and self._is_stored(block):
                self._evictable[block.serial] = block

    def _pin(self, block: CachedBlock) -> None:
        block.pins += 1
        block.last_used = next(self._clock)
        self._evictable.pop(block.serial, None)

    # -- eviction ------------------------------------------------------------------------------------

    def _make_room(self, nbytes: int, keep: CachedBlock | None) -> bool:
        if nbytes > self.budget_bytes:
            return False
        while self.stored_bytes + nbytes > self.budget_bytes:
            candidates = [b for b in self._evictable.values() if b is not keep]
            if not candidates:
                return False
            victim = min(candidates, key=_last_used)
            self._evict(victim)
        return True

    def _evict(self, block: CachedBlock) -> None:
        self._evictable.pop(block.serial, None)
        del self._blocks[(_serial(block.parent), block.tokens)]
        self.stored_bytes -= block.nbytes
        self.evicted_blocks += 1
        parent = block.parent
        if parent is not None:
            parent.children -= 1
            if parent.children == 0 and parent.pins == 0:
                self._evictable[parent.serial] = parent  # keeps its own last use (older than its child's)

    def _is_stored(self, block: CachedBlock) -> bool:
        return self._blocks.get((_serial(block.parent), block.tokens)) is block

    # -- facts ---------------------------------------------------------------------------------------

    @property
    def stored_blocks(self) -> int:
        return len(self._blocks)

    def stats(self, counters: PromptTokenCounters) -> PrefixCacheStats:
        return PrefixCacheStats(
            cached_prompt_tokens=counters.cached,
            computed_prompt_tokens=counters.computed,
            hits=counters.hits,
            lookups=counters.prompts,
            stored_blocks=self.stored_blocks,
            stored_bytes=self.stored_bytes,
            evicted_blocks=self.evicted_blocks,
            budget_bytes=self.budget_bytes,
        )


def _last_used(block: CachedBlock) -> int:
    return block.last_used


def _serial(block: CachedBlock | None) -> int:
    return -1 if block is None else block.serial
