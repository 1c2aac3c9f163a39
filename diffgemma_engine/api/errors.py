"""The one error hierarchy of diffgemma.

Every error the project raises derives from :class:`DiffGemmaError`. Errors caused by a bad request also
derive from :class:`ValueError` and name the offending field, so callers can catch either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffgemma_engine.api.outputs import GenerationResult
    from diffgemma_engine.api.validation import RepairAttempt, Violation


class DiffGemmaError(Exception):
    """Root of every error raised by diffgemma."""


class InvalidRequestError(DiffGemmaError, ValueError):
    """A request argument is invalid. ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class PromptTooLongError(InvalidRequestError):
    """The prompt (plus one canvas) does not fit the model's context window."""

    def __init__(self, prompt_tokens: int, limit: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.limit = limit
        super().__init__(
            "prompt", f"the prompt has {prompt_tokens} tokens; this model accepts at most {limit}"
        )


class ModelLoadError(DiffGemmaError, ValueError):
    """A model could not be resolved or loaded (unknown name, missing directory, wrong architecture)."""


class EngineOverloadedError(DiffGemmaError):
    """The engine's wait queue is full; retry later."""


class EngineDeadError(DiffGemmaError):
    """The engine's worker failed unrecoverably; every waiting request fails with this error."""


class RequestCancelledError(DiffGemmaError):
    """The request was cancelled (by the caller, a timeout or an engine shutdown)."""


class RequestTimeoutError(RequestCancelledError):
    """The request ran longer than its ``timeout``."""


class ValidatorTimeoutError(RequestTimeoutError):
    """Checking one block took longer than ``EngineConfig.validation_timeout``. ``validator`` names the
    validator that was running (``None`` if the check had not started: every validation thread was busy)."""

    def __init__(self, request_id: str, limit: float, validator: str | None) -> None:
        self.validator = validator
        self.limit = limit
        where = f"validator {validator!r} was still running" if validator else "no validation thread was free"
        super().__init__(f"request {request_id}: checking a block took over {limit:g} s ({where})")


class GenerationTooLongError(InvalidRequestError):
    """The prompt plus ``max_new_tokens`` (in whole canvases) does not fit the model's context window."""

    def __init__(self, max_new_tokens: int, prompt_tokens: int, context_length: int, limit: int) -> None:
        self.max_new_tokens = max_new_tokens
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length
        self.limit = limit
        super().__init__(
            "max_new_tokens",
            f"{max_new_tokens} new tokens do not fit: the prompt has {prompt_tokens} tokens and the context "
            f"window is {context_length}, so at most {limit} new tokens can be generated "
            "(generation runs in whole canvases)",
        )


class RequestFailedError(DiffGemmaError, RuntimeError):
    """The engine failed while working on this request (a model forward, a sampler step, settling a block).
    Only this request ends; ``stage`` says where, and the original exception is the ``__cause__``."""

    def __init__(self, request_id: str, stage: str, cause: BaseException) -> None:
        self.request_id = request_id
        self.stage = stage
        super().__init__(f"request {request_id} failed during {stage}: {type(cause).__name__}: {cause}")
        self.__cause__ = cause


class WorkerCrashedError(EngineDeadError):
    """The engine's worker thread crashed while this request was in flight. The worker was restarted and
    the engine serves new requests (unless it crashed too often in a row, then it is dead for good)."""


class ValidatorCrashedError(DiffGemmaError):
    """A validator raised an exception while checking a block. ``validator`` names it."""

    def __init__(self, validator: str, cause: BaseException) -> None:
        self.validator = validator
        super().__init__(f"validator {validator!r} crashed: {type(cause).__name__}: {cause}")


class BlockValidationError(DiffGemmaError):
    """A block failed validation and could not be repaired.

    Carries everything needed to recover: ``partial`` (the committed prefix as a
    :class:`~diffgemma_engine.api.outputs.GenerationResult`), ``block_index``, ``violations`` of the last
    attempt, every ``attempts`` record and the last failing ``candidate_text``.
    """

    def __init__(
        self,
        message: str,
        *,
        partial: GenerationResult | None,
        block_index: int,
        violations: tuple[Violation, ...],
        attempts: tuple[RepairAttempt, ...],
        candidate_text: str = "",
    ) -> None:
        self.partial = partial
        self.block_index = block_index
        self.violations = violations
        self.attempts = attempts
        self.candidate_text = candidate_text
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:  # keep the error picklable across processes
        return (_rebuild, (type(self), str(self), self.__dict__))


class RepairBudgetExceeded(BlockValidationError):
    """Repairs and regenerations were tried up to the budget and the block still fails."""


class UnrepairableBlockError(BlockValidationError):
    """A violation was FATAL or not repairable, so no repair was attempted."""


def _rebuild(cls: type[BlockValidationError], message: str, state: dict[str, Any]) -> BlockValidationError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error
