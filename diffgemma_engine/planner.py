"""Memory planner: will a DiffusionGemma checkpoint fit a given GPU, with which quantization and batch?

Reads only a ``config.json`` (a checkpoint directory, a path to the file, a dict, or a built-in name),
builds the model on the **meta device** (no weights are allocated) to count parameters exactly by group,
and adds up, for a context length and a number of concurrent requests:

* weights for each mode (fp32, bf16, int8 and int4 weight-only; the quantized sizes use the exact
  storage layout of :mod:`diffgemma_engine.quantization`, scales included);
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

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .errors import DiffGemmaError, InvalidRequestError, ModelLoadError
from .quantization import (
    QUANTIZATION_MODES,
    is_fused_experts,
    quantization_targets,
    quantized_nbytes,
    validate_mode,
)

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
REAL_CHECKPOINT = "google/diffusiongemma-26B-A4B-it"

REAL_CHECKPOINT_CONFIG: dict[str, Any] = {
    "architectures": ["DiffusionGemmaForBlockDiffusion"],
    "model_type": "diffusion_gemma",
    "canvas_length": 256,
    "tie_word_embeddings": True,
    "boi_token_id": 255999,
    "eoi_token_id": 258882,
    "image_token_id": 258880,
    "text_config": {
        "model_type": "diffusion_gemma_text",
        "vocab_size": 262144,
        "hidden_size": 2816,
        "intermediate_size": 2112,
        "num_hidden_layers": 30,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "num_global_key_value_heads": 2,
        "head_dim": 256,
        "global_head_dim": 512,
        "attention_k_eq_v": True,
        "enable_moe_block": True,
        "num_experts": 128,
        "top_k_experts": 8,
        "moe_intermediate_size": 704,
        "sliding_window": 1024,
        "max_position_embeddings": 262144,
        "final_logit_softcapping": 30.0,
        "tie_word_embeddings": True,
    },
    "vision_config": {
        "model_type": "gemma4_vision",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "head_dim": 72,
        "standardize": True,
    },
}
"""The published checkpoint's dimensions, for planning without downloading anything. Collected from
third-party copies of its ``config.json`` (see ``docs/consumer-gpus.md``); the parameter count they
give (25,823,778,864) times 2 bytes is within 0.001% of the published bf16 checkpoint size
(51,647,701,024 bytes)."""

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_WEIGHT_MODES = ("fp32", "bf16", "int8", "int4")


@dataclass(frozen=True)
class ParameterCounts:
    """Unique parameters (tied encoder/decoder weights counted once) by group."""

    experts: int  # fused 3-D MoE expert tensors
    linear: int  # every other nn.Linear of the text model (attention, shared MLP, router, self-conditioning)
    embeddings: int  # the token embedding (tied with lm_head)
    norms: int  # RMSNorm weights, router scales and other 1-D parameters of the text model
    vision: int  # vision tower and its projection into the text model

    @property
    def total(self) -> int:
        return self.experts + self.linear + self.embeddings + self.norms + self.vision


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

    @property
    def weight_mode(self) -> str:
        """The weight mode this plan assumes ("int4", "int8", "bf16", "fp32" or "fp16")."""
        if self.quantization:
            return self.quantization
        return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[self.dtype]


# -- loading a config -------------------------------------------------------------------------------

def load_plan_config(source: Any) -> tuple[Any, str]:
    """Resolve ``source`` to a ``DiffusionGemmaConfig`` without loading weights; returns ``(config, label)``.

    ``source``: a ``DiffusionGemmaConfig``, a ``config.json`` dict, a path to a ``config.json``, a
    checkpoint directory, the built-in ``tiny-random``, the published checkpoint's hub id (its
    dimensions ship with this module) or another hub id (only its ``config.json`` is fetched).
    Raises ``ModelLoadError`` for anything that is not a DiffusionGemma config, naming what it is.
    """
    from transformers import DiffusionGemmaConfig

    if isinstance(source, DiffusionGemmaConfig):
        return source, "config"
    if isinstance(source, Mapping):
        return _config_from_dict(dict(source), "config dict"), "config dict"
    if not isinstance(source, str) or not source.strip():
        raise InvalidRequestError("model", f"must be a config, a dict, a path or a model name, got {source!r}")
    if source in ("tiny-random", "demo"):
        from . import tiny_random

        return tiny_random.build_config(), source
    if source == REAL_CHECKPOINT:
        return _config_from_dict(json.loads(json.dumps(REAL_CHECKPOINT_CONFIG)), source), source
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise ModelLoadError(f"{source!r} has no config.json; it is not a Hugging Face checkpoint")
    if os.path.isfile(path):
        return _config_from_dict(_read_json(path), source), source
    if source.count("/") == 1 and not source.startswith((".", "/", "~")):
        return _config_from_dict(_read_json(_hub_config(source)), source), source
    raise ModelLoadError(f"{source!r} is neither a config.json, a checkpoint directory nor a hub id")


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{path!r} is not readable JSON: {error}") from error
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path!r} does not hold a JSON object")
    return data


def _hub_config(repo_id: str) -> str:
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo_id, "config.json")
    except Exception as error:  # noqa: BLE001 - every hub failure becomes one typed error
        raise ModelLoadError(f"could not fetch config.json of {repo_id!r}: {error}") from error


def _config_from_dict(data: dict[str, Any], where: str) -> Any:
    from transformers import DiffusionGemmaConfig

    from .loader import check_architecture

    check_architecture(data, where)
    if not isinstance(data.get("text_config"), Mapping):
        raise ModelLoadError(f"{where!r}: a DiffusionGemma config needs a text_config object")
    data = {key: value for key, value in data.items() if key not in ("transformers_version",)}
    try:
        return DiffusionGemmaConfig.from_dict(data)
    except (TypeError, ValueError, KeyError) as error:
        raise ModelLoadError(f"{where!r}: not a valid DiffusionGemma config: {error}") from error


# -- counting ---------------------------------------------------------------------------------------

def meta_model(config: Any) -> torch.nn.Module:
    """The model built on the meta device: every parameter has its real shape and no storage."""
    from transformers import DiffusionGemmaForBlockDiffusion

    with torch.device("meta"):
        return DiffusionGemmaForBlockDiffusion(config)


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
    return ParameterCounts(**groups)


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
    base = _dtype_bytes(dtype)
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
    element_bytes = _dtype_bytes(dtype)
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
    model = meta_model(config)
    options = tuple(weight_memory(model, mode, dtype) for mode in _WEIGHT_MODES)
    if quantization is not None:
        weights = next(option for option in options if option.mode == quantization).total_bytes
    else:
        weights = _unique_elements(model) * element_bytes
    kv = kv_cache_size(text, context, element_bytes)
    sampler = sampler_size(int(config.canvas_length), int(text.vocab_size))
    kv_copies = _kv_copies(max_batch)
    per_request = kv.bytes_per_request * kv_copies + sampler.bytes_per_row
    total = weights + max_batch * per_request
    plan = MemoryPlan(
        source=label,
        hidden_size=int(text.hidden_size),
        num_layers=int(text.num_hidden_layers),
        num_experts=int(text.num_experts or 0),
        top_k_experts=int(text.top_k_experts or 0),
        vocab_size=int(text.vocab_size),
        canvas_length=int(config.canvas_length),
        max_position_embeddings=int(text.max_position_embeddings),
        parameters=count_parameters(model),
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
    free = usable_bytes(device_memory_bytes) - plan.weight_bytes
    if free < _request_bytes(plan, 1):
        return 0
    batched = plan.kv.bytes_per_request * KV_COPIES_WHEN_BATCHED + plan.sampler.bytes_per_row
    return max(1, int(free // batched))


def usable_bytes(device_memory_bytes: int) -> int:
    """Device memory left for weights, caches and sampler buffers after the headroom."""
    return max(0, int(device_memory_bytes * (1 - HEADROOM_FRACTION)) - HEADROOM_FIXED_BYTES)


def _required_device_bytes(total: int) -> int:
    return int((total + HEADROOM_FIXED_BYTES) / (1 - HEADROOM_FRACTION)) + 1


def _kv_copies(batch: int) -> int:
    return 1 if batch == 1 else KV_COPIES_WHEN_BATCHED


def _request_bytes(plan: MemoryPlan, batch: int) -> int:
    return batch * (plan.kv.bytes_per_request * _kv_copies(batch) + plan.sampler.bytes_per_row)


def _verdict(plan: MemoryPlan, size_gb: float) -> CardVerdict:
    memory = int(size_gb * GIB)
    usable = usable_bytes(memory)
    return CardVerdict(
        name=f"{size_gb:g} GB",
        memory_bytes=memory,
        usable_bytes=usable,
        fits=plan.weight_bytes + _request_bytes(plan, plan.max_batch) <= usable,
        max_concurrent=safe_max_running(plan, memory),
    )


def _replace_verdicts(plan: MemoryPlan, verdicts: tuple[CardVerdict, ...]) -> MemoryPlan:
    from dataclasses import replace

    return replace(plan, verdicts=verdicts)


def _dtype_bytes(dtype: str) -> int:
    if dtype not in _DTYPE_BYTES:
        raise InvalidRequestError("dtype", f"must be one of {tuple(_DTYPE_BYTES)}, got {dtype!r}")
    return _DTYPE_BYTES[dtype]


def _check_positive_int(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(field, f"must be a positive int, got {value!r}")


# -- expert offload ---------------------------------------------------------------------------------

class OffloadImpossibleError(ModelLoadError):
    """Even with every MoE expert in host memory, the rest does not fit the device (or the host)."""


@dataclass(frozen=True)
class OffloadPlan:
    """Experts in host memory, everything else on one GPU.

    ``device_map`` pairs cover every parameter and buffer exactly once (module names, or parameter
    names inside a module that mixes both); pass :meth:`as_device_map` to ``from_pretrained``.
    """

    device_map: tuple[tuple[str, int | str], ...]
    gpu_weight_bytes: int  # everything but the experts, in the plan's mode
    cpu_weight_bytes: int  # the experts, in the plan's mode
    gpu_request_bytes: int  # KV caches and sampler buffers of ``max_batch`` requests
    gpu_usable_bytes: int
    max_memory: tuple[tuple[int | str, int], ...]

    def as_device_map(self) -> dict[str, int | str]:
        return dict(self.device_map)

    def as_max_memory(self) -> dict[int | str, int]:
        return dict(self.max_memory)


def expert_offload_plan(
    source: Any,
    device_memory_bytes: int,
    *,
    quantization: str | None = None,
    dtype: str = "bfloat16",
    context: int | None = None,
    max_batch: int = 1,
    device: int = 0,
    host_memory_bytes: int | None = None,
) -> OffloadPlan:
    """A ``device_map`` / ``max_memory`` that keeps the fused experts on the CPU and the rest on GPU ``device``.

    The GPU then holds the non-expert weights, the KV caches and the sampler buffers; the experts
    (88% of DiffusionGemma) stay in host memory. Raises :class:`OffloadImpossibleError` when the GPU
    part, or (if ``host_memory_bytes`` is given) the host part, still does not fit.
    """
    for field, value in (("device_memory_bytes", device_memory_bytes), ("host_memory_bytes", host_memory_bytes)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise InvalidRequestError(field, f"must be a positive int, got {value!r}")
    if isinstance(device, bool) or not isinstance(device, int) or device < 0:
        raise InvalidRequestError("device", f"must be a CUDA device index, got {device!r}")
    plan = plan_memory(source, quantization=quantization, dtype=dtype, context=context, max_batch=max_batch,
                       card_sizes_gb=())
    model = meta_model(load_plan_config(source)[0])
    expert_bytes = _expert_bytes(model, plan)
    gpu_weights = plan.weight_bytes - expert_bytes
    requests = _request_bytes(plan, max_batch)
    usable = usable_bytes(device_memory_bytes)
    if gpu_weights + requests > usable:
        raise OffloadImpossibleError(
            f"even with the experts in host memory the GPU needs {_gib(gpu_weights)} of weights + "
            f"{_gib(requests)} for {max_batch} request(s) at context {plan.kv.context:,}, but a "
            f"{_gib(device_memory_bytes)} device has {_gib(usable)} usable; lower --max-batch or --context, "
            "or quantize"
        )
    if host_memory_bytes is not None and expert_bytes > usable_bytes(host_memory_bytes):
        raise OffloadImpossibleError(
            f"the experts need {_gib(expert_bytes)} of host memory; {_gib(host_memory_bytes)} has "
            f"{_gib(usable_bytes(host_memory_bytes))} usable"
        )
    host_budget = expert_bytes + HEADROOM_FIXED_BYTES
    return OffloadPlan(
        device_map=tuple(_split_device_map(model, device)),
        gpu_weight_bytes=gpu_weights,
        cpu_weight_bytes=expert_bytes,
        gpu_request_bytes=requests,
        gpu_usable_bytes=usable,
        max_memory=((device, usable - requests), ("cpu", host_budget)),
    )


def _expert_bytes(model: torch.nn.Module, plan: MemoryPlan) -> int:
    base = _dtype_bytes(plan.dtype)
    total = 0
    seen: set[int] = set()
    for module in model.modules():
        if is_fused_experts(module):
            for weight in (module.gate_up_proj, module.down_proj):
                if id(weight) in seen:
                    continue
                seen.add(id(weight))
                shape = tuple(weight.shape)
                total += (quantized_nbytes(shape, plan.quantization, base) if plan.quantization
                          else weight.numel() * base)
    return total


def _split_device_map(model: torch.nn.Module, device: int) -> list[tuple[str, int | str]]:
    """Walk the module tree: an experts module goes to "cpu", a subtree without experts to ``device``,
    and a mixed module is split into its children and its own parameters/buffers."""
    entries: list[tuple[str, int | str]] = []

    def walk(prefix: str, module: torch.nn.Module) -> None:
        if is_fused_experts(module):
            entries.append((prefix, "cpu"))
            return
        if not any(is_fused_experts(child) for child in module.modules()):
            entries.append((prefix, device))
            return
        for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            entries.append((f"{prefix}.{name}" if prefix else name, device))
        for name, child in module.named_children():
            walk(f"{prefix}.{name}" if prefix else name, child)

    walk("", model)
    return entries


# -- rendering --------------------------------------------------------------------------------------

def render_plan(plan: MemoryPlan) -> str:
    """The plan as a readable text report with tables."""
    params = plan.parameters
    lines = [
        f"DiffusionGemma memory plan: {plan.source}",
        f"model: hidden {plan.hidden_size}, {plan.num_layers} layers ({plan.kv.sliding_layers} sliding "
        f"[window {plan.kv.sliding_window}] / {plan.kv.full_layers} full), {plan.num_experts} experts "
        f"top-{plan.top_k_experts}, vocab {plan.vocab_size:,}, canvas {plan.canvas_length}",
        "",
        _table(
            ("parameters", "count", "share"),
            [(name, _count(value), f"{100 * value / params.total:.1f}%")
             for name, value in (("experts (fused 3-D)", params.experts), ("other linear", params.linear),
                                 ("embeddings (tied)", params.embeddings), ("norms and scales", params.norms),
                                 ("vision tower", params.vision), ("total", params.total))],
        ),
        "",
        _table(
            ("weights", "quantized", "floating", "total"),
            [(_mode_label(option.mode, plan.dtype), _gib(option.quantized_bytes), _gib(option.floating_bytes),
              _gib(option.total_bytes)) for option in plan.weight_options],
        ),
        "",
        f"per request at context {plan.kv.context:,} ({plan.dtype} KV cache, "
        f"{_gib(plan.kv.bytes_per_token)}/token before the window cap):",
        _table(
            ("item", "bytes", "how"),
            [
                ("KV cache", _gib(plan.kv.bytes_per_request),
                 f"sliding layers capped at {plan.kv.sliding_window} tokens"),
                ("KV copies", str(plan.kv_copies), f"1 alone; {KV_COPIES_WHEN_BATCHED} while batched (own + batch stack)"),
                ("sampler buffers", _gib(plan.sampler.bytes_per_row),
                 f"{plan.sampler.buffers_per_row:.2f} x fp32 [{plan.canvas_length}, {plan.vocab_size:,}] "
                 f"= {_gib(plan.sampler.logits_bytes)} each"),
                ("per request", _gib(plan.per_request_bytes), "KV x copies + sampler"),
            ],
            left=(0, 2),
        ),
        "",
        f"total for --max-batch {plan.max_batch} with {plan.weight_mode} weights: {_gib(plan.total_bytes)}"
        f"; needs a card of at least {_gib(plan.required_bytes)} "
        f"(headroom {HEADROOM_FRACTION:.0%} + {HEADROOM_FIXED_BYTES / GIB:g} GiB)",
        "",
        _table(
            ("card", "usable", f"fits --max-batch {plan.max_batch}", "max concurrent"),
            [(v.name, _gib(v.usable_bytes), "yes" if v.fits else "no", str(v.max_concurrent))
             for v in plan.verdicts],
        ),
    ]
    return "\n".join(lines)


def _mode_label(mode: str, dtype: str) -> str:
    if mode in ("int8", "int4"):
        short = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[dtype]
        return f"{mode} (+{short} scales)"
    return mode


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> str:
    """Columns padded to width; columns in ``left`` are left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(cell).ljust(width) if index in left else str(cell).rjust(width)
                         for index, (cell, width) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * width for width in widths])] + [line(row) for row in rows])


def _gib(value: int) -> str:
    """A byte count in GiB, or in MiB / KiB / bytes when smaller."""
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"


def _count(value: int) -> str:
    if value >= 1e9:
        return f"{value / 1e9:.2f} B"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    return f"{value:,}"


# -- command line -----------------------------------------------------------------------------------

def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``plan`` command's options to ``parser``."""
    parser.add_argument("--model", default=REAL_CHECKPOINT,
                        help=f"checkpoint directory, config.json path, hub id or tiny-random "
                             f"(default: {REAL_CHECKPOINT}, whose dimensions ship with diffgemma)")
    parser.add_argument("--quantization", default="none", choices=("none",) + QUANTIZATION_MODES,
                        help="weight-only quantization to plan for")
    parser.add_argument("--dtype", default="bfloat16", choices=tuple(_DTYPE_BYTES),
                        help="compute dtype (unquantized weights, scales, KV cache)")
    parser.add_argument("--max-batch", type=int, default=1, help="requests denoised together")
    parser.add_argument("--context", type=int, default=None,
                        help=f"tokens each request keeps in its KV cache, prompt + output (default: "
                             f"{DEFAULT_CONTEXT} or the model's window if shorter)")
    parser.add_argument("--cards", default=",".join(str(size) for size in CARD_SIZES_GB),
                        help="comma-separated card sizes in GB")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run_plan_command(args: argparse.Namespace) -> int:
    """Handle a parsed ``plan`` command: print the plan; returns the exit status."""
    try:
        cards = tuple(float(size) for size in str(args.cards).split(",") if size.strip())
    except ValueError as error:
        raise InvalidRequestError("cards", f"must be comma-separated numbers: {error}") from error
    plan = plan_memory(
        args.model,
        quantization=None if args.quantization == "none" else args.quantization,
        dtype=args.dtype,
        context=args.context,
        max_batch=args.max_batch,
        card_sizes_gb=cards,
    )
    print(json.dumps(asdict(plan), indent=2) if args.json else render_plan(plan))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m diffgemma_engine.planner``: the ``plan`` command on its own."""
    parser = argparse.ArgumentParser(prog="diffgemma plan", description="Plan DiffusionGemma's GPU memory.")
    add_plan_arguments(parser)
    try:
        return run_plan_command(parser.parse_args(argv))
    except DiffGemmaError as error:
        print(f"diffgemma plan: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
