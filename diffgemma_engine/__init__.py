"""diffgemma_engine: a shared, batching engine for DiffusionGemma block diffusion."""

import importlib
from typing import TYPE_CHECKING

from .config import EngineConfig
from .errors import (
    BlockValidationError,
    DiffGemmaError,
    EngineDeadError,
    EngineOverloadedError,
    GenerationTooLongError,
    InvalidRequestError,
    ModelLoadError,
    PromptTooLongError,
    RepairBudgetExceeded,
    RequestCancelledError,
    RequestFailedError,
    RequestTimeoutError,
    UnrepairableBlockError,
    ValidatorCrashedError,
    ValidatorTimeoutError,
    WorkerCrashedError,
)
from .outputs import BlockEvent, DraftEvent, Event, FinalEvent, GenerationResult, GenerationStats, Usage
from .params import SamplerDefaults, SamplingParams
from .prefix_cache import PrefixCacheStats
from .registry import BUILTIN_MODELS, DEFAULT_MODEL
from .stream import RequestStream
from .validation import OnExhausted, Severity, ValidationSummary, Violation

__version__ = "0.1.0"

_TORCH_BACKED = {"Engine": "service", "get_engine": "service", "shutdown_engines": "service"}
"""Names whose modules import torch: loaded on first use (PEP 562), so the torch-free parts of the engine,
the plugins and the remote client import without torch."""


def __getattr__(name: str) -> object:
    module_name = _TORCH_BACKED.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{module_name}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TORCH_BACKED))


if TYPE_CHECKING:
    from .service import Engine, get_engine, shutdown_engines

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "BlockEvent",
    "BlockValidationError",
    "DiffGemmaError",
    "DraftEvent",
    "Engine",
    "EngineConfig",
    "EngineDeadError",
    "EngineOverloadedError",
    "Event",
    "FinalEvent",
    "GenerationResult",
    "GenerationStats",
    "GenerationTooLongError",
    "InvalidRequestError",
    "ModelLoadError",
    "OnExhausted",
    "PrefixCacheStats",
    "PromptTooLongError",
    "RepairBudgetExceeded",
    "RequestCancelledError",
    "RequestFailedError",
    "RequestStream",
    "RequestTimeoutError",
    "SamplerDefaults",
    "SamplingParams",
    "Severity",
    "UnrepairableBlockError",
    "Usage",
    "ValidationSummary",
    "ValidatorCrashedError",
    "ValidatorTimeoutError",
    "Violation",
    "WorkerCrashedError",
    "__version__",
    "get_engine",
    "shutdown_engines",
]
