"""Expert offload for GPUs too small for the weights: a ``device_map`` / ``max_memory`` that keeps the fused
MoE experts in host memory and the rest (attention, routing, KV cache, sampler) on the GPU.

:func:`expert_offload_plan` makes the map from ``config.json`` alone; :func:`dispatch_experts` places a
loaded (and possibly quantized) model by it through accelerate: the experts stay in host memory and are
streamed to the GPU for each forward, everything else lives on the GPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from diffgemma_engine.api.errors import InvalidRequestError, ModelLoadError
from diffgemma_engine.model.checkpoint import load_plan_config
from diffgemma_engine.model.memory import HEADROOM_FIXED_BYTES
from diffgemma_engine.model.planner import MemoryPlan, format_bytes, plan_memory, request_bytes, usable_bytes
from diffgemma_engine.model.sizes import dtype_bytes, meta_model
from diffgemma_engine.model.quantization import is_fused_experts, quantized_nbytes

# -- expert offload ---------------------------------------------------------------------------------

class OffloadImpossibleError(ModelLoadError):
    """Even with every MoE expert in host memory, the rest does not fit the device (or the host)."""


class OffloadUnavailableError(ModelLoadError):
    """Expert offload needs ``accelerate``, which is not installed."""


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
    model = meta_model(load_plan_config(source)[0], text_only=True)
    expert_bytes = _expert_bytes(model, plan)
    gpu_weights = plan.weight_bytes - expert_bytes
    requests = request_bytes(plan, max_batch)
    usable = usable_bytes(device_memory_bytes)
    if gpu_weights + requests > usable:
        raise OffloadImpossibleError(
            f"even with the experts in host memory the GPU needs {format_bytes(gpu_weights)} of weights + "
            f"{format_bytes(requests)} for {max_batch} request(s) at context {plan.kv.context:,}, but a "
            f"{format_bytes(device_memory_bytes)} device has {format_bytes(usable)} usable; lower --max-batch or --context, "
            "or quantize"
        )
    if host_memory_bytes is not None and expert_bytes > usable_bytes(host_memory_bytes):
        raise OffloadImpossibleError(
            f"the experts need {format_bytes(expert_bytes)} of host memory; {format_bytes(host_memory_bytes)} has "
            f"{format_bytes(usable_bytes(host_memory_bytes))} usable"
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
    base = dtype_bytes(plan.dtype)
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


# -- placing a loaded model -------------------------------------------------------------------------

EXPERT_LOCATIONS = ("cpu", "disk")
PRELOADED_MODULE_CLASSES = ("QuantizedExperts", "QuantizedLinear")


def dispatch_experts(
    model: torch.nn.Module,
    device_map: Mapping[str, int | str],
    main_device: str | torch.device,
    *,
    expert_location: str = "cpu",
    offload_dir: str | None = None,
) -> None:
    """Place ``model`` by an :class:`OffloadPlan`'s ``device_map`` through accelerate's hooks.

    Entries mapped to ``"cpu"`` (the experts) go to ``expert_location``: ``"cpu"`` keeps them in host
    memory, ``"disk"`` in ``offload_dir``; either way accelerate copies a module's weights to
    ``main_device`` just before its forward and drops the copy after. Every other entry moves to
    ``main_device``, including the loose parameters and buffers of modules that also hold experts
    (accelerate places whole modules only). With ``main_device="cpu"`` only ``"disk"`` offloads anything.
    """
    try:
        from accelerate import dispatch_model
    except ImportError as error:
        raise OffloadUnavailableError(
            "expert offload places weights with accelerate, which is not installed: "
            "pip install 'diffgemma-plugins[offload]'"
        ) from error
    if expert_location not in EXPERT_LOCATIONS:
        raise InvalidRequestError("expert_location", f"must be one of {EXPERT_LOCATIONS}, got {expert_location!r}")
    main = torch.device(main_device)
    placement = {name: (expert_location if where == "cpu" else main) for name, where in device_map.items()}
    modules = dict(model.named_modules())
    loose = [name for name in placement if name not in modules]
    with warnings.catch_warnings():
        # the loose tensors' names are not modules; accelerate warns and leaves them, they are moved below
        warnings.filterwarnings("ignore", message="The following device_map keys do not match any submodules")
        # a quantized experts module reads its codes through child modules it never calls: load them all
        # when the experts module itself runs
        dispatch_model(model, placement, main_device=main, offload_dir=offload_dir,
                       preload_module_classes=list(PRELOADED_MODULE_CLASSES))
    for name in loose:
        owner_name, _, attribute = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if attribute in owner._parameters and owner._parameters[attribute] is not None:
            parameter = owner._parameters[attribute]
            owner._parameters[attribute] = torch.nn.Parameter(parameter.data.to(main), requires_grad=False)
        elif attribute in owner._buffers and owner._buffers[attribute] is not None:
            owner._buffers[attribute] = owner._buffers[attribute].to(main)


def offloaded_modules(model: torch.nn.Module) -> list[str]:
    """Names of the modules whose weights accelerate keeps off the execution device (loaded per forward)."""
    names = []
    for name, module in model.named_modules():
        hook = getattr(module, "_hf_hook", None)
        if hook is not None and getattr(hook, "offload", False):
            names.append(name)
    return names
