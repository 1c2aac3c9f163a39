"""The built-in policy: the escalation ladder, the renoise positions, and budget enforcement."""

from __future__ import annotations

import pytest

from diffgemma_engine.api.validation import RepairAction, RepairAttempt, RepairDecision, Severity, ValidationReport, Violation
from diffgemma_plugins.options import RepairBudget
from diffgemma_plugins.policy import decide, enforce_budget, renoise_positions
from diffgemma_plugins.testing import make_block

REPAIR, REGENERATE, GIVE_UP, ACCEPT = (
    RepairAction.REPAIR,
    RepairAction.REGENERATE,
    RepairAction.GIVE_UP,
    RepairAction.ACCEPT,
)


def failing(*spans, severity=Severity.ERROR, repairable=True, validator="t.v"):
    return ValidationReport((Violation(validator, "code", "message", tuple(spans), severity, repairable),))


def tried(*actions):
    return tuple(RepairAttempt(i + 1, action, (), 10, ()) for i, action in enumerate(actions))


# ---- the ladder -----------------------------------------------------------------------------------------


def test_ladder_repairs_twice_then_regenerates_once_then_gives_up():
    budget, report = RepairBudget(repair_steps=16), failing((1, 2))
    steps = [
        decide(report, tried(), budget),
        decide(report, tried(REPAIR), budget),
        decide(report, tried(REPAIR, REPAIR), budget),
        decide(report, tried(REPAIR, REPAIR, REGENERATE), budget),
    ]
    assert [d.action for d in steps] == [REPAIR, REPAIR, REGENERATE, GIVE_UP]
    assert steps[0].steps == 16
    assert steps[2].sampler_overrides == {"entropy_bound": 0.05, "t_max": 0.6}


def test_after_a_regeneration_the_ladder_does_not_go_back_to_repairs():
    second = decide(failing((1, 2)), tried(REGENERATE), RepairBudget(max_regenerations=2))
    assert second.action is REGENERATE
    assert second.sampler_overrides["entropy_bound"] == pytest.approx(0.025)
    assert decide(failing((1, 2)), tried(REGENERATE), RepairBudget()).action is GIVE_UP


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (RepairBudget(max_repairs=0), REGENERATE),
        (RepairBudget(max_repairs=0, max_regenerations=0), GIVE_UP),
        (RepairBudget(max_repairs=5), REPAIR),
    ],
)
def test_ladder_follows_the_budget(budget, expected):
    assert decide(failing((1, 2)), tried(REPAIR, REPAIR), budget).action is expected


def test_fatal_and_unrepairable_violations_give_up_at_once():
    assert decide(failing((1, 2), severity=Severity.FATAL), tried(), RepairBudget()).action is GIVE_UP
    decision = decide(failing((1, 2), repairable=False), tried(), RepairBudget())
    assert decision.action is GIVE_UP and "t.v:code" in decision.reason


def test_warnings_alone_are_accepted():
    report = ValidationReport((Violation("t.v", "warn", "w", severity=Severity.WARN),))
    assert decide(report, tried(), RepairBudget()).action is ACCEPT


# ---- renoise positions ------------------------------------------------------------------------------------


def test_spans_are_dilated_by_two_then_by_eight_and_clipped_to_the_canvas():
    block = make_block("a b c d e f g h", canvas_length=20)
    assert renoise_positions(block, failing((5, 6), (0, 1)), tried()) == (0, 1, 2, 3, 4, 5, 6, 7)
    assert renoise_positions(block, failing((18, 20)), tried()) == (16, 17, 18, 19)
    assert renoise_positions(block, failing((10, 11)), tried(REPAIR)) == tuple(range(2, 19))


def test_premature_eos_renoises_from_the_eos_to_the_end_without_dilation():
    block = make_block("short answer", eos=True, canvas_length=16)
    report = failing((block.eos_position, 16), validator="builtin.premature_eos")
    assert renoise_positions(block, report, tried()) == tuple(range(block.eos_position, 16))


def test_top_entropy_positions_on_the_failing_line_are_added():
    text = "one two three\nfour five six"
    block = make_block(text, canvas_length=12)
    line_two = [i for i, (s, _) in enumerate(block.token_offsets) if s > text.index("\n")]
    entropy = [0.0] * 12
    entropy[line_two[-1]] = 5.0  # uncertain, on the failing line
    entropy[0] = 5.0  # uncertain, but on the other line
    block = make_block(text, canvas_length=12, entropy=entropy)
    positions = renoise_positions(block, failing((line_two[0], line_two[0] + 1)), tried())
    assert line_two[-1] in positions and 0 not in positions


# ---- budget enforcement -----------------------------------------------------------------------------------


def test_enforce_budget_escalates_an_oversized_or_surplus_repair():
    block = make_block("x", canvas_length=10)
    wide = RepairDecision(REPAIR, positions=tuple(range(6)))
    assert enforce_budget(wide, block, tried(), RepairBudget(), 0).action is REGENERATE
    assert enforce_budget(wide, block, tried(), RepairBudget(max_repair_fraction=0.6), 0).action is REPAIR
    narrow = RepairDecision(REPAIR, positions=(1,))
    assert enforce_budget(narrow, block, tried(REPAIR, REPAIR), RepairBudget(), 0).action is REGENERATE
    assert enforce_budget(narrow, block, tried(REPAIR, REPAIR, REGENERATE), RepairBudget(), 0).action is GIVE_UP
    assert enforce_budget(RepairDecision(REPAIR), block, tried(), RepairBudget(), 0).action is REGENERATE


def test_enforce_budget_caps_regenerations_and_steps():
    block = make_block("x", canvas_length=10)
    regenerate = RepairDecision(REGENERATE)
    assert enforce_budget(regenerate, block, tried(REGENERATE), RepairBudget(), 0).action is GIVE_UP
    repair = RepairDecision(REPAIR, positions=(1,), steps=16)
    assert enforce_budget(repair, block, tried(), RepairBudget(request_step_budget=30), 20).steps == 10
    assert enforce_budget(repair, block, tried(), RepairBudget(request_step_budget=30), 30).action is GIVE_UP
    assert enforce_budget(RepairDecision(ACCEPT), block, tried(REGENERATE) * 5, RepairBudget(), 10**6).action is ACCEPT
