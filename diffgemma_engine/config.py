"""Engine configuration: what to load, where, and how much work to admit. No I/O happens here."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidRequestError
from .registry import DEFAULT_MODEL

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")


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

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidRequestError("model", "must be a non-empty string")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in DEVICES:
            raise InvalidRequestError("device", f"must be one of {DEVICES} (optionally with ':index')")
        if self.dtype not in DTYPES:
            raise InvalidRequestError("dtype", f"must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("max_running", "max_waiting"):
            value = getattr(self, name)
            if name == "max_running" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(name, f"must be a positive int, got {value!r}")
        for name in ("compile", "validation"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidRequestError(name, "must be a bool")
        from .placement import validate_offload
        from .quantization import validate_mode

        validate_mode(self.quantization)
        validate_offload(self.offload)


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
