"""DiffusionGemma as a LlamaIndex LLM: tiny-random through the real engine, scripted outputs for parsing."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.base.llms.base import BaseLLM  # noqa: E402
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler  # noqa: E402
from llama_index.core.embeddings import MockEmbedding  # noqa: E402
from llama_index.core.llms import ChatMessage, MessageRole  # noqa: E402
from llama_index.core.prompts import PromptTemplate  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from diffgemma_adapters.formats import schema_instruction  # noqa: E402
from diffgemma_adapters.llamaindex import ChatTemplatePrompt, DiffusionGemma  # noqa: E402
from diffgemma_engine import InvalidRequestError, RequestCancelledError, SamplingParams  # noqa: E402

SEA = [ChatMessage(role=MessageRole.USER, content="Tell me about the sea.")]


class City(BaseModel):
    name: str
    population: int


@pytest.fixture
def settings_restored():
    """LlamaIndex's ``Settings`` is process-global: put it back after the test."""
    saved = dict(vars(Settings))
    yield Settings
    vars(Settings).clear()
    vars(Settings).update(saved)


def test_is_a_llamaindex_llm():
    assert BaseLLM.__name__ in [base.__name__ for base in DiffusionGemma.__mro__]
    assert DiffusionGemma.class_name() == "DiffusionGemma"


def test_metadata_reports_the_real_model(fast, shared_engine):
    meta = DiffusionGemma(**fast).metadata
    assert meta.context_window == shared_engine.context_length == 1024
    assert meta.num_output == shared_engine.canvas_length  # max_tokens 24 < one canvas: a canvas is reserved
    assert meta.is_chat_model and meta.is_function_calling_model and meta.model_name == "tiny-random"
    assert DiffusionGemma(**fast, context_window=512).metadata.context_window == 512
    assert DiffusionGemma(model="tiny-random", max_tokens=100).metadata.num_output == 100


def test_prompts_default_to_the_chat_template(fast, shared_engine):
    llm = DiffusionGemma(**fast)
    assert isinstance(llm.messages_to_prompt, ChatTemplatePrompt)
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi")]
    assert llm.messages_to_prompt(messages) == shared_engine.render_chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert llm.completion_to_prompt("Hi") == shared_engine.render_chat([{"role": "user", "content": "Hi"}])


def test_formatted_and_system_prompt_are_honoured(recording_engine):
    llm = DiffusionGemma(engine=recording_engine, max_tokens=8, seed=0, system_prompt="Be brief.")
    llm.complete("Hi")
    llm.complete("<raw prompt>", formatted=True)
    custom = DiffusionGemma(engine=recording_engine, max_tokens=8, seed=0,
                            completion_to_prompt=lambda p: f"Q: {p}\nA:", messages_to_prompt=lambda ms: "CHAT")
    custom.complete("Hi")
    custom.chat([ChatMessage(role="user", content="Hi")])
    prompts = [r.prompt for r in recording_engine.requests]
    assert prompts == [
        recording_engine.render_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]),
        "<raw prompt>",
        "Q: Hi\nA:",
        "CHAT",
    ]


def test_complete_and_stream_complete(fast):
    llm = DiffusionGemma(**{**fast, "max_tokens": 80})
    whole = llm.complete("Tell me about the sea.")
    responses = list(llm.stream_complete("Tell me about the sea."))
    assert all(r.delta is not None for r in responses)
    assert "".join(r.delta for r in responses) == whole.text
    assert [r.text for r in responses] == ["".join(r.delta for r in responses[: i + 1]) for i in range(len(responses))]
    assert len([r for r in responses if r.delta]) == 3  # one response per committed canvas
    assert responses[-1].raw["usage"] == whole.raw["usage"]
    usage = whole.raw["usage"]
    assert usage["completion_tokens"] == 80 and usage["total_tokens"] == usage["prompt_tokens"] + 80
    assert whole.raw["model"] == "tiny-random" and whole.raw["finish_reason"] in ("stop", "length")


def test_chat_and_stream_chat(fast):
    llm = DiffusionGemma(**{**fast, "max_tokens": 80})
    whole = llm.chat(SEA)
    assert whole.message.role == MessageRole.ASSISTANT and whole.message.content
    responses = list(llm.stream_chat(SEA))
    assert "".join(r.delta for r in responses) == whole.message.content == responses[-1].message.content
    assert whole.message.content == llm.complete(llm.messages_to_prompt(SEA), formatted=True).text


async def test_async_methods_equal_sync(fast):
    llm = DiffusionGemma(**{**fast, "max_tokens": 80})
    text = llm.complete("Tell me about the sea.").text
    reply = llm.chat(SEA).message.content
    assert (await llm.acomplete("Tell me about the sea.")).text == text
    assert (await llm.achat(SEA)).message.content == reply
    assert "".join([r.delta async for r in await llm.astream_complete("Tell me about the sea.")]) == text
    assert "".join([r.delta async for r in await llm.astream_chat(SEA)]) == reply


async def test_all_four_async_methods_leave_the_loop_free(measure_ticks):
    llm = DiffusionGemma(model="tiny-random", max_tokens=160, max_denoising_steps=8, seed=0)

    async def drain(stream):
        return [r async for r in await stream]

    for call in (llm.acomplete("Tell me about the sea."), llm.achat(SEA),
                 drain(llm.astream_complete("Tell me about the sea.")), drain(llm.astream_chat(SEA))):
        _, ticks, seconds = await measure_ticks(call)
        assert seconds > 0.02 and ticks >= 3


def test_stop_cuts_in_both_modes(fast):
    llm = DiffusionGemma(**{**fast, "max_tokens": 80})
    full = llm.complete("Tell me about the sea.").text
    stop = next(full[i : i + 2] for i in range(40, len(full) - 2) if "\ufffd" not in full[i : i + 2] and full[i : i + 2].strip())
    expected = full[: full.find(stop)]
    cut = llm.complete("Tell me about the sea.", stop=[stop])
    assert cut.text == expected and cut.raw["finish_reason"] == "stop"
    assert "".join(r.delta for r in llm.stream_complete("Tell me about the sea.", stop=[stop])) == expected
    assert DiffusionGemma(**{**fast, "max_tokens": 80, "stop": [stop]}).complete("Tell me about the sea.").text == expected


def test_token_counting_handler_reads_our_usage(fast):
    llm = DiffusionGemma(**fast)
    counter = TokenCountingHandler(tokenizer=llm.get_token_ids)
    llm.callback_manager = CallbackManager([counter])
    usage = llm.complete("Hi").raw["usage"]
    list(llm.stream_chat([ChatMessage(role="user", content="Hi")]))
    assert counter.prompt_llm_token_count == 2 * usage["prompt_tokens"]
    assert counter.completion_llm_token_count == usage["completion_tokens"] + 24


def test_unknown_options_raise(fast):
    with pytest.raises(InvalidRequestError, match="top_k"):
        DiffusionGemma(**fast).complete("Hi", top_k=5)
    with pytest.raises(ValueError):
        DiffusionGemma(**fast, not_a_field=1)


# -- cancellation -----------------------------------------------------------------------------------------


def _cancelled(handle) -> bool:
    try:
        handle.result(timeout=30)
    except RequestCancelledError:
        return True
    return False


@pytest.fixture
def long_request_is_long(shared_engine):
    """Precondition: seed 0 writes no EOS in its first three canvases for this prompt."""
    prompt = shared_engine.render_chat([{"role": "user", "content": "Tell me a long story."}])
    result = shared_engine.generate(prompt, SamplingParams(max_new_tokens=96, max_denoising_steps=4, seed=0))
    assert result.finish_reason == "length"


@pytest.mark.usefixtures("long_request_is_long")
async def test_stopping_a_stream_cancels_the_request(recording_engine):
    threads = threading.active_count()
    llm = DiffusionGemma(engine=recording_engine, max_tokens=512, max_denoising_steps=4, seed=0)
    for _ in llm.stream_complete("Tell me a long story."):
        break
    stream = await llm.astream_chat([ChatMessage(role="user", content="Tell me a long story.")])
    await stream.__anext__()
    await stream.aclose()
    task = asyncio.ensure_future(llm.acomplete("Tell me a long story."))
    while len(recording_engine.requests) < 3:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [_cancelled(r.handle) for r in recording_engine.requests] == [True, True, True]
    assert threading.active_count() <= threads
    assert llm.complete("hi", max_tokens=8).text is not None  # nothing left locked


def test_an_unread_stream_submits_nothing(recording_engine):
    llm = DiffusionGemma(engine=recording_engine, max_tokens=8, seed=0)
    llm.stream_complete("Hi")
    assert recording_engine.requests == []


# -- one engine for every framework ----------------------------------------------------------------------


def test_langchain_and_llamaindex_share_one_engine(shared_engine):
    pytest.importorskip("langchain_core")
    from diffgemma_adapters.langchain import ChatDiffusionGemma, DiffusionGemmaLLM

    adapters = [DiffusionGemma(model="tiny-random"), ChatDiffusionGemma(model="tiny-random"),
                DiffusionGemmaLLM(model="tiny-random")]
    assert all(adapter.engine is shared_engine for adapter in adapters)
    weights = {id(adapter.engine.loaded.model) for adapter in adapters}
    assert len(weights) == 1  # one model in memory


# -- RAG offline ------------------------------------------------------------------------------------------


@pytest.fixture
def rag_index(settings_restored, fast):
    """A three-document ``VectorStoreIndex`` with ``Settings.llm = DiffusionGemma(...)``, built offline."""
    llm = DiffusionGemma(**{**fast, "max_tokens": 48})
    settings_restored.llm = llm
    settings_restored.embed_model = MockEmbedding(embed_dim=8)
    settings_restored.tokenizer = llm.get_token_ids  # size prompts with the model's own tokenizer
    documents = [Document(text=t) for t in ("The sea is salty.", "Rain falls from clouds.", "Rivers flow to the sea.")]
    return VectorStoreIndex.from_documents(documents)


@pytest.fixture
def offline():
    pytest_socket = pytest.importorskip("pytest_socket")
    pytest_socket.disable_socket(allow_unix_socket=True)  # the event loop's self-pipe is a unix socket pair
    yield
    pytest_socket.enable_socket()


@pytest.mark.usefixtures("offline")
def test_query_engine_answers_sync_and_streaming(rag_index):
    answer = rag_index.as_query_engine().query("Why is the sea salty?")
    streaming = rag_index.as_query_engine(streaming=True).query("Why is the sea salty?")
    assert answer.response and answer.source_nodes
    assert "".join(streaming.response_gen) == answer.response  # same seed, same prompt: same text


@pytest.mark.usefixtures("offline")
async def test_query_engine_answers_async(rag_index):
    query_engine = rag_index.as_query_engine()
    answer = await query_engine.aquery("Why is the sea salty?")
    sync_answer = await asyncio.to_thread(query_engine.query, "Why is the sea salty?")  # no loop in that thread
    assert answer.response == sync_answer.response and answer.source_nodes


# -- structured output (scripted model outputs) -----------------------------------------------------------


async def test_structured_predict_uses_the_json_validator(scripted):
    engine = scripted('{"name": "Paris", "population": 2100000}', '```json\n{"name": "Oslo", "population": 700000}\n```',
                      '{"name": "Rome", "population": 2800000}')
    llm = DiffusionGemma(engine=engine)
    prompt = PromptTemplate("Describe the city {city}.")
    assert llm.structured_predict(City, prompt, city="Paris") == City(name="Paris", population=2100000)
    assert await llm.astructured_predict(City, prompt, city="Oslo") == City(name="Oslo", population=700000)
    request = engine.requests[0]
    assert request.params.validators == ("builtin.json",)
    assert request.params.validator_options["builtin.json"] == {"schema": City.model_json_schema()}
    # as on the server: the schema is stated in a system turn before the template's message, and constrains
    assert request.prompt is None
    assert request.messages == [{"role": "system", "content": schema_instruction(City.model_json_schema())},
                                {"role": "user", "content": "Describe the city Paris."}]  # fmt: skip
    # a custom messages_to_prompt is the caller's own rendering: it is sent as it is
    custom = DiffusionGemma(engine=engine, messages_to_prompt=lambda messages: f"Q: {messages[-1].content}\nA:")
    assert custom.structured_predict(City, prompt, city="Rome") == City(name="Rome", population=2800000)
    assert engine.requests[-1].prompt == "Q: Describe the city Rome.\nA:" and engine.requests[-1].messages is None
