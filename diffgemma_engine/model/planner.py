"""Memory planner: will a DiffusionGemma checkpoint fit a given GPU, with which quantization and batch?

Reads only a ``config.json`` (a checkpoint directory, a path to the file, a dict, or a built-in name),
builds the model on the **meta device** (no weights are allocated) to count parameters exactly by group,
and adds up, for a context length and a number of concurrent requests:

* weights for each mode (fp32, bf16, int8 and int4 weight-only; the quantized sizes use the exact
  storage layout of :mod:`diffgemma_engine.model.quantization`, scales included) of what the text-only
  engine places: the vision tower is counted but never loaded;
* the KV cache: ``2 x kv_heads x head_dim x bytes`` per token per layer, with sliding-window layers
  capped at the window and full-attention layers using their own head width and KV heads
  (``per_layer_config``);
* the sampler buffers of each running request at the real vocabulary and canvas: the step's fp32
  logits ``[canvas, vocab]``, the held self-conditioning logits, and the sampler's measured
  transient extra (:data:`SAMPLER_EXTRA_LOGITS_BUFFERS`);
* a verdict per common card size after a stated headroom (:data:`HEADROOM_FRACTION` of the card plus
  :data:`HEADROOM_FIXED_BYTES` for the CUDA context and activations).

:func:`safe_max_running` turns a plan into a default number of concurrent sequences for a device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from diffgemma_engine.api.errors import InvalidRequestError
from diffgemma_engine.model.quantization import (
    quantization_targets,
    quantized_nbytes,
    validate_mode,
)
from diffgemma_engine.model.checkpoint import REAL_CHECKPOINT, drop_vision, load_plan_config

GIB = 1 << 30
CARD_SIZES_GB = (8, 12, 16, 24, 48, 80)
"""Common GPU memory sizes. A "24 GB" card has 24 GiB (24,576 MiB) of device memory."""

HEADROOM_FRACTION = 0.10
"""Share of device memory kept free: allocator fragmentation and everything not modelled below."""

HEADROOM_FIXED_BYTES = 1 * GIB
"""Also kept free: the CUDA context (~0.3-0.5 GiB) and the decoder/encoder forward activations."""

SAMPLER_EXTRA_LOGITS_BUFFERS = 1.13
"""Transient ``[canvas, vocab]`` fp32 buffers one row's sampling step allocates on top of the logits
it works on, as measured for this engine's sampler by ``benchmarks/bench_sampler_memory.py``
(resident high-water mark of one row's step at the real vocabulary and canvas; transformers'
reference step needs several times more)."""

HELD_LOGITS_BUFFERS = 2
"""Logits-sized fp32 buffers every running request holds: the step's logits and the previous step's
logits kept for self-conditioning."""

KV_COPIES_WHEN_BATCHED = 2
"""Copies of a running request's KV cache while two or more requests are denoised together: its own
cache and the padded batch stack the model runner keeps between steps (the runner drops the old stack
before building a new one)."""

DEFAULT_CONTEXT = 8192
DEFAULT_PREFIX_CACHE_BYTES = 1 * GIB
"""The prefix cache's budget when the caller sets none; on a device, at most what is left after the
running requests (see :func:`default_prefix_cache_bytes`)."""
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_WEIGHT_MODES = ("fp32", "bf16", "int8", "int4")


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


@dataclass(frozen=True)
class CardVerdict:
    """Whether the plan fits one card size, and how many requests at this context would."""

    name: str
    memory_bytes: int
    usable_bytes: int  # after the headroom
    fits: bool  # weights + ``max_batch`` requests fit in ``usable_bytes``
    max_concurrent: int  # requests at this context that fit (0: not even one)


@dataclass(frozen=True)
class MemoryPlan:
    """The whole plan. ``total_bytes`` excludes the headroom; ``required_bytes`` is the card it needs."""

    source: str
    hidden_size: int
    num_layers: int
    num_experts: int
    top_k_experts: int
    vocab_size: int
    canvas_length: int
    max_position_embeddings: int
    parameters: ParameterCounts
    weight_options: tuple[WeightMemory, ...]
    quantization: str | None
    dtype: str
    weight_bytes: int
    max_batch: int
    kv: KVCacheSize
    kv_copies: int
    sampler: SamplerSize
    per_request_bytes: int
    total_bytes: int
    required_bytes: int
    verdicts: tuple[CardVerdict, ...]
    prefix_cache_bytes: int = 0  # reserved for the shared prefix cache (EngineConfig.prefix_cache_bytes)

    @property
    def weight_mode(self) -> str:
        """The weight mode this plan assumes ("int4", "int8", "bf16", "fp32" or "fp16")."""
        if self.quantization:
            return self.quantization
        return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[self.dtype]


# -- counting ---------------------------------------------------------------------------------------

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
    if mode not in _WEIGHT_MODES:
        raise InvalidRequestError("mode", f"must be one of {_WEIGHT_MODES}, got {mode!r}")
    total = _unique_elements(model)
    if mode in ("fp32", "bf16"):
        return WeightMemory(mode, 0, total * (4 if mode == "fp32" else 2))
    base = dtype_bytes(dtype)
    targets = quantization_targets(model, mode)
    quantized = sum(quantized_nbytes(target.shape, mode, base) for target in targets)
    target_elements = sum(_numel(target.shape) for target in targets)
    return WeightMemory(mode, quantized, (total - target_elements) * base)


def _unique_elements(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def kv_cache_size(text_config: Any, context: int, element_bytes: int = 2) -> KVCacheSize:
    """KV bytes for one request holding ``context`` tokens (keys and values, every layer)."""
    _check_positive_int("context", context)
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


# -- the plan ---------------------------------------------------------------------------------------

def plan_memory(
    source: Any = REAL_CHECKPOINT,
    *,
    quantization: str | None = None,
    dtype: str = "bfloat16",
    context: int | None = None,
    max_batch: int = 1,
    card_sizes_gb: Sequence[int] = CARD_SIZES_GB,
    prefix_cache_bytes: int = 0,
) -> MemoryPlan:
    """Plan the device memory of serving ``source`` (see :func:`load_plan_config`).

    Args:
        quantization: ``None``, ``"int8"`` or ``"int4"`` (weight-only).
        dtype: the compute dtype: unquantized weights, scales, and the KV cache are held in it.
        context: tokens each request keeps in its KV cache (prompt + generated); default
            :data:`DEFAULT_CONTEXT` or the model's whole window if that is shorter.
        max_batch: requests denoised together.
        card_sizes_gb: card sizes to give a verdict for.
    """
    quantization = validate_mode(quantization)
    element_bytes = dtype_bytes(dtype)
    _check_positive_int("max_batch", max_batch)
    if context is not None:
        _check_positive_int("context", context)
    for size in card_sizes_gb:
        if isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0:
            raise InvalidRequestError("card_sizes_gb", f"must be positive numbers, got {size!r}")
    config, label = load_plan_config(source)
    text = config.text_config
    if context is None:
        context = min(DEFAULT_CONTEXT, int(text.max_position_embeddings))
    if context > int(text.max_position_embeddings):
        raise InvalidRequestError(
            "context", f"{context} exceeds the model's {text.max_position_embeddings}-token context window"
        )
    model = meta_model(config, text_only=True)  # the weights the engine places (no vision tower)
    options = tuple(weight_memory(model, mode, dtype) for mode in _WEIGHT_MODES)
    if quantization is not None:
        weights = next(option for option in options if option.mode == quantization).total_bytes
    else:
        weights = _unique_elements(model) * element_bytes
    kv = kv_cache_size(text, context, element_bytes)
    sampler = sampler_size(int(config.canvas_length), int(text.vocab_size))
    kv_copies = _kv_copies(max_batch)
    per_request = kv.bytes_per_request * kv_copies + sampler.bytes_per_row
    total = weights + max_batch * per_request + prefix_cache_bytes
    plan = MemoryPlan(
        source=label,
        hidden_size=int(text.hidden_size),
        num_layers=int(text.num_hidden_layers),
        num_experts=int(text.num_experts or 0),
        top_k_experts=int(text.top_k_experts or 0),
        vocab_size=int(text.vocab_size),
        canvas_length=int(config.canvas_length),
        max_position_embeddings=int(text.max_position_embeddings),
        parameters=count_parameters(meta_model(config)),
        weight_options=options,
        quantization=quantization,
        dtype=dtype,
        weight_bytes=weights,
        max_batch=max_batch,
        kv=kv,
        kv_copies=kv_copies,
        sampler=sampler,
        per_request_bytes=per_request,
        total_bytes=total,
        required_bytes=_required_device_bytes(total),
        verdicts=(),
        prefix_cache_bytes=prefix_cache_bytes,
    )
    verdicts = tuple(_verdict(plan, size) for size in card_sizes_gb)
    return _replace_verdicts(plan, verdicts)


def safe_max_running(plan: MemoryPlan, device_memory_bytes: int) -> int:
    """How many requests at the plan's context can run together on a device with this much memory.

    Uses the plan's weights, KV cache and sampler sizes and the planner's headroom. Returns 0 when
    the weights alone, or the weights plus one request, do not fit.
    """
    if isinstance(device_memory_bytes, bool) or not isinstance(device_memory_bytes, int) or device_memory_bytes <= 0:
        raise InvalidRequestError("device_memory_bytes", f"must be a positive int, got {device_memory_bytes!r}")
    free = usable_bytes(device_memory_bytes) - plan.weight_bytes - plan.prefix_cache_bytes
    if free < request_bytes(plan, 1):
        return 0
    batched = plan.kv.bytes_per_request * KV_COPIES_WHEN_BATCHED + plan.sampler.bytes_per_row
    return max(1, int(free // batched))


def default_prefix_cache_bytes(plan: MemoryPlan, device_memory_bytes: int, max_running: int) -> int:
    """The prefix cache budget when the caller sets none: what is left after the weights and
    ``max_running`` requests at the plan's context, at most :data:`DEFAULT_PREFIX_CACHE_BYTES` — so the
    cache never costs a running slot."""
    left = usable_bytes(device_memory_bytes) - plan.weight_bytes - request_bytes(plan, max_running)
    return max(0, min(DEFAULT_PREFIX_CACHE_BYTES, left))


def safe_running_tokens(plan: MemoryPlan, device_memory_bytes: int, max_running: int) -> int:
    """The scheduler's token budget: prompt + generated tokens whose KV fits next to the weights, the
    prefix cache and ``max_running`` rows of sampler buffers, at the KV bytes per token of a request at
    the plan's context (sliding layers capped at their window); at least that one request."""
    free = usable_bytes(device_memory_bytes) - plan.weight_bytes - plan.prefix_cache_bytes
    free -= max_running * plan.sampler.bytes_per_row
    per_request = plan.kv.bytes_per_request * _kv_copies(max_running)
    return max(plan.kv.context, int(free * plan.kv.context // per_request))


def usable_bytes(device_memory_bytes: int) -> int:
    """Device memory left for weights, caches and sampler buffers after the headroom."""
    return max(0, int(device_memory_bytes * (1 - HEADROOM_FRACTION)) - HEADROOM_FIXED_BYTES)


def _required_device_bytes(total: int) -> int:
    return int((total + HEADROOM_FIXED_BYTES) / (1 - HEADROOM_FRACTION)) + 1


def _kv_copies(batch: int) -> int:
    return 1 if batch == 1 else KV_COPIES_WHEN_BATCHED


def request_bytes(plan: MemoryPlan, batch: int) -> int:
    return batch * (plan.kv.bytes_per_request * _kv_copies(batch) + plan.sampler.bytes_per_row)


def _verdict(plan: MemoryPlan, size_gb: float) -> CardVerdict:
    memory = int(size_gb * GIB)
    usable = usable_bytes(memory)
    return CardVerdict(
        name=f"{size_gb:g} GB",
        memory_bytes=memory,
        usable_bytes=usable,
        fits=plan.weight_bytes + request_bytes(plan, plan.max_batch) <= usable,
        max_concurrent=safe_max_running(plan, memory),
    )


def _replace_verdicts(plan: MemoryPlan, verdicts: tuple[CardVerdict, ...]) -> MemoryPlan:
    from dataclasses import replace

    return replace(plan, verdicts=verdicts)


def dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise InvalidRequestError("dtype", f"must be one of {tuple(DTYPE_BYTES)}, got {dtype!r}")
    return DTYPE_BYTES[dtype]


def _check_positive_int(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(field, f"must be a positive int, got {value!r}")


def format_bytes(value: int) -> str:
    """A byte count in GiB, or in MiB / KiB / bytes when smaller."""
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"
