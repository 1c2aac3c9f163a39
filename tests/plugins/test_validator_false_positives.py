"""False-positive measurement: every default-enabled built-in over clean prose, code and JSON.

The fixture ``data/clean_text.txt`` holds three documents (prose, code in fences, JSON). Each is cut into
blocks of 64, 128 and 256 toy tokens and checked block by block as a response would be, with the
committed text growing. Clean text must produce no ERROR (or FATAL) violation; the same harness on
corrupted copies of the text must, so the measurement cannot pass vacuously.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from diffgemma_engine.api.validation import Severity
from diffgemma_plugins.testing import make_block, make_request, toy_tokenize

FIXTURE = Path(__file__).parent / "data" / "clean_text.txt"
BLOCK_SIZES = (64, 128, 256)


def documents() -> dict[str, str]:
    parts = re.split(r"^---8<--- (\w+)\n", FIXTURE.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]
    return dict(zip(parts[::2], parts[1::2]))


def run_response(factory, text, block_size, validators=("default",), options=None):
    """Check ``text`` block by block (the last block ends with EOS); return every report."""
    checker = factory(make_request(validators, options))
    ids, offsets = toy_tokenize(text)
    committed, reports = "", []
    for index, start in enumerate(range(0, len(ids), block_size)):
        end = min(start + block_size, len(ids))
        chunk = text[offsets[start][0] : offsets[end - 1][1]]
        block = make_block(chunk, committed=committed, index=index, eos=end == len(ids))
        report = checker.check(block)
        reports.append(report)
        if report.passed:
            checker.on_commit(block, report)
        committed += chunk
    return reports


def test_the_fixture_is_a_few_kilobytes_of_three_kinds_of_text():
    docs = documents()
    assert set(docs) == {"prose", "code", "json"}
    assert sum(len(text) for text in docs.values()) > 5000


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("kind", ["prose", "code", "json"])
def test_default_validators_raise_no_error_on_clean_text(factory, pm, kind, block_size):
    reports = run_response(factory, documents()[kind], block_size)
    defaults = set(pm.validator_registry().defaults)
    assert all(set(report.ran) == defaults for report in reports)
    errors = [v for report in reports for v in report.violations if v.severity >= Severity.ERROR]
    assert errors == []


@pytest.mark.parametrize("kind", ["prose", "code", "json"])
def test_opt_in_structure_validators_raise_no_error_on_clean_text(factory, kind):
    reports = run_response(factory, documents()[kind], 128, validators=("builtin.bracket_balance",))
    assert not [v for report in reports for v in report.violations]
    if kind == "json":
        reports = run_response(factory, documents()[kind], 128, validators=("builtin.json",))
        assert not [v for report in reports for v in report.violations]


@pytest.mark.parametrize(
    ("kind", "corrupt", "code"),
    [
        ("prose", lambda t: t.replace("the way sunlight", "the the way sunlight"), "stutter"),
        ("prose", lambda t: t.replace("Why not violet", "Sure<end_of_turn> Why not violet"), "special_token_leak"),
        ("prose", lambda t: t.replace("At sunrise", "\n" * 8 + "At sunrise"), "newline_flood"),
        ("prose", lambda t: t.replace("Good writing", "Caf\ufffd writing"), "replacement_character"),
        ("prose", lambda t: t.replace("It is worth", " ".join([t.split(".")[0] + "."] * 3) + " It is worth"), "repeated_sentence"),
        ("code", lambda t: t[: t.index("    return counts")], "eos_in_code_fence"),
        ("json", lambda t: t[: t.index('"features"')], "eos_in_open_json"),
    ],
)
def test_the_same_harness_catches_corrupted_text(factory, kind, corrupt, code):
    corrupted = corrupt(documents()[kind])
    assert corrupted != documents()[kind]
    reports = run_response(factory, corrupted, 128)
    assert code in {v.code for report in reports for v in report.failing}
