"""The server as an OpenAI-compatible endpoint: tools and tool_choice, conversation history with tool calls,
model names, the standard fields the adapters accept, and every field our own remote client sends."""

from __future__ import annotations

import dataclasses
import json

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

from adapter_support import serving  # noqa: E402
from diffgemma_adapters.formats import format_tool_call  # noqa: E402
from diffgemma_adapters.server import create_app  # noqa: E402
from diffgemma_adapters.server.openai_wire import OPENAI_NAMED_ENGINE_FIELDS  # noqa: E402
from diffgemma_adapters.server.requests import ENGINE_FIELDS, NOT_OVER_HTTP  # noqa: E402
from diffgemma_engine import SamplingParams  # noqa: E402

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = format_tool_call("get_weather", {"city": "London"})
ASK = [{"role": "user", "content": "Weather in London?"}]


@pytest.fixture(scope="module")
def shared_engine():
    """The live shared tiny-random engine, looked up for this module: the session-wide fixture of the same
    name goes stale when another module shuts the shared engines down (``tests/adapters/test_cli.py`` does)."""
    from diffgemma_engine import get_engine

    return get_engine("tiny-random")


def _stream_events(text: str) -> list[dict]:
    events = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


@pytest.mark.parametrize("output", [CALL, "Let me look. " + CALL])
def test_a_tool_call_comes_back_as_message_tool_calls_and_as_stream_deltas(scripted, output):
    engine = scripted(output, output)
    with TestClient(create_app(engine), base_url="http://127.0.0.1") as client:
        body = {"messages": ASK, "tools": [WEATHER], "max_tokens": 64}
        whole = client.post("/v1/chat/completions", json=body).json()
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
    choice = whole["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"]
    assert call["function"] == {"name": "get_weather", "arguments": json.dumps({"city": "London"})}
    visible = output[: output.index("<|tool_call>")]
    assert choice["message"]["content"] == (visible or None)
    events = _stream_events(streamed.text)
    deltas = [event["choices"][0]["delta"] for event in events if event["choices"]]
    assert "".join(delta.get("content") or "" for delta in deltas) == visible
    [streamed_call] = [call for delta in deltas for call in delta.get("tool_calls", ())]
    assert streamed_call["index"] == 0 and streamed_call["function"] == call["function"]
    assert [event["choices"][0]["finish_reason"] for event in events if event["choices"]][-1] == "tool_calls"


def test_tool_history_reaches_the_prompt(recording_engine):
    history = [*ASK,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "London"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "15 C and sunny"},
               {"role": "user", "content": "Thanks", "name": "ada"}]
    with TestClient(create_app(recording_engine), base_url="http://127.0.0.1") as client:
        response = client.post("/v1/chat/completions", json={"messages": history, "tools": [WEATHER],
                                                              "max_tokens": 2, "max_denoising_steps": 1})
    assert response.status_code == 200, response.text
    seen = recording_engine.requests[-1]
    prompt = seen.prompt if seen.prompt is not None else recording_engine.render_chat(seen.messages)
    assert CALL in prompt  # the assistant's call, in the model's syntax
    assert "15 C and sunny" in prompt and "get_weather" in prompt
    assert "ada: Thanks" in prompt


def test_the_openai_client_and_langchain_bind_tools_read_the_calls(scripted):
    engine = scripted(CALL, CALL, CALL)
    with serving(create_app(engine)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model="tiny-random", messages=ASK, tools=[WEATHER],
                                               tool_choice="auto")
        call = reply.choices[0].message.tool_calls[0]
        assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "London"})
        chunks = list(client.chat.completions.create(model="tiny-random", messages=ASK, tools=[WEATHER],
                                                     stream=True))
        assert [c.function.name for chunk in chunks if chunk.choices
                for c in chunk.choices[0].delta.tool_calls or ()] == ["get_weather"]
        langchain_openai = pytest.importorskip("langchain_openai")
        chat = langchain_openai.ChatOpenAI(base_url=f"{base}/v1", api_key="unused", model="tiny-random",
                                           max_retries=0)
        message = chat.bind_tools([WEATHER]).invoke("Weather in London?")
        assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "London"})]


def test_served_model_names_and_aliases(shared_engine):
    app = create_app(shared_engine, served_model_names=["house-model", "tiny-random"])
    with TestClient(app, base_url="http://127.0.0.1") as client:
        listed = client.get("/v1/models").json()["data"]
        assert [entry["id"] for entry in listed] == ["house-model", "tiny-random"]
        assert all(entry["owned_by"] == "diffgemma" and entry["max_model_len"] == shared_engine.context_length
                   for entry in listed)
        for name in ("house-model", "tiny-random", None):
            body = {"prompt": "x", "max_tokens": 2, "max_denoising_steps": 1, **({"model": name} if name else {})}
            response = client.post("/v1/completions", json=body)
            assert response.status_code == 200 and response.json()["model"] == (name or "house-model")
        missing = client.post("/v1/completions", json={"prompt": "x", "model": "gpt-4o"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_standard_fields_the_adapters_accept_are_accepted(recording_engine):
    with TestClient(create_app(recording_engine), base_url="http://127.0.0.1") as client:
        response = client.post("/v1/chat/completions", json={
            "messages": [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]}, *ASK],
            "max_completion_tokens": 3, "top_p": 0.9, "frequency_penalty": 0.5, "presence_penalty": 0.0,
            "max_denoising_steps": 1, "seed": 4, "user": "u", "store": False, "metadata": {"k": "v"},
            "parallel_tool_calls": True, "logprobs": False})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usage"]["completion_tokens"] <= 3
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] >= 0
    params = recording_engine.requests[-1].params
    assert (params.max_new_tokens, params.seed, params.max_denoising_steps) == (3, 4, 1)


def test_every_sampling_params_field_has_a_request_field():
    names = {field.name for field in dataclasses.fields(SamplingParams)}
    assert names == set(ENGINE_FIELDS) | set(OPENAI_NAMED_ENGINE_FIELDS) | set(NOT_OVER_HTTP)


def test_the_remote_engine_sends_every_sampling_params_field_and_the_server_takes_them(recording_engine):
    from diffgemma_adapters.remote import RemoteEngine

    params = SamplingParams(
        max_new_tokens=6, max_denoising_steps=2, entropy_bound=0.2, t_min=0.3, t_max=0.7, stability_threshold=2,
        confidence_threshold=0.01, adaptive_stopping=False, seed=11, stop=("never-in-output",),
        stop_token_ids=(7,), ignore_eos=True, draft_events=False, validators=("builtin.utf8_integrity",),
        validator_options={"max_regenerations": 1}, on_exhausted="return_flagged", timeout=120.0,
    )
    defaults = SamplingParams()
    unset = [field.name for field in dataclasses.fields(SamplingParams)
             if getattr(params, field.name) == getattr(defaults, field.name)]
    assert unset == ["draft_events"]  # the one field no server streams (RemoteEngine refuses it client-side)
    with serving(create_app(recording_engine, api_key="k")) as base:
        remote = RemoteEngine(f"{base}/v1", api_key="k", model="tiny-random", server="diffgemma")
        try:
            result = remote.generate("hi", params)
        finally:
            remote.close()
    assert result.usage.completion_tokens >= 1
    received = recording_engine.requests[0].params
    for name in ("max_new_tokens", "max_denoising_steps", "entropy_bound", "t_min", "t_max", "stability_threshold",
                 "confidence_threshold", "adaptive_stopping", "stop", "stop_token_ids", "ignore_eos"):
        assert getattr(received, name) == getattr(params, name), name
    assert received.validators == ()  # validators run on the client, never on the server


def test_max_tokens_wins_over_max_completion_tokens_as_in_the_adapters(recording_engine):
    with TestClient(create_app(recording_engine), base_url="http://127.0.0.1") as client:
        both = client.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 2,
                                                         "max_completion_tokens": 5, "max_denoising_steps": 1})
        assert both.status_code == 200, both.text
        assert recording_engine.requests[-1].params.max_new_tokens == 2
        alone = client.post("/v1/chat/completions", json={"messages": ASK, "max_completion_tokens": 0})
        assert alone.json()["error"]["param"] == "max_completion_tokens"


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_a_langgraph_agent_on_chat_openai_runs_a_tool_through_the_server(recording_engine):
    """ChatOpenAI pointed at ``diffgemma serve``: a forced first call, the tool's result fed back, an answer."""
    langchain_openai = pytest.importorskip("langchain_openai")
    pytest.importorskip("langgraph")
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import tool
    from langgraph.prebuilt import create_react_agent

    calls: list[str] = []

    def current_time() -> str:
        """The current time."""
        calls.append("current_time")
        return "12:34"

    tools = [tool(current_time)]
    with serving(create_app(recording_engine)) as base:
        chat = langchain_openai.ChatOpenAI(base_url=f"{base}/v1", api_key="unused", model="tiny-random", seed=0,
                                           max_tokens=16, max_retries=0, extra_body={"max_denoising_steps": 4})

        def model(state, runtime):  # tiny-random writes no call of its own: the first one is forced
            called = any(isinstance(message, ToolMessage) for message in state["messages"])
            return chat.bind_tools(tools, tool_choice=None if called else "current_time")

        messages = create_react_agent(model, tools).invoke({"messages": [("user", "What time is it?")]},
                                                           {"recursion_limit": 6})["messages"]
    assert calls == ["current_time"]
    first = next(message for message in messages if isinstance(message, AIMessage))
    result = next(message for message in messages if isinstance(message, ToolMessage))
    assert result.tool_call_id == first.tool_calls[0]["id"]
    assert isinstance(messages[-1], AIMessage) and not messages[-1].tool_calls
    second = recording_engine.requests[1]
    assert "12:34" in (second.prompt if second.prompt is not None else recording_engine.render_chat(second.messages))


def test_a_generation_past_the_context_window_is_context_length_exceeded(shared_engine):
    with TestClient(create_app(shared_engine), base_url="http://127.0.0.1") as client:
        response = client.post("/v1/completions",
                               json={"prompt": "x", "max_tokens": shared_engine.context_length})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"
