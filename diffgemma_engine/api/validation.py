"""The validation window: the protocol and the small types the engine uses to ask for a block check.

Between "block denoised" and "block committed" the engine builds a :class:`BlockView` (plain Python
values, no tensors) and hands it to the request's :class:`BlockChecker`. The checker returns a
:class:`ValidationReport`; if it did not pass, the checker's :meth:`BlockChecker.decide` returns a
:class:`RepairDecision` (accept, repair the given positions, regenerate, or give up). The engine carries
out the decision, and after the block is settled records a :class:`BlockValidation` in the result's
:class:`ValidationSummary`.

The engine knows nothing about pluggy: ``diffgemma_plugins`` implements :class:`BlockChecker` from the
registered validators and installs a :class:`CheckerFactory` on the engine.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class Severity(enum.IntEnum):
    """How bad a violation is. ERROR and FATAL fail the block; INFO and WARN are only recorded."""

    INFO = 10
    WARN = 20
    ERROR = 30
    FATAL = 40


@dataclass(frozen=True)
class Violation:
    """One finding of one validator about one block.

    ``spans`` are half-open ``(start, end)`` token positions within the canvas. A violation that is
    not ``repairable`` (or FATAL) skips repair and goes straight to the request's ``on_exhausted``.
    """

    validator: str
    code: str
    message: str
    spans: tuple[tuple[int, int], ...] = ()
    severity: Severity = Severity.ERROR
    repairable: bool = True
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fails(self) -> bool:
        return self.severity >= Severity.ERROR


@dataclass(frozen=True)
class BlockView:
    """A read-only view of one candidate block of one request, before it is committed.

    Attributes:
        request_id: the request this block belongs to.
        index: block number within the response (0 = first canvas).
        attempt: 0 for the first denoise, 1.. for each repair or regeneration.
        token_ids: the tokens that would be committed (after EOS and length truncation).
        text: their decoded text.
        token_offsets: per token, ``(start, end)`` character offsets into ``text``.
        eos_position: position of the first end-of-sequence token in the canvas, if any.
        is_final: whether the response ends with this block (EOS, stop string or length).
        converged: whether adaptive stopping fired (``False``: the step budget ran out).
        steps_used: denoising steps spent on this attempt.
        entropy: per canvas position, the entropy of the last temperature-scaled distribution.
        canvas_length: the model's canvas length.
        committed_text: the text of every block committed before this one.
        committed_token_ids: the tokens of every block committed before this one.
        prompt_token_ids: the prompt's tokens.
    """

    request_id: str
    index: int
    attempt: int
    token_ids: tuple[int, ...]
    text: str
    token_offsets: tuple[tuple[int, int], ...]
    eos_position: int | None
    is_final: bool
    converged: bool
    steps_used: int
    entropy: tuple[float, ...]
    canvas_length: int
    committed_text: str = ""
    committed_token_ids: tuple[int, ...] = ()
    prompt_token_ids: tuple[int, ...] = ()

    def char_span_to_tokens(self, start: int, end: int) -> tuple[int, int]:
        """Map a half-open character span of ``text`` to the half-open token span covering it."""
        first = last = None
        for position, (token_start, token_end) in enumerate(self.token_offsets):
            if token_end > start and token_start < end or (token_start == token_end == start):
                first = position if first is None else first
                last = position
        if first is None:
            return (len(self.token_ids), len(self.token_ids))
        return (first, last + 1)


@dataclass(frozen=True)
class ValidationReport:
    """What the validators found about one attempt of one block."""

    violations: tuple[Violation, ...] = ()
    ran: tuple[str, ...] = ()
    crashed: tuple[str, ...] = ()
    elapsed_ms: Mapping[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not any(v.fails for v in self.violations)

    @property
    def failing(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.fails)


class RepairAction(str, enum.Enum):
    """What the engine does with a block that failed validation."""

    ACCEPT = "accept"  # commit as it is (flagged)
    REPAIR = "repair"  # renoise `positions`, keep the rest frozen, denoise `steps` more steps
    REGENERATE = "regenerate"  # a fresh canvas with a derived seed and `sampler_overrides`
    GIVE_UP = "give_up"  # apply the request's on_exhausted policy


@dataclass(frozen=True)
class RepairDecision:
    """The checker's answer for a failed block."""

    action: RepairAction
    positions: tuple[int, ...] = ()
    steps: int | None = None
    sampler_overrides: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""


class OnExhausted(str, enum.Enum):
    """What a request gets when a block cannot be made to pass."""

    RAISE = "raise"  # BlockValidationError subclass carrying the partial result
    RETURN_FLAGGED = "return_flagged"  # commit the last candidate, finish_reason="validation_failed"
    TRUNCATE = "truncate"  # stop at the last good block, finish_reason="validation_failed"


@dataclass(frozen=True)
class RepairAttempt:
    """One try at making a block pass: what was done, at what cost, and what was still wrong."""

    attempt: int
    action: RepairAction
    positions: tuple[int, ...]
    steps_used: int
    violations: tuple[Violation, ...]


@dataclass(frozen=True)
class BlockValidation:
    """The settled validation outcome of one committed (or abandoned) block."""

    block_index: int
    passed: bool
    attempts: tuple[RepairAttempt, ...] = ()
    violations: tuple[Violation, ...] = ()
    repaired_positions: tuple[int, ...] = ()
    extra_steps: int = 0


@dataclass(frozen=True)
class ValidationSummary:
    """Per-request roll-up carried by results and block events."""

    blocks: tuple[BlockValidation, ...] = ()

    @property
    def passed(self) -> bool:
        return all(block.passed for block in self.blocks)

    @property
    def repairs(self) -> int:
        return sum(len(block.attempts) for block in self.blocks)

    @property
    def extra_steps(self) -> int:
        return sum(block.extra_steps for block in self.blocks)

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(sorted({v.code for block in self.blocks for v in block.violations}))


@dataclass(frozen=True)
class RequestInfo:
    """What a checker factory knows about the request it builds a checker for."""

    request_id: str
    validators: tuple[str, ...]
    validator_options: Mapping[str, Any]
    canvas_length: int
    eos_token_ids: tuple[int, ...]


@runtime_checkable
class BlockChecker(Protocol):
    """Checks the blocks of one request. Built per request; may keep cross-block state.

    ``check`` must not change committed state (it runs once per attempt); the engine calls
    ``on_commit`` exactly once for the attempt that is committed, and ``on_exhausted`` when it gives up.
    """

    def check(self, block: BlockView) -> ValidationReport: ...

    def decide(
        self, block: BlockView, report: ValidationReport, attempts: tuple[RepairAttempt, ...]
    ) -> RepairDecision: ...

    def on_commit(self, block: BlockView, report: ValidationReport) -> None: ...

    def on_exhausted(self, block: BlockView, report: ValidationReport) -> None: ...


class CheckerFactory(Protocol):
    """Builds the :class:`BlockChecker` of a request, or ``None`` when nothing needs checking."""

    def __call__(self, request: RequestInfo) -> BlockChecker | None: ...
