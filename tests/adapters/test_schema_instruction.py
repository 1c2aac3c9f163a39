"""Structured output states its JSON schema in a system turn on every messages path (LangChain
``with_structured_output``, LlamaIndex ``structured_predict``, the server's ``response_format``), the schema the
``builtin.json`` validator enforces; a ``json_object`` request and a raw prompt get nothing added."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from langchain_core.messages import HumanMessage, SystemMessage  # noqa: E402
from llama_index.core.prompts import PromptTemplate  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from diffgemma_adapters.formats import SCHEMA_INSTRUCTION  # noqa: E402
from diffgemma_adapters.langchain import ChatDiffusionGemma  # noqa: E402
from diffgemma_adapters.llamaindex import DiffusionGemma  # noqa: E402
from diffgemma_adapters.request import prepare_request  # noqa: E402
from diffgemma_adapters.server import create_app  # noqa: E402
from diffgemma_adapters.settings import GenerationSettings  # noqa: E402

RECORD = '{"name": "Oslo", "population": 700000}'
QUESTION = "Describe the city Oslo."


class City(BaseModel):
    name: str
    population: int


def _system_schema(messages: list[dict[str, str]]) -> tuple[dict, str]:
    """The schema stated by the system turn that opens ``messages`` (it must open them), and the turn's rest."""
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith(SCHEMA_INSTRUCTION)
    schema, end = json.JSONDecoder().raw_decode(messages[0]["content"], len(SCHEMA_INSTRUCTION))
    return schema, messages[0]["content"][end:]


def _prompt(engine) -> str:
    """The text the engine's chat template made of the last request."""
    request = engine.requests[-1]
    return request.prompt if request.messages is None else engine.inner.render_chat(request.messages)


def _served(engine, body: dict, path: str = "/v1/chat/completions") -> dict:
    with TestClient(create_app(engine), base_url="http://127.0.0.1") as client:
        response = client.post(path, json={"model": "tiny-random", **body})
    assert response.status_code == 200, response.text
    return response.json()


def _langchain(engine) -> None:
    assert ChatDiffusionGemma(engine=engine).with_structured_output(City).invoke(QUESTION) == City(name="Oslo",
                                                                                                   population=700000)


def _llamaindex(engine) -> None:
    assert DiffusionGemma(engine=engine).structured_predict(City, PromptTemplate("Describe the city {city}."),
                                                            city="Oslo") == City(name="Oslo", population=700000)  # fmt: skip


def _server(engine) -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "City", "schema": City.model_json_schema()}}
    reply = _served(engine, {"messages": [{"role": "user", "content": QUESTION}], "response_format": schema})
    assert json.loads(reply["choices"][0]["message"]["content"]) == json.loads(RECORD)


def _states_the_enforced_schema(engine, expected: dict) -> None:
    request = engine.requests[-1]
    assert request.messages is not None, "a messages request (the chat template renders it)"
    schema, rest = _system_schema(request.messages)
    assert rest == ""
    assert schema == expected == request.params.validator_options["builtin.json"]["schema"]
    assert request.messages[1:] == [{"role": "user", "content": QUESTION}]


def test_langchain_with_structured_output_states_the_schema(scripted):
    engine = scripted(RECORD)
    _langchain(engine)
    _states_the_enforced_schema(engine, City.model_json_schema())


def test_llamaindex_structured_predict_states_the_schema(scripted):
    engine = scripted(RECORD)
    _llamaindex(engine)
    _states_the_enforced_schema(engine, City.model_json_schema())


def test_server_response_format_states_the_schema(scripted):
    engine = scripted(RECORD)
    _server(engine)
    _states_the_enforced_schema(engine, City.model_json_schema())


def _prompts(scripted, *paths) -> list[str]:
    prompts = []
    for run in paths:
        engine = scripted(RECORD)
        run(engine)
        prompts.append(_prompt(engine))
    return prompts


def test_llamaindex_and_the_server_send_one_prompt_for_one_schema(scripted):
    server, llamaindex = _prompts(scripted, _server, _llamaindex)
    assert SCHEMA_INSTRUCTION in server and llamaindex == server


def test_langchain_sends_the_prompt_the_other_paths_send_for_one_class(scripted):
    server, langchain = _prompts(scripted, _server, _langchain)
    assert langchain == server


def test_a_callers_system_message_follows_the_instruction_in_one_system_turn(scripted):
    engine = scripted(RECORD)
    chat = ChatDiffusionGemma(engine=engine).with_structured_output(City)
    assert chat.invoke([SystemMessage("Be brief."), HumanMessage(QUESTION)]).population == 700000
    schema, rest = _system_schema(engine.requests[-1].messages)
    assert schema == City.model_json_schema() and rest == "\n\nBe brief."
    assert [m["role"] for m in engine.requests[-1].messages] == ["system", "user"]


def test_json_object_and_raw_prompts_get_no_instruction(scripted, shared_engine):
    engine = scripted('{"a": 1}', '{"a": 1}', '{"a": 1}')
    assert ChatDiffusionGemma(engine=engine).with_structured_output(None, method="json_mode").invoke(QUESTION) == {"a": 1}
    assert engine.requests[-1].messages == [{"role": "user", "content": QUESTION}]
    _served(engine, {"messages": [{"role": "user", "content": QUESTION}], "response_format": {"type": "json_object"}})
    assert engine.requests[-1].messages == [{"role": "user", "content": QUESTION}]
    assert engine.requests[-1].params.validators == ("builtin.json",)
    # the completions endpoint sends its prompt as it is, a schema only selects the validator
    schema = {"type": "json_schema", "json_schema": {"name": "City", "schema": City.model_json_schema()}}
    _served(engine, {"prompt": QUESTION, "response_format": schema}, path="/v1/completions")
    assert engine.requests[-1].prompt == QUESTION and engine.requests[-1].messages is None
    assert engine.requests[-1].params.validator_options["builtin.json"]["schema"] == City.model_json_schema()
    request = prepare_request(GenerationSettings(engine=shared_engine), prompt=QUESTION,
                              response_format={"type": "json_schema", "schema": City.model_json_schema()})  # fmt: skip
    assert request.prompt == QUESTION and request.messages is None


def test_a_schema_that_is_not_json_data_is_a_typed_error_naming_the_field(scripted):
    from diffgemma_engine import InvalidRequestError

    engine = scripted(RECORD)
    chat = ChatDiffusionGemma(engine=engine)
    with pytest.raises(InvalidRequestError, match=r"response_format\.schema"):
        chat.invoke(QUESTION, response_format={"type": "json_schema", "schema": {"type": "object", "x": {1, 2}}})
    assert chat.invoke(QUESTION, response_format={"type": "json_object"}).content == RECORD  # still serving
