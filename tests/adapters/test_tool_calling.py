"""Tool calling and structured output on every adapter path: one parser for invoke and stream, forced calls
checked by the ``builtin.tool_call`` validator, unknown or unparseable calls always invalid."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from diffgemma_adapters.formats import CALL_CLOSE, CALL_OPEN, schema_instruction  # noqa: E402
from diffgemma_adapters.chat import Turn  # noqa: E402
from diffgemma_adapters.request import prepare_request, resolve_tool_choice  # noqa: E402
from diffgemma_adapters.settings import GenerationSettings  # noqa: E402
from diffgemma_adapters.langchain import ChatDiffusionGemma  # noqa: E402
from diffgemma_engine import InvalidRequestError  # noqa: E402
from diffgemma_plugins import get_plugin_manager  # noqa: E402
from diffgemma_plugins.testing import make_block, run_validator  # noqa: E402
from diffgemma_plugins.validators.tool_call import ToolCallOutput, find_problem, find_problem_anywhere  # noqa: E402

FAST = {"model": "tiny-random", "max_tokens": 32, "max_denoising_steps": 4}


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"15 C in {city}"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _summed(chat, prompt) -> AIMessage:
    total = None
    for chunk in chat.stream(prompt):
        total = chunk if total is None else total + chunk
    return total


def _calls(message: AIMessage) -> tuple[list, list]:
    valid = [(c["name"], c["args"]) for c in message.tool_calls]
    invalid = [(c["name"], c["args"]) for c in message.invalid_tool_calls]
    return valid, invalid


# -- one parser: invoke == summed stream ---------------------------------------------------------------


@pytest.mark.parametrize("choice", ["get_weather", "any"])
def test_invoke_and_stream_tool_calls_are_identical_over_20_seeds(choice):
    seen_invalid = 0
    for seed in range(20):
        chat = ChatDiffusionGemma(**FAST, seed=seed, on_validation_failure="return_flagged")
        bound = chat.bind_tools([get_weather, add], tool_choice=choice)
        invoked = bound.invoke("Weather in Paris?")
        streamed = _summed(bound, "Weather in Paris?")
        assert streamed.content == invoked.content, seed
        assert _calls(streamed) == _calls(invoked), seed
        for name, _ in _calls(invoked)[0]:
            assert name in ("get_weather", "add")  # a valid call always names a bound tool
        seen_invalid += len(invoked.invalid_tool_calls)
    assert seen_invalid  # random weights: the check above compared invalid calls too


def test_unknown_names_and_unparseable_arguments_are_invalid_in_invoke_and_stream(scripted):
    outputs = [f"{CALL_OPEN}call:rm_rf{{path:<|\"|>/<|\"|>}}{CALL_CLOSE}", f"{CALL_OPEN}call:get_weather{{D\ufffd,,x"]
    engine = scripted(*outputs, *outputs)
    chat = ChatDiffusionGemma(engine=engine).bind_tools([get_weather])
    invoked = [chat.invoke("hi") for _ in outputs]
    streamed = [_summed(chat, "hi") for _ in outputs]
    for one, other in zip(invoked, streamed):
        assert one.tool_calls == other.tool_calls == []
        assert _calls(one) == _calls(other)
    assert [c["name"] for m in invoked for c in m.invalid_tool_calls] == ["rm_rf", "get_weather"]
    assert "unknown tool 'rm_rf'" in invoked[0].invalid_tool_calls[0]["error"]
    assert json.loads(invoked[1].invalid_tool_calls[0]["args"]).startswith("{D")  # the raw text, as a JSON string


def test_a_valid_call_streams_as_one_whole_chunk(scripted):
    text = f"Sure.{CALL_OPEN}call:get_weather{{city:<|\"|>Paris<|\"|>}}{CALL_CLOSE}"
    chat = ChatDiffusionGemma(engine=scripted(text, text)).bind_tools([get_weather])
    invoked, streamed = chat.invoke("hi"), _summed(chat, "hi")
    assert invoked.content == streamed.content == "Sure."
    assert _calls(invoked) == _calls(streamed) == ([("get_weather", {"city": "Paris"})], [])


# -- forced calls --------------------------------------------------------------------------------------


def _settings(**kwargs) -> GenerationSettings:
    return GenerationSettings(model="tiny-random", **kwargs)


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "clock", "description": "The time", "parameters": {}}}


def test_forced_calls_select_the_tool_call_validator_with_the_bound_schemas():
    request = prepare_request(_settings(), turns=[Turn("user", "hi")], tools=[WEATHER, CLOCK], tool_choice="any")
    assert request.prompt.endswith(f"{CALL_OPEN}call:")
    assert request.params.validators == ("builtin.tool_call",)
    options = request.params.validator_options["builtin.tool_call"]
    assert set(options["tools"]) == {"get_weather", "clock"} and options["prefill"] == f"{CALL_OPEN}call:"
    named = prepare_request(_settings(), turns=[Turn("user", "hi")], tools=[WEATHER, CLOCK], tool_choice="get_weather")
    assert named.prompt.endswith(f"{CALL_OPEN}call:get_weather{{")
    assert set(named.params.validator_options["builtin.tool_call"]["tools"]) == {"get_weather"}


@pytest.mark.parametrize("choice", [None, "auto"])
def test_unforced_calls_are_checked_wherever_the_model_writes_them(choice):
    request = prepare_request(_settings(), turns=[Turn("user", "hi")], tools=[WEATHER, CLOCK], tool_choice=choice)
    assert not request.prefill and request.params.validators == ("builtin.tool_call",)
    options = request.params.validator_options["builtin.tool_call"]
    assert options == {"tools": {"get_weather": WEATHER["function"]["parameters"],
                                 "clock": {"type": "object", "properties": {}}}, "anywhere": True}  # fmt: skip
    parsed = ToolCallOutput().parse_options(options)
    assert parsed.anywhere and parsed.prefill == ""
    for without in (prepare_request(_settings(), turns=[Turn("user", "hi")]),
                    prepare_request(_settings(), turns=[Turn("user", "hi")], tools=[WEATHER], tool_choice="none")):
        assert "builtin.tool_call" not in without.params.validators


def test_a_forced_call_without_parameters_is_written_whole_and_needs_no_validator():
    request = prepare_request(_settings(), turns=[Turn("user", "hi")], tools=[CLOCK], tool_choice="required")
    assert request.prompt.endswith(f"{CALL_OPEN}call:clock{{}}{CALL_CLOSE}")
    assert "builtin.tool_call" not in request.params.validators


@pytest.mark.parametrize(
    ("choice", "expected"),
    [(None, None), ("auto", None), (True, ""), ("required", ""), ({"type": "function", "function": {"name": "clock"}},
     "clock"), ({"type": "tool", "name": "clock"}, "clock"), ({"type": "any"}, "")],
)
def test_one_reading_of_tool_choice(choice, expected):
    assert resolve_tool_choice([WEATHER, CLOCK], choice)[1] == expected
    assert resolve_tool_choice([WEATHER], False) == ((), None)


def test_bad_tool_choices_name_the_field():
    for choice in ("nope", {"type": "function"}):
        with pytest.raises(InvalidRequestError) as error:
            resolve_tool_choice([WEATHER], choice)
        assert error.value.field == "tool_choice"


def test_the_tool_call_validator_is_registered():
    registry = get_plugin_manager().validator_registry()
    assert "builtin.tool_call" in registry.registered_by("builtin_validators")
    assert "builtin.tool_call" not in registry.defaults  # selected by forced calls, not by "default"


def _schemas():
    return ToolCallOutput().parse_options({"tools": {"get_weather": WEATHER["function"]["parameters"],
                                                     "add": {"type": "object", "properties": {"a": {"type": "integer"}},
                                                             "required": ["a"]}}}).schemas


@pytest.mark.parametrize(
    ("text", "final", "code", "offset"),
    [
        ("call:get_wea", False, None, None),
        ("call:get_wXa", False, "tool_call_invalid", 10),  # the first letter no bound name has
        ("call:get{", False, "tool_call_invalid", 8),  # a prefix of a bound name, closed too early
        ("call:get_weather{city:<|\"|>Par", False, None, None),
        ("call:get_weather{city:<|\"|>Par", True, "tool_call_incomplete", None),
        ("call:get_weather{city:<|\"|>Paris<|\"|>}", True, None, None),
        ("call:get_weather{city:<|\"|>Paris<|\"|>}<tool_call|>junk", True, None, None),  # after the call: free
        ("call:add{a:<|\"|>x<|\"|>}", False, "tool_call_schema", 8),  # checked as soon as the object closes
        ("call:add{a:1]", False, "tool_call_invalid", 12),
        ("call:add{}", True, "tool_call_schema", 8),
        ("call:get_weather{city:<<|\"|>Riga", False, "tool_call_invalid", 23),  # a stray "<": at the delimiter
    ],
)
def test_the_tool_call_validator_finds_the_first_problem(text, final, code, offset):
    problem = find_problem(CALL_OPEN + text, _schemas(), final=final)
    assert (problem and problem.code) == code
    if offset is not None:
        assert problem.offset == len(CALL_OPEN) + offset


WEATHER_CALL = f"{CALL_OPEN}call:get_weather{{city:<|\"|>Paris<|\"|>}}{CALL_CLOSE}"


@pytest.mark.parametrize(
    ("text", "final", "code", "offset"),
    [
        ("It is sunny.", True, None, None),  # no call at all: free text passes
        (f"Let me check. {WEATHER_CALL}", True, None, None),
        (f"Let me check. {CALL_OPEN}call:get_wXa", False, "tool_call_invalid", 14 + len(CALL_OPEN) + 10),
        (f"{WEATHER_CALL} and {CALL_OPEN}call:add{{a:<|\"|>x<|\"|>}}", False, "tool_call_schema",
         len(WEATHER_CALL) + 5 + len(CALL_OPEN) + 8),  # the second call is held to the rules too
        (f"{WEATHER_CALL}{CALL_OPEN}call:get_weather{{city:<|\"|>Ri", False, None, None),
        (f"{WEATHER_CALL}{CALL_OPEN}call:get_weather{{city:<|\"|>Ri", True, "tool_call_incomplete", None),
        (f"{CALL_OPEN}call:get_weather{{citycity:<|\"|>Riga<|\"|>}}", False, "tool_call_schema", len(CALL_OPEN) + 16),
    ],
)
def test_the_tool_call_validator_anywhere_checks_every_call_in_free_text(text, final, code, offset):
    problem = find_problem_anywhere(text, _schemas(), final=final)
    assert (problem and problem.code) == code
    if offset is not None:
        assert problem.offset == offset


def test_the_tool_call_validator_anywhere_flags_the_token_that_breaks_a_call_in_its_block():
    options = {"tools": {"get_weather": WEATHER["function"]["parameters"]}, "anywhere": True}
    assert not run_validator(ToolCallOutput(), make_block("Sure, one moment.", eos=True), options)
    block = make_block(f"{CALL_OPEN}call:get_wXather{{", committed="Let me look. ")
    [violation] = run_validator(ToolCallOutput(), block, options)
    assert violation.code == "tool_call_invalid" and "unknown tool" in violation.message
    start, end = block.token_offsets[violation.spans[0][0]]
    assert "X" in block.text[start:end]  # the first character no bound name has
    # a call in earlier, committed text that broke there: nothing this block can repair
    assert not run_validator(ToolCallOutput(), make_block(" more text", committed=f"{CALL_OPEN}call:nope{{"), options)
    [incomplete] = run_validator(ToolCallOutput(), make_block(f"{CALL_OPEN}call:get_weather{{city:", eos=True), options)
    assert incomplete.code == "tool_call_incomplete"


def test_tool_call_validator_options_are_checked():
    anywhere = ToolCallOutput().parse_options({"tools": {"f": {}}, "anywhere": True, "prefill": "Sure. "})
    assert anywhere.prefill == "Sure. " and anywhere.anywhere
    for options in ({}, {"tools": {}}, {"tools": {"f": {}}, "prefill": "x"}, {"tools": {"f": {}}, "bogus": 1},
                    {"tools": {"f": {}}, "anywhere": "yes"}):
        with pytest.raises(ValueError):
            ToolCallOutput().parse_options(options)


# -- structured output: one prompt on every path -------------------------------------------------------


class Person(BaseModel):
    name: str
    age: int


def test_structured_output_adds_only_the_schema_instruction_to_the_prompt(scripted):
    engine = scripted('{"name": "Sven", "age": 36}', '{"name": "Sven", "age": 36}')
    chat = ChatDiffusionGemma(engine=engine)
    assert chat.with_structured_output(Person).invoke("Sven, 36.") == Person(name="Sven", age=36)
    instruction = schema_instruction(Person.model_json_schema())
    assert engine.requests[0].messages == [{"role": "system", "content": instruction},
                                           {"role": "user", "content": "Sven, 36."}]  # fmt: skip
    # a caller's system message joins the instruction's system turn, after it
    assert chat.with_structured_output(Person).invoke([("system", "Be brief."), ("human", "Sven, 36.")]).age == 36
    assert engine.requests[1].messages == [{"role": "system", "content": f"{instruction}\n\nBe brief."},
                                           {"role": "user", "content": "Sven, 36."}]  # fmt: skip


def test_include_raw_returns_the_parsing_error_instead_of_raising():
    chat = ChatDiffusionGemma(**FAST, seed=0)  # on_validation_failure="raise", and random weights
    out = chat.with_structured_output(Person, include_raw=True).invoke("Sven, 36.")
    assert out["parsed"] is None and out["parsing_error"] is not None
    assert out["raw"].response_metadata["finish_reason"] == "validation_failed"


# -- tools through the chat template -------------------------------------------------------------------

TOOLS_TEMPLATE = (
    "{{ bos_token }}{% if tools %}<|turn>system\nTOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}<turn|>\n"
    "{% endif %}{% for m in messages %}<|turn>{{ m.role }}\n{{ m.content }}<turn|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|turn>model\n{% endif %}"
)


class _ToolTemplateEngine:
    """tiny-random with a chat template that declares tools itself, as real Gemma 4 checkpoints' do."""

    def __init__(self, engine) -> None:
        import copy

        self.inner = engine
        self.tokenizer = copy.deepcopy(engine.tokenizer)
        self.tokenizer.chat_template = TOOLS_TEMPLATE

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def render_chat(self, messages, tools=None):
        return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)


def test_tools_are_declared_by_a_template_that_supports_them(shared_engine):
    settings = GenerationSettings(engine=_ToolTemplateEngine(shared_engine))
    assert settings.roles_for(settings.engine).tools
    request = prepare_request(settings, turns=[Turn("user", "hi")], tools=[WEATHER, CLOCK])
    assert request.prompt.startswith("<bos><|turn>system\nTOOLS:get_weather;clock;<turn|>")
    assert "declaration:" not in request.prompt  # no hand-written declarations on top
    forced = prepare_request(settings, turns=[Turn("user", "hi")], tools=[WEATHER], tool_choice="get_weather")
    assert forced.prompt == settings.engine.render_chat([{"role": "user", "content": "hi"}], tools=[WEATHER]) + (
        f"{CALL_OPEN}call:get_weather{{")


def test_a_template_without_tool_support_gets_gemma_declarations_in_the_system_turn(shared_engine):
    request = prepare_request(_settings(), turns=[Turn("system", "Be brief."), Turn("user", "hi")], tools=[WEATHER])
    assert request.messages[0]["role"] == "system"
    assert request.messages[0]["content"].startswith("<|tool>declaration:get_weather{")
    assert request.messages[0]["content"].endswith("Be brief.") and "You can call" not in request.messages[0]["content"]
