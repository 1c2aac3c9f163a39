"""The built-in repair policy: the escalation ladder and the default renoise positions.

Both hookimpls are ``trylast``, so any plugin (or a request's ``repair_policy``) that returns a
non-None result overrides them. The pure functions below are also what the checker uses to enforce
a request's budgets on any decision, whoever made it.

Ladder, per block: a FATAL or non-repairable violation gives up at once; otherwise repair (at most
``max_repairs`` times, each renoising at most ``max_repair_fraction`` of the canvas, the second repair
with a wider dilation); then regenerate (at most ``max_regenerations`` times, with ``entropy_bound``
halved and ``t_max`` lowered to 0.6); then give up.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping

from diffgemma_engine.api.params import SamplerDefaults
from diffgemma_engine.api.validation import (
    BlockView,
    RepairAction,
    RepairAttempt,
    RepairDecision,
    RequestInfo,
    Severity,
    ValidationReport,
)

from .hookspecs import hookimpl
from .options import RepairBudget
from .validators.eos import PrematureEos

CHECKPOINT_ENTROPY_BOUND = SamplerDefaults().entropy_bound  # RequestInfo does not carry the request's own
REGENERATE_T_MAX = 0.6
FIRST_REPAIR_DILATION = 2
WIDENED_DILATION = 8
HIGH_ENTROPY_QUANTILE = 0.9


def count_actions(attempts: Iterable[RepairAttempt], action: RepairAction) -> int:
    return sum(1 for attempt in attempts if attempt.action is action)


def conservative_overrides(regenerations_done: int) -> Mapping[str, float]:
    """Sampler overrides of the next regeneration: the entropy bound halves with each one."""
    return {
        "entropy_bound": CHECKPOINT_ENTROPY_BOUND / 2 ** (regenerations_done + 1),
        "t_max": REGENERATE_T_MAX,
    }


def next_rung(
    attempts: tuple[RepairAttempt, ...], budget: RepairBudget, *, repair_allowed: bool = True, why: str = ""
) -> RepairDecision:
    """The next step of the ladder for a repairable failure, given what was already tried."""
    repairs = count_actions(attempts, RepairAction.REPAIR)
    regenerations = count_actions(attempts, RepairAction.REGENERATE)
    prefix = f"{why}; " if why else ""
    if repair_allowed and regenerations == 0 and repairs < budget.max_repairs:
        return RepairDecision(
            RepairAction.REPAIR, steps=budget.repair_steps, reason=f"{prefix}repair {repairs + 1} of {budget.max_repairs}"
        )
    if regenerations < budget.max_regenerations:
        return RepairDecision(
            RepairAction.REGENERATE,
            sampler_overrides=conservative_overrides(regenerations),
            reason=f"{prefix}regeneration {regenerations + 1} of {budget.max_regenerations}",
        )
    return RepairDecision(
        RepairAction.GIVE_UP,
        reason=f"{prefix}budget exhausted after {repairs} repairs and {regenerations} regenerations",
    )


def decide(
    report: ValidationReport, attempts: tuple[RepairAttempt, ...], budget: RepairBudget
) -> RepairDecision:
    """The built-in decision for a block whose report did not pass."""
    failing = report.failing
    if not failing:
        return RepairDecision(RepairAction.ACCEPT, reason="no failing violation")
    unrepairable = [v for v in failing if v.severity >= Severity.FATAL or not v.repairable]
    if unrepairable:
        codes = ", ".join(sorted({f"{v.validator}:{v.code}" for v in unrepairable}))
        return RepairDecision(RepairAction.GIVE_UP, reason=f"not repairable: {codes}")
    return next_rung(attempts, budget)


def enforce_budget(
    decision: RepairDecision,
    block: BlockView,
    attempts: tuple[RepairAttempt, ...],
    budget: RepairBudget,
    extra_steps_spent: int,
) -> RepairDecision:
    """Bring any policy's decision within the request's budget, escalating or giving up where needed."""
    if decision.action in (RepairAction.ACCEPT, RepairAction.GIVE_UP):
        return decision
    remaining = None
    if budget.request_step_budget is not None:
        remaining = budget.request_step_budget - extra_steps_spent
        if remaining <= 0:
            return RepairDecision(
                RepairAction.GIVE_UP,
                reason=f"request step budget of {budget.request_step_budget} steps is spent ({extra_steps_spent})",
            )
    if decision.action is RepairAction.REPAIR:
        problem = _repair_problem(decision, block, attempts, budget)
        if problem:
            decision = next_rung(attempts, budget, repair_allowed=False, why=problem)
        elif remaining is not None and decision.steps is not None and decision.steps > remaining:
            return RepairDecision(
                RepairAction.REPAIR,
                positions=decision.positions,
                steps=remaining,
                sampler_overrides=decision.sampler_overrides,
                reason=f"{decision.reason}; steps cut to the {remaining} left in the request budget",
            )
    if decision.action is RepairAction.REGENERATE:
        regenerations = count_actions(attempts, RepairAction.REGENERATE)
        if regenerations >= budget.max_regenerations:
            return RepairDecision(
                RepairAction.GIVE_UP,
                reason=f"{decision.reason}; {regenerations} of {budget.max_regenerations} regenerations already used",
            )
    return decision


def _repair_problem(
    decision: RepairDecision, block: BlockView, attempts: tuple[RepairAttempt, ...], budget: RepairBudget
) -> str:
    repairs = count_actions(attempts, RepairAction.REPAIR)
    if repairs >= budget.max_repairs:
        return f"{repairs} of {budget.max_repairs} repairs already used"
    if not decision.positions:
        return "no positions to renoise"
    limit = budget.max_repair_fraction * block.canvas_length
    if len(decision.positions) > limit:
        return (
            f"the renoise mask covers {len(decision.positions)} of {block.canvas_length} positions "
            f"(more than {budget.max_repair_fraction:.0%})"
        )
    return ""


# A position is "uncertain" only above this entropy (nats), whatever the block's quantiles: in a block
# where every position is confident, no extra position is renoised.
MIN_UNCERTAIN_ENTROPY = 0.5


def renoise_positions(
    block: BlockView, report: ValidationReport, attempts: tuple[RepairAttempt, ...]
) -> tuple[int, ...]:
    """Failing spans dilated (2 tokens, 8 on a second repair) plus the top-entropy positions on the same lines.

    A premature EOS renoises everything from the EOS to the end of the canvas instead.
    """
    canvas = block.canvas_length
    failing = report.failing
    positions: set[int] = set()
    if block.eos_position is not None and any(v.validator == PrematureEos.name for v in failing):
        positions.update(range(block.eos_position, canvas))
    spans = [span for v in failing if v.validator != PrematureEos.name for span in v.spans]
    dilation = FIRST_REPAIR_DILATION if count_actions(attempts, RepairAction.REPAIR) == 0 else WIDENED_DILATION
    for start, end in spans:
        positions.update(range(max(0, start - dilation), min(canvas, end + dilation)))
    positions.update(_high_entropy_on_lines(block, spans))
    return tuple(sorted(positions))


def _high_entropy_on_lines(block: BlockView, spans: list[tuple[int, int]]) -> set[int]:
    length = min(len(block.entropy), len(block.token_offsets))
    if length == 0 or not spans:
        return set()
    newlines = [index for index, char in enumerate(block.text) if char == "\n"]
    line_of = [bisect.bisect_right(newlines, block.token_offsets[p][0] - 1) for p in range(length)]
    lines = {line_of[p] for start, end in spans for p in range(max(0, start), min(end, length))}
    ranked = sorted(block.entropy[:length])
    threshold = max(ranked[min(length - 1, int(HIGH_ENTROPY_QUANTILE * length))], MIN_UNCERTAIN_ENTROPY)
    return {p for p in range(length) if block.entropy[p] >= threshold and line_of[p] in lines}


@hookimpl(trylast=True)
def diffgemma_repair_decision(
    block: BlockView, report: ValidationReport, attempts: tuple[RepairAttempt, ...], request: RequestInfo
) -> RepairDecision:
    return decide(report, attempts, RepairBudget.of(request))


@hookimpl(trylast=True)
def diffgemma_select_renoise_positions(
    block: BlockView, report: ValidationReport, attempts: tuple[RepairAttempt, ...], request: RequestInfo
) -> tuple[int, ...]:
    return renoise_positions(block, report, attempts)
