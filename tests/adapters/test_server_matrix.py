"""The server's bad-input matrix: every case is refused with an OpenAI-shaped 4xx, none with a 500, and the
server answers a good request after each one.

Cases cover framing, every field's types and ranges, streams, response formats, tools, model names,
methods and paths, and auth. They run in-process against ``create_app`` (Starlette's test client) on the
tiny-random engine.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from diffgemma_adapters.server import create_app  # noqa: E402

KEY = "matrix-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
LIMIT_BYTES = 250_000
MAX_NEW_TOKENS = 4_096
USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "weather of a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}
GOOD = {"prompt": "ok", "max_tokens": 2, "max_denoising_steps": 1, "seed": 0}


@pytest.fixture(scope="module")
def shared_engine():
    """The live shared tiny-random engine, looked up for this module: the session-wide fixture of the same
    name goes stale when another module shuts the shared engines down (``tests/adapters/test_cli.py`` does)."""
    from diffgemma_engine import get_engine

    return get_engine("tiny-random")


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    body: Any = None  # a JSON value, sent as the request body
    raw: bytes | None = None  # or these exact bytes
    path: str = CHAT
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True


def chat(name: str, status: int = 400, **fields: Any) -> Case:
    return Case(name, status, body={"messages": USER, "max_tokens": 2, "max_denoising_steps": 1, **fields})


def message(name: str, *messages: Any, status: int = 400) -> Case:
    return Case(name, status, body={"messages": list(messages), "max_tokens": 2})


def completion(name: str, status: int = 400, **fields: Any) -> Case:
    return Case(name, status, body={"prompt": "hi", "max_tokens": 2, **fields}, path=COMPLETIONS)


def deep(depth: int) -> bytes:
    return b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"


CASES = [
    # -- framing ----------------------------------------------------------------------------------------
    Case("not-json", 400, raw=b"{not json"),
    Case("empty-body", 400, raw=b""),
    Case("json-array", 400, raw=b"[]"),
    Case("json-string", 400, raw=b'"hello"'),
    Case("json-null", 400, raw=b"null"),
    Case("json-number", 400, raw=b"42"),
    Case("deep-100k", 400, raw=deep(100_000)),
    Case("deep-1k", 400, raw=deep(1_000)),
    Case("lone-high-surrogate", 400, raw=b'{"messages": [{"role": "user", "content": "\\ud800"}]}'),
    Case("lone-low-surrogate", 400, raw=b'{"messages": [{"role": "user", "content": "\\udc00x"}]}'),
    Case("invalid-utf8", 400, raw=b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}'),
    Case("trailing-garbage", 400, raw=b'{"messages": [{"role": "user", "content": "x"}]} x'),
    Case("nan-literal", 400, raw=b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}'),
    Case("infinity-literal", 400, raw=b'{"messages": [{"role": "user", "content": "x"}], "temperature": Infinity}'),
    Case("overflowing-float", 400, raw=b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e999}'),
    Case("text-plain", 415, raw=b'{"messages": [{"role": "user", "content": "x"}]}',
         headers={"content-type": "text/plain"}),
    Case("form-encoded", 415, raw=b"messages=x", headers={"content-type": "application/x-www-form-urlencoded"}),
    Case("no-content-type", 415, raw=b'{"messages": []}', headers={"content-type": ""}),
    Case("over-size-limit", 413, body={"messages": [{"role": "user", "content": "x" * (LIMIT_BYTES + 10)}]}),
    Case("over-size-limit-completions", 413, body={"prompt": "x" * (LIMIT_BYTES + 10)}, path=COMPLETIONS),
    # -- messages -----------------------------------------------------------------------------------------
    Case("messages-missing", 400, body={"max_tokens": 2}),
    Case("messages-empty", 400, body={"messages": []}),
    Case("messages-string", 400, body={"messages": "hi"}),
    Case("messages-object", 400, body={"messages": {"role": "user", "content": "x"}}),
    message("message-number", 1),
    message("message-list", []),
    message("role-missing", {"content": "x"}),
    message("role-unknown", {"role": "bot", "content": "x"}),
    message("role-number", {"role": 5, "content": "x"}),
    message("user-content-missing", {"role": "user"}),
    message("content-number", {"role": "user", "content": 5}),
    message("content-object", {"role": "user", "content": {"text": "x"}}),
    message("text-part-number", {"role": "user", "content": [{"type": "text", "text": 5}]}),
    message("text-part-missing-text", {"role": "user", "content": [{"type": "text"}]}),
    message("text-part-extra-field", {"role": "user", "content": [{"type": "text", "text": "x", "bold": True}]}),
    message("part-number", {"role": "user", "content": [5]}),
    message("part-list", {"role": "user", "content": [[]]}),
    message("part-unknown-type", {"role": "user", "content": [{"type": "video", "url": "x"}]}),
    message("part-type-list", {"role": "user", "content": [{"type": [], "text": "hi"}]}),
    message("part-type-object", {"role": "user", "content": [{"type": {"type": "text"}, "text": "hi"}]}),
    message("image-part", {"role": "user", "content": [{"type": "text", "text": "see"},
                                                       {"type": "image_url", "image_url": {"url": "http://x/i.png"}}]}),
    message("audio-part", {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA"}}]}),
    message("file-part", {"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}),
    message("name-number", {"role": "user", "content": "x", "name": 5}),
    message("message-extra-field", {"role": "user", "content": "x", "mood": "happy"}),
    message("tool-call-id-on-user", {"role": "user", "content": "x", "tool_call_id": "c1"}),
    message("tool-calls-on-user", {"role": "user", "content": "x", "tool_calls": []}),
    message("tool-message-without-id", {"role": "user", "content": "x"}, {"role": "tool", "content": "15 C"}),
    message("tool-call-arguments-not-json", {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "f", "arguments": "{city:"}}]}),
    message("tool-call-arguments-array", {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "f", "arguments": "[1]"}}]}),
    message("tool-call-arguments-object", {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "f", "arguments": {"city": "x"}}}]}),
    message("tool-call-wrong-type", {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "code", "function": {"name": "f",
                                                                                           "arguments": "{}"}}]}),
    message("tool-call-without-id", {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
    message("tool-call-bad-name", {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                  "function": {"name": "no spaces!", "arguments": "{}"}}]}),
    # -- model --------------------------------------------------------------------------------------------
    chat("model-unknown", 404, model="gpt-4o"),
    chat("model-empty", 404, model=""),
    chat("model-number", model=5),
    chat("model-list", model=["tiny-random"]),
    completion("completions-model-unknown", 404, model="gpt-4o"),
    # -- standard fields: types and ranges -------------------------------------------------------------------
    chat("stream-yes", stream="yes"),
    chat("stream-one", stream=1),
    chat("stream-string-true", stream="true"),
    chat("stream-options-string", stream=True, stream_options="x"),
    chat("stream-options-include-usage-string", stream=True, stream_options={"include_usage": "yes"}),
    chat("stream-options-unknown", stream=True, stream_options={"bogus": 1}),
    chat("stream-options-without-stream", stream_options={"include_usage": True}),
    chat("n-true", n=True),
    chat("n-two", n=2),
    chat("n-string", n="1"),
    chat("n-zero", n=0),
    chat("max-tokens-zero", max_tokens=0),
    chat("max-tokens-negative", max_tokens=-5),
    chat("max-tokens-string", max_tokens="10"),
    chat("max-tokens-float", max_tokens=1.5),
    chat("max-tokens-bool", max_tokens=True),
    chat("max-tokens-over-limit", max_tokens=MAX_NEW_TOKENS + 1),
    chat("max-completion-tokens-zero", max_completion_tokens=0),
    chat("max-completion-tokens-string", max_completion_tokens="x"),
    chat("max-completion-tokens-over-limit", max_completion_tokens=10**9),
    chat("temperature-negative", temperature=-1),
    chat("temperature-string", temperature="hot"),
    chat("temperature-bool", temperature=True),
    chat("temperature-list", temperature=[1]),
    chat("top-p-over-one", top_p=1.5),
    chat("top-p-negative", top_p=-0.1),
    chat("top-p-string", top_p="x"),
    chat("frequency-penalty-over", frequency_penalty=3),
    chat("presence-penalty-under", presence_penalty=-3),
    chat("presence-penalty-string", presence_penalty="x"),
    chat("seed-negative", seed=-1),
    chat("seed-string", seed="1"),
    chat("seed-float", seed=1.5),
    chat("seed-huge", seed=2**64),
    chat("stop-number", stop=5),
    chat("stop-list-number", stop=[1]),
    chat("stop-empty-string", stop=""),
    chat("stop-list-empty-string", stop=[""]),
    chat("stop-too-many", stop=[f"s{i}" for i in range(17)]),
    chat("stop-nested", stop=[["a"]]),
    chat("stop-too-long", stop=["x" * 1025]),
    chat("logprobs-true", logprobs=True),
    chat("logprobs-string", logprobs="yes"),
    chat("top-logprobs", top_logprobs=3),
    chat("logit-bias", logit_bias={"1": 5}),
    chat("logit-bias-string", logit_bias="x"),
    chat("user-number", user=5),
    chat("metadata-non-string", metadata={"a": 1}),
    chat("store-string", store="x"),
    chat("parallel-tool-calls-string", parallel_tool_calls="yes"),
    # -- response formats -----------------------------------------------------------------------------------
    chat("response-format-string", response_format="json"),
    chat("response-format-unknown-type", response_format={"type": "xml"}),
    chat("response-format-empty", response_format={}),
    chat("response-format-type-number", response_format={"type": 5}),
    chat("response-format-extra-field", response_format={"type": "json_object", "strict": True}),
    chat("json-schema-missing", response_format={"type": "json_schema"}),
    chat("json-schema-string", response_format={"type": "json_schema", "json_schema": "s"}),
    chat("json-schema-schema-string", response_format={"type": "json_schema", "json_schema": {"schema": "s"}}),
    chat("json-schema-name-number", response_format={"type": "json_schema", "json_schema": {"name": 5}}),
    chat("json-schema-invalid-schema",
         response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}),
    chat("json-schema-recursive-ref",
         response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#"}}}),
    chat("json-schema-remote-ref",
         response_format={"type": "json_schema", "json_schema": {"name": "x",
                                                                 "schema": {"$ref": "http://127.0.0.1:9/x"}}}),
    completion("completions-response-format-string", response_format="json"),
    # -- tools ------------------------------------------------------------------------------------------
    chat("tools-string", tools="x"),
    chat("tools-number-item", tools=[1]),
    chat("tool-without-function", tools=[{"type": "function"}]),
    chat("tool-function-without-name", tools=[{"type": "function", "function": {}}]),
    chat("tool-bad-name", tools=[{"type": "function", "function": {"name": "bad name!"}}]),
    chat("tool-wrong-type", tools=[{"type": "retrieval"}]),
    chat("tool-parameters-string", tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
    chat("tools-too-many", tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(257)]),
    chat("tool-choice-unknown-string", tools=[TOOL], tool_choice="maybe"),
    chat("tool-choice-number", tools=[TOOL], tool_choice=5),
    chat("tool-choice-function-without-name", tools=[TOOL], tool_choice={"type": "function"}),
    chat("tool-choice-unbound-name", tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}),
    chat("tool-choice-without-tools", tool_choice="required"),
    chat("functions-legacy-field", functions=[{"name": "f"}]),
    completion("completions-tools", tools=[TOOL]),
    # -- DiffusionGemma fields ------------------------------------------------------------------------------
    chat("steps-zero", max_denoising_steps=0),
    chat("steps-negative", max_denoising_steps=-1),
    chat("steps-string", max_denoising_steps="5"),
    chat("steps-float", max_denoising_steps=1.5),
    chat("steps-bool", max_denoising_steps=True),
    chat("steps-over-limit", max_denoising_steps=10**9),
    chat("entropy-bound-zero", entropy_bound=0),
    chat("entropy-bound-string", entropy_bound="x"),
    chat("t-min-negative", t_min=-1),
    chat("t-max-zero", t_max=0),
    chat("t-min-above-t-max", t_min=0.9, t_max=0.5),
    chat("stability-threshold-negative", stability_threshold=-1),
    chat("stability-threshold-float", stability_threshold=1.5),
    chat("confidence-threshold-zero", confidence_threshold=0),
    chat("adaptive-stopping-string", adaptive_stopping="no"),
    chat("adaptive-stopping-int", adaptive_stopping=0),
    chat("stop-token-ids-negative", stop_token_ids=[-1]),
    chat("stop-token-ids-string", stop_token_ids="x"),
    chat("stop-token-ids-bool", stop_token_ids=[True]),
    chat("stop-token-ids-float", stop_token_ids=[1.5]),
    chat("ignore-eos-string", ignore_eos="yes"),
    chat("validators-unknown", validators=["nope.missing"]),
    chat("validators-number", validators=[5]),
    chat("validators-string", validators="builtin.json"),
    chat("validator-options-list", validators=["builtin.json"], validator_options=[]),
    chat("validator-options-without-validators", validator_options={"builtin.json": {}}),
    chat("regex-invalid-pattern", validators=["builtin.regex"], validator_options={"builtin.regex": {"pattern": "(a"}}),
    chat("timeout-zero", timeout=0),
    chat("timeout-negative", timeout=-1),
    chat("timeout-string", timeout="x"),
    chat("on-validation-failure-unknown", on_validation_failure="explode"),
    chat("on-validation-failure-number", on_validation_failure=5),
    chat("draft-events", draft_events=True),
    chat("on-exhausted-engine-name", on_exhausted="raise"),
    chat("max-new-tokens-engine-name", max_new_tokens=5),
    chat("unknown-field", bogus=1),
    chat("prompt-on-chat", prompt="x"),
    # -- completions ------------------------------------------------------------------------------------
    Case("completions-prompt-missing", 400, body={"max_tokens": 2}, path=COMPLETIONS),
    completion("completions-prompt-number", prompt=5),
    completion("completions-prompt-token-ids", prompt=[1, 2, 3]),
    completion("completions-prompt-batch", prompt=["a", "b"]),
    completion("completions-prompt-empty-list", prompt=[]),
    completion("completions-echo", echo=True),
    completion("completions-suffix", suffix="x"),
    completion("completions-best-of", best_of=2),
    completion("completions-logprobs", logprobs=5),
    completion("completions-messages", messages=USER),
    completion("completions-stream-yes", stream="yes"),
    # -- methods and paths ---------------------------------------------------------------------------------
    Case("get-chat", 405, method="GET"),
    Case("put-chat", 405, method="PUT", body={}),
    Case("delete-models", 405, method="DELETE", path="/v1/models"),
    Case("post-health", 405, path="/health", body={}),
    Case("post-metrics", 405, path="/metrics", body={}),
    Case("options-chat", 405, method="OPTIONS"),
    Case("unknown-v1-path", 404, method="GET", path="/v1/nope"),
    Case("unknown-root-path", 404, method="GET", path="/nope"),
    Case("injection-path", 404, method="GET", path='/x%22%7D%201%0Afake_metric%201'),
    Case("dot-dot-path", 404, method="GET", path="/v1/../../etc/passwd"),
    Case("post-unknown-path", 404, path="/v1/embeddings", body={"input": "x"}),
    Case("docs-disabled", 404, method="GET", path="/docs"),
    Case("openapi-disabled", 404, method="GET", path="/openapi.json"),
    # -- auth, host and origin ---------------------------------------------------------------------------
    Case("no-key-chat", 401, body={"messages": USER}, auth=False),
    Case("no-key-models", 401, method="GET", path="/v1/models", auth=False),
    Case("wrong-key", 401, body={"messages": USER}, auth=False, headers={"Authorization": "Bearer wrong"}),
    Case("basic-auth", 401, method="GET", path="/v1/models", auth=False, headers={"Authorization": "Basic a2V5"}),
    Case("empty-bearer", 401, method="GET", path="/v1/models", auth=False, headers={"Authorization": "Bearer "}),
    Case("key-prefix", 401, method="GET", path="/v1/models", auth=False,
         headers={"Authorization": f"Bearer {KEY[:-1]}"}),
    Case("foreign-host", 403, body={"messages": USER}, headers={"Host": "evil.example"}),
    Case("foreign-host-health", 403, method="GET", path="/health", headers={"Host": "rebind.example:8000"}),
    Case("malformed-host", 403, method="GET", path="/health", headers={"Host": "127.0.0.1:notaport"}),
    Case("foreign-origin", 403, body={"messages": USER}, headers={"Origin": "http://evil.example"}),
    Case("null-origin", 403, body={"messages": USER}, headers={"Origin": "null"}),
    Case("file-origin", 403, body={"messages": USER}, headers={"Origin": "file://"}),
]


def test_the_matrix_is_big_enough():
    assert len(CASES) >= 120
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def client(shared_engine):
    app = create_app(shared_engine, api_key=KEY, max_request_bytes=LIMIT_BYTES, max_new_tokens=MAX_NEW_TOKENS)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as test_client:
        yield test_client


def _send(client: TestClient, case: Case):
    headers = {**(AUTH if case.auth else {}), **case.headers}
    if case.raw is not None:
        headers.setdefault("content-type", "application/json")
        return client.request(case.method, case.path, content=case.raw, headers=headers)
    if case.body is not None:
        headers.setdefault("content-type", "application/json")
        return client.request(case.method, case.path, content=json.dumps(case.body).encode(), headers=headers)
    return client.request(case.method, case.path, headers=headers)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_is_refused_with_an_openai_error_and_the_server_keeps_serving(client, case):
    response = _send(client, case)
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] in {"invalid_request_error", "authentication_error", "permission_error"}
    assert error["param"] is None or isinstance(error["param"], str)
    assert "max_new_tokens" not in error["message"] or case.name == "max-new-tokens-engine-name"
    good = client.post(COMPLETIONS, json=GOOD, headers=AUTH)
    assert good.status_code == 200, good.text
    assert good.json()["usage"]["completion_tokens"] <= GOOD["max_tokens"]


def test_no_case_got_a_500(client):
    for case in CASES:
        _send(client, case)
    exposition = client.get("/metrics").text
    assert 'status="500"' not in exposition
    assert 'status="400"' in exposition


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"max_tokens": 0}, "max_tokens"), ({"max_completion_tokens": 0}, "max_completion_tokens"),
     ({"max_denoising_steps": 10**9}, "max_denoising_steps"), ({"stop_token_ids": [-1]}, "stop_token_ids"),
     ({"on_validation_failure": "x"}, "on_validation_failure"), ({"logprobs": True}, "logprobs"),
     ({"t_min": 0.9, "t_max": 0.5}, "t_max")],
)
def test_param_names_the_field_as_the_client_sent_it(client, fields, param):
    response = client.post(CHAT, json={"messages": USER, **fields}, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


# -- random mutations of a request that uses every feature ------------------------------------------------

FULL = {
    "model": "tiny-random",
    "messages": [{"role": "system", "content": "s"},
                 {"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "a"},
                 {"role": "assistant", "content": None, "tool_calls": [
                     {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
                 {"role": "tool", "tool_call_id": "c", "content": "r"}],
    "max_tokens": 3, "max_denoising_steps": 1, "seed": 1, "stop": ["zz"], "temperature": 0.5, "top_p": 0.9,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}}}}],
    "tool_choice": "auto", "parallel_tool_calls": False,
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    "stream": False, "validators": ["builtin.utf8_integrity"], "validator_options": {"builtin.utf8_integrity": {}},
    "entropy_bound": 0.1, "t_min": 0.2, "t_max": 0.5, "stop_token_ids": [5], "ignore_eos": False, "timeout": 30,
    "on_validation_failure": "truncate", "adaptive_stopping": True, "stability_threshold": 1,
    "confidence_threshold": 0.01,
}
REPLACEMENTS = [None, True, False, 0, -1, 1, 2**70, 1.5, -0.0, 1e308, "", "x", "auto", "none", "required", [], [1],
                ["x"], {}, {"type": "function"}, {"type": "json_object"}, {"a": None}, [{}], [{"role": "user"}],
                "\u0000", "builtin.json", ["builtin.json"], ["builtin.regex"], {"builtin.regex": {"pattern": "a+"}},
                {"builtin.json": {"schema": {"$ref": "#/x"}}}]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found += _paths(item, (*prefix, key))
    return found


def _mutant(rng: random.Random) -> tuple[str, dict]:
    body = copy.deepcopy(FULL)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(body) or [("model",)])
        target = body
        for key in path[:-1]:
            target = target[key]
        if rng.random() < 0.15 and isinstance(target, dict):
            target.pop(path[-1], None)
        elif isinstance(target, (dict, list)):
            target[path[-1]] = copy.deepcopy(rng.choice(REPLACEMENTS))
    body["stream"] = body.get("stream") if rng.random() < 0.7 else True
    if rng.random() < 0.2:
        for name in ("messages", "tools", "tool_choice", "parallel_tool_calls"):
            body.pop(name, None)
        body["prompt"] = rng.choice(["x", ["x"], 5, None])
        return COMPLETIONS, body
    return CHAT, body


def _check_mutants(client: TestClient, seed: int, count: int) -> None:
    rng = random.Random(seed)
    for _ in range(count):
        path, body = _mutant(rng)
        response = client.post(path, json=body, headers=AUTH)
        assert response.status_code < 500, (response.text, body)
        if response.status_code != 200:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}, body
        elif body.get("stream") is True:
            assert response.text.rstrip().endswith("data: [DONE]"), body


def test_random_mutations_of_a_full_request_never_give_a_500(client):
    _check_mutants(client, seed=0, count=200)


@pytest.mark.slow
def test_many_random_mutations_never_give_a_500(client):
    _check_mutants(client, seed=1, count=1_500)
