"""Where an engine's weights go and how many requests it runs at once, decided before any weight loads.

The engine asks :func:`plan_placement` with the model, device, dtype and the user's settings. On a CPU
(or MPS) device there is nothing to plan: every weight sits in host memory and ``max_running`` defaults
to :data:`DEFAULT_MAX_RUNNING`. On a CUDA device the memory planner (:mod:`diffgemma_engine.model.planner`)
reads only the model's ``config.json`` and, against the device's free memory:

* without offload: raises :class:`DeviceMemoryError` when the weights plus one request do not fit,
  naming the numbers and the ways out (``quantization``, ``offload="experts"``);
* with ``offload="experts"``: builds the ``device_map`` that keeps the fused MoE experts in host memory
  (:func:`diffgemma_engine.model.offload.expert_offload_plan`), or raises
  :class:`~diffgemma_engine.model.offload.OffloadImpossibleError` when even the rest does not fit;
* either way, an unset ``max_running`` becomes the number of requests the remaining memory holds
  (:func:`diffgemma_engine.model.planner.safe_max_running`), at most :data:`MAX_AUTO_RUNNING`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from diffgemma_engine.api.errors import InvalidRequestError, ModelLoadError
from diffgemma_engine.config import validate_offload
from diffgemma_engine.model.offload import OffloadPlan, expert_offload_plan
from diffgemma_engine.model.memory import DEFAULT_PREFIX_CACHE_BYTES
from diffgemma_engine.model.planner import (
    MemoryPlan,
    default_prefix_cache_bytes,
    format_bytes,
    plan_memory,
    request_bytes,
    safe_max_running,
    safe_running_tokens,
    usable_bytes,
)

DEFAULT_MAX_RUNNING = 16
"""``max_running`` when nothing bounds it (host memory; the planner has no device budget to apply)."""

MAX_AUTO_RUNNING = 64
"""The most concurrent sequences an automatic ``max_running`` chooses on a GPU, however much memory is free."""



class DeviceMemoryError(ModelLoadError):
    """The model does not fit the device: its weights plus one request exceed the usable memory."""


@dataclass(frozen=True)
class Placement:
    """The decision: the device, how many sequences run together, and the offload map if any.

    ``device_memory_bytes`` is the free device memory the decision was made against (``None`` off CUDA);
    ``reason`` says in one line how ``max_running`` was chosen.
    """

    device: str
    max_running: int
    offload: OffloadPlan | None = None
    device_memory_bytes: int | None = None
    reason: str = ""
    max_running_tokens: int | None = None  # the scheduler's token budget (None: unbounded)
    prefix_cache_bytes: int = 0  # the prefix cache's budget, reserved in the plan


def plan_placement(
    model: str,
    device: str,
    dtype: torch.dtype,
    *,
    quantization: str | None = None,
    offload: str | None = None,
    max_running: int | None = None,
    device_memory_bytes: int | None = None,
    prefix_cache_bytes: int | None = 0,
    max_running_tokens: int | None = None,
) -> Placement:
    """Decide where ``model`` goes on ``device`` (see the module docstring).

    ``device_memory_bytes`` overrides the free memory read from the device (for planning a device this
    process does not see, and for tests). ``prefix_cache_bytes=None`` chooses the prefix cache budget:
    :data:`~diffgemma_engine.model.planner.DEFAULT_PREFIX_CACHE_BYTES` on the host, and on a GPU that or the
    memory left after the weights and the running requests, whichever is less.
    """
    offload = validate_offload(offload)
    if not device.startswith("cuda"):
        if offload is not None:
            raise InvalidRequestError(
                "offload", f"expert offload keeps experts in host memory while a GPU computes; device {device!r} "
                "already holds every weight in host memory (use a cuda device, or leave offload unset)"
            )
        chosen = max_running if max_running is not None else DEFAULT_MAX_RUNNING
        budget = DEFAULT_PREFIX_CACHE_BYTES if prefix_cache_bytes is None else prefix_cache_bytes
        return Placement(device, chosen, reason="set by the caller" if max_running is not None else "host default",
                         max_running_tokens=max_running_tokens, prefix_cache_bytes=budget)  # fmt: skip
    memory = device_memory_bytes if device_memory_bytes is not None else free_cuda_memory(device)
    dtype_name = _dtype_name(dtype)
    source = model
    if offload is not None:
        plan = expert_offload_plan(source, memory, quantization=quantization, dtype=dtype_name,
                                   max_batch=max_running or 1, device=cuda_index(device))  # fmt: skip
        resident = _with_prefix_cache(
            replace(plan_memory(source, quantization=quantization, dtype=dtype_name, card_sizes_gb=()),
                    weight_bytes=plan.gpu_weight_bytes), memory, prefix_cache_bytes, max_running)  # fmt: skip
        fitting = safe_max_running(resident, memory)
        chosen = _placement(device, max_running, fitting, memory, plan, "experts in host memory")
        return _with_token_budget(chosen, resident, memory, max_running_tokens)
    plan = _with_prefix_cache(plan_memory(source, quantization=quantization, dtype=dtype_name, card_sizes_gb=()),
                              memory, prefix_cache_bytes, max_running)  # fmt: skip
    fitting = safe_max_running(plan, memory)
    if fitting == 0:
        raise DeviceMemoryError(
            f"{source} needs {format_bytes(plan.weight_bytes)} of {plan.weight_mode} weights + "
            f"{format_bytes(request_bytes(plan, 1))} for one request at context {plan.kv.context:,}, but {device} has "
            f"{format_bytes(memory)} free ({format_bytes(usable_bytes(memory))} usable after headroom); "
            "quantize (quantization='int4'), keep the experts in host memory (offload='experts'), or see "
            "`diffgemma plan`"
        )
    return _with_token_budget(_placement(device, max_running, fitting, memory, None, "device memory"), plan, memory,
                              max_running_tokens)  # fmt: skip


def _with_prefix_cache(plan: MemoryPlan, memory: int, asked: int | None, max_running: int | None) -> MemoryPlan:
    """The plan with the prefix cache's budget reserved: the caller's, or by default what is left after
    the requests that will run (the caller's ``max_running``, or as many as fit, capped)."""
    if asked is None:
        running = max_running if max_running is not None else min(safe_max_running(plan, memory), MAX_AUTO_RUNNING)
        asked = default_prefix_cache_bytes(plan, memory, max(1, running))
    return replace(plan, prefix_cache_bytes=asked, total_bytes=plan.total_bytes - plan.prefix_cache_bytes + asked)


def _with_token_budget(placement: Placement, plan: MemoryPlan, memory: int, asked: int | None) -> Placement:
    """The caller's token budget, or the tokens of KV the memory next to the weights holds; and the
    prefix cache budget the plan reserved."""
    tokens = asked if asked is not None else safe_running_tokens(plan, memory, placement.max_running)
    return replace(placement, max_running_tokens=tokens, prefix_cache_bytes=plan.prefix_cache_bytes)


def _placement(device: str, asked: int | None, fitting: int, memory: int, offload: OffloadPlan | None,
               what: str) -> Placement:  # fmt: skip
    if asked is not None:
        return Placement(device, asked, offload, memory, f"set by the caller ({fitting} fit the {what} budget)")
    chosen = max(1, min(fitting, MAX_AUTO_RUNNING))
    return Placement(device, chosen, offload, memory, f"{fitting} fit the {what} budget (capped at {MAX_AUTO_RUNNING})")


def free_cuda_memory(device: str) -> int:
    free, _total = torch.cuda.mem_get_info(cuda_index(device))
    return int(free)


def cuda_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index else torch.cuda.current_device()


def _dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``"bfloat16"``; the planner rejects names it has no size for."""
    return str(dtype).removeprefix("torch.")
