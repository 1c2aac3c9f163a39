"""Automatic prefix caching: encoder KV of prompt prefixes shared across requests by content.

The cache is a tree of fixed-size token blocks. A block is keyed by its parent block and its own token
ids, so a block's key names the whole prefix that ends with it — two prompts share a block exactly when
they share every token up to its end. Each block holds the keys and values its tokens produced in every
encoder layer (full-attention and sliding-window layers alike; restoring a prefix keeps only the last
``sliding_window - 1`` tokens of a sliding layer, as computing it would).

A block in use by a running sequence is pinned (reference count): it stays, so the sequence can chain
the blocks it computes next after it. Under memory pressure the cache frees, least recently used first,
either an unpinned leaf block (all of it) or the sliding-layer KV of an interior block (shallowest first
on ties; a running sequence never reads it again, its own cache holds the state). A match only needs
sliding KV for the blocks within one window before its end, so a match is cut back to the longest end
whose window is still whole. The stored bytes never exceed the budget. No torch operations happen here
beyond measuring tensor sizes: the model runner slices and concatenates.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from diffgemma_engine.api.stats import PrefixCacheStats

if TYPE_CHECKING:  # no torch import at run time: the stats type is importable without torch
    import torch

DEFAULT_BLOCK_TOKENS = 64
"""Tokens per cached block: the granularity of sharing (a prefix is reused up to its last whole block)."""


@dataclass(eq=False)
class CachedBlock:
    """One block of ``block_tokens`` tokens: its KV in every encoder layer (``[1, heads, block, dim]``)."""

    parent: CachedBlock | None
    tokens: tuple[int, ...]
    keys: list[torch.Tensor | None]  # None: a sliding layer's KV, dropped
    values: list[torch.Tensor | None]
    sliding: tuple[bool, ...]  # per layer
    nbytes: int
    depth: int  # blocks before this one
    has_sliding: bool = True  # the sliding layers' KV is held
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
        self.dropped_sliding_blocks = 0

    # -- lookup ------------------------------------------------------------------------------------

    def match(self, token_ids: Sequence[int], window_blocks: int = 0, limit: int | None = None) -> list[CachedBlock]:
        """The longest chain of cached blocks that starts ``token_ids`` (at most ``limit`` tokens) whose
        last ``window_blocks`` blocks hold their sliding-layer KV; pins every block returned (release
        with :meth:`release`)."""
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
        end = len(chain)
        while end > 0 and not all(block.has_sliding for block in chain[max(0, end - window_blocks):end]):
            end -= 1
        chain = chain[:end]
        for block in chain:
            self._pin(block)
        return chain

    def lookup(self, parent: CachedBlock | None, tokens: Sequence[int]) -> CachedBlock | None:
        return self._blocks.get((_serial(parent), tuple(tokens)))

    # -- insertion and pinning -----------------------------------------------------------------------

    def insert(self, parent: CachedBlock | None, tokens: Sequence[int], keys: Sequence[torch.Tensor],
               values: Sequence[torch.Tensor], sliding: Sequence[bool] | None = None,
               ) -> CachedBlock | None:  # fmt: skip
        """Store one block after ``parent`` and pin it; ``None`` (nothing stored) when it cannot fit even
        after freeing everything unpinned. An existing identical block is pinned and returned instead
        (given back its sliding KV if that was dropped and fits). ``sliding`` marks sliding layers."""
        tokens = tuple(tokens)
        sliding = tuple(sliding) if sliding is not None else (False,) * len(keys)
        existing = self.lookup(parent, tokens)
        if existing is not None:
            self._pin(existing)
            if not existing.has_sliding:
                self._restore_sliding(existing, keys, values)
            return existing
        nbytes = sum(_bytes(t) for t in (*keys, *values))
        if not self._make_room(nbytes, keep=parent):
            return None
        block = CachedBlock(parent, tokens, list(keys), list(values), sliding, nbytes,
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
            leaves = [(b.last_used, 1, b.depth, b.serial, b) for b in self._evictable.values() if b is not keep]
            interior = [(b.last_used, 0, b.depth, b.serial, b) for b in self._blocks.values()
                        if b.children > 0 and b.has_sliding and any(b.sliding)]  # fmt: skip
            if not leaves and not interior:
                return False
            _, is_leaf, _, _, victim = min(leaves + interior)
            if is_leaf:
                self._evict(victim)
            else:
                self._drop_sliding(victim)
        return True

    def _drop_sliding(self, block: CachedBlock) -> None:
        freed = 0
        for index, sliding in enumerate(block.sliding):
            if sliding:
                freed += _bytes(block.keys[index]) + _bytes(block.values[index])
                block.keys[index] = block.values[index] = None
        block.has_sliding = False
        block.nbytes -= freed
        self.stored_bytes -= freed
        self.dropped_sliding_blocks += 1

    def _restore_sliding(self, block: CachedBlock, keys: Sequence[torch.Tensor],
                         values: Sequence[torch.Tensor]) -> None:  # fmt: skip
        needed = sum(_bytes(keys[i]) + _bytes(values[i]) for i, sliding in enumerate(block.sliding) if sliding)
        if not self._make_room(needed, keep=block):
            return
        for index, sliding in enumerate(block.sliding):
            if sliding:
                block.keys[index], block.values[index] = keys[index], values[index]
        block.has_sliding = True
        block.nbytes += needed
        self.stored_bytes += needed

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
            dropped_sliding_blocks=self.dropped_sliding_blocks,
        )


def _bytes(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.numel() * tensor.element_size()


def _serial(block: CachedBlock | None) -> int:
    return -1 if block is None else block.serial
