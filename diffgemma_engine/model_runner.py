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

from .loader import LoadedModel


@dataclass
class Prefix:
    """One sequence's encoded prefix."""

    cache: DynamicCache
    length: int  # tokens encoded so far (prompt + committed canvases)
    version: int = 0  # bumps on every commit; keys the stacked-cache reuse
    serial: int = field(default_factory=itertools.count().__next__)  # unique per prefix, unlike id()


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

    def __init__(self, loaded: LoadedModel, compile_decoder: bool = False) -> None:
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

    # -- encoder -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, prompt_ids: Sequence[int]) -> Prefix:
        """Encode the prompt into a fresh cache."""
        cache = DynamicCache(config=self._text_config)
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        self._encode(ids, cache, start=0)
        return Prefix(cache=cache, length=len(prompt_ids))

    @torch.inference_mode()
    def commit(self, prefix: Prefix, canvas: torch.Tensor) -> None:
        """Encode a finished canvas into the prefix cache (the reference's "commit")."""
        self._encode(canvas.to(self.device).reshape(1, -1).clone(), prefix.cache, start=prefix.length)
        prefix.length += canvas.shape[-1]
        prefix.version += 1

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
