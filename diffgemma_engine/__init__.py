"""diffgemma_engine: a shared, batching engine for DiffusionGemma block diffusion."""

from .config import EngineConfig
from .errors import (
    BlockValidationError,
    DiffGemmaError,
    EngineDeadError,
    EngineOverloadedError,
    InvalidRequestError,
    ModelLoadError,
    PromptTooLongError,
    RepairBudgetExceeded,
    RequestCancelledError,
    RequestTimeoutError,
    UnrepairableBlockError,
    ValidatorCrashedError,
)
from .outputs import BlockEvent, DraftEvent, Event, FinalEvent, GenerationResult, GenerationStats, Usage
from .params import SamplerDefaults, SamplingParams
from .registry import BUILTIN_MODELS, DEFAULT_MODEL
from .service import Engine, get_engine, shutdown_engines
from .stream import RequestStream
from .validation import OnExhausted, Severity, ValidationSummary, Violation

__version__ = "0.1.0"

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
    "InvalidRequestError",
    "ModelLoadError",
    "OnExhausted",
    "PromptTooLongError",
    "RepairBudgetExceeded",
    "RequestCancelledError",
    "RequestStream",
    "RequestTimeoutError",
    "SamplerDefaults",
    "SamplingParams",
    "Severity",
    "UnrepairableBlockError",
    "Usage",
    "ValidationSummary",
    "ValidatorCrashedError",
    "Violation",
    "__version__",
    "get_engine",
    "shutdown_engines",
]
