"""RemoteEngine against the vLLM conformance double (tests/adapters/vllm_double.py): what is sent, how
blocks are assembled from vLLM's chunking, validation and repair by continuation, and vLLM's failures as
typed errors. Also: server detection, the no-network constructor and the checkpoint's chat template."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from adapter_support import RejectBlocks, checker_factory_for, free_port, serving  # noqa: E402
from vllm_double import Fault, VLLMDouble, chat_prompt  # noqa: E402

from diffgemma_adapters.remote import (  # noqa: E402
    DEFAULT_CONTEXT_LENGTH,
    ChatTemplate,
    RemoteConnectionError,
    RemoteEngine,
    RemoteEngineError,
    RemoteGenerationError,
    RemoteSettingWarning,
    ServerKind,
    gemma_turns,
)
from diffgemma_engine.api.errors import InvalidRequestError  # noqa: E402
from diffgemma_engine.api.outputs import BlockEvent, FinalEvent  # noqa: E402
from diffgemma_engine.api.params import SamplingParams  # noqa: E402

CANVAS = 8
CHAT = [{"role": "user", "content": "hello"}]
PARAMS = SamplingParams(max_new_tokens=3 * CANVAS)
DEMO = Path(__file__).resolve().parents[2] / "diffgemma_engine" / "model" / "demo"


@pytest.fixture(scope="module")
def served():
    double = VLLMDouble(canvas_length=CANVAS)
    with serving(double.app) as base:
        yield double, f"{base}/v1"


@pytest.fixture
def double(served) -> VLLMDouble:
    served[0].reset()
    return served[0]


@pytest.fixture
def url(served) -> str:
    return served[1]


@pytest.fixture
def recorder() -> RejectBlocks:
    return RejectBlocks()


@pytest.fixture
def remote(url, recorder):
    engine = RemoteEngine(url, canvas_length=CANVAS, checker_factory=checker_factory_for(recorder), max_retries=0)
    yield engine
    engine.close()


def validated(fail: list[tuple[int, int]] = (), **changes: Any) -> SamplingParams:
    return SamplingParams(**{"max_new_tokens": 3 * CANVAS, "validators": ("test.reject",),
                             "validator_options": {"test.reject": {"fail": list(fail)}}, **changes})


def canvases(double: VLLMDouble, prompt: str, tokens: int) -> list[str]:
    words = double.tokens(prompt, tokens)
    return ["".join(words[i:i + CANVAS]) for i in range(0, tokens, CANVAS)]


# -- the double refuses what vLLM refuses -------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{"seed": 3}, {"temperature": 0.0}, {"min_tokens": 4},
                                   {"response_format": {"type": "json_object"}}])
def test_the_double_refuses_what_vllm_refuses_for_diffusion_models(double, url, extra):
    body = {"model": double.model, "prompt": "hi", "max_tokens": 8, "stream": True, **extra}
    response = httpx.post(f"{url}/completions", json=body, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    accepted = httpx.post(f"{url}/completions", json={**body, "seed": -1, "temperature": 1.0,
                                                      "response_format": {"type": "text"}, "min_tokens": 0}, timeout=10)
    assert accepted.status_code == 200  # seed -1 is "no seed" to vLLM; temperature 1.0 is the only one taken


# -- what is sent --------------------------------------------------------------------------------------------


def test_the_server_kind_comes_from_owned_by_or_is_given(double, url):
    with RemoteEngine(url) as detected:
        assert detected.server is ServerKind.VLLM and detected.model_name == double.model
    assert double.model_listings == 1
    with RemoteEngine(url, server="vllm", model=double.model) as given:
        assert given.generate(messages=CHAT, params=PARAMS).text
    assert double.model_listings == 1  # no look-up when the kind and the model are given
    with pytest.raises(InvalidRequestError) as error:
        RemoteEngine(url, server="sglang")
    assert error.value.field == "server"


def test_a_request_completes_with_no_seed_temperature_or_sampler_fields_sent(double, remote):
    events = list(remote.submit(messages=CHAT, params=PARAMS))
    blocks = [event.text for event in events if isinstance(event, BlockEvent)]
    result = events[-1].result
    assert isinstance(events[-1], FinalEvent)
    assert blocks == canvases(double, chat_prompt(CHAT), 3 * CANVAS)  # one block per canvas
    assert result.text == "".join(blocks) and result.finish_reason == "length"
    assert result.usage.completion_tokens == 3 * CANVAS and result.usage.prompt_tokens == len(chat_prompt(CHAT).split())
    [seen] = double.requests
    assert seen.endpoint == "chat" and seen.body["max_tokens"] == 3 * CANVAS
    assert not {"seed", "temperature", "t_min", "max_denoising_steps", "adaptive_stopping"} & set(seen.body)
    assert seen.body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


def test_a_server_without_a_model_listing_is_a_plain_openai_server(double, url):
    double.lists_models = False
    with RemoteEngine(url, model=double.model, canvas_length=CANVAS) as engine:
        assert engine.server is ServerKind.OPENAI
        result = engine.generate(messages=CHAT, params=SamplingParams(max_new_tokens=CANVAS))
        assert result.text == canvases(double, chat_prompt(CHAT), CANVAS)[0]
        [seen] = double.requests  # no seed drawn for a server that might be a vLLM behind a proxy
        assert "seed" not in seen.body and seen.body["stream_options"] == {"include_usage": True}
        with pytest.raises(InvalidRequestError):  # a seed the caller chose is sent; this server refuses it
            engine.generate(messages=CHAT, params=SamplingParams(max_new_tokens=CANVAS, seed=5))
    assert double.requests[-1].body["seed"] == 5


def test_settings_vllm_cannot_honour_are_errors_before_any_traffic(double, url):
    with RemoteEngine(url, canvas_length=CANVAS) as engine:
        for changes, field in (({"seed": 3}, "seed"), ({"t_min": 0.3}, "t_min"),
                               ({"adaptive_stopping": False}, "adaptive_stopping")):
            with pytest.raises(InvalidRequestError) as error:
                engine.submit(messages=CHAT, params=SamplingParams(max_new_tokens=CANVAS, **changes))
            assert error.value.field == field and "vllm" in str(error.value)
    assert double.requests == []


def test_with_on_unsupported_warn_they_are_left_out_with_a_warning(double, url, caplog):
    params = SamplingParams(max_new_tokens=CANVAS, seed=3, max_denoising_steps=12, stop_token_ids=(7,))
    with RemoteEngine(url, canvas_length=CANVAS, on_unsupported="warn") as engine, caplog.at_level(logging.WARNING):
        with pytest.warns(RemoteSettingWarning) as caught:
            result = engine.generate(messages=CHAT, params=params)
    assert result.text == canvases(double, chat_prompt(CHAT), CANVAS)[0]
    ours = [w for w in caught if issubclass(w.category, RemoteSettingWarning)]  # not stray ResourceWarnings
    assert sorted(str(w.message).split()[0] for w in ours) == ["max_denoising_steps", "seed"]
    assert any("seed is not sent" in record.getMessage() for record in caplog.records)
    [seen] = double.requests
    assert "seed" not in seen.body and "max_denoising_steps" not in seen.body
    assert seen.body["stop_token_ids"] == [7]  # vLLM takes stop_token_ids


def test_building_an_engine_makes_no_network_call_and_an_unreachable_server_is_quiet(caplog):
    with caplog.at_level(logging.DEBUG, logger="diffgemma_adapters.remote"):
        engine = RemoteEngine(f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
        assert not any(record.levelno >= logging.WARNING for record in caplog.records)
        assert engine.context_length == DEFAULT_CONTEXT_LENGTH  # not cached: asked again later
        assert not any(record.levelno >= logging.WARNING for record in caplog.records)
        with pytest.raises(RemoteConnectionError):
            engine.generate("hi", PARAMS)
    engine.close()


def test_the_context_length_is_vllms_max_model_len(double, url):
    with RemoteEngine(url) as engine:
        assert engine.context_length == double.max_model_len


# -- blocks from vLLM's chunking -----------------------------------------------------------------------------


def test_a_canvas_split_over_several_chunks_is_still_one_block(double, remote, recorder):
    double.split = 3
    result = remote.generate(messages=CHAT, params=validated())
    expected = canvases(double, chat_prompt(CHAT), 3 * CANVAS)
    assert len(double.requests[0].chunks) == 3 * 3  # the server sent three chunks per canvas
    assert [view.text for view in recorder.seen if view.text] == expected
    assert result.text == "".join(expected) and result.stats.blocks == 3


def test_stop_string_hold_back_across_chunks_yields_whole_blocks(double, remote, recorder):
    words = double.tokens(chat_prompt(CHAT), 3 * CANVAS)
    stop = words[CANVAS + 3].strip() + words[CANVAS + 4]  # spans two tokens of the second canvas
    full = "".join(words)
    cut = full[: full.index(stop)]
    result = remote.generate(messages=CHAT, params=validated(stop=(stop,)))
    assert result.text == cut and result.finish_reason == "stop" and result.stop_reason == stop
    sent = double.requests[0].chunks
    assert sent[0] != "".join(words[:CANVAS])  # the server held characters back across chunks ...
    assert "".join(sent) == cut
    views = [view for view in recorder.seen if view.text]
    assert [view.index for view in views] == [0, 1] and "".join(view.text for view in views) == cut
    assert views[-1].is_final and views[-1].eos_position is None  # ended by the stop string, not EOS


# -- validation and repair by continuation -------------------------------------------------------------------


def test_a_rejected_block_is_regenerated_by_continuation_without_a_seed(double, remote, recorder):
    first_canvas = canvases(double, chat_prompt(CHAT), CANVAS)[0]
    result = remote.generate(messages=CHAT, params=validated([(1, 0)]))
    first, continuation = double.requests
    assert continuation.endpoint == "completions"
    assert continuation.body["prompt"] == gemma_turns(CHAT) + first_canvas
    assert continuation.body["max_tokens"] == 2 * CANVAS and "seed" not in continuation.body
    tail = "".join(double.tokens(continuation.body["prompt"], 2 * CANVAS))
    assert result.text == first_canvas + tail
    assert result.validation.passed and result.stats.repairs == 1 and result.stats.blocks == 3
    assert [(view.index, view.attempt) for view in recorder.seen][:3] == [(0, 0), (1, 0), (1, 1)]
    assert result.usage.completion_tokens == 3 * CANVAS


def test_the_end_of_a_response_is_checked_when_it_ends_on_eos(double, remote, recorder):
    double.eos_after = CANVAS + 2
    result = remote.generate(messages=CHAT, params=validated())
    assert result.finish_reason == "stop" and result.stop_reason is None
    last = [view for view in recorder.seen if view.is_final][-1]
    assert last.eos_position == len(last.token_ids)  # EOS right after the text


# -- vLLM's failures as typed errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "expected"), [("abort", RemoteGenerationError), ("error_finish", RemoteGenerationError),
                                                ("error_event", RemoteEngineError),
                                                ("bad_request_event", InvalidRequestError)])
def test_abort_error_and_error_events_raise_typed_errors(double, remote, kind, expected):
    double.fault = Fault(kind, at_canvas=1)
    with pytest.raises(expected) as error:
        remote.generate(messages=CHAT, params=PARAMS)
    assert type(error.value) is expected
    if expected is RemoteGenerationError:
        assert error.value.finish_reason == ("abort" if kind == "abort" else "error")
        assert error.value.partial.text == canvases(double, chat_prompt(CHAT), CANVAS)[0]
    elif expected is RemoteEngineError:
        assert error.value.status == 500


# -- the checkpoint's own chat template ----------------------------------------------------------------------

THOUGHT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
    "else message['role'] %}<|turn>{{ role }}\n{{ message['content'] | trim }}<turn|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|turn>model\n<|channel>thought\n<channel|>{% endif %}"
)
"""A Gemma 4 style template: the model's turn opens with an empty thought block when thinking is off."""

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again"}]


def test_the_chat_template_renders_like_the_tokenizer_without_torch(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(DEMO)
    reference = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert reference.startswith("<bos>")
    assert ChatTemplate.from_pretrained(DEMO).render(MESSAGES) == reference[len("<bos>"):]
    (tmp_path / "chat_template.jinja").write_text(THOUGHT_TEMPLATE)
    (tmp_path / "tokenizer_config.json").write_text('{"bos_token": {"content": "<bos>"}}')
    thought = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True,
                                            chat_template=THOUGHT_TEMPLATE)
    assert ChatTemplate.from_pretrained(tmp_path).render(MESSAGES) == thought[len("<bos>"):]
    assert thought[len("<bos>"):] != gemma_turns(MESSAGES)  # the hand-written fallback would differ


def test_continuations_use_the_checkpoints_chat_template(double, url, recorder, tmp_path):
    (tmp_path / "chat_template.jinja").write_text(THOUGHT_TEMPLATE)
    (tmp_path / "tokenizer_config.json").write_text('{"bos_token": "<bos>"}')
    with RemoteEngine(url, canvas_length=CANVAS, chat_template=tmp_path,
                      checker_factory=checker_factory_for(recorder)) as engine:
        engine.generate(messages=CHAT, params=validated([(1, 0)]))
        rendered = engine.render_chat(CHAT)
    assert rendered.endswith("<|turn>model\n<|channel>thought\n<channel|>")
    assert double.requests[1].body["prompt"].startswith(rendered)


def test_a_template_is_needed_to_render_tools(url):
    with warnings.catch_warnings(), RemoteEngine(url) as engine:
        with pytest.raises(InvalidRequestError) as error:
            engine.render_chat(CHAT, tools=[{"type": "function", "function": {"name": "f"}}])
    assert error.value.field == "tools"


# -- the adapters over base_url ---------------------------------------------------------------------------------


def test_an_adapter_over_base_url_works_against_vllm(double, url):
    langchain = pytest.importorskip("diffgemma_adapters.langchain")
    chat = langchain.ChatDiffusionGemma(base_url=url, model=double.model, max_tokens=2 * CANVAS, max_retries=0)
    try:
        message = chat.invoke("hello")
        [seen] = double.requests
        assert message.content == "".join(double.tokens(chat_prompt(seen.body["messages"]), 2 * CANVAS))
        assert "seed" not in seen.body and "temperature" not in seen.body
        with pytest.raises(InvalidRequestError) as error:  # a seed vLLM cannot honour is an error, not dropped
            chat.invoke("hello", seed=3)
        assert error.value.field == "seed"
    finally:
        chat.engine.close()
