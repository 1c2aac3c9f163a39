"""Engine configuration: what to load, where, and how much work to admit. No I/O happens here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffgemma_engine.api.errors import InvalidRequestError
from diffgemma_engine.model.registry import DEFAULT_MODEL

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_PREFILL_CHUNK_TOKENS = 2048
QUANTIZATION_MODES = ("int8", "int4")
"""``EngineConfig.quantization`` values: weight-only int8 or int4 (see :mod:`diffgemma_engine.model.quantization`)."""
OFFLOAD_MODES = ("experts",)
"""``EngineConfig.offload`` values: ``"experts"`` keeps the fused MoE experts in host memory."""


@dataclass(frozen=True)
class EngineConfig:
    """Settings of one engine (one model copy).

    Attributes:
        model: a built-in name (``tiny-random``, ``demo``), a local checkpoint directory, or a hub id.
        device: ``auto`` picks cuda, then mps, then cpu; ``cuda:1`` style indices are accepted.
        dtype: ``auto`` is bfloat16 on cuda and float32 elsewhere.
        max_running: sequences denoised together at most (a batch). ``None`` (the default) lets the engine
            choose: on a GPU, as many as the memory planner says fit next to the weights (at most 64); on
            the host, 16.
        max_waiting: requests allowed to wait for a slot; beyond it ``EngineOverloadedError``.
        compile: ``torch.compile`` the decoder forward (opt-in).
        validation: build a validator checker for requests that select validators.
        quantization: weight-only ``"int8"`` or ``"int4"`` (fused MoE experts included), or ``None``.
        offload: ``"experts"`` keeps the fused MoE experts (most of the weights) in host memory and
            streams them to the GPU for each forward (needs a cuda device and ``accelerate``), or ``None``.
        prefix_cache: share the encoder KV of repeated prompt prefixes (system prompts, RAG contexts,
            chat history including the model's own committed answers) across requests, in blocks of
            64 tokens. On by default.
        prefix_cache_bytes: the most bytes of KV the prefix cache keeps (least recently used blocks are
            evicted beyond it); the memory planner reserves it on a GPU. ``None`` (the default): 1 GiB,
            or on a GPU what is left after the weights and the running requests if that is less (the
            default cache never costs a running slot).
        prefill_chunk_tokens: prompt tokens encoded per encoder pass. Longer prompts are encoded in
            chunks, so prefill memory grows linearly with the prompt. Default 2048.
        validation_workers: threads that run block checks (validators) off the worker thread, so a slow
            validator delays only its own request. Default 4.
        validation_timeout: seconds one block check may take; a request whose check runs longer fails with
            ``ValidatorTimeoutError`` naming the validator. ``None``: no limit. Default 60.
        max_running_tokens: admit a waiting request only while the running requests' tokens (prompt +
            ``max_new_tokens`` each) stay within this budget, as well as ``max_running``; a request larger
            than the budget runs alone. ``None`` (the default): on a GPU, what the memory planner says
            the KV memory next to the weights holds; on the host, unbounded.
    """

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    max_running: int | None = None
    max_waiting: int = 256
    compile: bool = False
    validation: bool = True
    quantization: str | None = None
    offload: str | None = None
    prefix_cache: bool = True
    prefix_cache_bytes: int | None = None
    prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK_TOKENS
    max_running_tokens: int | None = None
    validation_workers: int = 4
    validation_timeout: float | None = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidRequestError("model", "must be a non-empty string")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in DEVICES:
            raise InvalidRequestError("device", f"must be one of {DEVICES} (optionally with ':index')")
        if self.dtype not in DTYPES:
            raise InvalidRequestError("dtype", f"must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("max_running", "max_waiting", "prefill_chunk_tokens", "max_running_tokens"):
            value = getattr(self, name)
            if name in ("max_running", "max_running_tokens") and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(name, f"must be a positive int, got {value!r}")
        value = self.prefix_cache_bytes
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidRequestError("prefix_cache_bytes", f"must be a non-negative int, got {value!r}")
        if isinstance(self.validation_workers, bool) or not isinstance(self.validation_workers, int) \
                or self.validation_workers < 1:
            raise InvalidRequestError("validation_workers", f"must be a positive int, got {self.validation_workers!r}")
        timeout = self.validation_timeout
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 < timeout < float("inf")):
            raise InvalidRequestError("validation_timeout", f"must be a positive number of seconds or None, got {timeout!r}")
        for name in ("compile", "validation", "prefix_cache"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidRequestError(name, "must be a bool")
        validate_mode(self.quantization)
        validate_offload(self.offload)


def validate_mode(mode: str | None) -> str | None:
    """Return ``mode`` if it names a quantization mode (or is ``None``); raise ``InvalidRequestError`` otherwise."""
    if mode is None or mode in QUANTIZATION_MODES:
        return mode
    raise InvalidRequestError(
        "quantization", f"must be one of {', '.join(QUANTIZATION_MODES)} or None, got {mode!r}"
    )


def validate_offload(mode: Any) -> str | None:
    """``None`` or one of :data:`OFFLOAD_MODES`; anything else is an ``InvalidRequestError("offload")``."""
    if mode is None or mode in OFFLOAD_MODES:
        return mode
    raise InvalidRequestError("offload", f"must be None or one of {OFFLOAD_MODES}, got {mode!r}")


def resolve_device(device: str) -> str:
    """Turn ``auto`` into the best available device."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str):
    """Turn ``auto`` into bfloat16 on cuda and float32 elsewhere; returns a ``torch.dtype``."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)
