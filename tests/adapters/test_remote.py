"""The adapters against a remote server: our real OpenAI-compatible server on a loopback port, driven over
``base_url`` (or a :class:`RemoteEngine`), compared with the same requests in-process (same engine, same seeds:
the text must match). Also client-side validation by continuation, error mapping and cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from typing import Any

import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.messages import HumanMessage, SystemMessage  # noqa: E402

from diffgemma_adapters.langchain import ChatDiffusionGemma, DiffusionGemmaLLM  # noqa: E402
from diffgemma_adapters.llamaindex import DiffusionGemma  # noqa: E402
from diffgemma_adapters.remote import (  # noqa: E402
    PieceTokenizer,
    RemoteAuthenticationError,
    RemoteConnectionError,
    RemoteEngine,
    ServerKind,
    gemma_turns,
    map_api_error,
    text_pieces,
)
from adapter_support import RecordingEngine, RejectBlocks, checker_factory_for, free_port, serving  # noqa: E402
from diffgemma_adapters.server import create_app  # noqa: E402
from diffgemma_engine import (  # noqa: E402
    BlockEvent,
    EngineDeadError,
    EngineOverloadedError,
    FinalEvent,
    InvalidRequestError,
    RepairBudgetExceeded,
    RequestCancelledError,
    RequestTimeoutError,
    SamplingParams,
    get_engine,
)
from diffgemma_engine.api.client import EngineClient, EngineStats  # noqa: E402

KEY = "remote-test-key"
CANVAS = 32  # tiny-random's canvas length
SETTINGS = {"max_tokens": 80, "max_denoising_steps": 4, "seed": 3}
"""Three blocks (32 + 32 + 16 tokens; seed 3 writes no EOS in them, checked below) at a few cheap steps."""
PARAMS = SamplingParams(max_new_tokens=80, max_denoising_steps=4, seed=3)
CHAT = [{"role": "user", "content": "hello"}]
LONG_CHAT = [{"role": "user", "content": "Tell me a long story."}]
SLOW = SamplingParams(max_new_tokens=900, max_denoising_steps=48, adaptive_stopping=False, seed=0)
"""LONG_CHAT under SLOW runs about a second or more (every canvas takes all 48 steps): long enough to be
cancelled while it runs."""


# -- the server ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    engine = RecordingEngine(get_engine("tiny-random"))
    app = create_app(engine, api_key=KEY, max_request_bytes=100_000)
    with serving(app) as base:
        yield f"{base}/v1", engine, app


@pytest.fixture(scope="module")
def url(server) -> str:
    return server[0]


@pytest.fixture
def recorder(server) -> RecordingEngine:
    server[1].requests.clear()
    return server[1]


def _cancelled_total(server) -> float:
    return server[2].state.metrics.value("diffgemma_cancelled_total")


# -- a test validator in its own plugin manager -------------------------------------------------------------


@pytest.fixture
def reject() -> RejectBlocks:
    return RejectBlocks()


@pytest.fixture
def remote(url, reject):
    engine = RemoteEngine(url, api_key=KEY, canvas_length=CANVAS, checker_factory=checker_factory_for(reject))
    yield engine
    engine.close()


def _validated(fail: list[tuple[int, int]], **options: Any) -> SamplingParams:
    return SamplingParams(max_new_tokens=80, max_denoising_steps=4, seed=3, validators=("test.reject",),
                          validator_options={"test.reject": {"fail": fail}, **options})


@pytest.fixture(scope="module")
def three_blocks():
    """Precondition: the chat request under PARAMS is three blocks, cut by length, in-process."""
    result = get_engine("tiny-random").generate(messages=CHAT, params=PARAMS)
    assert result.finish_reason == "length" and result.stats.blocks == 3
    return result


@pytest.fixture(scope="module")
def block_texts(three_blocks) -> list[str]:
    """The text deltas of those three blocks, in-process."""
    events = get_engine("tiny-random").stream(messages=CHAT, params=PARAMS)
    texts = [event.text for event in events if isinstance(event, BlockEvent)]
    assert "".join(texts) == three_blocks.text
    return texts


# -- the remote engine against the in-process engine ----------------------------------------------------------


def test_remote_engine_streams_what_the_engine_generates(remote, three_blocks):
    events = list(remote.submit(messages=CHAT, params=PARAMS))
    assert remote.server is ServerKind.DIFFGEMMA  # read from owned_by in /v1/models
    blocks = [e for e in events if isinstance(e, BlockEvent)]
    result = events[-1].result
    assert isinstance(events[-1], FinalEvent)
    assert result.text == three_blocks.text and "".join(b.text for b in blocks) == result.text
    assert len(blocks) == three_blocks.stats.blocks  # one SSE delta per committed block
    assert result.usage == three_blocks.usage and result.finish_reason == "length" and result.seed == 3
    assert remote.tokenizer.decode(result.token_ids) == result.text


def test_a_raw_prompt_goes_to_the_completions_endpoint(remote, recorder):
    prompt = "abc"
    direct = get_engine("tiny-random").generate(prompt, PARAMS)
    assert remote.generate(prompt, PARAMS).text == direct.text
    assert recorder.requests[-1].prompt == prompt and recorder.requests[-1].messages is None


def test_gemma_turns_is_the_checkpoint_template_without_bos(remote):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again"}]
    in_process = get_engine("tiny-random").render_chat(messages)
    assert in_process == "<bos>" + gemma_turns(messages)
    assert remote.render_chat(messages) == gemma_turns(messages)


async def test_async_consumption_does_not_block_the_event_loop(remote, three_blocks, measure_ticks):
    result, ticks, _ = await measure_ticks(remote.submit(messages=CHAT, params=PARAMS).aresult())
    assert result.text == three_blocks.text
    assert ticks > 0


# -- the adapters over base_url -------------------------------------------------------------------------------


@pytest.fixture
def over_http(url):
    """``over_http(Adapter, **fields)``: the adapter on the test server; its remote engine is closed after."""
    made: list[Any] = []

    def make(adapter: type, **fields: Any) -> Any:
        instance = adapter(base_url=url, api_key=KEY, model="tiny-random", **{**SETTINGS, **fields})
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.engine.close()


def test_chat_invoke_and_stream_match_in_process(over_http, three_blocks):
    remote_chat = over_http(ChatDiffusionGemma)
    local_chat = ChatDiffusionGemma(model="tiny-random", **SETTINGS)
    assert remote_chat.engine.model_name == "tiny-random" and remote_chat.model == "tiny-random"
    messages = [SystemMessage("Be brief."), HumanMessage("hello")]
    remote_message, local_message = remote_chat.invoke(messages), local_chat.invoke(messages)
    assert remote_message.content == local_message.content
    assert remote_message.usage_metadata == local_message.usage_metadata
    assert remote_message.response_metadata["finish_reason"] == local_message.response_metadata["finish_reason"]
    chunks = [c.content for c in remote_chat.stream(messages)]
    assert chunks == [c.content for c in local_chat.stream(messages)]  # the same blocks, one chunk each
    assert "".join(chunks) == remote_message.content
    assert remote_chat.invoke("hello").content == three_blocks.text


def test_llm_batch_runs_concurrently_and_matches_in_process(over_http, recorder):
    prompts = [f"prompt number {i}" for i in range(6)]
    remote_llm = over_http(DiffusionGemmaLLM, max_tokens=96)
    local_llm = DiffusionGemmaLLM(model="tiny-random", **{**SETTINGS, "max_tokens": 96})
    assert remote_llm.batch(prompts) == local_llm.batch(prompts)
    assert recorder.max_in_flight >= 2  # the server saw the batch's requests together
    assert asyncio.run(remote_llm.abatch(prompts)) == local_llm.batch(prompts)


async def test_async_chat_matches_in_process(over_http):
    remote_chat = over_http(ChatDiffusionGemma)
    local = ChatDiffusionGemma(model="tiny-random", **SETTINGS)
    answers = await asyncio.gather(*(remote_chat.ainvoke(f"question {i}") for i in range(4)))
    assert [a.content for a in answers] == [local.invoke(f"question {i}").content for i in range(4)]
    chunks = [c.content async for c in remote_chat.astream("question 0")]
    assert "".join(chunks) == answers[0].content


def test_llamaindex_complete_stream_and_chat_match_in_process(over_http):
    from llama_index.core.base.llms.types import ChatMessage

    remote_llm = over_http(DiffusionGemma)
    local_llm = DiffusionGemma(model="tiny-random", **SETTINGS)
    remote_response, local_response = remote_llm.complete("Hi"), local_llm.complete("Hi")
    assert remote_response.text == local_response.text
    assert remote_response.raw["usage"] == local_response.raw["usage"]
    deltas = [r.delta for r in remote_llm.stream_complete("Hi")]
    assert "".join(deltas) == remote_response.text and deltas[-1] == ""
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi")]
    assert remote_llm.chat(messages).message.content == local_llm.chat(messages).message.content
    assert remote_llm.metadata.model_name == "tiny-random"


def test_tool_calls_are_parsed_from_streamed_text_like_in_process(over_http):
    def get_weather() -> str:  # no parameters: the forced call is written whole (with arguments, the
        """Weather here."""        # builtin.tool_call validator would need a model that can write them)
        return "sunny"

    remote_message = over_http(ChatDiffusionGemma).bind_tools([get_weather], tool_choice="get_weather").invoke("hi")
    local = ChatDiffusionGemma(model="tiny-random", **SETTINGS).bind_tools([get_weather], tool_choice="get_weather")
    local_message = local.invoke("hi")
    assert remote_message.content == local_message.content

    def calls(message):
        return [(c["name"], c["args"]) for c in message.tool_calls + message.invalid_tool_calls]

    assert calls(remote_message) == calls(local_message) and calls(remote_message)[0][0] == "get_weather"


def test_settings_check_base_url_and_keep_api_key_out_of_dumps(url, shared_engine):
    with pytest.raises(ValueError, match="base_url: give either engine or base_url"):
        ChatDiffusionGemma(base_url=url, engine=shared_engine)
    with pytest.raises(ValueError, match="base_url: must be an http"):
        DiffusionGemma(base_url="127.0.0.1:8000", model="tiny-random")
    local = ChatDiffusionGemma(model="tiny-random", api_key="sk-ignored", max_retries=1)  # tolerated in-process
    assert local.engine is shared_engine
    assert "sk-ignored" not in repr(local) and "api_key" not in local.model_dump()


@pytest.mark.parametrize("adapter", [ChatDiffusionGemma, DiffusionGemma])
def test_base_url_settings_reach_the_remote_engine(adapter, tmp_path):
    template = tmp_path / "chat_template.jinja"
    template.write_text("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}", encoding="utf-8")
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: building the engine makes no call
    llm = adapter(base_url=url, model="m", server="vllm", chat_template=str(template), on_unsupported="warn")
    assert isinstance(llm.engine, RemoteEngine)
    assert llm.engine.server is ServerKind.VLLM and llm.engine.on_unsupported == "warn"
    assert llm.engine.render_chat([{"role": "user", "content": "hi"}]) == "[user] hi\n"
    default = adapter(base_url=url, model="m")
    assert default.engine.on_unsupported == "error" and default.engine.chat_template is None
    with pytest.raises(ValueError, match="server"):
        adapter(base_url=url, model="m", server="tgi")
    with pytest.raises(ValueError, match="on_unsupported"):
        adapter(base_url=url, model="m", on_unsupported="ignore")
    llm.engine.close()
    default.engine.close()


def test_adapters_over_http_need_no_torch():
    code = ("import sys\n"
            "from diffgemma_adapters.langchain import ChatDiffusionGemma\n"
            "from diffgemma_adapters.llamaindex import DiffusionGemma\n"
            "for adapter in (ChatDiffusionGemma, DiffusionGemma):\n"
            "    adapter(base_url='http://127.0.0.1:9/v1', model='m', max_tokens=8).engine.close()\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False False"

def test_token_counting_uses_pseudo_tokens(over_http):
    llm = over_http(DiffusionGemmaLLM)
    assert llm.get_num_tokens("Hello, world!  x") == 5  # "Hello" "," " world" "!" "  x"
    assert text_pieces("Hello, world!  x") == ["Hello", ",", " world", "!", "  x"]
    tokenizer = PieceTokenizer()
    for text in ["", "a  b\n\n\tc ", "ünïcode — ✓ " * 3, "x" * 70, "<|tool_call>call:f{a:1}<tool_call|>"]:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert max(len(p) for p in text_pieces("x" * 70 + " " * 70)) <= 32


# -- client-side validation -----------------------------------------------------------------------------------


def test_a_rejected_block_is_regenerated_by_continuation(remote, reject, recorder, block_texts):
    result = remote.generate(messages=CHAT, params=_validated([(1, 0)]))
    first, continuation = recorder.requests
    # the continuation resends the prompt plus the accepted text, as a completion, with another seed
    assert continuation.prompt == gemma_turns(CHAT) + block_texts[0] and continuation.messages is None
    assert continuation.params.seed != 3 and continuation.params.max_new_tokens == 80 - CANVAS
    expected_tail = get_engine("tiny-random").generate(continuation.prompt, continuation.params).text
    assert result.text == block_texts[0] + expected_tail and expected_tail != "".join(block_texts[1:])
    assert result.validation.passed and result.stats.repairs == 1
    [retried] = [b for b in result.validation.blocks if b.attempts]
    assert retried.block_index == 1 and retried.passed and retried.attempts[0].violations[0].code == "rejected"
    assert [(v.index, v.attempt) for v in reject.seen][:3] == [(0, 0), (1, 0), (1, 1)]
    assert first.messages == CHAT and first.params.seed == 3


def test_the_abandoned_stream_is_closed_and_the_server_cancels_it(remote, recorder, server):
    cancelled = _cancelled_total(server)
    params = dataclasses.replace(SLOW, max_new_tokens=5 * CANVAS, validators=("test.reject",),
                                 validator_options={"test.reject": {"fail": [[0, 0]]}})
    result = remote.generate(messages=LONG_CHAT, params=params)
    assert result.validation.passed and result.stats.repairs == 1
    first, _ = recorder.requests
    with pytest.raises(RequestCancelledError):  # the server stopped generating the rejected stream
        first.handle.result(timeout=30)
    _wait_for(lambda: _cancelled_total(server) > cancelled)


def test_the_end_of_a_response_is_checked_as_an_empty_final_block(remote, reject, three_blocks):
    result = remote.generate(messages=CHAT, params=_validated([]))
    assert result.text == three_blocks.text and result.validation.passed
    views = reject.seen
    assert [(v.index, v.is_final) for v in views] == [(0, False), (1, False), (2, False), (3, True)]
    end = views[-1]
    assert end.text == "" and end.eos_position is None  # cut by length, not EOS
    assert end.committed_text == three_blocks.text
    assert views[1].committed_token_ids == tuple(remote.tokenizer.encode(views[0].text))


def test_the_budget_ends_in_a_typed_error_carrying_the_partial_result(remote, block_texts):
    with pytest.raises(RepairBudgetExceeded) as error:
        remote.generate(messages=CHAT, params=_validated([(1, 0), (1, 1)]))
    assert error.value.block_index == 1
    assert error.value.partial.text == block_texts[0] and error.value.partial.finish_reason == "validation_failed"
    assert len(error.value.attempts) == 1 and error.value.candidate_text
    with pytest.raises(RepairBudgetExceeded) as error:  # no extra steps at all: no continuation
        remote.generate(messages=CHAT, params=_validated([(1, 0)], request_step_budget=0))
    assert error.value.attempts == ()


@pytest.mark.parametrize(("mode", "kept"), [("return_flagged", 2), ("truncate", 1)])
def test_non_raising_failure_modes(remote, recorder, block_texts, mode, kept):
    params = dataclasses.replace(_validated([(1, 0)], max_regenerations=0), on_exhausted=mode)
    result = remote.generate(messages=CHAT, params=params)
    assert result.finish_reason == "validation_failed" and not result.validation.passed
    assert result.text == "".join(block_texts[:kept]) and result.stats.blocks == kept
    assert len(recorder.requests) == 1  # no continuation


def test_validation_through_an_adapter_on_a_remote_engine(remote, three_blocks, block_texts):
    chat = ChatDiffusionGemma(engine=remote, **SETTINGS, validators=["test.reject"],
                              validator_options={"test.reject": {"fail": [[1, 0]]}})
    message = chat.invoke("hello")
    assert message.response_metadata["validation"]["passed"]
    assert message.response_metadata["validation"]["repairs"] == 1
    assert message.content.startswith(block_texts[0]) and message.content != three_blocks.text
    with pytest.raises(InvalidRequestError) as error:  # checked before any traffic
        chat.invoke("hello", validators=["no.such_validator"])
    assert error.value.field == "validators"


# -- errors and cancellation ---------------------------------------------------------------------------------


def test_a_wrong_api_key_is_a_typed_error(url, over_http):
    with RemoteEngine(url, api_key="wrong", model="tiny-random", max_retries=0) as engine:
        with pytest.raises(RemoteAuthenticationError):
            engine.generate("hi", PARAMS)
    chat = ChatDiffusionGemma(base_url=url, api_key="wrong", model="tiny-random", max_retries=0)
    try:
        with pytest.raises(RemoteAuthenticationError):
            chat.invoke("hi")
    finally:
        chat.engine.close()


def test_a_server_side_400_is_an_invalid_request_error_naming_the_field(remote):
    with pytest.raises(InvalidRequestError) as error:  # tiny-random's context is 1,024 tokens
        remote.generate("x" * 5_000, PARAMS)
    assert error.value.field == "prompt" and "tokens" in str(error.value)
    assert remote.generate("abc", PARAMS).text  # the engine and the server keep serving


def test_an_unreachable_server_is_a_connection_error():
    with RemoteEngine(f"http://127.0.0.1:{free_port()}/v1", model="m", max_retries=0) as engine:
        with pytest.raises(RemoteConnectionError):
            engine.generate("hi", PARAMS)


@pytest.mark.parametrize(
    ("error_class", "status", "body", "expected", "message"),
    [("BadRequestError", 400, {"message": "t_max: too low", "type": "invalid_request_error", "param": "t_max"},
      InvalidRequestError, "t_max: too low"),
     ("NotFoundError", 404, {"message": "no such model"}, InvalidRequestError, "model: no such model"),
     ("RateLimitError", 429, {"message": "queue full"}, EngineOverloadedError, "queue full"),
     ("InternalServerError", 503, {"message": "engine dead"}, EngineDeadError, "engine dead"),
     ("AuthenticationError", 401, {"message": "bad key"}, RemoteAuthenticationError, "bad key")],
)
def test_http_statuses_map_to_typed_errors(error_class, status, body, expected, message):
    transport = pytest.importorskip("httpx2") if hasattr(openai, "_httpx2") else httpx
    request = transport.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = transport.Response(status, json={"error": body}, request=request)
    mapped = map_api_error(getattr(openai, error_class)(body["message"], response=response, body=body))
    assert type(mapped) is expected and str(mapped).endswith(message)
    if expected is InvalidRequestError:
        assert str(mapped) == message and mapped.field == message.split(":")[0]
    stream_error = openai.APIError("boom", request, body={"message": "queue full", "type": "rate_limit_error"})
    assert type(map_api_error(stream_error)) is EngineOverloadedError  # an error event inside a stream


def test_breaking_out_of_a_stream_closes_the_connection_and_the_server_cancels(over_http, server, recorder):
    chat = over_http(ChatDiffusionGemma, max_tokens=900, max_denoising_steps=48, adaptive_stopping=False, seed=0)
    cancelled = _cancelled_total(server)
    for _ in chat.stream("Tell me a long story."):
        break
    _wait_for(lambda: _cancelled_total(server) > cancelled)
    [request] = recorder.requests
    with pytest.raises(RequestCancelledError):
        request.handle.result(timeout=30)
    _wait_for(lambda: not server[1].inner.core.scheduler.running)


def test_a_request_timeout_is_enforced_client_side(remote, server, recorder):
    cancelled = _cancelled_total(server)
    with pytest.raises(RequestTimeoutError):
        remote.generate(messages=LONG_CHAT, params=dataclasses.replace(SLOW, timeout=0.2))
    _wait_for(lambda: _cancelled_total(server) > cancelled)  # the stream was closed, the server cancelled


def test_a_per_call_model_goes_to_the_same_server(over_http):
    chat = over_http(ChatDiffusionGemma)
    with pytest.raises(InvalidRequestError) as error:  # the test server serves tiny-random only
        chat.invoke("hello", model="another-id")
    assert error.value.field == "model" and "another-id" in str(error.value)
    assert chat.invoke("hello", model="tiny-random").content == chat.invoke("hello").content


def test_a_remote_engine_is_an_engine_client_counting_its_requests_in_flight(remote):
    assert isinstance(remote, EngineClient)
    assert remote.sampler_defaults is None  # a server does not publish its checkpoint's sampler defaults
    assert remote.stats() == EngineStats(running=0, waiting=0, max_running=remote.max_running)
    stream = remote.submit(messages=LONG_CHAT, params=SLOW)
    assert remote.stats().running == 1  # counted from submit until its driver ends
    stream.cancel()
    _wait_for(lambda: remote.stats().running == 0)

def test_a_closed_engine_refuses_new_requests(url):
    engine = RemoteEngine(url, api_key=KEY, model="tiny-random")
    assert engine.generate("abc", PARAMS).text
    engine.close()
    assert not engine.is_alive
    with pytest.raises(EngineDeadError):
        engine.submit("abc", PARAMS)


def _wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
