"""Validators with client-supplied patterns and schemas cannot freeze, reach out, or crash the engine."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from diffgemma_engine.api.errors import InvalidRequestError
from diffgemma_plugins.testing import make_block, make_request, run_validator
from diffgemma_plugins.validators.json_output import JsonOutput
from diffgemma_plugins.validators.regex_match import RegexMatch

# Catastrophic for a backtracking engine: the issue's pattern (a lookahead, which RE2 refuses) and nested
# quantifiers (which RE2 accepts and matches in linear time).
ISSUE_PATTERN = r"(?s)(?=.{24}\Z).{8}(?:.*.*)+\x00"
NESTED_QUANTIFIERS = r"(?s).{8}(?:.*.*)+\x00"


def _options_error(factory, validator: str, options: dict) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as raised:
        factory(make_request((validator,), {validator: options}))
    assert raised.value.field == "validator_options"
    return raised.value


# -- builtin.regex -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "feature"),
    [(ISSUE_PATTERN, "(?="), (r"(?<=a)b", "(?<"), (r"(a)\1", "\\1"), (r"(?>a+)b", "(?>"), (r"a++", "++")],
)
def test_backtracking_only_features_are_refused_naming_the_pattern_option(factory, pattern, feature):
    error = _options_error(factory, "builtin.regex", {"pattern": pattern})
    assert "builtin.regex" in str(error) and "pattern" in str(error) and "RE2" in str(error)


def test_the_verbose_flag_is_refused_by_name(factory):
    error = _options_error(factory, "builtin.regex", {"pattern": "a", "flags": ["VERBOSE"]})
    assert "VERBOSE" in str(error)


def test_an_overlong_pattern_is_refused(factory):
    error = _options_error(factory, "builtin.regex", {"pattern": "a" * 20_000})
    assert "at most" in str(error)


def _best_of(runs: int, action) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def test_nested_quantifiers_match_in_linear_time():
    options = RegexMatch().parse_options({"pattern": NESTED_QUANTIFIERS, "mode": "search"})
    short, long = "a" * 20_000, "a" * 80_000  # a backtracking engine never finishes even 30 characters
    assert options.pattern.search(short) is None
    ratio = _best_of(5, lambda: options.pattern.search(long)) / _best_of(5, lambda: options.pattern.search(short))
    assert ratio < 16, f"4x the text took {ratio:.1f}x the time"  # linear: ~4x


def test_python_end_of_text_and_flags_keep_their_meaning():
    validator = RegexMatch()
    block = make_block("Hello World", eos=True)
    assert run_validator(validator, block, {"pattern": r"hello world\Z", "flags": ["IGNORECASE"]}) == []
    assert run_validator(validator, block, {"pattern": r"hello\Z", "mode": "search", "flags": ["IGNORECASE"]})
    assert run_validator(validator, block, {"pattern": r"\\Z"})  # an escaped backslash then 'Z' stays literal


# -- builtin.json schemas ----------------------------------------------------------------------------


@pytest.fixture
def loopback_server():
    """An HTTP server on loopback that records every request it receives."""
    received: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            received.append(self.path)
            body = json.dumps({"type": "string"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("where", ["/x", "/x#/definitions/a", "/nested"])
def test_a_schema_ref_to_the_network_is_refused_without_a_request(factory, loopback_server, where):
    base, received = loopback_server
    schema = {"$ref": f"{base}{where}"}
    if where == "/nested":
        schema = {"type": "object", "properties": {"a": {"items": {"$ref": f"{base}/deep"}}}}
    error = _options_error(factory, "builtin.json", {"schema": schema})
    assert "outside the schema" in str(error) and "no network or file access" in str(error)
    assert received == []


def test_a_schema_dialect_on_the_network_is_never_fetched(loopback_server):
    base, received = loopback_server
    options = JsonOutput().parse_options({"schema": {"$schema": f"{base}/dialect", "type": "object"}})
    assert options.schema_validator.is_valid({"a": 1})
    assert received == []


def test_a_file_ref_is_refused(factory, tmp_path):
    (tmp_path / "s.json").write_text('{"type": "string"}')
    error = _options_error(factory, "builtin.json", {"schema": {"$ref": (tmp_path / "s.json").as_uri()}})
    assert "outside the schema" in str(error)


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},
        {"allOf": [{"$ref": "#"}]},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/a"}]}},
         "$ref": "#/$defs/a"},
        {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"a": {"not": {"$ref": "#/definitions/a"}}},
         "properties": {"x": {"$ref": "#/definitions/a"}}},
    ],
)
def test_a_reference_cycle_that_never_descends_is_refused(factory, schema):
    error = _options_error(factory, "builtin.json", {"schema": schema})
    assert "infinite recursion" in str(error)


def test_recursion_through_the_document_is_accepted_and_checked():
    schema = {"$defs": {"node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}},
                                 "additionalProperties": False}}, "$ref": "#/$defs/node"}
    validator = JsonOutput()
    good = make_block('{"child": {"child": {}}}', eos=True)
    bad = make_block('{"child": {"child": {"other": 1}}}', eos=True)
    assert run_validator(validator, good, {"schema": schema}) == []
    [violation] = run_validator(validator, bad, {"schema": schema})
    assert violation.code == "json_schema"


def test_a_schema_nesting_too_deep_is_refused(factory):
    schema: dict = {}
    node = schema
    for _ in range(200):
        node["items"] = {}
        node = node["items"]
    error = _options_error(factory, "builtin.json", {"schema": schema})
    assert "nests deeper" in str(error)


def test_schema_patterns_run_on_re2():
    validator = JsonOutput()
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a*)*b$"}},
              "patternProperties": {"^(x+x+)+y$": {"type": "integer"}}, "additionalProperties": False}
    block = make_block(json.dumps({"s": "a" * 5_000 + "c", "x" * 40: 1}), eos=True)
    [violation] = run_validator(validator, block, {"schema": schema})  # returns at once: no backtracking
    assert violation.code == "json_schema" and len(violation.metadata["paths"]) == 2


def test_a_schema_pattern_re2_cannot_run_is_refused(factory):
    error = _options_error(factory, "builtin.json", {"schema": {"type": "string", "pattern": "(?=a)"}})
    assert "pattern" in str(error) and "RE2" in str(error)


def test_a_document_too_deep_to_parse_is_a_violation_not_a_crash():
    validator = JsonOutput()
    deep = "[" * 100_000 + "]" * 100_000
    [violation] = run_validator(validator, make_block(deep, eos=True), {"schema": {"type": "array"}})
    assert violation.code == "json_invalid" and not violation.repairable


def test_a_document_too_deep_to_check_is_a_violation_not_a_crash():
    schema = {"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}
    deep = "[" * 900 + "]" * 900  # parses, but checking it recurses ~ 5 frames per level
    [violation] = run_validator(JsonOutput(), make_block(deep, eos=True), {"schema": schema})
    assert violation.code == "json_schema" and not violation.repairable
