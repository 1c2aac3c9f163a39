"""The validation window's rules, written once for every backend (torch-free).

The in-process engine (:mod:`diffgemma_engine.loop.settle`) and the remote backend
(:mod:`diffgemma_adapters.remote`) settle a checked block the same way; this module is that way, so they
cannot drift apart:

- :func:`judge` checks a block and asks the checker what to do with a failure (:class:`Judgement`);
- :func:`next_attempt` and :func:`block_record` are the records a request keeps of its tries;
- :func:`give_up` says what ``on_exhausted`` does with a block that cannot be made to pass, and
  :func:`exhausted_error` builds the error a ``raise`` request ends with;
- :func:`derived_seed` is the seed of a repair or regeneration.

What each backend does with a verdict differs (the engine renoises canvas positions; the remote backend
can only regenerate by continuation), so the caller applies it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from diffgemma_engine.api.errors import BlockValidationError, RepairBudgetExceeded, UnrepairableBlockError
from diffgemma_engine.api.outputs import GenerationResult
from diffgemma_engine.api.validation import (
    BlockChecker,
    BlockValidation,
    BlockView,
    OnExhausted,
    RepairAction,
    RepairAttempt,
    RepairDecision,
    Severity,
    ValidationReport,
)

__all__ = [
    "VALIDATION_FAILED",
    "GiveUp",
    "Judgement",
    "Verdict",
    "block_record",
    "derived_seed",
    "exhausted_error",
    "give_up",
    "judge",
    "next_attempt",
]

VALIDATION_FAILED = "validation_failed"
"""The finish reason of a response whose last block could not be made to pass."""


class Verdict(enum.Enum):
    """What the window does with a checked block."""

    COMMIT = "commit"  # it passed, or the checker accepts it flagged
    REPAIR = "repair"  # renoise the decided positions (in-process only)
    REGENERATE = "regenerate"  # a fresh try with a derived seed and the decided sampler overrides
    GIVE_UP = "give_up"  # apply the request's on_exhausted policy


@dataclass(frozen=True)
class Judgement:
    """A checked block's report, and for a failure the checker's decision."""

    verdict: Verdict
    report: ValidationReport
    decision: RepairDecision | None = None


_VERDICTS = {RepairAction.ACCEPT: Verdict.COMMIT, RepairAction.REPAIR: Verdict.REPAIR,
             RepairAction.REGENERATE: Verdict.REGENERATE, RepairAction.GIVE_UP: Verdict.GIVE_UP}


def judge(checker: BlockChecker, view: BlockView, attempts: Sequence[RepairAttempt]) -> Judgement:
    """Check ``view``; a failing block gets the checker's decision given the block's earlier ``attempts``."""
    report = checker.check(view)
    if report.passed:
        return Judgement(Verdict.COMMIT, report)
    decision = checker.decide(view, report, tuple(attempts))
    return Judgement(_VERDICTS[decision.action], report, decision)


def next_attempt(
    attempts: Sequence[RepairAttempt],
    action: RepairAction,
    positions: tuple[int, ...],
    steps_used: int,
    report: ValidationReport,
) -> RepairAttempt:
    """The record of one more try at a block that failed with ``report`` after ``steps_used`` steps."""
    return RepairAttempt(len(attempts) + 1, action, positions, steps_used, report.violations)


def block_record(
    view: BlockView,
    report: ValidationReport,
    *,
    passed: bool,
    attempts: Sequence[RepairAttempt],
    extra_steps: int,
    repaired_positions: tuple[int, ...] = (),
) -> BlockValidation:
    """The settled validation outcome of the block ``view`` shows."""
    return BlockValidation(
        block_index=view.index,
        passed=passed,
        attempts=tuple(attempts),
        violations=report.violations,
        repaired_positions=repaired_positions,
        extra_steps=extra_steps,
    )


class GiveUp(enum.Enum):
    """What happens to a request whose block cannot be made to pass (its ``on_exhausted``)."""

    COMMIT_FLAGGED = "commit_flagged"  # commit the failing block, finish with VALIDATION_FAILED
    TRUNCATE = "truncate"  # drop it, finish with VALIDATION_FAILED at the last good block
    RAISE = "raise"  # end the request with exhausted_error(...)


_GIVE_UPS = {OnExhausted.RETURN_FLAGGED: GiveUp.COMMIT_FLAGGED, OnExhausted.TRUNCATE: GiveUp.TRUNCATE,
             OnExhausted.RAISE: GiveUp.RAISE}


def give_up(on_exhausted: OnExhausted) -> GiveUp:
    """The give-up of a request with this ``on_exhausted`` policy."""
    return _GIVE_UPS[OnExhausted(on_exhausted)]


def exhausted_error(
    request_id: str,
    view: BlockView,
    report: ValidationReport,
    *,
    partial: GenerationResult,
    attempts: Sequence[RepairAttempt],
) -> BlockValidationError:
    """The error a ``raise`` request ends with: :class:`UnrepairableBlockError` when a failing violation
    cannot be repaired (or is fatal), else :class:`RepairBudgetExceeded`."""
    unrepairable = any(v.fails and (not v.repairable or v.severity >= Severity.FATAL) for v in report.violations)
    error_type = UnrepairableBlockError if unrepairable else RepairBudgetExceeded
    return error_type(
        f"block {view.index} of request {request_id} failed validation: "
        + "; ".join(f"{v.validator}/{v.code}: {v.message}" for v in report.failing),
        partial=partial,
        block_index=view.index,
        violations=report.violations,
        attempts=tuple(attempts),
        candidate_text=view.text,
    )


def derived_seed(seed: int, block_index: int, attempt: int) -> int:
    """The seed of a repair or regeneration: different from the failed attempt's, reproducible per request."""
    return (seed * 1_000_003 + block_index * 10_007 + attempt * 101) % (2**63)
