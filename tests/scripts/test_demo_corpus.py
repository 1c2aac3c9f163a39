"""The demo corpus (v3) against the code it must agree with: the adapters' rendering of conversations and
tool calls, the evaluation's hand-written sets, JSON Schema, the demo tokenizer, and the training objective.

The rendering checks go through the real request path (``prepare_request``, ``ChatDiffusionGemma``) on an
engine serving the shipped demo checkpoint, whose chat template the training script writes.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Annotated

import jsonschema
import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
SCRIPTS = TESTS.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
sys.path.insert(0, str(TESTS / "adapters"))

import demo_data  # noqa: E402
import demo_eval_sets  # noqa: E402  (reserves the hand-written values, as the eval does)
import demo_example  # noqa: E402
import demo_rag  # noqa: E402
import demo_catalogue  # noqa: E402
import demo_contamination  # noqa: E402
import demo_tools  # noqa: E402
import demo_values  # noqa: E402
import demo_batches  # noqa: E402
import train_demo_model as training  # noqa: E402
from adapter_support import RecordingEngine  # noqa: E402

from diffgemma_adapters.formats import schema_instruction, split_tool_calls  # noqa: E402

TINY = training.ModelSize(
    vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
    global_head_dim=32, intermediate_size=96, num_experts=2, top_k_experts=1, moe_intermediate_size=32,
    canvas_length=8, sliding_window=128, max_position_embeddings=256,
)  # fmt: skip


@pytest.fixture(scope="module")
def demo_engine():
    from diffgemma_engine import Engine
    from diffgemma_engine.model.registry import DEMO_DIRECTORY

    engine = Engine(model=str(DEMO_DIRECTORY))
    yield engine
    engine.shutdown()


# -- one rendering: the corpus's conversations are the adapters' ----------------------------------------


def _first(examples, predicate):
    return next(example for example in examples if predicate(example))


def _rendered(recorder: RecordingEngine) -> str:
    request = recorder.requests[-1]
    return request.prompt if request.messages is None else recorder.inner.render_chat(request.messages)


def _trained_text(engine, example: demo_data.Example) -> str:
    return engine.tokenizer.apply_chat_template(demo_data.chat_messages(example), tokenize=False,
                                                add_generation_prompt=True)  # fmt: skip


def test_the_demo_chat_template_takes_system_and_tool_turns_and_declares_no_tools(demo_engine):
    from diffgemma_adapters.chat import TemplateRoles
    from diffgemma_adapters.settings import GenerationSettings
    from diffgemma_engine.model import tiny_random

    assert demo_engine.tokenizer.chat_template == training.CHAT_TEMPLATE == tiny_random.CHAT_TEMPLATE
    # chat_messages normalizes with exactly these roles; the adapters probe them from the template
    settings = GenerationSettings(engine=demo_engine)
    assert settings.roles_for(demo_engine) == TemplateRoles(system=True, tool=True, tools=False)


def test_chat_messages_render_as_the_adapters_render_the_same_conversation(demo_engine):
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    from diffgemma_adapters.langchain import ChatDiffusionGemma

    recorder = RecordingEngine(demo_engine)
    chat = ChatDiffusionGemma(engine=recorder, max_tokens=8, max_denoising_steps=1, seed=0,
                              on_validation_failure="return_flagged")  # the weights need not write JSON here
    stream = demo_data.TrainingStream(seed=11)

    def check(example: demo_data.Example, runnable, messages) -> None:
        result = runnable.invoke(messages)
        text = _rendered(recorder)
        assert text == _trained_text(demo_engine, example)
        encoded = demo_batches.encode_example(demo_engine.tokenizer, example)  # what training feeds the model
        assert list(encoded.prompt) == demo_engine.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert result.usage_metadata["input_tokens"] == len(encoded.prompt)

    # a system turn and a user turn
    plain = _first(stream.take(200, family="short"), lambda e: e.system)
    check(plain, chat, [SystemMessage(plain.system), HumanMessage(plain.prompt)])

    # a tool-call request: tools declared (in the system turn, as this template declares none)
    call = _first(stream.take(200, family="tool_call"), lambda e: e.system and len(e.tools) > 1)
    check(call, chat.bind_tools(list(call.tools)), [SystemMessage(call.system), HumanMessage(call.prompt)])
    assert "<|tool>declaration:" in _rendered(recorder)

    # after the call: the call and the tool's result in the history
    answer = _first(stream.take(200, family="tool_answer"), lambda e: not e.system)
    (name, args), = answer.history[0]["tool_calls"]
    history = [HumanMessage(answer.prompt), AIMessage("", tool_calls=[{"name": name, "args": args, "id": "c7"}]),
               ToolMessage(answer.history[1]["content"], tool_call_id="c7")]  # fmt: skip
    check(answer, chat.bind_tools(list(answer.tools)), history)
    assert "<|tool_response>response:" in _rendered(recorder)

    # structured output: the adapters state the schema in a system turn; the corpus trains on that turn
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}  # fmt: skip
    person = demo_data.Example(demo_data.JSON, "person", "Make a JSON record for Ilse, 40.", '{"name": "Ilse", "age": 40}',
                               system=schema_instruction(schema))  # fmt: skip
    check(person, chat.bind(response_format={"type": "json_schema", "schema": schema}), [HumanMessage(person.prompt)])
    caller = "Be concise."  # and a caller's own system message follows the instruction, in one system turn
    check(demo_data.Example(demo_data.JSON, "person", person.prompt, person.answer, system=f"{person.system}\n\n{caller}"),
          chat.bind(response_format={"type": "json_schema", "schema": schema}),
          [SystemMessage(caller), HumanMessage(person.prompt)])  # fmt: skip


def test_a_corpus_schema_turn_is_what_prepare_request_sends(demo_engine):
    from diffgemma_adapters.chat import Turn
    from diffgemma_adapters.request import prepare_request
    from diffgemma_adapters.settings import GenerationSettings

    settings = GenerationSettings(engine=demo_engine)
    examples = [e for e in demo_data.TrainingStream(seed=12).take(400, family="json") if demo_example.stated_schema(e)]
    assert len(examples) > 100
    for example in examples[:40]:
        schema = demo_example.stated_schema(example)
        caller = example.system[len(schema_instruction(schema)) :].removeprefix("\n\n")
        turns = ([Turn("system", caller)] if caller else []) + [Turn("user", example.prompt)]
        request = prepare_request(settings, turns=turns, response_format={"type": "json_schema", "schema": schema})
        assert request.messages == demo_data.chat_messages(example)


def test_the_corpus_trains_on_the_schema_texts_the_adapters_send():
    """A pydantic class is sent as its model_json_schema() (LangChain, LlamaIndex, OpenAI clients); a TypedDict
    or a JSON-schema dict through LangChain as convert_to_json_schema's form (title first, empty description,
    no field titles). Both forms are in the corpus."""
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int
        city: str

    examples = demo_data.TrainingStream(seed=13).take(2000, family="json")
    trained = {e.system.split("\n\n")[0] for e in examples if e.kind == "person" and demo_example.stated_schema(e)}
    assert schema_instruction(Person.model_json_schema()) in trained
    schemas = [schema for e in examples if (schema := demo_example.stated_schema(e))]
    langchain_form = [s for s in schemas if list(s)[:2] == ["title", "description"] and s["description"] == ""]
    assert langchain_form and all("title" not in field for s in langchain_form for field in s["properties"].values())


# -- held-out splits and reserved values ----------------------------------------------------------------


def _noun(tool: dict) -> str:
    name = tool["function"]["name"]
    verb, _, noun = name.partition("_")
    assert verb in demo_tools.TOOL_VERBS or name in demo_catalogue.NAMES
    return noun


def test_tool_split_keeps_heldout_tool_nouns_out_of_training():
    stream = demo_data.TrainingStream(seed=21)
    training_tools = stream.take(2500, family="tool_call") + stream.take(2500, family="tool_answer")
    trained_nouns = {_noun(tool) for example in training_tools for tool in example.tools}
    assert all(demo_tools.tool_split(noun) == "train" for noun in trained_nouns)
    heldout_targets = set()
    for example in demo_data.heldout_examples("tool", 100) + demo_data.heldout_examples("tool_answer", 100):
        nouns = {_noun(tool) for tool in example.tools}
        target = {n for n in nouns if demo_tools.tool_split(n) == "heldout"}
        assert len(target) == 1  # the requested tool; any others are training tools
        called = (split_tool_calls(example.answer)[1][0].name if example.kind == "call"
                  else example.history[0]["tool_calls"][0][0])  # fmt: skip
        assert called.partition("_")[2] in target
        heldout_targets |= target
    assert len(heldout_targets) > 100 and not heldout_targets & trained_nouns


def test_corpus_tools_are_declared_as_langchain_declares_the_same_function():
    from langchain_core.tools import tool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from diffgemma_adapters.formats import declare_tools

    @tool(parse_docstring=True)
    def get_weather(city: str, days: int) -> str:
        """Get the weather.

        Args:
            city: The city.
            days: Days to use.
        """
        return ""

    def find_room(city: str, price: float) -> str:
        """Find the room."""
        return ""

    corpus = [demo_tools.openai_tool("get_weather", "Get the weather.", [("city", "string", "The city."),
                                                                         ("days", "integer", "Days to use.")]),
              demo_tools.openai_tool("find_room", "Find the room.", [("city", "string", ""), ("price", "number", "")])]  # fmt: skip
    langchain = [convert_to_openai_tool(get_weather), convert_to_openai_tool(find_room)]
    assert declare_tools(corpus) == declare_tools(langchain)


def test_corpus_tools_in_llamaindex_style_are_declared_as_a_function_tool_declares_the_same_function():
    pytest.importorskip("llama_index.core")
    from llama_index.core.tools import FunctionTool

    from diffgemma_adapters.formats import declare_tools

    specs = [demo_tools._tool_spec(random.Random(i), "train") for i in range(400)]
    styled = [s for s in specs if s.declared_by_llamaindex]
    assert 0.15 * len(specs) < len(styled) < 0.35 * len(specs)
    assert {len(s.params) for s in styled} >= {0, 1, 2}
    for spec in styled[:40]:
        for description in ("", f"{spec.verb.title()} the thing."):
            signature = demo_tools.python_signature(spec.params)
            doc = f'    """{description}"""\n' if description else ""
            namespace: dict = {}
            source = f"def {spec.name}({signature}) -> str:\n{doc}    return ''"  # the function a user writes
            exec(compile(source, "<tool>", "exec", dont_inherit=True), namespace)  # real annotations, not strings
            theirs = FunctionTool.from_defaults(namespace[spec.name]).metadata.to_openai_tool()
            ours = demo_tools.llamaindex_tool(spec.name, description, spec.params)
            assert ours == theirs
            assert declare_tools([ours]) == declare_tools([theirs])


def test_reserved_handwritten_values_are_never_generated():
    people = {value.lower() for pair in demo_eval_sets.PEOPLE for value in pair}
    assert people <= demo_values.RESERVED
    rng = random.Random(0)
    for make in (demo_values.name, demo_values.place, demo_values.any_value, demo_values.word):
        values = [make(rng) for _ in range(20_000)]
        assert not [value for value in values if demo_values.is_reserved(value)]
    # and the reservation is what keeps them out: without it the same tables do produce some of them
    unreserved = random.Random(0)
    saved = set(demo_values.RESERVED)
    demo_values.RESERVED.clear()
    try:
        produced = {demo_values.name(unreserved).lower() for _ in range(200_000)}
    finally:
        demo_values.RESERVED.update(saved)
    assert produced & people


def test_the_training_process_reserves_the_handwritten_values():
    code = "import train_demo_model, demo_values; print(len(demo_values.RESERVED))"
    out = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, capture_output=True, text=True, check=True,
                         timeout=300)  # fmt: skip
    assert int(out.stdout.strip()) >= 2 * len(demo_eval_sets.PEOPLE) - 5


def test_no_training_example_holds_a_handwritten_value_as_a_whole_word():
    # the families whose sentences once carried hand-written spans ("every October", "titanium", "Saved")
    weights = ",".join(f"{family}={int(family in ('rag', 'tool_answer'))}" for family in demo_data.FAMILIES)
    found = demo_contamination.check_contamination(demo_values.RESERVED, [demo_contamination.TrainRun(7, 120, 1, weights)])
    assert found.examples > 1_500
    assert found.contaminated == 0, demo_contamination.contamination_report(found)
    assert demo_values.holds_reserved("The fair is held every October.")
    assert demo_values.holds_reserved("Little Pune lies east.")
    assert not demo_values.holds_reserved("Punes and Octoberfests.")


def _scripts_of(text: str) -> set[str]:
    return {unicodedata.name(ch, "?").split()[0] for ch in text if ch.isalpha()}


def test_generated_names_have_many_shapes():
    rng = random.Random(1)
    names = [demo_values.name(rng) for _ in range(20_000)]
    shares = {
        "accented": sum(_scripts_of(n) == {"LATIN"} and not n.isascii() for n in names),  # é, ł, ñ, ...
        "multi-word": sum(" " in n for n in names),
        "hyphenated": sum("-" in n for n in names),
        "apostrophe": sum("'" in n for n in names),
        "non-Latin": sum(bool(_scripts_of(n) - {"LATIN"}) for n in names),
    }  # fmt: skip
    for shape, count in shares.items():
        assert count > 0.02 * len(names), (shape, count)
    assert {"CYRILLIC", "GREEK", "CJK", "HIRAGANA"} <= set().union(*(_scripts_of(n) for n in names))
    assert len(set(names)) > 0.9 * len(names)


# -- targets agree with what they answer -------------------------------------------------------------


def test_every_tool_call_target_parses_to_the_generated_call(monkeypatch):
    generated: list[tuple[str, dict]] = []

    def recording(draw):  # made-up tools and everyday ones draw their arguments apart
        def draw_and_record(rng, tool):
            args = draw(rng, tool)
            generated.append((tool.name, json.loads(json.dumps(args))))  # a copy, as the example was written
            return args

        return draw_and_record

    monkeypatch.setattr(demo_tools, "tool_args", recording(demo_tools.tool_args))
    monkeypatch.setattr(demo_catalogue, "draw_args", recording(demo_catalogue.draw_args))
    examples = demo_data.TrainingStream(seed=31).take(1500, family="tool_call")
    examples += demo_data.heldout_examples("tool", 100)
    assert len(generated) == len(examples)
    for example, (name, args) in zip(examples, generated):
        visible, calls = split_tool_calls(example.answer)
        assert visible == "" and len(calls) == 1 and calls[0].valid
        assert (calls[0].name, calls[0].args) == (name, args)
        assert all(type(calls[0].args[k]) is type(v) for k, v in args.items())  # 7 stays 7, 7.0 stays 7.0
        tool = next(t["function"] for t in example.tools if t["function"]["name"] == name)
        jsonschema.validate(calls[0].args, tool["parameters"])
        for value in args.values():  # every argument is said in the request, so it can be copied
            assert demo_example.spoken(value) in example.prompt, (value, example.prompt)


def test_everyday_requests_carry_every_value_without_naming_the_tool_or_its_parameters():
    rng = random.Random(33)
    said_as_words = 0
    for _ in range(3000):
        tool = demo_catalogue.draw_tool(rng)
        args = demo_catalogue.draw_args(rng, tool)
        request = demo_catalogue.everyday_request(rng, tool, args)
        assert tool.name not in request
        said_as_words += tool.name.replace("_", " ") in request.lower()  # "Find parking in ..." may
        for name, value in args.items():
            assert demo_example.spoken(value) in request
            if "_" in name:
                assert name not in request and name.replace("_", " ") not in request.lower()
    assert said_as_words < 0.15 * 3000


def test_everyday_tools_are_half_the_training_calls_and_leave_out_the_handwritten_domains():
    examples = demo_data.TrainingStream(seed=34).take(1500, family="tool_call")
    called = [split_tool_calls(example.answer)[1][0].name for example in examples]
    everyday = sum(name in demo_catalogue.NAMES for name in called)
    assert 0.4 * len(called) < everyday < 0.6 * len(called)
    handwritten_nouns = {word for name in demo_eval_sets.TOOLS for word in name.split("_")[1:]}
    catalogue_nouns = {word for name in demo_catalogue.NAMES for word in name.split("_")[1:]}
    assert not handwritten_nouns & catalogue_nouns
    assert not set(demo_eval_sets.TOOLS) & demo_catalogue.NAMES


def test_every_tool_answer_copies_the_result_of_the_call_in_its_history():
    examples = demo_data.TrainingStream(seed=32).take(500, family="tool_answer")
    for example in examples + demo_data.heldout_examples("tool_answer", 50):
        call, result = example.history
        (name, _), = call["tool_calls"]
        assert result["name"] == name and name in {t["function"]["name"] for t in example.tools}
        assert example.answer.rstrip(".") == result["content"].rstrip(".")


def test_framework_prompts_exported_where_installed_train_the_same_examples_where_not(tmp_path, monkeypatch):
    pytest.importorskip("llama_index.core")
    demo_rag.framework_prompts.cache_clear()
    installed = [demo_rag.rag_example(random.Random(i)) for i in range(60)]
    path = tmp_path / "prompts.json"
    assert demo_rag.export_framework_prompts(path) == 1
    monkeypatch.setitem(sys.modules, "llama_index.core.prompts.chat_prompts", None)  # as on a machine without it
    monkeypatch.setenv(demo_rag.FRAMEWORK_PROMPTS_ENV, str(path))
    demo_rag.framework_prompts.cache_clear()
    try:
        assert [demo_rag.rag_example(random.Random(i)) for i in range(60)] == installed
        assert any(example.system for example in installed)
        monkeypatch.delenv(demo_rag.FRAMEWORK_PROMPTS_ENV)
        demo_rag.framework_prompts.cache_clear()
        assert demo_rag.framework_rag_frames() == []  # neither installed nor exported: our own frames only
    finally:
        demo_rag.framework_prompts.cache_clear()


def test_a_bad_framework_prompts_file_is_an_error_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_index.core.prompts.chat_prompts", None)
    for text in ("not json", '{"llamaindex": "one string"}', "[1, 2]"):
        path = tmp_path / "prompts.json"
        path.write_text(text)
        monkeypatch.setenv(demo_rag.FRAMEWORK_PROMPTS_ENV, str(path))
        demo_rag.framework_prompts.cache_clear()
        try:
            with pytest.raises(ValueError, match=demo_rag.FRAMEWORK_PROMPTS_ENV):
                demo_rag.framework_rag_frames()
        finally:
            demo_rag.framework_prompts.cache_clear()


def _passages(prompt: str) -> str:
    """The prompt without its question lines (a question ends with "?")."""
    return "\n".join(line for line in prompt.splitlines() if not line.rstrip().endswith("?"))


def test_every_rag_answer_span_occurs_in_its_context():
    stream = demo_data.TrainingStream(seed=41)
    examples = stream.take(800, family="rag") + stream.take(20, family="long") + demo_data.heldout_examples("rag", 100)
    framework = 0
    for example in examples:
        assert example.answer.endswith(".")
        span = example.answer[:-1]
        context = _passages(example.prompt)
        assert span in context or span[0].lower() + span[1:] in context, (span, example.prompt)
        framework += bool(example.system)
    assert framework > 0.2 * len(examples)  # LlamaIndex's own QA prompt (system + user) is among the frames


def test_json_targets_validate_against_the_schema_in_the_system_turn():
    examples = demo_data.TrainingStream(seed=51).take(3000, family="json") + demo_data.heldout_examples("json", 100)
    checked = {"person": 0, "record": 0, "invented": 0}
    for example in examples:
        schema = demo_example.stated_schema(example)
        if schema is None:
            continue
        jsonschema.Draft202012Validator.check_schema(schema)
        for answer in {example.answer, *example.answers}:
            jsonschema.validate(json.loads(answer), schema)
        assert list(json.loads(example.answer)) == list(schema["properties"])  # keys in the schema's order
        checked[example.kind] += 1
    assert min(checked["person"], checked["record"]) > 300 and checked["invented"] > 150


def test_invented_records_use_the_schema_forms_langchain_sends_and_copy_nothing_but_the_topic():
    from langchain_core.utils.function_calling import convert_to_json_schema
    from typing_extensions import TypedDict

    class Riddle(TypedDict):
        """A riddle and its answer."""

        question: Annotated[str, ..., "the riddle"]
        answer: Annotated[str, ..., "the solution"]

    examples = [e for e in demo_data.TrainingStream(seed=52).take(3000, family="json") if e.kind == "invented"]
    schemas = [demo_example.stated_schema(e) for e in examples]
    langchain = {**convert_to_json_schema(Riddle), "title": "Riddle"}
    assert langchain in schemas  # the TypedDict form, key for key and in LangChain's order
    assert any(list(s) == ["description", "properties", "required", "title", "type"] for s in schemas)  # pydantic's
    for example in examples:
        record = json.loads(example.answer)
        topic = example.prompt.removesuffix(", please.").rstrip(".?").split()[-1]  # every request ends on it
        assert any(topic.lower() in str(value).lower() for value in record.values()), (example.prompt, record)


def test_invented_records_never_draw_langchains_standard_joke_request():
    """LangChain's standard suite asks "Tell me a joke about cats." with its own Joke wording: unseen here."""
    examples = [e for e in demo_data.TrainingStream(seed=53).take(4000, family="json") if e.kind == "invented"]
    assert len(examples) > 200
    assert any(demo_example.stated_schema(e).get("title") == "Joke" for e in examples)
    for example in examples:
        assert "cats" not in example.prompt.lower().split(), example.prompt
        assert "set up a joke" not in example.system and "Joke to tell user" not in example.system


def test_the_handwritten_joke_is_langchains_own_schema_in_both_forms():
    """The eval's first OPEN_CASES are LangChain's standard joke, as pydantic and as LangChain write it."""
    from langchain_core.utils.function_calling import convert_to_json_schema
    from pydantic import BaseModel, Field
    from typing_extensions import TypedDict

    class Joke(BaseModel):
        """Joke to tell user."""

        setup: str = Field(description="question to set up a joke")
        punchline: str = Field(description="answer to resolve the joke")

    class JokeDict(TypedDict):
        """Joke to tell user."""

        setup: Annotated[str, ..., "question to set up a joke"]
        punchline: Annotated[str, ..., "answer to resolve the joke"]

    first, second = demo_eval_sets.OPEN_CASES[:2]
    assert first.request == second.request == "Tell me a joke about cats."
    assert json.dumps(first.schema) == json.dumps(Joke.model_json_schema())  # key order too
    assert json.dumps(second.schema) == json.dumps({**convert_to_json_schema(JokeDict), "title": "Joke"})
    for case in demo_eval_sets.OPEN_CASES:
        jsonschema.Draft202012Validator.check_schema(case.schema)


def test_long_examples_fill_the_prompt_room_with_the_demo_tokenizer(demo_engine):
    examples = demo_data.TrainingStream(seed=61).take(12, family="long")
    lengths = [len(demo_batches.encode_example(demo_engine.tokenizer, e).prompt) for e in examples]
    assert min(lengths) > 1000
    assert max(lengths) + training.ModelSize().canvas_length <= training.ModelSize().max_position_embeddings


# -- the objective's new knobs ------------------------------------------------------------------------------


def test_make_batch_with_shift_starts_canvases_anywhere_in_the_response():
    example = demo_batches.Encoded(prompt=(2, 105, 7), response=tuple(range(200, 219)) + (demo_batches.END_OF_TURN_ID,))

    def starts(shift: float) -> set[int]:
        found = set()
        for seed in range(200):
            batch = demo_batches.make_batch([example], canvas_length=8, rng=random.Random(seed), shift=shift)
            start = int(batch.prefix_lengths[0]) - len(example.prompt)
            assert batch.prefix[0, : batch.prefix_lengths[0]].tolist() == list(example.prompt + example.response[:start])
            piece = list(example.response[start : start + 8])
            assert batch.canvas[0].tolist() == piece + [demo_batches.PAD_ID] * (8 - len(piece))
            assert batch.content[0].tolist() == [True] * len(piece) + [False] * (8 - len(piece))
            found.add(start)
        return found

    assert starts(0.0) == {0, 8, 16}
    assert starts(1.0) == set(range(len(example.response)))  # 20 response tokens: every offset, boundaries too
    assert starts(0.5) - {0, 8, 16} and starts(0.5) & {0, 8, 16}


def test_diffusion_loss_with_repeats_is_the_loss_of_explicitly_repeated_rows():
    tokenizer = training.train_tokenizer(training.tokenizer_corpus(training.TrainSettings(tokenizer_examples=300)), 512)
    model = training.build_model(TINY, seed=0).eval()
    examples = [demo_batches.encode_example(tokenizer, e) for e in demo_data.TrainingStream(seed=71).take(3, family="json")]
    batch = demo_batches.make_batch(examples, TINY.canvas_length, random.Random(0), shift=0.5)
    assert len({tuple(row) for row in batch.prefix.tolist()}) == 3  # distinct prefixes: a row mix-up would show
    with torch.no_grad():
        repeated = training.diffusion_loss(model, batch, torch.Generator().manual_seed(5), repeats=3,
                                           self_conditioning_prob=0.5)  # fmt: skip
        explicit = training.diffusion_loss(model, training.repeat_rows(batch, 3), torch.Generator().manual_seed(5),
                                           self_conditioning_prob=0.5)  # fmt: skip
        tiled = demo_batches.Batch(*(getattr(batch, f).repeat(3, *[1] * (getattr(batch, f).dim() - 1))
                                 for f in ("prefix", "prefix_mask", "prefix_lengths", "canvas", "content")))  # fmt: skip
        wrong = training.diffusion_loss(model, tiled, torch.Generator().manual_seed(5), self_conditioning_prob=0.5)
    assert repeated.self_conditioned == explicit.self_conditioned > 0
    assert torch.isfinite(repeated.loss)
    assert float(repeated.loss) == pytest.approx(float(explicit.loss), rel=1e-4)
    assert repeated.content_loss == pytest.approx(explicit.content_loss, rel=1e-4)
    assert float(wrong.loss) != pytest.approx(float(explicit.loss), rel=1e-4)  # the check can tell rows apart
