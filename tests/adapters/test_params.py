"""The framework-neutral core of the adapters: settings -> SamplingParams, chat normalisation, tool syntax."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

pytest.importorskip("pydantic")  # the adapters need it (every supported framework brings it)

from diffgemma_adapters.formats import (
    CALL_CLOSE,
    CALL_OPEN,
    ToolCallAssembler,
    declare_tools,
    encode_value,
    format_tool_call,
    format_tool_response,
    marker_decoder,
    parse_value,
    split_tool_calls,
)
from diffgemma_adapters.chat import TemplateRoles, Turn, normalize_messages, template_roles
from diffgemma_adapters.request import prepare_request
from diffgemma_adapters.settings import GREEDY_TEMPERATURE, GenerationSettings, sampling_params
from diffgemma_engine import InvalidRequestError, OnExhausted
from diffgemma_plugins.validators.gemma_syntax import value_prefix_end

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def settings(**fields) -> GenerationSettings:
    return GenerationSettings(model="tiny-random", **fields)


# -- import weight --------------------------------------------------------------------------------------


def test_package_import_pulls_in_no_framework():
    code = "import sys, diffgemma_adapters; print(sorted(m for m in ('langchain_core', 'llama_index') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- sampling parameters --------------------------------------------------------------------------------


def test_temperature_maps_onto_the_denoising_schedule():
    params = sampling_params(settings(temperature=0.6))
    assert (params.t_min, params.t_max) == (pytest.approx(0.3), pytest.approx(0.6))


def test_no_temperature_keeps_the_checkpoint_schedule():
    params = sampling_params(settings())
    assert params.t_min is None and params.t_max is None


def test_zero_temperature_is_the_near_greedy_floor():
    params = sampling_params(settings(temperature=0))
    assert params.t_max == GREEDY_TEMPERATURE and params.t_min == GREEDY_TEMPERATURE / 2


def test_explicit_schedule_wins_over_temperature():
    params = sampling_params(settings(temperature=0.6, t_min=0.1))
    assert (params.t_min, params.t_max) == (0.1, 0.6)


def test_call_temperature_replaces_the_instance_schedule():
    params = sampling_params(settings(t_min=0.1, t_max=0.2), temperature=1.0)
    assert (params.t_min, params.t_max) == (0.5, 1.0)


def test_call_options_override_settings_and_stops_are_merged():
    params = sampling_params(settings(max_tokens=10, seed=1, stop=["a"]), ["b", "a"], max_tokens=5, seed=2)
    assert params.max_new_tokens == 5 and params.seed == 2
    assert params.stop == ("a", "b")


def test_denoising_fields_and_failure_policy_pass_through():
    params = sampling_params(
        settings(max_denoising_steps=7, entropy_bound=0.3, stability_threshold=2, confidence_threshold=0.01,
                 adaptive_stopping=False, on_validation_failure="truncate", timeout=5.0)
    )
    assert (params.max_denoising_steps, params.entropy_bound, params.stability_threshold) == (7, 0.3, 2)
    assert params.confidence_threshold == 0.01 and params.adaptive_stopping is False
    assert params.on_exhausted is OnExhausted.TRUNCATE and params.timeout == 5.0


def test_hosted_api_options_are_tolerated_and_unknown_ones_raise():
    chat = GenerationSettings(model="tiny-random", api_key="sk-test", max_retries=3)
    assert sampling_params(chat, api_key="x", max_retries=1) == sampling_params(chat)
    with pytest.raises(InvalidRequestError) as error:
        sampling_params(chat, top_k=5)
    assert error.value.field == "top_k"
    with pytest.raises(ValueError, match="bogus"):
        GenerationSettings(model="tiny-random", bogus=1)


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", -0.5), ("max_tokens", 0), ("t_max", 0.1), ("seed", -1), ("stop", [""])],
)
def test_bad_settings_fail_at_construction_naming_the_field(field, value):
    extra = {"t_min": 0.2} if field == "t_max" else {}
    with pytest.raises(ValueError, match=field):
        GenerationSettings(model="tiny-random", **{field: value}, **extra)


def test_json_output_selects_the_json_validator_with_its_schema():
    schema = {"type": "object"}
    params = sampling_params(settings(), json_output=True, json_schema=schema)
    assert params.validators == ("builtin.json",)
    assert params.validator_options["builtin.json"] == {"schema": schema}
    params = sampling_params(settings(validators=["default"]), json_output=True)
    assert params.validators == ("default", "+builtin.json")


def test_model_resolves_through_the_shared_engine(shared_engine):
    assert settings().engine is shared_engine
    assert GenerationSettings(engine=shared_engine).model == "tiny-random"
    with pytest.raises(ValueError, match="engine"):
        GenerationSettings(engine=object())


# -- chat normalisation ---------------------------------------------------------------------------------


def test_system_turns_fold_and_same_roles_merge():
    turns = [Turn("system", "s1"), Turn("user", "u1"), Turn("system", "s2"), Turn("user", "u2"),
             Turn("assistant", "a1"), Turn("assistant", "a2"), Turn("user", "u3")]
    assert normalize_messages(turns) == [
        {"role": "system", "content": "s1\n\ns2"},
        {"role": "user", "content": "u1\n\nu2"},
        {"role": "assistant", "content": "a1\n\na2"},
        {"role": "user", "content": "u3"},
    ]


def test_system_folds_into_the_first_user_turn_when_the_template_has_no_system():
    turns = [Turn("system", "be brief"), Turn("user", "hi")]
    assert normalize_messages(turns, TemplateRoles(system=False)) == [{"role": "user", "content": "be brief\n\nhi"}]


def test_names_tool_calls_and_tool_results():
    turns = [
        Turn("user", "weather?", name="alice"),
        Turn("assistant", "", tool_calls=(("get_weather", {"city": "Paris"}, "call_1"),)),
        Turn("tool", '{"temp": 15}', tool_call_id="call_1"),
        Turn("tool", "windy", name="get_wind"),
    ]
    assert normalize_messages(turns) == [
        {"role": "user", "content": "alice: weather?"},
        {"role": "assistant", "content": f"{CALL_OPEN}call:get_weather{{city:<|\"|>Paris<|\"|>}}{CALL_CLOSE}"},
        {"role": "tool", "content": format_tool_response("get_weather", '{"temp": 15}') + "\n\n"
                                    + format_tool_response("get_wind", "windy")},
    ]
    folded = normalize_messages(turns[:3] + [Turn("user", "and?")], TemplateRoles(tool=False))
    assert [m["role"] for m in folded] == ["user", "assistant", "user"]


def test_empty_and_unknown_roles_are_rejected():
    with pytest.raises(InvalidRequestError):
        normalize_messages([])
    with pytest.raises(InvalidRequestError, match="role"):
        normalize_messages([Turn("narrator", "x")])


class _StrictTemplate:
    """An engine whose template rejects system and tool turns, like Gemma 2/3's."""

    model_name = "strict"

    def render_chat(self, messages):
        if any(m["role"] in ("system", "tool") for m in messages):
            raise ValueError("System role not supported")
        return "".join(m["content"] for m in messages)


def test_template_roles_are_probed(shared_engine):
    assert template_roles(shared_engine) == TemplateRoles(system=True, tool=True)
    assert template_roles(_StrictTemplate()) == TemplateRoles(system=False, tool=False)


def test_forced_tool_call_prefills_the_model_turn(shared_engine):
    request = prepare_request(settings(), turns=[Turn("user", "weather in Paris?")], tools=[WEATHER],
                              tool_choice="get_weather")
    assert request.messages is None
    assert request.prompt.endswith(f"<|turn>model\n{CALL_OPEN}call:get_weather{{")
    assert declare_tools([WEATHER]) in request.prompt
    auto = prepare_request(settings(), turns=[Turn("user", "hi")], tools=[WEATHER])
    assert auto.prompt is None and declare_tools([WEATHER]) in auto.messages[0]["content"]
    none = prepare_request(settings(), turns=[Turn("user", "hi")], tools=[WEATHER], tool_choice="none")
    assert none.tools == () and none.messages == [{"role": "user", "content": "hi"}]
    with pytest.raises(InvalidRequestError, match="tool_choice"):
        prepare_request(settings(), turns=[Turn("user", "hi")], tools=[WEATHER], tool_choice="nope")


# -- the tool-call syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{"city": "Paris", "days": 3, "metric": True, "extra": None},
     {"nested": {"list": [1, 2.5, "x"], "empty": {}}, "quote \"me\"": "a,b}c"},
     {"unicode": "你好啊集团"}],
)
def test_encoded_values_parse_back(value):
    assert parse_value(encode_value(value)) == value


def test_parser_accepts_json_and_bare_words():
    assert parse_value('{"city": "Paris", unit: celsius, n: -2e3}') == {"city": "Paris", "unit": "celsius", "n": -2000.0}
    with pytest.raises(ValueError):
        parse_value("{city:<|\"|>Paris}")


def test_a_bare_value_running_into_a_string_delimiter_is_rejected_at_the_delimiter():
    broken = '{city:<<|"|>Riga<|"|>}'  # a small model's call: a stray "<" before the string
    with pytest.raises(ValueError, match="string delimiter inside a bare value"):
        parse_value(broken)
    assert value_prefix_end(broken) == (None, broken.index('<|"|>'))
    assert value_prefix_end('{city:<<|"') == (None, None)  # the delimiter is not complete yet
    _, calls = split_tool_calls(f"{CALL_OPEN}call:get_weather{broken}{CALL_CLOSE}")
    assert calls[0].name == "get_weather" and not calls[0].valid and "string delimiter" in calls[0].error


def test_split_tool_calls_separates_text_and_calls():
    raw = "Let me check." + format_tool_call("get_weather", {"city": "Paris"}) + format_tool_call("noop", {})
    text, calls = split_tool_calls(raw)
    assert text == "Let me check."
    assert [(c.name, c.args, c.valid) for c in calls] == [("get_weather", {"city": "Paris"}, True), ("noop", {}, True)]
    assert calls[0].id != calls[1].id


def test_unparseable_calls_are_reported_not_dropped():
    _, calls = split_tool_calls(f"{CALL_OPEN}call:get_weather{{city:Paris{CALL_CLOSE}")
    assert len(calls) == 1 and not calls[0].valid and calls[0].error
    _, calls = split_tool_calls(f"{CALL_OPEN}call:get_weather{{city:<|\"|>Par")  # the model stopped mid-call
    assert len(calls) == 1 and not calls[0].valid


def test_streaming_holds_back_partial_markers_and_open_calls():
    assert split_tool_calls("Hello <|tool_", final=False)[0] == "Hello "
    assert split_tool_calls(f"Hi {CALL_OPEN}call:f{{a:1", final=False) == ("Hi ", [])


def test_assembler_text_equals_the_engines_text_outside_calls(shared_engine):
    tokenizer = shared_engine.tokenizer
    rng = random.Random(0)
    for _ in range(50):  # random ids, special tokens and split UTF-8 sequences included
        ids = [rng.randrange(2, tokenizer.vocab_size) for _ in range(40)]
        text, calls = ToolCallAssembler(marker_decoder(tokenizer)).finish(ids)
        if CALL_OPEN not in tokenizer.decode(ids):
            assert text == tokenizer.decode(ids, skip_special_tokens=True) and calls == []


def test_assembler_stream_equals_whole(shared_engine):
    tokenizer = shared_engine.tokenizer
    raw = "Sure. " + format_tool_call("get_weather", {"city": "Zürich"}) + " <unused7>done"
    ids = tokenizer(raw, add_special_tokens=False)["input_ids"]

    def assembler():
        return ToolCallAssembler(marker_decoder(tokenizer))

    streaming = assembler()
    pieces = [streaming.add_block(ids[start : start + 5]) for start in range(0, len(ids), 5)]
    last, calls = streaming.finish(ids)
    whole_text, whole_calls = assembler().finish(ids)
    assert "".join(pieces) + last == whole_text == "Sure.  done"  # the special token is dropped, like the engine does
    assert CALL_OPEN not in "".join(pieces)
    assert [(c.name, c.args) for c in calls] == [(c.name, c.args) for c in whole_calls] == [("get_weather", {"city": "Zürich"})]


def test_tool_response_passes_objects_as_objects():
    assert format_tool_response("f", json.dumps({"t": 1})) == "<|tool_response>response:f{t:1}<tool_response|>"
    assert format_tool_response("f", "plain") == '<|tool_response>response:f{value:<|"|>plain<|"|>}<tool_response|>'


def test_calls_survive_when_the_markers_are_special_tokens():
    """Gemma 4's tokenizer has the call markers as special tokens, which the engine's text drops."""
    from diffgemma_engine.model import tiny_random

    tokenizer = tiny_random.build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [CALL_OPEN, CALL_CLOSE, '<|"|>']},
                                 replace_extra_special_tokens=False)
    raw = "Checking." + format_tool_call("get_weather", {"city": "Paris"})
    ids = tokenizer(raw, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids(CALL_OPEN) in ids
    assert CALL_OPEN not in tokenizer.decode(ids, skip_special_tokens=True)  # what the engine's text would be
    text, calls = ToolCallAssembler(marker_decoder(tokenizer)).finish(ids)
    assert text == "Checking." and [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Paris"})]
