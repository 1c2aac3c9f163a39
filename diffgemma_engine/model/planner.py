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

from diffgemma_engine.api.errors import InvalidRequestError
from diffgemma_engine.model.checkpoint import REAL_CHECKPOINT, load_plan_config
from diffgemma_engine.model.memory import (
    CARD_SIZES_GB,
    DEFAULT_CONTEXT,
    DEFAULT_PREFIX_CACHE_BYTES,
    GIB,
    HEADROOM_FIXED_BYTES,
    HEADROOM_FRACTION,
    KV_COPIES_WHEN_BATCHED,
)
from diffgemma_engine.model.quantization import validate_mode
from diffgemma_engine.model.sizes import (
    WEIGHT_MODES,
    KVCacheSize,
    ParameterCounts,
    SamplerSize,
    WeightMemory,
    check_positive_int,
    count_parameters,
    dtype_bytes,
    kv_cache_size,
    meta_model,
    sampler_size,
    unique_elements,
    weight_memory,
)


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
    check_positive_int("max_batch", max_batch)
    if context is not None:
        check_positive_int("context", context)
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
    options = tuple(weight_memory(model, mode, dtype) for mode in WEIGHT_MODES)
    if quantization is not None:
        weights = next(option for option in options if option.mode == quantization).total_bytes
    else:
        weights = unique_elements(model) * element_bytes
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


def format_bytes(value: int) -> str:
    """A byte count in GiB, or in MiB / KiB / bytes when smaller."""
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"
