"""The structure validators: JSON (prefix scanner, final parse, schema), bracket balance, regex."""

from __future__ import annotations

import json
import random
import sys

import pytest

from diffgemma_plugins.testing import make_block, run_validator
from diffgemma_plugins.validators import BracketBalance, JsonOutput, RegexMatch
from diffgemma_plugins.validators._structure import BracketState, JsonPrefixScanner, JsonState, scan_brackets
from diffgemma_plugins.validators.json_output import MISSING_JSONSCHEMA

SAMPLE_DOCUMENTS = [
    {"name": "Ada", "tags": ["x", "y"], "n": -12.5e3, "ok": True, "none": None, "nested": {"a": [[], {}]}},
    [1, 0, -0, 0.25, 1e10, 2E-3, "quote \" and \\ and \u00e9 and \n"],
    "just a string",
    42,
    {"empty": "", "unicode": "caf\u00e9 \u2014 \U0001f600"},
]


def scan(text, state=None, **kwargs):
    return JsonPrefixScanner(**kwargs).scan(state or JsonState(), text)


# ---- the JSON prefix scanner ----------------------------------------------------------------------


@pytest.mark.parametrize("document", SAMPLE_DOCUMENTS)
@pytest.mark.parametrize("indent", [None, 2])
def test_every_prefix_of_a_valid_document_is_accepted_and_only_the_whole_is_complete(document, indent):
    text = json.dumps(document, indent=indent, ensure_ascii=False)
    for cut in range(len(text)):
        state, bad = scan(text[:cut])
        assert bad is None, (text[:cut], state.error)
        assert not state.complete or _parses(text[:cut])
    state, bad = scan(text)
    assert bad is None and state.complete


def test_scanning_block_by_block_equals_scanning_at_once():
    text = json.dumps(SAMPLE_DOCUMENTS[0], indent=2)
    state = JsonState()
    for start in range(0, len(text), 7):
        state, bad = scan(text[start : start + 7], state)
        assert bad is None
    whole, _ = scan(text)
    assert state == whole


@pytest.mark.parametrize(
    ("text", "bad_at"),
    [
        ('{"a" 1}', 5),
        ('{"a": 1,}', 8),
        ("[1 2]", 3),
        ("[01]", 2),
        ('{"a": tru}', 9),
        ("Here is the JSON: {}", 0),
        ('{"a": 1}}', 8),
        ('{"a": 1] ', 7),
        ('{"a": "\\x"}', 8),
        ('{"a": 1} trailing', 9),
        ("{'a': 1}", 1),
    ],
)
def test_the_first_impossible_character_is_reported(text, bad_at):
    state, bad = scan(text)
    assert bad == bad_at, state.error
    assert state.error
    assert not _parses(text)


def test_code_fences_are_accepted_only_when_allowed():
    fenced = '```json\n{"a": [1, 2]}\n```\n'
    state, bad = scan(fenced)
    assert bad is None and state.complete
    assert not scan(fenced[:-5])[0].complete
    assert scan(fenced, allow_code_fence=False)[1] == 0
    text = '```json\n{"a": 1}\n``` and more'
    assert scan(text)[1] == text.index("and")


def test_random_strings_agree_with_json_loads_on_completeness():
    rng = random.Random(1234)
    alphabet = list('{}[]":,-0123456789.eE tfrulnsa\\\n') + ['"a"', "true", "null", '"k":', "1.5"]
    agreements = 0
    for _ in range(4000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        state, bad = scan(text, allow_code_fence=False)
        complete = bad is None and state.complete
        assert complete == _parses(text), (text, state)
        agreements += complete
    assert agreements > 20  # the sample contains complete documents, not only garbage


def _parses(text):
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# ---- builtin.json ---------------------------------------------------------------------------------


def test_json_validator_points_at_the_first_bad_token_and_keeps_state_across_blocks():
    validator, state = JsonOutput(), {}
    first = make_block('{"name": "Ada", ')
    assert not run_validator(validator, first, state=state)
    second = make_block('"age" 36}', committed=first.text)
    [violation] = run_validator(validator, second, state=state)
    assert violation.code == "json_invalid"
    start, end = second.token_offsets[violation.spans[0][0]]
    assert second.text[start:end].strip() == "36"


def test_json_validator_rescans_when_its_state_does_not_match_the_committed_text():
    stale = {"json": JsonState()}
    block = make_block('"b": 2}', committed='{"a": 1, ')
    assert not run_validator(JsonOutput(), block, state=stale)
    assert stale["json"].complete and stale["json"].consumed == len('{"a": 1, "b": 2}')


def test_json_validator_gives_up_on_text_broken_in_earlier_blocks():
    assert not run_validator(JsonOutput(), make_block(' "x"}', committed="Sure! {"))


def test_incomplete_json_at_the_final_block():
    [violation] = run_validator(JsonOutput(), make_block('{"a": [1', eos=True, canvas_length=32))
    assert violation.code == "json_incomplete" and violation.spans[0][1] == 32
    [cut] = run_validator(JsonOutput(), make_block('{"a": [1', is_final=True))
    assert not cut.repairable


def test_schema_validation_at_the_final_block():
    pytest.importorskip("jsonschema")
    schema = {"type": "object", "required": ["name", "age"], "properties": {"age": {"type": "integer"}}}
    options = {"schema": schema}
    assert not run_validator(JsonOutput(), make_block('{"name": "Ada", "age": 36}', eos=True), options)
    [violation] = run_validator(JsonOutput(), make_block('{"name": "Ada", "age": "old"}', eos=True), options)
    assert violation.code == "json_schema"
    assert violation.metadata["paths"] == ("/age",)
    assert not run_validator(JsonOutput(), make_block('{"name": "Ada", "age": "old"', eos=False), options)
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        JsonOutput().parse_options({"schema": {"type": 12}})


def test_a_schema_without_jsonschema_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    with pytest.raises(ValueError) as error:
        JsonOutput().parse_options({"schema": {"type": "object"}})
    assert str(error.value) == MISSING_JSONSCHEMA
    assert JsonOutput().parse_options({}).schema_validator is None


def test_json_options_are_checked():
    with pytest.raises(ValueError, match="unknown options"):
        JsonOutput().parse_options({"shema": {}})
    with pytest.raises(ValueError, match="allow_code_fence"):
        JsonOutput().parse_options({"allow_code_fence": "yes"})


# ---- builtin.bracket_balance -------------------------------------------------------------------------


def test_brackets_mismatch_and_unmatched_closer_in_code():
    [violation] = run_validator(BracketBalance(), make_block("call(a, [b, c)]"))
    assert violation.code == "mismatched_bracket"
    code = make_block("```python\nx = f(a))\n```\n")
    assert [v.code for v in run_validator(BracketBalance(), code)] == ["unmatched_closer"]


def test_brackets_in_strings_and_prose_list_markers_are_ignored():
    text = 'Steps: 1) open 2) close. She said "(" twice.\n```python\nprint(")", \'[\')\n```\n'
    assert not run_validator(BracketBalance(), make_block(text, eos=True))


def test_bracket_stack_carries_across_blocks_and_unclosed_fails_at_the_end():
    validator, state = BracketBalance(), {}
    first = make_block("def f(x: list[int]:\n    return {")
    assert not run_validator(validator, first, state=state)
    final = make_block(" 1: x }\n", committed=first.text, eos=True, canvas_length=64)
    [violation] = run_validator(validator, final, state=state)
    assert violation.code == "unclosed_bracket" and "(" in violation.message
    assert violation.spans[0] == (final.eos_position, 64)


def test_unclosed_fence_at_the_end():
    [violation] = run_validator(BracketBalance(), make_block("```python\nprint(1)\n", eos=True))
    assert violation.code == "unclosed_bracket" and "```" in violation.message


def test_scan_brackets_is_incremental():
    text = "a(b[c]{d}) ```\nx = ')'\n```\n(e"
    state = BracketState()
    for start in range(0, len(text), 3):
        state, problems = scan_brackets(state, text[start : start + 3])
        assert not problems
    assert state == scan_brackets(BracketState(), text)[0]
    assert [opener for opener, _ in state.stack] == ["("]


# ---- builtin.regex -------------------------------------------------------------------------------------


def test_regex_fullmatch_at_the_final_block_over_the_whole_response():
    options = {"pattern": r"Answer: (yes|no)\."}
    assert not run_validator(RegexMatch(), make_block("Answer: ", eos=False), options)
    assert not run_validator(RegexMatch(), make_block("yes.", committed="Answer: ", eos=True), options)
    [violation] = run_validator(RegexMatch(), make_block("maybe.", committed="Answer: ", eos=True), options)
    assert violation.code == "regex_mismatch"


def test_regex_forbid_per_block_points_at_the_match():
    options = {"pattern": r"\bTODO\b", "mode": "forbid", "scope": "block", "flags": ["IGNORECASE"]}
    block = make_block("first todo then done")
    [violation] = run_validator(RegexMatch(), block, options)
    assert violation.code == "regex_forbidden" and violation.spans == ((1, 2),)
    assert not run_validator(RegexMatch(), make_block("nothing to see"), options)


def test_regex_search_and_option_errors():
    options = {"pattern": r"\d+", "mode": "search", "scope": "block"}
    assert [v.code for v in run_validator(RegexMatch(), make_block("no digits"), options)] == ["regex_missing"]
    for bad in ({}, {"pattern": "("}, {"pattern": "a", "mode": "match"}, {"pattern": "a", "flags": "I"}, {"pattern": "a", "x": 1}):
        with pytest.raises(ValueError):
            RegexMatch().parse_options(bad)
