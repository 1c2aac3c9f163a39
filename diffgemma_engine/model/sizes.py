"""Sizes of a DiffusionGemma model's parts, counted on the meta device: parameters by group, weight
memory per weight mode (with the exact quantized layout of :mod:`diffgemma_engine.model.quantization`),
the KV cache per token and the sampler's buffers. The planner adds them up into a plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffgemma_engine.api.errors import InvalidRequestError
from diffgemma_engine.model.checkpoint import drop_vision
from diffgemma_engine.model.memory import DTYPE_BYTES, HELD_LOGITS_BUFFERS, SAMPLER_EXTRA_LOGITS_BUFFERS
from diffgemma_engine.model.quantization import quantization_targets, quantized_nbytes

WEIGHT_MODES = ("fp32", "bf16", "int8", "int4")
"""The weight modes a plan compares."""


@dataclass(frozen=True)
class ParameterCounts:
    """Unique parameters (tied encoder/decoder weights counted once) by group."""

    experts: int  # fused 3-D MoE expert tensors
    linear: int  # every other nn.Linear of the text model (attention, shared MLP, router, self-conditioning)
    embeddings: int  # the token embedding (tied with lm_head)
    norms: int  # RMSNorm weights, router scales and other 1-D parameters of the text model
    vision: int  # vision tower and its projection into the text model (never placed for text-only use)
    active_experts: int = 0  # expert parameters one token runs through: experts x top_k / num_experts

    @property
    def total(self) -> int:
        return self.experts + self.linear + self.embeddings + self.norms + self.vision

    @property
    def placed(self) -> int:
        """Parameters the text-only engine loads onto its device: everything but the vision modules."""
        return self.total - self.vision

    @property
    def active(self) -> int:
        """Parameters one token runs through: the top-k routed experts' share plus every other text
        parameter (the tied embedding included, as published counts do)."""
        return self.active_experts + self.linear + self.embeddings + self.norms


@dataclass(frozen=True)
class WeightMemory:
    """Weight bytes in one mode: ``quantized_bytes`` (codes + scales) plus ``floating_bytes`` (the rest)."""

    mode: str  # "fp32", "bf16", "int8" or "int4"
    quantized_bytes: int
    floating_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.quantized_bytes + self.floating_bytes


@dataclass(frozen=True)
class KVCacheSize:
    """KV cache geometry and size for one request."""

    bytes_per_token: int  # all layers, before the sliding-window cap
    sliding_layers: int
    full_layers: int
    sliding_window: int
    element_bytes: int
    context: int
    bytes_per_request: int  # at ``context``, sliding layers capped at the window


@dataclass(frozen=True)
class SamplerSize:
    """Logits-sized buffers each running request needs during a denoising step."""

    canvas_length: int
    vocab_size: int
    logits_bytes: int  # one fp32 [canvas, vocab] buffer
    buffers_per_row: float  # HELD_LOGITS_BUFFERS + SAMPLER_EXTRA_LOGITS_BUFFERS

    @property
    def bytes_per_row(self) -> int:
        return int(self.logits_bytes * self.buffers_per_row)


def meta_model(config: Any, *, text_only: bool = False) -> torch.nn.Module:
    """The model built on the meta device: every parameter has its real shape and no storage.
    ``text_only``: without the vision modules, i.e. what the engine actually places."""
    from transformers import DiffusionGemmaForBlockDiffusion

    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion(config)
    if text_only:
        drop_vision(model)
    return model


def count_parameters(model: torch.nn.Module) -> ParameterCounts:
    """Unique parameters of a DiffusionGemma model by group (works on meta and real models)."""
    groups = dict.fromkeys(("experts", "linear", "embeddings", "norms", "vision"), 0)
    kinds: dict[int, str] = {}
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) in kinds:
                continue
            full_name = f"{module_name}.{name}" if module_name else name
            kinds[id(parameter)] = _group_of(full_name, module, parameter)
            groups[kinds[id(parameter)]] += parameter.numel()
    return ParameterCounts(**groups, active_experts=_active_experts(model, groups["experts"]))


def _active_experts(model: torch.nn.Module, experts: int) -> int:
    text = model.config.get_text_config(decoder=True) if hasattr(model, "config") else None
    total, top_k = getattr(text, "num_experts", None), getattr(text, "top_k_experts", None)
    if not experts or not total or not top_k:
        return experts
    return experts * int(top_k) // int(total)


def _group_of(name: str, module: torch.nn.Module, parameter: torch.Tensor) -> str:
    if ".vision_tower." in f".{name}" or ".embed_vision." in f".{name}":
        return "vision"
    if parameter.dim() == 3 and name.rsplit(".", 1)[-1] in ("gate_up_proj", "down_proj"):
        return "experts"
    if isinstance(module, torch.nn.Embedding):
        return "embeddings"
    if isinstance(module, torch.nn.Linear):
        return "linear"
    return "norms"


def weight_memory(model: torch.nn.Module, mode: str, dtype: str = "bfloat16") -> WeightMemory:
    """Weight bytes of ``model`` in ``mode`` ("fp32", "bf16", "int8", "int4"); quantized modes keep the
    rest, and their scales, in ``dtype``."""
    if mode not in WEIGHT_MODES:
        raise InvalidRequestError("mode", f"must be one of {WEIGHT_MODES}, got {mode!r}")
    total = unique_elements(model)
    if mode in ("fp32", "bf16"):
        return WeightMemory(mode, 0, total * (4 if mode == "fp32" else 2))
    base = dtype_bytes(dtype)
    targets = quantization_targets(model, mode)
    quantized = sum(quantized_nbytes(target.shape, mode, base) for target in targets)
    target_elements = sum(_numel(target.shape) for target in targets)
    return WeightMemory(mode, quantized, (total - target_elements) * base)


def unique_elements(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def kv_cache_size(text_config: Any, context: int, element_bytes: int = 2) -> KVCacheSize:
    """KV bytes for one request holding ``context`` tokens (keys and values, every layer)."""
    check_positive_int("context", context)
    per_token = capped = sliding = full = 0
    window = int(text_config.sliding_window)
    for index, layer_type in enumerate(text_config.layer_types):
        layer = text_config.per_layer_config[index]
        layer_bytes = 2 * int(layer.num_key_value_heads) * int(layer.head_dim) * element_bytes
        per_token += layer_bytes
        if layer_type == "sliding_attention":
            sliding += 1
            capped += layer_bytes * min(context, window)
        else:
            full += 1
            capped += layer_bytes * context
    return KVCacheSize(per_token, sliding, full, window, element_bytes, context, capped)


def sampler_size(canvas_length: int, vocab_size: int) -> SamplerSize:
    """Sampler buffers per running request at this canvas and vocabulary."""
    logits = canvas_length * vocab_size * 4
    return SamplerSize(canvas_length, vocab_size, logits, HELD_LOGITS_BUFFERS + SAMPLER_EXTRA_LOGITS_BUFFERS)


def dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise InvalidRequestError("dtype", f"must be one of {tuple(DTYPE_BYTES)}, got {dtype!r}")
    return DTYPE_BYTES[dtype]


def check_positive_int(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(field, f"must be a positive int, got {value!r}")
