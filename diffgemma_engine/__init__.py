"""diffgemma_engine: a shared, batching engine for DiffusionGemma block diffusion."""

import importlib
from typing import TYPE_CHECKING

from diffgemma_engine.config import EngineConfig
from diffgemma_engine.api.errors import (
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
from diffgemma_engine.api.outputs import BlockEvent, DraftEvent, Event, FinalEvent, GenerationResult, GenerationStats, Usage
from diffgemma_engine.api.params import SamplerDefaults, SamplingParams
from diffgemma_engine.api.client import EngineClient
from diffgemma_engine.api.stats import EngineStats, PrefixCacheStats
from diffgemma_engine.model.registry import BUILTIN_MODELS, DEFAULT_MODEL
from diffgemma_engine.api.stream import RequestStream
from diffgemma_engine.api.validation import OnExhausted, Severity, ValidationSummary, Violation

__version__ = "0.1.0"

_TORCH_BACKED = {"Engine": "loop.service", "get_engine": "loop.service", "shutdown_engines": "loop.service"}
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
    from diffgemma_engine.loop.service import Engine, get_engine, shutdown_engines

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "BlockEvent",
    "BlockValidationError",
    "DiffGemmaError",
    "DraftEvent",
    "Engine",
    "EngineClient",
    "EngineConfig",
    "EngineDeadError",
    "EngineOverloadedError",
    "EngineStats",
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
