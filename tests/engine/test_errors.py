"""Bad input gets a typed error naming the field, before any compute, and the engine keeps serving."""

from __future__ import annotations

import json
import math

import pytest

from diffgemma_engine import (
    DiffGemmaError,
    Engine,
    EngineConfig,
    InvalidRequestError,
    ModelLoadError,
    PromptTooLongError,
    SamplingParams,
    get_engine,
)
from diffgemma_engine.api.errors import GenerationTooLongError


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_new_tokens", 0),
        ("max_new_tokens", -3),
        ("max_new_tokens", 2.5),
        ("max_new_tokens", True),
        ("max_new_tokens", "10"),
        ("max_denoising_steps", 0),
        ("entropy_bound", 0.0),
        ("entropy_bound", math.nan),
        ("entropy_bound", -1.0),
        ("t_min", -0.1),
        ("t_max", math.inf),
        ("t_max", "hot"),
        ("stability_threshold", -1),
        ("confidence_threshold", 0),
        ("confidence_threshold", math.nan),
        ("seed", -1),
        ("seed", 1.5),
        ("seed", "7"),
        ("stop", [""]),
        ("stop", [1, 2]),
        ("stop_token_ids", [-1]),
        ("stop_token_ids", "abc"),
        ("validators", [3]),
        ("on_exhausted", "explode"),
        ("timeout", 0),
        ("adaptive_stopping", "yes"),
    ],
)
def test_bad_sampling_params_name_the_field(field, value):
    with pytest.raises(InvalidRequestError) as raised:
        SamplingParams(**{field: value})
    assert raised.value.field == field
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, DiffGemmaError)
    assert field in str(raised.value)


def test_t_max_must_exceed_t_min():
    with pytest.raises(InvalidRequestError) as raised:
        SamplingParams(t_min=0.8, t_max=0.8)
    assert raised.value.field == "t_max"


def test_t_max_below_the_checkpoint_t_min_is_caught_at_submit(tiny_engine):
    with pytest.raises(InvalidRequestError) as raised:
        tiny_engine.submit("x", SamplingParams(t_max=0.3))  # checkpoint t_min is 0.4
    assert raised.value.field == "t_max"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": b"bytes"}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "prompt"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "b"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"prompt_token_ids": []}, "prompt_token_ids"),
        ({"prompt_token_ids": [1, 99999]}, "prompt_token_ids"),
        ({"prompt_token_ids": [1, -1]}, "prompt_token_ids"),
        ({"prompt": "x", "params": {"max_new_tokens": 3}}, "params"),
    ],
)
def test_bad_prompts_name_the_field(tiny_engine, kwargs, field):
    with pytest.raises(InvalidRequestError) as raised:
        tiny_engine.submit(**kwargs)
    assert raised.value.field == field


def test_prompt_longer_than_the_context(tiny_engine):
    limit = tiny_engine.context_length - tiny_engine.canvas_length
    with pytest.raises(PromptTooLongError) as raised:
        tiny_engine.submit(prompt_token_ids=[5] * (limit + 1))
    assert raised.value.limit == limit
    assert raised.value.field == "prompt"
    tiny_engine.submit(prompt_token_ids=[5] * limit).cancel()  # exactly at the limit is fine


def test_engine_keeps_serving_after_bad_requests(tiny_engine):
    for bad in ({"prompt": ""}, {"prompt": "x", "params": SamplingParams(t_max=0.1)}):
        with pytest.raises(InvalidRequestError):
            tiny_engine.submit(**bad)
    assert tiny_engine.generate("still fine", SamplingParams(max_new_tokens=4, seed=0)).usage.completion_tokens <= 4


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"device": "tpu"}, "device"), ({"dtype": "int3"}, "dtype"), ({"max_running": 0}, "max_running"),
     ({"max_waiting": "many"}, "max_waiting"), ({"model": ""}, "model"), ({"compile": 1}, "compile")],
)
def test_bad_engine_config(settings, field):
    with pytest.raises(InvalidRequestError) as raised:
        EngineConfig(**settings)
    assert raised.value.field == field


def test_unknown_model_name():
    with pytest.raises(ModelLoadError, match="not a built-in model"):
        get_engine("no-such-model")


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError):
        Engine(model=str(tmp_path / "missing"))


def test_directory_without_a_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        Engine(model=str(tmp_path))


def test_checkpoint_of_another_architecture_names_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ModelLoadError, match="LlamaForCausalLM"):
        Engine(model=str(tmp_path))


def test_get_engine_shares_one_engine_and_rejects_conflicts():
    first = get_engine("tiny-random")
    assert get_engine("tiny-random") is first
    assert get_engine("tiny-random", device="cpu", dtype="float32") is first
    with pytest.raises(InvalidRequestError) as raised:
        get_engine("tiny-random", max_running=3)
    assert raised.value.field == "max_running"


def test_max_new_tokens_must_fit_the_context_window_in_whole_canvases(tiny_engine):
    context, canvas = tiny_engine.context_length, tiny_engine.canvas_length
    prompt = [5] * (context - 38)  # the 986 prompt tokens against 1,024: one canvas of room
    room = (context - len(prompt)) // canvas * canvas
    assert room == canvas
    with pytest.raises(GenerationTooLongError) as raised:
        tiny_engine.submit(prompt_token_ids=prompt, params=SamplingParams(max_new_tokens=400))
    assert raised.value.field == "max_new_tokens" and raised.value.limit == room
    assert isinstance(raised.value, InvalidRequestError) and "max_new_tokens" in str(raised.value)
    with pytest.raises(GenerationTooLongError):
        tiny_engine.submit(prompt_token_ids=prompt, params=SamplingParams(max_new_tokens=room + 1))
    exact = tiny_engine.generate(prompt_token_ids=prompt,
                                 params=SamplingParams(max_new_tokens=room, seed=0, ignore_eos=True, max_denoising_steps=2))
    assert exact.usage.completion_tokens == room and exact.finish_reason == "length"


def test_the_default_max_new_tokens_is_lowered_to_what_fits(tiny_engine):
    context, canvas = tiny_engine.context_length, tiny_engine.canvas_length
    prompt = [5] * (context - 2 * canvas - 3)
    room = (context - len(prompt)) // canvas * canvas
    assert tiny_engine.loaded.defaults.max_new_tokens > room  # the checkpoint's default would not fit
    result = tiny_engine.generate(prompt_token_ids=prompt,
                                  params=SamplingParams(seed=0, ignore_eos=True, max_denoising_steps=2))
    assert result.usage.completion_tokens == room and result.finish_reason == "length"


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"validation_workers": 0}, "validation_workers"), ({"validation_workers": True}, "validation_workers"),
     ({"validation_timeout": 0}, "validation_timeout"), ({"validation_timeout": math.inf}, "validation_timeout"),
     ({"validation_timeout": "1"}, "validation_timeout")],
)
def test_bad_validation_pool_settings(settings, field):
    with pytest.raises(InvalidRequestError) as raised:
        EngineConfig(**settings)
    assert raised.value.field == field


def test_get_engine_rejects_conflicting_validation_pool_settings():
    get_engine("tiny-random")
    for name, value in (("validation_workers", 9), ("validation_timeout", 1.5)):
        with pytest.raises(InvalidRequestError) as raised:
            get_engine("tiny-random", **{name: value})
        assert raised.value.field == name
