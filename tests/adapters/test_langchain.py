"""ChatDiffusionGemma and DiffusionGemmaLLM on tiny-random (real engine) and on scripted outputs (parsing)."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from diffgemma_adapters.formats import CALL_OPEN, declare_tools, schema_instruction  # noqa: E402
from diffgemma_adapters.langchain import ChatDiffusionGemma, DiffusionGemmaLLM  # noqa: E402
from diffgemma_engine import BlockEvent, InvalidRequestError, RequestCancelledError, SamplingParams  # noqa: E402

LONG = {"model": "tiny-random", "max_tokens": 512, "max_denoising_steps": 4, "seed": 0}
"""A request that runs for many blocks (seed 0 writes no EOS in its first three; checked where it matters)."""


class Weather(BaseModel):
    """Weather of a city."""

    city: str
    celsius: int


def get_weather(city: str) -> str:
    """Get the weather of a city."""
    return f"sunny in {city}"


class TokenCounter(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token, **kwargs) -> None:
        if token:
            self.tokens.append(token)


def a_stop_string(text: str, after: int) -> str:
    """Two characters of ``text`` from ``after`` on that are plain text (no replacement character)."""
    for start in range(after, len(text) - 2):
        candidate = text[start : start + 2]
        if "\ufffd" not in candidate and candidate.strip():
            return candidate
    raise AssertionError(f"no usable stop string in {text!r}")


# -- invoke, stream, async: the same text ---------------------------------------------------------------


def test_stream_concatenation_equals_invoke(fast):
    chat = ChatDiffusionGemma(**{**fast, "max_tokens": 80})
    message = chat.invoke("Tell me about the sea.")
    chunks = list(chat.stream("Tell me about the sea."))
    assert "".join(chunk.content for chunk in chunks) == message.content
    assert message.response_metadata["stats"]["blocks"] == 3  # 80 tokens: three 32-token canvases
    assert chunks[-1].chunk_position == "last"


async def test_async_invoke_and_stream_equal_sync(fast):
    chat = ChatDiffusionGemma(**{**fast, "max_tokens": 80})
    expected = chat.invoke("Tell me about the sea.").content
    assert (await chat.ainvoke("Tell me about the sea.")).content == expected
    assert "".join([c.content async for c in chat.astream("Tell me about the sea.")]) == expected


def test_one_chunk_per_committed_block(fast, shared_engine):
    chat = ChatDiffusionGemma(**{**fast, "max_tokens": 80})
    chunks = [c.content for c in chat.stream("Tell me about the sea.") if c.content]
    params = SamplingParams(max_new_tokens=80, max_denoising_steps=4, seed=3)
    events = shared_engine.stream(messages=[{"role": "user", "content": "Tell me about the sea."}], params=params)
    assert chunks == [e.text for e in events if isinstance(e, BlockEvent) and e.text]
    assert len(chunks) > 1


def test_usage_and_metadata(fast, shared_engine):
    chat = ChatDiffusionGemma(**fast)
    message = chat.invoke([SystemMessage("Be brief."), HumanMessage("Hi")])
    prompt = shared_engine.render_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    usage = message.usage_metadata
    assert usage["input_tokens"] == shared_engine.count_tokens(prompt)
    assert usage["output_tokens"] == 24 and usage["total_tokens"] == usage["input_tokens"] + 24
    meta = message.response_metadata
    assert meta["model_name"] == "tiny-random" and meta["model_provider"] == "diffusiongemma"
    assert meta["finish_reason"] in ("stop", "length") and meta["seed"] == 3
    assert meta["validation"] == {"passed": True, "blocks": 0, "repairs": 0, "extra_steps": 0, "flags": []}

    chunks = list(chat.stream([SystemMessage("Be brief."), HumanMessage("Hi")]))
    assert [c.usage_metadata is not None for c in chunks].count(True) == 1
    assert ["model_name" in c.response_metadata for c in chunks].count(True) == 1
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.usage_metadata == usage


def test_token_ids_use_the_model_tokenizer(fast):
    pytest_socket = pytest.importorskip("pytest_socket")
    pytest_socket.disable_socket()
    try:
        chat = ChatDiffusionGemma(**fast)
        assert chat.get_num_tokens("héllo") == len("héllo".encode())  # tiny-random: one token per byte
        llm = DiffusionGemmaLLM(**fast)
        assert llm.get_token_ids("abc") == chat.get_token_ids("abc")
        assert chat.get_num_tokens_from_messages([HumanMessage("hi")]) == chat.invoke("hi").usage_metadata["input_tokens"]
    finally:
        pytest_socket.enable_socket()


# -- stop sequences -------------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", [ChatDiffusionGemma, DiffusionGemmaLLM])
def test_stop_cuts_the_text_in_invoke_and_stream(adapter, fast):
    model = adapter(**{**fast, "max_tokens": 80})
    full = _text(model.invoke("Tell me about the sea."))
    stop = a_stop_string(full, after=40)  # in the second canvas
    expected = full[: full.find(stop)]
    assert _text(model.invoke("Tell me about the sea.", stop=[stop])) == expected
    assert "".join(_text(c) for c in model.stream("Tell me about the sea.", stop=[stop])) == expected
    assert _text(adapter(**{**fast, "max_tokens": 80, "stop": [stop]}).invoke("Tell me about the sea.")) == expected


def test_stop_reports_finish_reason(fast):
    chat = ChatDiffusionGemma(**{**fast, "max_tokens": 80})
    full = chat.invoke("Tell me about the sea.").content
    stop = a_stop_string(full, after=5)
    message = chat.invoke("Tell me about the sea.", stop=[stop])
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.response_metadata["stop_reason"] == stop


def _text(output) -> str:
    return output if isinstance(output, str) else output.content


# -- LCEL --------------------------------------------------------------------------------------------------


async def test_lcel_chain_invoke_batch_stream_and_events(fast):
    chat = ChatDiffusionGemma(**{**fast, "max_tokens": 48})
    chain = ChatPromptTemplate.from_messages([("system", "You are terse."), ("human", "{question}")]) | chat | StrOutputParser()
    questions = [{"question": "Why is the sky blue?"}, {"question": "What is rain?"}]
    answers = [chain.invoke(q) for q in questions]
    direct = chat.invoke([SystemMessage("You are terse."), HumanMessage("Why is the sky blue?")]).content
    assert answers[0] == direct and all(answers)
    assert chain.batch(questions) == answers  # per-request generators: batching does not change outputs
    assert "".join(chain.stream(questions[0])) == answers[0]
    streamed = []
    async for event in chain.astream_events(questions[0], version="v2"):
        if event["event"] == "on_chat_model_stream":
            streamed.append(event["data"]["chunk"].content)
        if event["event"] == "on_chain_end" and event["name"] == "RunnableSequence":
            assert event["data"]["output"] == answers[0]
    assert "".join(streamed) == answers[0]


# -- callbacks --------------------------------------------------------------------------------------------


def test_llm_fires_token_callbacks_itself(fast):
    llm = DiffusionGemmaLLM(**{**fast, "max_tokens": 80})
    counter = TokenCounter()
    pieces = [p for p in llm.stream("Tell me about the sea.", config={"callbacks": [counter]}) if p]
    assert counter.tokens == pieces and len(pieces) > 1
    streaming = DiffusionGemmaLLM(**{**fast, "max_tokens": 80}, streaming=True)
    counter = TokenCounter()
    text = streaming.invoke("Tell me about the sea.", config={"callbacks": [counter]})
    assert "".join(counter.tokens) == text and len(counter.tokens) > 1


def test_chat_token_callbacks_are_not_duplicated(fast):
    chat = ChatDiffusionGemma(**{**fast, "max_tokens": 80})
    counter = TokenCounter()
    pieces = [c.content for c in chat.stream("Tell me about the sea.", config={"callbacks": [counter]}) if c.content]
    assert counter.tokens == pieces


# -- async never blocks the loop --------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", [ChatDiffusionGemma, DiffusionGemmaLLM])
async def test_ainvoke_does_not_block_the_event_loop(adapter, measure_ticks):
    model = adapter(model="tiny-random", max_tokens=160, max_denoising_steps=8, seed=0)
    _, ticks, seconds = await measure_ticks(model.ainvoke("Tell me about the sea."))
    assert seconds > 0.02  # the work is long enough to matter ...
    assert ticks >= 3  # ... and the loop kept turning (a blocked loop ticks at most once)


async def test_astream_does_not_block_the_event_loop(measure_ticks):
    chat = ChatDiffusionGemma(model="tiny-random", max_tokens=160, max_denoising_steps=8, seed=0)

    async def consume():
        return [c async for c in chat.astream("Tell me about the sea.")]

    _, ticks, seconds = await measure_ticks(consume())
    assert seconds > 0.02 and ticks >= 3


# -- batching ---------------------------------------------------------------------------------------------


def test_llm_batch_submits_everything_before_collecting(recording_engine):
    llm = DiffusionGemmaLLM(engine=recording_engine, max_tokens=64, max_denoising_steps=4, seed=1)
    prompts = ["one", "two", "three", "four"]
    outputs = llm.batch(prompts)
    assert recording_engine.max_in_flight == 4
    assert outputs == [DiffusionGemmaLLM(model="tiny-random", max_tokens=64, max_denoising_steps=4, seed=1).invoke(p) for p in prompts]


def test_llm_generate_reports_usage_per_prompt(fast):
    result = DiffusionGemmaLLM(**fast).generate(["one", "two"])
    assert result.llm_output["model_name"] == "tiny-random"
    assert result.llm_output["token_usage"]["completion_tokens"] == 48
    assert all(g[0].generation_info["finish_reason"] in ("stop", "length") for g in result.generations)


def test_chat_batch_runs_all_inputs_at_once(recording_engine):
    # more inputs than Runnable.batch's default thread pool (min(32, cpus + 4)) runs at once on small machines
    inputs = [f"question {i}" for i in range(12)]
    chat = ChatDiffusionGemma(engine=recording_engine, max_tokens=256, max_denoising_steps=8, seed=0)
    outputs = chat.batch(inputs)
    assert recording_engine.max_in_flight == len(inputs)
    assert len(outputs) == len(inputs) and all(isinstance(o, AIMessage) for o in outputs)


async def test_chat_abatch_runs_all_inputs_at_once(recording_engine):
    chat = ChatDiffusionGemma(engine=recording_engine, max_tokens=256, max_denoising_steps=8, seed=0)
    outputs = await chat.abatch(["one", "two", "three", "four"])
    assert recording_engine.max_in_flight == 4
    assert [o.content for o in outputs] == [o.content for o in chat.batch(["one", "two", "three", "four"])]


# -- cancellation -----------------------------------------------------------------------------------------


@pytest.fixture
def long_request_is_long(shared_engine):
    """Precondition of the cancellation tests: LONG's first three canvases hold no EOS."""
    result = shared_engine.generate(
        messages=[{"role": "user", "content": "Tell me a long story."}],
        params=SamplingParams(max_new_tokens=96, max_denoising_steps=4, seed=0),
    )
    assert result.finish_reason == "length"


def _cancelled(handle) -> bool:
    try:
        handle.result(timeout=30)
    except RequestCancelledError:
        return True
    return False


@pytest.mark.usefixtures("long_request_is_long")
def test_breaking_out_of_a_stream_cancels_the_request(recording_engine):
    threads = threading.active_count()
    for adapter in (ChatDiffusionGemma, DiffusionGemmaLLM):
        model = adapter(**{**LONG, "model": None}, engine=recording_engine)
        for _ in model.stream("Tell me a long story." if adapter is DiffusionGemmaLLM else [HumanMessage("Tell me a long story.")]):
            break
    assert all(_cancelled(r.handle) for r in recording_engine.requests)
    assert threading.active_count() <= threads  # nothing orphaned
    assert ChatDiffusionGemma(engine=recording_engine, max_tokens=8, seed=0).invoke("hi")  # nothing left locked


@pytest.mark.usefixtures("long_request_is_long")
async def test_aclose_and_task_cancel_cancel_the_request(recording_engine):
    chat = ChatDiffusionGemma(**{**LONG, "model": None}, engine=recording_engine)
    stream = chat.astream("Tell me a long story.")
    await stream.__anext__()
    await stream.aclose()
    task = asyncio.ensure_future(chat.ainvoke("Tell me a long story."))
    while len(recording_engine.requests) < 2:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [_cancelled(r.handle) for r in recording_engine.requests] == [True, True]


# -- options ----------------------------------------------------------------------------------------------


def test_ls_params_honour_a_per_call_model(fast):
    chat = ChatDiffusionGemma(**fast, temperature=0.5, stop=["x"])
    params = chat._get_ls_params(stop=["y"], model="other")
    assert params == {"ls_provider": "diffusiongemma", "ls_model_name": "other", "ls_model_type": "chat",
                      "ls_temperature": 0.5, "ls_max_tokens": 24, "ls_stop": ["x", "y"]}
    assert DiffusionGemmaLLM(**fast)._get_ls_params()["ls_model_type"] == "llm"


def test_unknown_call_options_raise_and_tolerated_ones_do_not(fast):
    chat = ChatDiffusionGemma(**fast)
    with pytest.raises(InvalidRequestError) as error:
        chat.invoke("hi", top_k=3)
    assert error.value.field == "top_k"
    assert chat.invoke("hi", api_key="x", max_retries=2).content == chat.invoke("hi").content
    assert chat.invoke("hi", temperature=0.9).content != chat.invoke("hi").content


def test_images_are_refused_not_dropped(fast):
    chat = ChatDiffusionGemma(**fast)
    image = HumanMessage(content=[{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "x"}}])
    with pytest.raises(InvalidRequestError, match="text only"):
        chat.invoke([image])


def test_llm_can_apply_the_chat_template(recording_engine):
    DiffusionGemmaLLM(engine=recording_engine, max_tokens=8, seed=0, apply_chat_template=True).invoke("hi")
    DiffusionGemmaLLM(engine=recording_engine, max_tokens=8, seed=0).invoke("hi")
    templated, raw = recording_engine.requests
    assert templated.messages == [{"role": "user", "content": "hi"}] and templated.prompt is None
    assert raw.prompt == "hi"


# -- tools (scripted model outputs) -----------------------------------------------------------------------

CALL = '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>'


def test_tool_calls_are_parsed_from_the_model_syntax(scripted):
    engine = scripted("Let me check. " + CALL, "Let me check. " + CALL)
    chat = ChatDiffusionGemma(engine=engine).bind_tools([get_weather])
    message = chat.invoke("Weather in Paris?")
    assert message.content == "Let me check. "
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "Paris"})]
    system = engine.requests[0].messages[0]
    assert system["role"] == "system" and "<|tool>declaration:get_weather{" in system["content"]
    chunks = list(chat.stream("Weather in Paris?"))
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert full.content == message.content and CALL_OPEN not in "".join(c.content for c in chunks)
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("get_weather", {"city": "Paris"})]


def test_forced_tool_choice_prefills_the_call(scripted):
    engine = scripted('city:<|"|>Oslo<|"|>}<tool_call|>')
    chat = ChatDiffusionGemma(engine=engine).bind_tools([get_weather], tool_choice="get_weather")
    message = chat.invoke("Weather?")
    assert engine.requests[0].prompt.endswith(f"{CALL_OPEN}call:get_weather{{")
    assert message.tool_calls[0]["args"] == {"city": "Oslo"} and message.content == ""


def test_bad_calls_become_invalid_tool_calls_and_parallel_can_be_off(scripted):
    engine = scripted("<|tool_call>call:get_weather{city:Paris<tool_call|>", CALL + CALL)
    chat = ChatDiffusionGemma(engine=engine)
    bad = chat.bind_tools([get_weather]).invoke("?")
    assert bad.tool_calls == [] and bad.invalid_tool_calls[0]["name"] == "get_weather"
    single = chat.bind_tools([get_weather], parallel_tool_calls=False).invoke("?")
    assert len(single.tool_calls) == 1
    with pytest.raises(ValueError, match="tool_choice"):
        chat.bind_tools([get_weather], tool_choice="nope")


def test_tool_results_go_back_in_the_model_format(scripted):
    engine = scripted("It is sunny.")
    chat = ChatDiffusionGemma(engine=engine).bind_tools([get_weather])
    history = [
        HumanMessage("Weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}]),
        ToolMessage("sunny", tool_call_id="c1"),
    ]
    assert chat.invoke(history).content == "It is sunny."
    roles = [m["role"] for m in engine.requests[0].messages]
    assert roles == ["system", "user", "assistant", "tool"]
    assert engine.requests[0].messages[-1]["content"] == '<|tool_response>response:get_weather{value:<|"|>sunny<|"|>}<tool_response|>'
    assert declare_tools([{"type": "function", "function": {"name": "x"}}]).startswith("<|tool>declaration:x{")


# -- structured output ------------------------------------------------------------------------------------


def test_json_schema_output_uses_the_json_validator(scripted):
    engine = scripted('{"city": "Paris", "celsius": 15}', "not json")
    structured = ChatDiffusionGemma(engine=engine).with_structured_output(Weather)
    assert structured.invoke("Weather in Paris?") == Weather(city="Paris", celsius=15)
    request = engine.requests[0]
    assert request.params.validators == ("builtin.json",)
    assert request.params.validator_options["builtin.json"] == {"schema": Weather.model_json_schema()}
    # the schema is stated in a system turn before the user's message (the validator still enforces it)
    assert request.messages == [{"role": "system", "content": schema_instruction(Weather.model_json_schema())},
                                {"role": "user", "content": "Weather in Paris?"}]  # fmt: skip
    raw = ChatDiffusionGemma(engine=engine).with_structured_output(Weather, include_raw=True).invoke("?")
    assert raw["parsed"] is None and raw["parsing_error"] is not None and raw["raw"].content == "not json"


def test_json_mode_and_function_calling(scripted):
    engine = scripted('```json\n{"a": 1}\n```', 'city:<|"|>Rome<|"|>,celsius:20}<tool_call|>')
    chat = ChatDiffusionGemma(engine=engine)
    assert chat.with_structured_output(None, method="json_mode").invoke("?") == {"a": 1}
    assert engine.requests[0].params.validators == ("builtin.json",)
    assert "builtin.json" not in engine.requests[0].params.validator_options
    assert chat.with_structured_output(Weather, method="function_calling").invoke("?") == Weather(city="Rome", celsius=20)
    with pytest.raises(ValueError):
        chat.with_structured_output(Weather, method="grammar")
    with pytest.raises(ValueError):
        chat.with_structured_output(Weather, unknown=True)


def test_the_json_validator_runs_in_the_engine(shared_engine):
    """Random weights cannot write JSON: the validator flags the block, repairs fail, and the response is
    returned flagged (``on_validation_failure="return_flagged"``) instead of silently passing."""
    chat = ChatDiffusionGemma(engine=shared_engine, max_tokens=24, max_denoising_steps=4, seed=0,
                              on_validation_failure="return_flagged")
    result = chat.with_structured_output(Weather, include_raw=True).invoke("Weather in Paris?")
    meta = result["raw"].response_metadata
    assert meta["finish_reason"] == "validation_failed"
    assert meta["validation"]["passed"] is False and meta["validation"]["repairs"] > 0
    assert any(flag.startswith("json") for flag in meta["validation"]["flags"])
    assert result["parsing_error"] is not None
