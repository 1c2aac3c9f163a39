"""Adapter features from issue 14: pickling and deep copies share the engine, model_kwargs, the hosted-API
options the server also accepts, token callbacks during invoke, prefix-cache usage, and LlamaIndex's
validated stream_structured_predict and tool calls."""

from __future__ import annotations

import copy
import pickle

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage  # noqa: E402
from llama_index.core.prompts import PromptTemplate  # noqa: E402
from llama_index.core.tools import FunctionTool  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from diffgemma_adapters.formats import CALL_CLOSE, CALL_OPEN  # noqa: E402
from diffgemma_adapters.request import result_view  # noqa: E402
from diffgemma_adapters.langchain import ChatDiffusionGemma, DiffusionGemmaLLM  # noqa: E402
from diffgemma_adapters.llamaindex import DiffusionGemma  # noqa: E402
from diffgemma_engine import (  # noqa: E402
    BlockValidationError,
    GenerationResult,
    GenerationStats,
    Usage,
)

FAST = {"model": "tiny-random", "max_tokens": 24, "max_denoising_steps": 4, "seed": 3}


class City(BaseModel):
    name: str
    population: int


def _text(output) -> str:
    if isinstance(output, str):
        return output
    return output.text if hasattr(output, "text") else output.content


def _ask(model, prompt):
    return model.complete(prompt) if isinstance(model, DiffusionGemma) else model.invoke(prompt)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("cls", [ChatDiffusionGemma, DiffusionGemmaLLM, DiffusionGemma])
def test_models_pickle_and_deep_copy_sharing_the_engine(cls, shared_engine):
    model = cls(**FAST, stop=["zz"])
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert model.engine is shared_engine  # pickling leaves the original whole
        assert clone.engine is shared_engine
        assert clone.stop == ["zz"] and clone.seed == 3
        assert _text(_ask(clone, "Hi")) == _text(_ask(model, "Hi"))  # same settings, same seed


def test_model_kwargs_reach_every_call_and_calls_win(recording_engine):
    chat = ChatDiffusionGemma(engine=recording_engine, max_tokens=8, model_kwargs={"max_denoising_steps": 3, "top_p": 0.9})
    chat.invoke("Hi")
    chat.invoke("Hi", max_denoising_steps=2)
    assert [r.params.max_denoising_steps for r in recording_engine.requests] == [3, 2]
    with pytest.raises(ValueError, match="model_kwargs.top_k"):  # pydantic wraps the InvalidRequestError
        ChatDiffusionGemma(**FAST, model_kwargs={"top_k": 5})


def test_hosted_options_are_accepted_like_the_server(recording_engine):
    chat = ChatDiffusionGemma(engine=recording_engine)
    chat.bind(top_p=0.5, max_completion_tokens=5, frequency_penalty=0.0).invoke("Hi")
    chat.invoke("Hi", max_completion_tokens=9, max_tokens=4)  # the real name wins over the alias
    assert [r.params.max_new_tokens for r in recording_engine.requests] == [5, 4]
    llm = DiffusionGemma(engine=recording_engine)
    llm.complete("Hi", top_p=0.5, max_completion_tokens=6)
    assert recording_engine.requests[-1].params.max_new_tokens == 6


class _Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)


async def test_token_callbacks_fire_per_block_during_a_plain_invoke():
    chat = ChatDiffusionGemma(**{**FAST, "max_tokens": 80})
    handler = _Tokens()
    message = chat.invoke("Hi", config={"callbacks": [handler]})
    assert len(handler.tokens) == message.response_metadata["stats"]["blocks"] > 1
    assert "".join(handler.tokens) == message.content
    handler.tokens.clear()
    message = await chat.ainvoke("Hi", config={"callbacks": [handler]})
    assert "".join(handler.tokens) == message.content and len(handler.tokens) > 1


def test_prefix_cache_hits_surface_in_usage():
    result = GenerationResult("r", "x", (1,), "stop", Usage(10, 1, cached_tokens=8), GenerationStats(), seed=0)
    view = result_view("m", result)
    assert view["usage"]["prompt_tokens_details"] == {"cached_tokens": 8}
    from diffgemma_adapters.langchain.base import usage_metadata as _usage

    assert _usage(result)["input_token_details"] == {"cache_read": 8}


def test_responses_share_one_view(shared_engine):
    message = ChatDiffusionGemma(**FAST).invoke("Hi")
    raw = DiffusionGemma(**FAST).complete("Hi").raw
    assert raw["model"] == message.response_metadata["model_name"] == "tiny-random"
    for key in ("finish_reason", "seed", "validation", "stats"):
        assert set(raw[key] if isinstance(raw[key], dict) else ()) == set(
            message.response_metadata[key] if isinstance(message.response_metadata[key], dict) else ())
    assert raw["usage"]["prompt_tokens"] == message.usage_metadata["input_tokens"]


# -- LlamaIndex --------------------------------------------------------------------------------------


def test_stream_structured_predict_validates_like_structured_predict(scripted):
    engine = scripted('{"name": "Oslo", "population": 700000}')
    llm = DiffusionGemma(engine=engine)
    outputs = list(llm.stream_structured_predict(City, PromptTemplate("About {city}."), city="Oslo"))
    assert outputs[-1] == City(name="Oslo", population=700000)
    assert engine.requests[0].params.validator_options["builtin.json"] == {"schema": City.model_json_schema()}
    random = DiffusionGemma(**FAST)  # random weights cannot write the record: the validator says so
    with pytest.raises(BlockValidationError):
        list(random.stream_structured_predict(City, PromptTemplate("About {city}."), city="Oslo"))


async def test_astream_structured_predict_validates(scripted):
    llm = DiffusionGemma(engine=scripted('{"name": "Rome", "population": 2800000}'))
    outputs = [o async for o in await llm.astream_structured_predict(City, PromptTemplate("About {c}."), c="Rome")]
    assert outputs[-1] == City(name="Rome", population=2800000)


def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def test_llamaindex_tool_calls_parse_with_the_shared_parser(scripted):
    text = f"{CALL_OPEN}call:weather{{city:<|\"|>Oslo<|\"|>}}{CALL_CLOSE}{CALL_OPEN}call:nope{{}}{CALL_CLOSE}"
    llm = DiffusionGemma(engine=scripted(text, text))
    tools = [FunctionTool.from_defaults(weather)]
    response = llm.chat_with_tools(tools, user_msg="Weather in Oslo?", allow_parallel_tool_calls=True)
    calls = llm.get_tool_calls_from_response(response)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("weather", {"city": "Oslo"})]
    assert response.message.additional_kwargs["invalid_tool_calls"][0]["name"] == "nope"
    streamed = list(llm.stream_chat_with_tools(tools, user_msg="Weather in Oslo?", allow_parallel_tool_calls=True))
    assert [(c.tool_name, c.tool_kwargs) for c in llm.get_tool_calls_from_response(streamed[-1])] == [
        ("weather", {"city": "Oslo"})]


def test_llamaindex_tool_required_forces_a_call(recording_engine):
    llm = DiffusionGemma(engine=recording_engine, max_tokens=8, max_denoising_steps=2,
                         on_validation_failure="return_flagged")
    llm.chat_with_tools([FunctionTool.from_defaults(weather)], chat_history=[ChatMessage(role="user", content="Hi")],
                        tool_required=True)
    request = recording_engine.requests[0]
    assert request.prompt.endswith(f"{CALL_OPEN}call:weather{{")
    assert "builtin.tool_call" in request.params.validators
