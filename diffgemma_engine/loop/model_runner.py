"""The only module that runs the network: encoder prefill and commit, batched decoder denoising.

Each sequence owns a batch-1 ``DynamicCache`` of its prefix (prompt + committed canvases). A denoising
step stacks the running sequences' caches into one batch — left-padded with an attention mask when
their prefixes differ — and runs one decoder forward over all canvases. The stacked cache is reused
while the set of rows and their prefixes stay the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from diffgemma_engine.config import DEFAULT_PREFILL_CHUNK_TOKENS
from diffgemma_engine.model.loader import LoadedModel
from diffgemma_engine.api.stats import PrefixCacheStats
from diffgemma_engine.loop.prefix_cache import CachedBlock, PrefixCache, PromptTokenCounters


@dataclass
class Prefix:
    """One sequence's encoded prefix."""

    cache: DynamicCache
    length: int  # tokens encoded so far (prompt + committed canvases)
    version: int = 0  # bumps on every commit; keys the stacked-cache reuse
    serial: int = field(default_factory=itertools.count().__next__)  # unique per prefix, unlike id()
    token_ids: list[int] = field(default_factory=list)  # the tokens encoded so far
    cached_tokens: int = 0  # prompt tokens restored from the prefix cache instead of encoded
    chain: list[CachedBlock] = field(default_factory=list)  # pinned prefix-cache blocks, in order
    store: PrefixCache | None = None

    def release(self) -> None:
        """Unpin this prefix's cache blocks (idempotent); the sequence no longer needs them."""
        if self.store is not None:
            self.store.release(self.chain)
        self.chain, self.store = [], None


@dataclass(frozen=True)
class DenoiseRow:
    """One row of a batched decoder step."""

    prefix: Prefix
    canvas: torch.Tensor  # [canvas] token ids
    self_conditioning: torch.Tensor | None  # [canvas, vocab] processed logits of the previous step


class _StackedLayer:
    __slots__ = ("keys", "values")

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys = keys
        self.values = values


class _StackedCache:
    """A read-only batch view of several prefixes, in the shape the decoder attention reads."""

    is_compileable = False

    def __init__(self, layers: list[_StackedLayer]) -> None:
        self.layers = layers


class ModelRunner:
    """Runs the encoder and decoder of one loaded model on its device."""

    def __init__(self, loaded: LoadedModel, compile_decoder: bool = False, prefix_cache: PrefixCache | None = None,
                 prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK_TOKENS) -> None:  # fmt: skip
        self.loaded = loaded
        self.model = loaded.model
        # the first weight in memory: with expert offload, offloaded weights sit on the meta device
        self.device = next(p.device for p in self.model.parameters() if not p.is_meta)
        self.canvas_length = loaded.canvas_length
        self.vocab_size = loaded.vocab_size
        self._text_config = self.model.config.get_text_config(decoder=True)
        self._layer_types = list(self._text_config.layer_types)
        self._stack_key: tuple | None = None
        self._stack: tuple[_StackedCache, dict] | None = None
        self._decoder = torch.compile(self.model.forward, dynamic=True) if compile_decoder else self.model.forward
        self.prefix_cache = prefix_cache
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.prompt_tokens = PromptTokenCounters()
        self._sliding = [layer_type == "sliding_attention" for layer_type in self._layer_types]

    # -- encoder -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, prompt_ids: Sequence[int]) -> Prefix:
        """Encode the prompt into a fresh cache: the longest cached prefix is restored, the rest is
        encoded in chunks of at most ``prefill_chunk_tokens`` (and its whole blocks are cached)."""
        prefix = Prefix(cache=DynamicCache(config=self._text_config), length=0, token_ids=list(prompt_ids),
                        store=self.prefix_cache)  # fmt: skip
        if self.prefix_cache is not None:
            prefix.chain = self.prefix_cache.match(prefix.token_ids, self._window_blocks())
            if prefix.chain:
                self._restore(prefix.cache, prefix.chain)
                prefix.length = prefix.cached_tokens = prefix.chain[-1].end
        try:
            self._extend(prefix, prefix.token_ids[prefix.length:])
        except BaseException:
            prefix.release()
            raise
        self.prompt_tokens.add(prefix.cached_tokens, len(prefix.token_ids) - prefix.cached_tokens)
        return prefix

    @torch.inference_mode()
    def commit(self, prefix: Prefix, canvas: torch.Tensor) -> None:
        """Encode a finished canvas into the prefix cache (the reference's "commit"); its whole blocks
        join the prefix cache, so a later prompt that repeats this answer reuses them."""
        ids = canvas.reshape(-1).tolist()
        prefix.token_ids.extend(ids)
        self._extend(prefix, ids, whole=canvas.to(self.device).reshape(1, -1).clone())
        prefix.version += 1

    def prefix_cache_stats(self) -> PrefixCacheStats:
        """Cumulative cached vs computed prompt tokens, and the cache's contents now."""
        if self.prefix_cache is None:
            return PrefixCache(budget_bytes=0).stats(self.prompt_tokens)
        return self.prefix_cache.stats(self.prompt_tokens)

    def _extend(self, prefix: Prefix, ids: Sequence[int], whole: torch.Tensor | None = None) -> None:
        """Encode ``ids`` after the prefix, ``prefill_chunk_tokens`` at a time (attention memory stays
        bounded by the chunk times the context), storing every block they complete."""
        chunk = self.prefill_chunk_tokens
        for offset in range(0, len(ids), chunk):
            if whole is not None and len(ids) <= chunk:
                piece = whole
            else:
                piece = torch.tensor([list(ids[offset:offset + chunk])], dtype=torch.long, device=self.device)
            start = prefix.length
            recording = prefix.store is not None
            if recording:
                self._record_sliding(prefix.cache, True)
            try:
                self._encode(piece, prefix.cache, start=start)
                prefix.length = start + piece.shape[1]
                if recording:
                    self._store_blocks(prefix, start)
            finally:
                if recording:
                    self._record_sliding(prefix.cache, False)

    def _record_sliding(self, cache: DynamicCache, on: bool) -> None:
        """While on, sliding layers keep every new token's KV (to be stored); off trims them back to the
        ``window - 1`` tokens that computing without recording would have kept."""
        for layer, sliding in zip(cache.layers, self._sliding):
            if not sliding:
                continue
            layer.record_past = on
            keep = layer.sliding_window - 1
            if not on and layer.keys is not None and layer.keys.numel() and layer.keys.shape[-2] > keep:
                layer.keys = layer.keys[:, :, -keep:, :].clone()
                layer.values = layer.values[:, :, -keep:, :].clone()

    def _store_blocks(self, prefix: Prefix, start: int) -> None:
        """Store the blocks that the encode from ``start`` to ``prefix.length`` completed, chained after
        the prefix's last stored block (stops at the first block that cannot be stored)."""
        store, size = prefix.store, prefix.store.block_tokens
        end = prefix.length
        for first in range((start // size) * size, end - size + 1, size):
            depth = first // size
            if len(prefix.chain) != depth:  # the chain broke earlier (a block did not fit)
                return
            keys, values = [], []
            for layer in prefix.cache.layers:
                held = layer.keys.shape[-2]
                offset = first - (end - held)  # where token ``first`` sits in this layer's tensors
                if offset < 0:
                    return  # a sliding layer no longer holds it
                keys.append(layer.keys[:, :, offset:offset + size, :].clone())
                values.append(layer.values[:, :, offset:offset + size, :].clone())
            parent = prefix.chain[-1] if prefix.chain else None
            block = store.insert(parent, prefix.token_ids[first:first + size], keys, values, self._sliding)
            if block is None:
                return
            prefix.chain.append(block)

    def _window_blocks(self) -> int:
        """Blocks that hold the last ``window - 1`` tokens before a block boundary (what a sliding layer
        keeps); 0 without sliding layers."""
        if not any(self._sliding):
            return 0
        keep = int(self._text_config.sliding_window) - 1
        return -(-keep // self.prefix_cache.block_tokens)

    def _restore(self, cache: DynamicCache, chain: Sequence[CachedBlock]) -> None:
        """Fill an empty cache with the chain's KV: every token for full-attention layers, the last
        ``window - 1`` for sliding layers, exactly the state encoding those tokens leaves."""
        length = chain[-1].end
        for index, (layer, sliding) in enumerate(zip(cache.layers, self._sliding)):
            blocks = chain[-self._window_blocks():] if sliding else chain  # match() kept their sliding KV
            keys = torch.cat([block.keys[index] for block in blocks], dim=-2)
            values = torch.cat([block.values[index] for block in blocks], dim=-2)
            layer.update(keys.to(self.device), values.to(self.device))
            if sliding:
                layer.keys = layer.keys[:, :, -(layer.sliding_window - 1):, :].clone()
                layer.values = layer.values[:, :, -(layer.sliding_window - 1):, :].clone()
                layer.cumulative_length = length

    def _encode(self, ids: torch.Tensor, cache: DynamicCache, start: int) -> None:
        length = ids.shape[1]
        positions = torch.arange(start, start + length, dtype=torch.int32, device=self.device).unsqueeze(0)
        attention_mask = torch.ones((1, start + length), dtype=torch.bool, device=self.device)
        encoder = self.model.model.encoder
        dummy = torch.empty((1, length, 0), dtype=self.model.dtype, device=self.device)
        masks = encoder.create_masks_for_generate(
            config=self.model.config,
            inputs_embeds=dummy,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=positions,
        )
        encoder(input_ids=ids, attention_mask=masks, cache=cache, position_ids=positions)

    # -- decoder -----------------------------------------------------------------------------------

    def new_canvas(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(
            0, self.vocab_size, (1, self.canvas_length), generator=generator, device=self.device
        )[0]

    @torch.inference_mode()
    def denoise(self, rows: Sequence[DenoiseRow]) -> torch.Tensor:
        """One decoder forward over every row; returns raw (soft-capped) logits ``[rows, canvas, vocab]``."""
        cache, masks, positions = self._stacked(rows)
        canvases = torch.stack([row.canvas for row in rows]).to(self.device)
        self_conditioning, self_conditioning_mask = self._self_conditioning(rows)
        outputs = self._decoder(
            decoder_input_ids=canvases,
            self_conditioning_logits=self_conditioning,
            self_conditioning_mask=self_conditioning_mask,
            decoder_attention_mask=masks,
            cache=cache,
            decoder_position_ids=positions,
        )
        return outputs.logits

    def _self_conditioning(self, rows: Sequence[DenoiseRow]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        present = [row.self_conditioning is not None for row in rows]
        if not any(present):
            return None, None
        dtype = self.model.model.decoder.embed_tokens.weight.dtype
        if all(present):
            whole = _whole_batch_view(rows)
            if whole is not None:  # the same rows as last step, in order: reuse its logits, no copy
                return whole.to(dtype), None
            return torch.stack([row.self_conditioning.to(dtype) for row in rows]), None
        zeros = torch.zeros((self.canvas_length, self.vocab_size), dtype=dtype, device=self.device)
        stacked = torch.stack([row.self_conditioning.to(dtype) if row.self_conditioning is not None else zeros
                               for row in rows])
        return stacked, torch.tensor(present, dtype=torch.bool, device=self.device)

    def _stacked(self, rows: Sequence[DenoiseRow]) -> tuple[object, dict, torch.Tensor]:
        """The batch's prefix cache, attention masks and canvas positions; rebuilt only when the rows or
        their prefixes change."""
        key = tuple((row.prefix.serial, row.prefix.version) for row in rows)
        if key != self._stack_key:
            self._stack = None  # release the previous batch's stacked KV before building the next one
            positions = torch.stack(
                [torch.arange(row.prefix.length, row.prefix.length + self.canvas_length, dtype=torch.int32)
                 for row in rows]
            ).to(self.device)
            self._stack = (*self._build_stack(rows), positions)
            self._stack_key = key
        return self._stack

    def _build_stack(self, rows: Sequence[DenoiseRow]) -> tuple[object, dict]:
        if len(rows) == 1:
            return rows[0].prefix.cache, {"full_attention": None, "sliding_attention": None}
        layers: list[_StackedLayer] = []
        valid_by_type: dict[str, torch.Tensor] = {}
        for layer_index, layer_type in enumerate(self._layer_types):
            keys = [row.prefix.cache.layers[layer_index].keys for row in rows]
            values = [row.prefix.cache.layers[layer_index].values for row in rows]
            lengths = [k.shape[-2] for k in keys]
            width = max(lengths)
            layers.append(
                _StackedLayer(
                    torch.cat([_left_pad(k, width) for k in keys]),
                    torch.cat([_left_pad(v, width) for v in values]),
                )
            )
            if layer_type not in valid_by_type:
                valid_by_type[layer_type] = torch.tensor(
                    [[index >= width - n for index in range(width)] for n in lengths], device=self.device
                )
        padded = any(not bool(valid.all()) for valid in valid_by_type.values())
        if not padded:
            return _StackedCache(layers), {"full_attention": None, "sliding_attention": None}
        masks = {}
        for layer_type, valid in valid_by_type.items():
            canvas = torch.ones((len(rows), self.canvas_length), dtype=torch.bool, device=self.device)
            keys_valid = torch.cat([valid, canvas], dim=-1)  # [rows, prefix + canvas]
            masks[layer_type] = keys_valid[:, None, None, :].expand(-1, 1, self.canvas_length, -1)
        return _StackedCache(layers), masks


def _whole_batch_view(rows: Sequence[DenoiseRow]) -> torch.Tensor | None:
    """The previous step's ``[rows, canvas, vocab]`` logits if the rows' self-conditioning tensors are
    exactly its rows, in order; ``None`` otherwise."""
    first = rows[0].self_conditioning
    base = first._base if first._base is not None else first[None]
    if first._base is None and len(rows) != 1:
        return None
    if base.dim() != 3 or base.shape[0] != len(rows) or not base.is_contiguous():
        return None
    for index, row in enumerate(rows):
        sc = row.self_conditioning
        if sc.data_ptr() != base[index].data_ptr() or sc.shape != base.shape[1:]:
            return None
    return base


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - tensor.shape[-2]
    if missing == 0:
        return tensor
    return torch.nn.functional.pad(tensor, (0, 0, missing, 0))
