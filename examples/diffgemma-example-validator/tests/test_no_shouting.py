"""The plugin's own tests, as a plugin author writes them: plain blocks from ``diffgemma_plugins.testing``,
no model and no torch (CI runs them in a virtualenv without torch)."""

from __future__ import annotations

import sys

import pytest

from diffgemma_example_validator import NoShouting
from diffgemma_plugins.testing import make_block, run_validator


def test_three_capitalised_words_in_a_row_are_shouting():
    [violation] = run_validator(NoShouting(), make_block("Well, PLEASE STOP SHOUTING at me."))
    assert violation.code == "shouting" and violation.validator == "example.no_shouting"
    assert violation.spans  # the offending tokens, so a repair renoises only them


@pytest.mark.parametrize("text", ["NASA sent the HTTP API docs.", "Run `SELECT NAME FROM USERS` now."])
def test_acronyms_and_code_are_not_shouting(text):
    assert run_validator(NoShouting(), make_block(text)) == []


def test_min_words_is_an_option_and_bad_values_are_refused():
    assert run_validator(NoShouting(), make_block("STOP THAT."), {"min_words": 2})
    with pytest.raises(ValueError, match="min_words"):
        run_validator(NoShouting(), make_block("x"), {"min_words": 1})


def test_writing_a_validator_needs_no_torch():
    assert "torch" not in sys.modules
