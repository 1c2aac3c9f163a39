"""The validation window end to end, with a scripted denoiser: repair, regenerate, give up, frozen positions,
transactional state and crash isolation — deterministic, no model randomness involved."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from diffgemma_engine import (
    Engine,
    RepairBudgetExceeded,
    SamplingParams,
    UnrepairableBlockError,
    ValidatorCrashedError,
)
from diffgemma_engine.api.validation import RepairAction, Severity, Violation
from diffgemma_plugins import hookimpl, make_plugin_manager
from diffgemma_plugins.checker import make_checker_factory

CANVAS = 32


def tokens(text: str) -> list[int]:
    """tiny-random's byte tokens: one per ASCII character."""
    return [128 + ord(c) for c in text]


class ScriptedRunner:
    """Stands in for the model: each decoder call returns near-one-hot logits of a scripted canvas.

    ``script(block_index, call)`` gives the canvas text for the ``call``-th decoder call (0-based) of a
    block; with confident one-hot logits every attempt converges in two steps.
    """

    def __init__(self, real, prompt_length: int, script) -> None:
        self.real, self.script, self.prompt_length = real, script, prompt_length
        self.canvas_length, self.vocab_size = real.canvas_length, real.vocab_size
        self.calls: dict[int, int] = defaultdict(int)

    def prefill(self, prompt_ids):
        return self.real.prefill(prompt_ids)

    def commit(self, prefix, canvas):
        self.real.commit(prefix, canvas)

    def new_canvas(self, generator):
        return self.real.new_canvas(generator)

    def denoise(self, rows):
        logits = torch.full((len(rows), self.canvas_length, self.vocab_size), -30.0)
        for row, item in enumerate(rows):
            block = (item.prefix.length - self.prompt_length) // self.canvas_length
            text = self.script(block, self.calls[block])
            self.calls[block] += 1
            target = torch.tensor(tokens(text.ljust(self.canvas_length)[: self.canvas_length]))
            logits[row, torch.arange(self.canvas_length), target] = 30.0
        return logits


class ForbidX:
    name = "test.no_x"
    default_enabled = False

    def validate(self, block, ctx):
        x = tokens("X")[0]
        return [Violation(self.name, "forbidden_x", "X is forbidden", ((i, i + 1),))
                for i, t in enumerate(block.token_ids) if t == x]


class AlwaysFails:
    name = "test.always"
    default_enabled = False

    def __init__(self, severity=Severity.ERROR, repairable=True):
        self.severity, self.repairable = severity, repairable

    def validate(self, block, ctx):
        return [Violation(self.name, "nope", "never passes", ((0, 1),), self.severity, self.repairable)]


class Crashes:
    name = "test.crash"
    default_enabled = False

    def validate(self, block, ctx):
        raise ZeroDivisionError("validator bug")


class CountsCommits:
    """Keeps the number of committed blocks in ctx.state; fails the first attempt of block 1."""

    name = "test.stateful"
    default_enabled = False
    seen: list[int] = []

    def validate(self, block, ctx):
        ctx.state["blocks"] = ctx.state.get("blocks", 0) + 1
        CountsCommits.seen.append(ctx.state["blocks"])
        if block.index == 1 and block.attempt == 0:
            return [Violation(self.name, "first_try", "fail once", ((0, 1),))]
        return None


class _Plugin:
    def __init__(self, *validators):
        self.validators = validators

    @hookimpl
    def diffgemma_register_validators(self, register):
        for validator in self.validators:
            register(validator)


PROMPT = [2, 200, 201, 202]
GOOD = "ok first block".ljust(CANVAS, ".")


@pytest.fixture
def scripted():
    engines = []

    def make(script, *validators):
        engine = Engine(model="tiny-random")
        runner = ScriptedRunner(engine.runner, len(PROMPT), script)
        engine.runner = engine.core.runner = runner
        manager = make_plugin_manager(autoload=False)
        manager.register(_Plugin(*validators), name="test-validators")
        engine.use_checker_factory(make_checker_factory(manager))
        engines.append(engine)
        return engine, runner

    yield make
    for engine in engines:
        engine.shutdown()


def params(validators, max_new_tokens=64, **options):
    return SamplingParams(max_new_tokens=max_new_tokens, seed=0, validators=validators,
                          validator_options=options.pop("validator_options", {}), ignore_eos=True, **options)


def test_repair_renoises_only_the_offending_tokens_and_keeps_the_rest_frozen(scripted):
    first = "abcXefghijklmnopqrstuvwxyzABCDEF"
    repaired_elsewhere = "ZZZdZZZZZZZZZZZZZZZZZZZZZZZZZZZZ"  # differs everywhere: only free positions may change

    def script(block, call):
        return first if call < 2 else repaired_elsewhere

    engine, _ = scripted(script, ForbidX())
    result = engine.generate(prompt_token_ids=PROMPT, params=params(("test.no_x",), max_new_tokens=32))
    assert "X" not in result.text
    free = {1, 2, 3, 4, 5}  # the violation at 3, dilated by 2
    expected = "".join(repaired_elsewhere[i] if i in free else first[i] for i in range(CANVAS))
    assert result.text == expected
    block = result.validation.blocks[0]
    assert block.passed
    assert block.repaired_positions == (1, 2, 3, 4, 5)
    assert [a.action for a in block.attempts] == [RepairAction.REPAIR]
    assert block.extra_steps == 2
    assert result.stats.repairs == 1


def test_escalation_order_then_raise_with_the_partial_result(scripted):
    def script(block, call):
        return GOOD if block == 0 else "X" * CANVAS

    engine, _ = scripted(script, ForbidX())
    with pytest.raises(RepairBudgetExceeded) as raised:
        engine.generate(prompt_token_ids=PROMPT, params=params(("test.no_x",), max_new_tokens=64))
    error = raised.value
    assert error.block_index == 1
    assert [a.action for a in error.attempts] == [RepairAction.REGENERATE]  # whole-canvas mask: > 50%
    assert error.partial.text == GOOD
    assert error.partial.finish_reason == "validation_failed"
    assert error.candidate_text == "X" * CANVAS


def test_small_violations_repair_twice_then_regenerate_then_give_up(scripted):
    engine, _ = scripted(lambda block, call: "aaaaXaaaaaaaaaaaaaaaaaaaaaaaaaaa", ForbidX())
    with pytest.raises(RepairBudgetExceeded) as raised:
        engine.generate(prompt_token_ids=PROMPT, params=params(("test.no_x",), max_new_tokens=32))
    assert [a.action for a in raised.value.attempts] == [
        RepairAction.REPAIR, RepairAction.REPAIR, RepairAction.REGENERATE]


def test_budgets_zero_give_up_at_once(scripted):
    engine, _ = scripted(lambda block, call: "aaaaXaaaaaaaaaaaaaaaaaaaaaaaaaaa", ForbidX())
    options = {"max_repairs": 0, "max_regenerations": 0}
    with pytest.raises(RepairBudgetExceeded) as raised:
        engine.generate(prompt_token_ids=PROMPT,
                        params=params(("test.no_x",), max_new_tokens=32, validator_options=options))
    assert raised.value.attempts == ()


def test_fatal_violations_are_unrepairable(scripted):
    engine, _ = scripted(lambda block, call: "a" * CANVAS, AlwaysFails(Severity.FATAL))
    with pytest.raises(UnrepairableBlockError) as raised:
        engine.generate(prompt_token_ids=PROMPT, params=params(("test.always",), max_new_tokens=32))
    assert raised.value.attempts == ()
    assert raised.value.partial.text == ""


def test_return_flagged_commits_the_candidate(scripted):
    engine, _ = scripted(lambda block, call: GOOD if block == 0 else "X" * CANVAS,
                         ForbidX())
    result = engine.generate(prompt_token_ids=PROMPT,
                             params=params(("test.no_x",), on_exhausted="return_flagged"))
    assert result.finish_reason == "validation_failed"
    assert result.text == GOOD + "X" * CANVAS
    assert [b.passed for b in result.validation.blocks] == [True, False]
    assert not result.validation.passed and "forbidden_x" in result.validation.flags


def test_truncate_returns_the_last_good_block(scripted):
    engine, _ = scripted(lambda block, call: GOOD if block == 0 else "X" * CANVAS,
                         ForbidX())
    events = list(engine.stream(prompt_token_ids=PROMPT, params=params(("test.no_x",), on_exhausted="truncate")))
    result = events[-1].result
    assert result.finish_reason == "validation_failed"
    assert result.text == GOOD
    assert "".join(e.text for e in events[:-1]) == result.text  # nothing streamed that was not kept


def test_validator_state_is_transactional_across_attempts(scripted):
    CountsCommits.seen = []
    engine, _ = scripted(lambda block, call: "s" * CANVAS, CountsCommits())
    result = engine.generate(prompt_token_ids=PROMPT, params=params(("test.stateful",), max_new_tokens=96))
    assert result.validation.passed
    # block 0 commits (state 1); block 1 fails once (provisional 2, discarded), passes (2); block 2 -> 3
    assert CountsCommits.seen == [1, 2, 2, 3]


def test_a_crashing_validator_fails_its_request_only(scripted):
    engine, _ = scripted(lambda block, call: "a" * CANVAS, Crashes(), ForbidX())
    crashing = engine.submit(prompt_token_ids=PROMPT, params=params(("test.crash",), max_new_tokens=32))
    healthy = engine.submit(prompt_token_ids=PROMPT, params=params(("test.no_x",), max_new_tokens=32))
    with pytest.raises(ValidatorCrashedError) as raised:
        crashing.result(timeout=30)
    assert raised.value.validator == "test.crash"
    assert healthy.result(timeout=30).text == "a" * CANVAS


def test_skip_policy_records_the_crash_and_carries_on(scripted):
    engine, _ = scripted(lambda block, call: "a" * CANVAS, Crashes())
    result = engine.generate(prompt_token_ids=PROMPT, params=params(
        ("test.crash",), max_new_tokens=32, validator_options={"on_validator_error": "skip"}))
    assert result.text == "a" * CANVAS
