"""The checker: run order, crash isolation, short-circuit, transactional state, hooks, options, decide()."""

from __future__ import annotations

import pytest

from diffgemma_engine.api.errors import InvalidRequestError, ValidatorCrashedError
from diffgemma_engine.api.validation import BlockChecker, RepairAction, RepairAttempt, RepairDecision, Severity, Violation
from diffgemma_plugins import PluginContractError, hookimpl
from diffgemma_plugins.testing import make_block, make_request


class Scripted:
    """A validator that logs its calls and returns what ``find(block, ctx)`` returns (or raises ``crash``)."""

    def __init__(self, name, log=None, *, stage=1, cost=1.0, scope="block", find=None, crash=None):
        self.name, self.stage, self.cost, self.scope = name, stage, cost, scope
        self.log = log if log is not None else []
        self.find, self.crash = find, crash

    def validate(self, block, ctx):
        self.log.append(self.name)
        if self.crash is not None:
            raise self.crash
        return self.find(block, ctx) if self.find else None


def error_on(word, severity=Severity.ERROR, repairable=True):
    def find(block, ctx):
        at = block.text.find(word)
        if at < 0:
            return None
        return [Violation("t", "found", f"found {word}", (block.char_span_to_tokens(at, at + len(word)),), severity, repairable)]

    return find


class Registers:
    def __init__(self, *validators):
        self.validators = validators

    @hookimpl
    def diffgemma_register_validators(self, register):
        for validator in self.validators:
            register(validator)


@pytest.fixture
def add(pm):
    def add(*validators):
        pm.register(Registers(*validators), name=f"test{len(pm.get_plugins())}")
        return validators

    return add


def checker_for(factory, names, **options):
    checker = factory(make_request(names, options))
    assert isinstance(checker, BlockChecker)
    return checker


# ---- running validators ------------------------------------------------------------------------------


def test_validators_run_in_stage_cost_name_order(add, factory):
    log = []
    add(Scripted("t.c", log), Scripted("t.a", log), Scripted("t.b", log, stage=0, cost=5), Scripted("t.d", log, cost=0.5))
    report = checker_for(factory, ["t.a", "t.b", "t.c", "t.d"]).check(make_block("hello"))
    assert log == ["t.b", "t.d", "t.a", "t.c"]
    assert report.ran == ("t.b", "t.d", "t.a", "t.c")
    assert set(report.elapsed_ms) == set(report.ran)


def test_a_fatal_violation_skips_later_stages_but_not_its_own(add, factory):
    log = []
    add(
        Scripted("t.fatal", log, stage=0, find=error_on("x", Severity.FATAL)),
        Scripted("t.same_stage", log, stage=0, cost=2),
        Scripted("t.later", log, stage=1),
    )
    report = checker_for(factory, ["t.fatal", "t.same_stage", "t.later"]).check(make_block("x marks"))
    assert report.ran == ("t.fatal", "t.same_stage")
    log.clear()
    checker_for(factory, ["t.fatal", "t.same_stage", "t.later"]).check(make_block("clean"))
    assert log == ["t.fatal", "t.same_stage", "t.later"]


def test_a_crash_raises_by_default_naming_the_validator(add, factory):
    add(Scripted("t.crashy", crash=KeyError("gone")), Scripted("t.fine"))
    with pytest.raises(ValidatorCrashedError) as error:
        checker_for(factory, ["t.crashy", "t.fine"]).check(make_block("text"))
    assert error.value.validator == "t.crashy"
    assert isinstance(error.value.__cause__, KeyError)


def test_skip_records_the_crash_and_runs_the_rest(add, factory):
    log = []
    add(Scripted("t.crashy", log, crash=RuntimeError("boom")), Scripted("t.fine", log, find=error_on("bad")))
    checker = checker_for(factory, ["t.crashy", "t.fine"], on_validator_error="skip")
    report = checker.check(make_block("all good"))
    assert report.passed and report.crashed == ("t.crashy",) and report.ran == ("t.fine",)
    assert not checker.check(make_block("bad news")).passed


def test_fail_block_turns_a_crash_into_a_fatal_violation(add, factory):
    add(Scripted("t.crashy", crash=RuntimeError("boom")))
    checker = checker_for(factory, ["t.crashy"], on_validator_error="fail_block")
    block = make_block("text")
    report = checker.check(block)
    [violation] = report.violations
    assert (violation.validator, violation.code, violation.severity) == ("t.crashy", "validator_crashed", Severity.FATAL)
    assert report.crashed == ("t.crashy",) and not report.passed
    assert checker.decide(block, report, ()).action is RepairAction.GIVE_UP


@pytest.mark.parametrize(
    "returned",
    [
        ["not a violation"],
        [Violation("t", "c", "m", spans=((0, 9999),))],
        [Violation("t", "c", "m", spans=((3, 1),))],
        [Violation("t", "c", "m", severity=30)],
    ],
)
def test_results_that_break_the_contract_count_as_crashes(add, factory, returned):
    add(Scripted("t.sloppy", find=lambda block, ctx: returned))
    report = checker_for(factory, ["t.sloppy"], on_validator_error="skip").check(make_block("text"))
    assert report.crashed == ("t.sloppy",) and report.violations == ()


def test_violations_are_attributed_to_the_registered_name(add, factory):
    add(Scripted("t.real", find=lambda block, ctx: [Violation("someone.else", "c", "m")]))
    [violation] = checker_for(factory, ["t.real"]).check(make_block("text")).violations
    assert violation.validator == "t.real"


def test_final_scope_validators_run_only_on_the_final_block(add, factory):
    log = []
    add(Scripted("t.final", log, scope="final"))
    checker = checker_for(factory, ["t.final"])
    checker.check(make_block("middle"))
    assert log == []
    checker.check(make_block("end", eos=True))
    assert log == ["t.final"]


def test_validators_get_their_parsed_options(add, factory):
    seen = []

    class WithOptions(Scripted):
        def parse_options(self, options):
            if set(options) - {"limit"}:
                raise ValueError("only 'limit'")
            return ("parsed", options.get("limit", 3))

    add(WithOptions("t.opts", find=lambda block, ctx: seen.append(ctx.options)))
    checker_for(factory, ["t.opts"], **{"t.opts": {"limit": 7}}).check(make_block("x"))
    checker_for(factory, ["t.opts"]).check(make_block("x"))
    assert seen == [("parsed", 7), ("parsed", 3)]
    with pytest.raises(InvalidRequestError, match="t.opts: only 'limit'") as error:
        factory(make_request(["t.opts"], {"t.opts": {"limit": 1, "other": 2}}))
    assert error.value.field == "validator_options"


# ---- transactional state -------------------------------------------------------------------------------


class Remembering:
    """Remembers every block text it saw in ``ctx.state``; fails blocks containing 'bad'."""

    name = "t.memory"

    def __init__(self):
        self.seen, self.commits = [], []

    def validate(self, block, ctx):
        ctx.state["texts"] = ctx.state.get("texts", ()) + (block.text,)
        self.seen.append(ctx.state["texts"])
        return [Violation(self.name, "bad", "bad")] if "bad" in block.text else None

    def on_commit(self, block, ctx):
        self.commits.append(ctx.state.get("texts", ()))


def test_state_written_by_a_failed_attempt_is_discarded_and_a_committed_one_kept(add, factory):
    [memory] = add(Remembering())
    checker = checker_for(factory, ["t.memory"])
    checker.check(make_block("bad one", index=0, attempt=0))
    retry = make_block("good one", index=0, attempt=1)
    report = checker.check(retry)
    assert memory.seen[-1] == ("good one",)
    checker.on_commit(retry, report)
    assert memory.commits == [("good one",)]
    checker.check(make_block(" next", committed="good one", index=1))
    assert memory.seen[-1] == ("good one", " next")
    checker.on_exhausted(make_block(" next", committed="good one", index=1), report)
    checker.check(make_block(" again", committed="good one", index=1, attempt=1))
    assert memory.seen[-1] == ("good one", " again")


def test_on_commit_of_an_attempt_that_was_not_the_last_checked_keeps_the_old_state(add, factory):
    [memory] = add(Remembering())
    checker = checker_for(factory, ["t.memory"])
    report = checker.check(make_block("first", index=0, attempt=0))
    checker.on_commit(make_block("other", index=0, attempt=3), report)
    assert memory.commits == [()]


def test_an_on_commit_crash_raises_or_disables_the_validator(add, factory):
    class CrashesOnCommit(Scripted):
        def on_commit(self, block, ctx):
            raise RuntimeError("state broke")

    log = []
    add(CrashesOnCommit("t.commit", log))
    block = make_block("text")
    strict = checker_for(factory, ["t.commit"])
    with pytest.raises(ValidatorCrashedError, match="t.commit"):
        strict.on_commit(block, strict.check(block))
    lenient = checker_for(factory, ["t.commit"], on_validator_error="skip")
    lenient.on_commit(block, lenient.check(block))
    log.clear()
    report = lenient.check(make_block(" more", committed="text", index=1))
    assert log == [] and report.crashed == ("t.commit",)


# ---- observer hooks ------------------------------------------------------------------------------------


class Observer:
    def __init__(self):
        self.calls = []

    @hookimpl
    def diffgemma_block_validated(self, block, report, attempt, request):
        self.calls.append(("validated", block.index, attempt, report.passed, request.request_id))

    @hookimpl
    def diffgemma_block_committed(self, block, report, request):
        self.calls.append(("committed", block.index))

    @hookimpl
    def diffgemma_validation_exhausted(self, block, report, attempts, request):
        self.calls.append(("exhausted", block.index, tuple(a.action for a in attempts)))


def test_observers_see_every_validation_commit_and_exhaustion(pm, add, factory):
    observer = Observer()
    pm.register(observer, name="observer")
    add(Scripted("t.words", find=error_on("bad")))
    checker = checker_for(factory, ["t.words"])
    good = make_block("good", index=0)
    checker.on_commit(good, checker.check(good))
    attempts = ()
    actions = []
    for attempt in range(4):
        block = make_block(" bad", committed="good", index=1, attempt=attempt)
        report = checker.check(block)
        decision = checker.decide(block, report, attempts)
        actions.append(decision.action)
        if decision.action is not RepairAction.GIVE_UP:
            attempts += (RepairAttempt(attempt + 1, decision.action, decision.positions, 10, report.violations),)
    assert actions == [RepairAction.REPAIR, RepairAction.REPAIR, RepairAction.REGENERATE, RepairAction.GIVE_UP]
    checker.on_exhausted(block, report)
    assert observer.calls == [
        ("validated", 0, 0, True, "test"),
        ("committed", 0),
        *[("validated", 1, attempt, False, "test") for attempt in range(4)],
        ("exhausted", 1, (RepairAction.REPAIR, RepairAction.REPAIR, RepairAction.REGENERATE)),
    ]


# ---- the factory and request options ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("validators", "options", "field"),
    [
        (["builtin.nope"], {}, "validators"),
        (["default"], {"builtin.nope": {}}, "validator_options"),
        (["default"], {"builtin.json": {}}, "validator_options"),  # not selected
        (["default"], {"builtin.stutter": {"x": 1}}, "validator_options"),  # takes no options
        (["default"], {"builtin.premature_eos": ["min_new_tokens"]}, "validator_options"),
        (["builtin.regex"], {}, "validator_options"),  # pattern is required
        (["default"], {"on_validator_error": "ignore"}, "validator_options"),
        (["default"], {"max_repairs": -1}, "validator_options"),
        (["default"], {"max_regenerations": True}, "validator_options"),
        (["default"], {"max_repairs": 10**9}, "validator_options"),  # each attempt costs the shared engine steps
        (["default"], {"max_regenerations": 33}, "validator_options"),
        (["default"], {"repair_steps": 0}, "validator_options"),
        (["default"], {"max_repair_fraction": 0}, "validator_options"),
        (["default"], {"max_repair_fraction": 1.5}, "validator_options"),
        (["default"], {"request_step_budget": "10"}, "validator_options"),
        (["default"], {"repair_policy": "retry"}, "validator_options"),
        (["default"], {"repair_policy": lambda block, ctx: None}, "validator_options"),
        (["default"], {"repair_policy": lambda block, *, strict: None}, "validator_options"),
    ],
)
def test_bad_requests_fail_in_the_factory_naming_the_field(factory, validators, options, field):
    with pytest.raises(InvalidRequestError) as error:
        factory(make_request(validators, options))
    assert error.value.field == field


def test_good_options_are_accepted(factory):
    options = {
        "on_validator_error": "skip",
        "max_repairs": 0,
        "max_regenerations": 3,
        "repair_steps": 8,
        "max_repair_fraction": 1,
        "request_step_budget": 100,
        "repair_policy": lambda block, report, request=None: None,
        "builtin.json": {"allow_code_fence": False},
        "builtin.premature_eos": {"min_new_tokens": 4},
    }
    checker = factory(make_request(["default", "+builtin.json"], options))
    assert checker.options.budget.max_regenerations == 3 and checker.options.on_validator_error == "skip"


def test_nothing_selected_means_no_checker_but_options_are_still_checked(factory):
    assert factory(make_request([])) is None
    with pytest.raises(InvalidRequestError):
        factory(make_request([], {"max_repairs": "two"}))


# ---- decide() ------------------------------------------------------------------------------------------------


def test_the_builtin_policy_repairs_the_dilated_failing_span(factory):
    checker = factory(make_request(["builtin.stutter"]))
    block = make_block("we saw the the sea")
    report = checker.check(block)
    decision = checker.decide(block, report, ())
    [span] = report.failing[0].spans
    assert decision.action is RepairAction.REPAIR
    assert decision.positions == tuple(range(span[0] - 2, span[1] + 2))


def test_a_plugins_position_hook_overrides_the_builtin(pm, factory):
    class Positions:
        @hookimpl
        def diffgemma_select_renoise_positions(self, block, report, attempts, request):
            return [5, 3, 3]

    pm.register(Positions(), name="positions")
    checker = factory(make_request(["builtin.stutter"]))
    block = make_block("we saw the the sea")
    assert checker.decide(block, checker.check(block), ()).positions == (3, 5)


def test_a_request_repair_policy_runs_before_plugins_and_may_defer(pm, factory):
    class Regenerate:
        @hookimpl
        def diffgemma_repair_decision(self, block, report, attempts, request):
            return RepairDecision(RepairAction.REGENERATE, sampler_overrides={"t_max": 0.5})

    pm.register(Regenerate(), name="regenerate")
    block = make_block("we saw the the sea")
    give_up = factory(make_request(["builtin.stutter"], {"repair_policy": lambda report: RepairDecision(RepairAction.GIVE_UP)}))
    assert give_up.decide(block, give_up.check(block), ()).action is RepairAction.GIVE_UP
    defer = factory(make_request(["builtin.stutter"], {"repair_policy": lambda block, report, attempts, request: None}))
    decision = defer.decide(block, defer.check(block), ())
    assert decision.action is RepairAction.REGENERATE and decision.sampler_overrides == {"t_max": 0.5}


@pytest.mark.parametrize(
    ("decision", "hook"),
    [
        ("repair", "diffgemma_repair_decision"),
        (RepairDecision(RepairAction.REGENERATE, sampler_overrides={"temperature": 0.1}), "diffgemma_repair_decision"),
        (RepairDecision(RepairAction.REGENERATE, sampler_overrides={"t_max": -1}), "diffgemma_repair_decision"),
        (RepairDecision(RepairAction.REPAIR, positions=(256,)), "diffgemma_repair_decision"),
    ],
)
def test_policy_results_that_break_the_contract_are_errors(factory, decision, hook):
    checker = factory(make_request(["builtin.stutter"], {"repair_policy": lambda: decision}))
    block = make_block("we saw the the sea")
    with pytest.raises(PluginContractError) as error:
        checker.decide(block, checker.check(block), ())
    assert error.value.hook == hook


def test_bad_positions_from_the_position_hook_are_errors(pm, factory):
    class Bad:
        @hookimpl
        def diffgemma_select_renoise_positions(self):
            return [-1]

    pm.register(Bad(), name="bad")
    checker = factory(make_request(["builtin.stutter"]))
    block = make_block("we saw the the sea")
    with pytest.raises(PluginContractError, match="select_renoise_positions"):
        checker.decide(block, checker.check(block), ())


def test_a_mask_over_the_fraction_escalates_to_regeneration(add, factory):
    add(Scripted("t.wide", find=lambda block, ctx: [Violation("t.wide", "wide", "wide", spans=((0, 200),))]))
    checker = factory(make_request(["t.wide"]))
    block = make_block("text")
    decision = checker.decide(block, checker.check(block), ())
    assert decision.action is RepairAction.REGENERATE
    assert decision.sampler_overrides == {"entropy_bound": 0.05, "t_max": 0.6}
    assert "more than 50%" in decision.reason


def test_the_request_step_budget_counts_repair_steps(factory):
    checker = factory(make_request(["builtin.stutter"], {"request_step_budget": 20, "repair_steps": 16}))
    first = make_block("we saw the the sea", attempt=0, steps_used=40)
    decision = checker.decide(first, checker.check(first), ())
    assert (decision.action, decision.steps) == (RepairAction.REPAIR, 16)
    repaired = make_block("we saw the the sea", attempt=1, steps_used=16)
    attempts = (RepairAttempt(1, RepairAction.REPAIR, decision.positions, 40, ()),)
    decision = checker.decide(repaired, checker.check(repaired), attempts)
    assert (decision.action, decision.steps) == (RepairAction.REPAIR, 4)
    again = make_block("we saw the the sea", attempt=2, steps_used=4)
    attempts += (RepairAttempt(2, RepairAction.REPAIR, decision.positions, 16, ()),)
    assert checker.decide(again, checker.check(again), attempts).action is RepairAction.GIVE_UP
    assert checker.extra_steps == 20
