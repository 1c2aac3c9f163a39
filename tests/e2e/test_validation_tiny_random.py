"""Validators with the real model path (tiny-random weights, the entry-point-discovered checker)."""

from __future__ import annotations

from collections import Counter

import pytest

from diffgemma_engine import BlockValidationError, Engine, SamplingParams
from diffgemma_engine.api.validation import Violation
from diffgemma_plugins import get_plugin_manager, hookimpl


class Forbid:
    default_enabled = False

    def __init__(self, token: int) -> None:
        self.name = f"e2e.forbid_{token}"
        self.token = token

    def validate(self, block, ctx):
        return [Violation(self.name, "forbidden", f"token {self.token}", ((i, i + 1),))
                for i, t in enumerate(block.token_ids) if t == self.token]


class Never:
    name = "e2e.never"
    default_enabled = False

    def validate(self, block, ctx):
        if block.index >= 1:
            return [Violation(self.name, "never", "block 1 never passes", ((0, 1),))]
        return None


class _Plugin:
    def __init__(self, validator):
        self.validator = validator

    @hookimpl
    def diffgemma_register_validators(self, register):
        register(self.validator)


@pytest.fixture
def engine():
    engine = Engine(model="tiny-random")  # the checker factory comes from the entry point
    yield engine
    engine.shutdown()


@pytest.fixture
def registered():
    manager = get_plugin_manager()
    plugins = []

    def register(validator):
        plugin = _Plugin(validator)
        manager.register(plugin, name=f"e2e-{validator.name}")
        plugins.append(plugin)

    yield register
    for plugin in plugins:
        manager.unregister(plugin)


def test_a_forbidden_token_the_model_produces_is_repaired_away(engine, registered):
    params = dict(max_new_tokens=32, seed=0, ignore_eos=True, max_denoising_steps=12)
    plain = engine.generate("repair me", SamplingParams(**params))
    token, count = Counter(plain.token_ids).most_common(1)[0]
    assert count >= 1
    registered(Forbid(token))
    result = engine.generate("repair me", SamplingParams(**params, validators=(f"e2e.forbid_{token}",)))
    assert token not in result.token_ids
    block = result.validation.blocks[0]
    assert block.passed and block.attempts
    if block.attempts[0].action.value == "repair":
        positions = {i for i, t in enumerate(plain.token_ids) if t == token}
        assert positions <= set(block.repaired_positions)
        # outside the repaired positions the first attempt's tokens are kept (frozen)
        kept = [i for i in range(32) if i not in block.repaired_positions]
        assert [result.token_ids[i] for i in kept] == [plain.token_ids[i] for i in kept]
    assert result.stats.repairs == len(block.attempts)
    assert result.validation.extra_steps > 0


def test_a_validator_that_never_passes_raises_with_everything_committed_so_far(engine, registered):
    registered(Never())
    params = SamplingParams(max_new_tokens=96, seed=1, ignore_eos=True, max_denoising_steps=6,
                            validators=("e2e.never",))
    with pytest.raises(BlockValidationError) as raised:
        engine.generate("never", params)
    error = raised.value
    plain = engine.generate("never", SamplingParams(max_new_tokens=32, seed=1, ignore_eos=True,
                                                    max_denoising_steps=6))
    assert error.block_index == 1
    assert error.partial.token_ids == plain.token_ids  # block 0, exactly as without validation
    assert error.partial.validation.blocks[0].passed
    assert len(error.attempts) == 3 and error.violations[0].code == "never"


def test_builtin_validators_are_found_through_the_entry_point(engine):
    result = engine.generate("builtins", SamplingParams(max_new_tokens=32, seed=2, validators=("builtin.utf8_integrity",),
                                                        on_exhausted="return_flagged"))
    # random byte tokens decode to broken UTF-8: the built-in validator must have seen and flagged that
    assert result.validation.blocks
    assert {"replacement_character", "control_character"} & set(result.validation.flags)
    assert result.stats.repairs >= 1
