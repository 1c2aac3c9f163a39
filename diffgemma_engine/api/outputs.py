"""What a request produces: stream events and the final result. Plain, immutable values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from diffgemma_engine.api.validation import BlockValidation, ValidationSummary

FinishReason = Literal["stop", "length", "validation_failed", "cancelled"]


@dataclass(frozen=True)
class Usage:
    """Token counts, with OpenAI's names.

    ``cached_tokens`` is the part of ``prompt_tokens`` served from the prefix cache instead of being
    computed (OpenAI: ``usage.prompt_tokens_details.cached_tokens``).
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class GenerationStats:
    """How the response was made.

    ``tokens_per_forward`` follows transformers: generated tokens / decoder passes of this request.
    Times are seconds: ``queue_time`` waiting for a slot, ``first_block_time`` from submission to the
    first committed block, ``total_time`` from submission to the end.
    """

    blocks: int = 0
    denoising_steps: int = 0
    encoder_passes: int = 0
    repairs: int = 0
    tokens_per_forward: float = 0.0
    queue_time: float = 0.0
    first_block_time: float = 0.0
    total_time: float = 0.0


@dataclass(frozen=True)
class GenerationResult:
    """The complete response of one request."""

    request_id: str
    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    usage: Usage
    stats: GenerationStats
    seed: int
    validation: ValidationSummary = field(default_factory=ValidationSummary)
    stop_reason: str | int | None = None  # the stop string or token id that ended the response

    def summary(self) -> dict[str, Any]:
        """The result's facts as plain JSON-ready data, without the text: the one dict view every adapter
        and the server build on.

        ``usage`` has OpenAI's names (``prompt_tokens_details.cached_tokens``: prompt tokens served from the
        prefix cache); ``validation`` summarises the block validators; ``stats`` says how it was made.
        """
        validation = self.validation
        return {
            "request_id": self.request_id,
            "finish_reason": self.finish_reason,
            "stop_reason": self.stop_reason,
            "seed": self.seed,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "total_tokens": self.usage.total_tokens,
                "prompt_tokens_details": {"cached_tokens": self.usage.cached_tokens},
            },
            "validation": {
                "passed": validation.passed,
                "blocks": len(validation.blocks),
                "repairs": validation.repairs,
                "extra_steps": validation.extra_steps,
                "flags": list(validation.flags),
            },
            "stats": asdict(self.stats),
        }


@dataclass(frozen=True)
class BlockEvent:
    """One committed block: its text delta and tokens. Concatenated deltas equal the final text."""

    request_id: str
    index: int
    text: str
    token_ids: tuple[int, ...]
    steps: int
    validation: BlockValidation | None = None


@dataclass(frozen=True)
class DraftEvent:
    """The argmax draft of the canvas after one denoising step. Opt-in; never content."""

    request_id: str
    block_index: int
    step: int
    text: str
    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class FinalEvent:
    """The last event of a request's stream."""

    result: GenerationResult


Event = BlockEvent | DraftEvent | FinalEvent
