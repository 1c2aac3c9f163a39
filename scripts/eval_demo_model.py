"""Measure the demo checkpoint on held-out data: each task it is trained for, on the generator's held-out
split and on hand-written sets from a separate source (``scripts/demo_eval_sets.py``).

The checkpoint is loaded the way users load it, through its directory: ``Engine(model=DIR)``. Every
request is rendered as the adapters and the server render it (:func:`demo_data.chat_messages`: system
turn, tool declarations, tool turns), with one seed per prompt (its index) and the checkpoint's sampler
defaults; all requests of a set are submitted at once. ``--tasks`` picks from:

* ``loss``: the held-out **canvas-denoising loss** (the training objective, no self-conditioning) at t = 1
  and averaged over t = 1/8 … 1, against a **unigram baseline** of training response canvases;
* ``short``: held-out phrasings of trained short facts, **exact** answer;
* ``json``: person records for the generator's held-out names and for the hand-written ``PEOPLE`` (in the
  training sentence patterns and in the set's own phrasings, reported apart): **exact record**, valid JSON,
  **schema-valid** (:data:`RECORD_SCHEMA`), without validators and with ``validators=("builtin.json",)``,
  the schema option and ``on_exhausted="return_flagged"``;
* ``open``: records the model fills in itself ("Tell me a joke about cats." with a ``Joke`` schema in the
  system turn): fresh draws of the generator's record kinds and the hand-written ``OPEN_CASES`` (new kinds,
  LangChain's standard joke): valid JSON and **schema-valid** against the stated schema, without validators
  and with ``builtin.json`` + that schema + repair;
* ``tool``: held-out generated tools and the hand-written ``TOOL_CASES`` (``tool_choice`` auto): **right
  tool and exactly right arguments** (one call), and **parse-valid** (every call parses and names an
  offered tool), read with :func:`diffgemma_adapters.formats.split_tool_calls`;
* ``tool_answer``: the same conversations after the call and the tool's result: the answer **contains the
  result**;
* ``rag``: generated held-out contexts and the hand-written ``RAG_CASES``: **exact span** (stripped,
  case-insensitive, one trailing period dropped) and **contains span**;
* ``long``: ``--long-count`` generated RAG prompts of at least ``--long-min-tokens`` (2,048) prompt tokens:
  accuracy, and whether the engine **accepted** them (token lengths reported);
* ``curve``: ``max_denoising_steps`` caps 1, 2, 4 and the default, with and without validators, on the
  hand-written JSON persons (``builtin.json``), forced tool calls (``tool_choice=<tool>`` through
  :func:`diffgemma_adapters.request.prepare_request`: prefilled call, ``builtin.tool_call``) and RAG (no
  validator): valid %, exact %, mean denoising steps per answer, wall seconds.

``--check-contamination SEED:STEPS:SCALE[:WEIGHTS]`` (once per training stage; ``WEIGHTS`` is the run's
``--family-weights``, if any) regenerates the batches of the run (``TrainingStream(seed, weights).batch(i,
scale)`` for each step ``i``) and counts the training examples that hold
any hand-written value (names, cities, tool names, argument values, results, answer spans) as a whole word.

    python scripts/eval_demo_model.py                                   # the shipped checkpoint, everything
    python scripts/eval_demo_model.py --model DIR --count 8 --tasks json,tool   # a quick look
    python scripts/eval_demo_model.py --model DIR --write-results       # and fill the model card + docs

The output is Markdown tables (``--json-out`` writes the raw numbers); ``--write-results`` puts them between
the ``<!-- demo-results:begin/end -->`` markers of the checkpoint's README.md and docs/demo-model.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# On a shared CPU, OpenMP threads that spin while waiting for a core make every step several times slower;
# passive waiting must be chosen before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_batches  # noqa: E402
import demo_contamination  # noqa: E402
import demo_data  # noqa: E402
import demo_example  # noqa: E402
import demo_invented  # noqa: E402
import demo_json  # noqa: E402
import demo_rag  # noqa: E402
from demo_report import CurveRow, LossRow, ScoreRow, markdown_report, pct, write_results  # noqa: E402
import demo_eval_sets as sets  # noqa: E402  (before any generation: it reserves its values)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "diffgemma_engine" / "model" / "demo"
DOCS_PAGE = REPO_ROOT / "docs" / "demo-model.md"
END_OF_TURN = "<turn|>"


# -- metric helpers (pure functions on strings and counts) ------------------------------------------


def real_word_fraction(texts: Iterable[str], lexicon: frozenset[str]) -> tuple[float, int]:
    """(fraction of all words in ``texts`` that are in ``lexicon``, number of words); NaN without words."""
    total = real = 0
    for text in texts:
        for word in demo_data.words(text):
            total += 1
            real += word in lexicon
    return (real / total if total else float("nan")), total


def parse_json(text: str) -> Any | None:
    """The JSON value ``text`` holds (surrounding whitespace allowed), or ``None`` when it is not JSON."""
    try:
        return json.loads(text.strip())
    except ValueError:
        return None


def is_valid_json(text: str) -> bool:
    try:
        json.loads(text.strip())
    except ValueError:
        return False
    return True


def is_schema_valid(text: str, schema: Mapping[str, Any]) -> bool:
    """Valid JSON *and* valid against the JSON Schema ``schema``."""
    import jsonschema

    if not is_valid_json(text):
        return False
    try:
        jsonschema.validate(json.loads(text.strip()), schema)
    except jsonschema.ValidationError:
        return False
    return True


def normalise_answer(text: str) -> str:
    return " ".join(text.strip().lower().split())


def is_exact_answer(example: demo_data.Example, text: str) -> bool:
    """Whether ``text`` is one of the example's right answers (JSON records compared as parsed objects)."""
    answers = example.answers or (example.answer,)
    if example.task == demo_data.JSON:
        document = parse_json(text)
        return document is not None and any(document == json.loads(answer) for answer in answers)
    return normalise_answer(text) in {normalise_answer(answer) for answer in answers}


def ended_with_eos(finish_reason: str, stop_reason: object, eos_token_ids: Iterable[int]) -> bool:
    """The response ended because the model wrote one of its EOS tokens (not a length cut or stop string)."""
    return finish_reason == "stop" and isinstance(stop_reason, int) and stop_reason in set(eos_token_ids)


def unigram_counts(canvases: Iterable[Sequence[int]]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for canvas in canvases:
        counts.update(canvas)
    return counts


def unigram_cross_entropy(counts: Mapping[int, int], targets: Iterable[int], vocab_size: int) -> float:
    """Mean cross-entropy (nats) of ``targets`` under add-one smoothed unigram ``counts`` over ``vocab_size``."""
    total = sum(counts.values()) + vocab_size
    losses = [-math.log((counts.get(token, 0) + 1) / total) for token in targets]
    return sum(losses) / len(losses) if losses else float("nan")


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


# -- measurement ------------------------------------------------------------------------------------


def measure_losses(engine: Any, examples: Sequence[demo_data.Example], label: str, train_counts: tuple[Counter[int], Counter[int]],
                   seed: int) -> LossRow:  # fmt: skip
    """Held-out canvas-denoising loss of the engine's model vs the unigram baseline, on ``examples``."""
    import train_demo_model as trainer

    model, tokenizer = engine.loaded.model, engine.tokenizer
    canvas_length, vocab_size = engine.canvas_length, engine.loaded.vocab_size
    device = next(model.parameters()).device
    batches = demo_batches.fixed_batches(tokenizer, examples, canvas_length, device, batch_size=25)
    t1 = trainer.heldout_loss(model, batches, seed, levels=1)  # everything noise, as the first step sees it
    average = trainer.heldout_loss(model, batches, seed)  # the mean over rates 1/8 ... 8/8
    canvas_counts, response_counts = train_counts
    targets = [int(t) for batch in batches for t in batch.canvas.flatten().tolist()]
    response_targets = [int(t) for batch in batches for t in batch.canvas[batch.content].tolist()]
    return LossRow(
        label, t1[0], t1[1], average[0], average[1],
        unigram_cross_entropy(canvas_counts, targets, vocab_size),
        unigram_cross_entropy(response_counts, response_targets, vocab_size),
    )  # fmt: skip


def training_unigram(tokenizer: Any, canvas_length: int, examples: int, seed: int) -> tuple[Counter[int], Counter[int]]:
    """Unigram counts of training response canvases: (all positions incl. padding, response tokens only)."""
    canvases, responses = [], []
    for example in demo_data.TrainingStream(seed).take(examples):
        response = list(demo_batches.encode_example(tokenizer, example).response)
        responses.append(response)
        for start in range(0, len(response), canvas_length):
            block = response[start : start + canvas_length]
            canvases.append(block + [demo_batches.PAD_ID] * (canvas_length - len(block)))
    return unigram_counts(canvases), unigram_counts(responses)


# -- scoring the new tasks (pure functions on strings and parsed calls) -----------------------------

RECORD_SCHEMA: dict = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"}},
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}
"""The person schema of the evaluation: any name and city (``demo_json.PERSON_SCHEMA`` pins both to the old corpus)."""


def normalise_span(text: str) -> str:
    """Stripped, lower-cased, whitespace collapsed, one trailing period dropped."""
    text = normalise_answer(text)
    return text[:-1].rstrip() if text.endswith(".") else text


def is_exact_span(text: str, span: str) -> bool:
    return normalise_span(text) == normalise_span(span)


def contains_span(text: str, span: str) -> bool:
    return normalise_span(span) in normalise_answer(text)


def is_right_call(calls: Sequence[Any], name: str, args: Mapping[str, Any]) -> bool:
    """Exactly one call, parsed, of tool ``name`` with exactly ``args`` (numbers compare by value)."""
    return len(calls) == 1 and calls[0].valid and calls[0].name == name and calls[0].args == dict(args)


def are_valid_calls(calls: Sequence[Any], offered: Iterable[str]) -> bool:
    """At least one call, and every call parses and names an offered tool."""
    names = set(offered)
    return bool(calls) and all(call.valid and call.name in names for call in calls)


def tool_names(example: demo_data.Example) -> tuple[str, ...]:
    return tuple(tool["function"]["name"] for tool in example.tools)


def expected_call(example: demo_data.Example) -> tuple[str, dict]:
    from diffgemma_adapters.formats import split_tool_calls

    (call,) = split_tool_calls(example.answer)[1]
    return call.name, call.args


# -- the evaluation sets ----------------------------------------------------------------------------


def people_examples(phrasings: Sequence[str], count: int) -> list[demo_data.Example]:
    """Person records for the hand-written PEOPLE, in ``phrasings`` by turns, ages from a fixed seed."""
    examples = []
    for index in range(min(count, len(sets.PEOPLE))):
        name, city = sets.PEOPLE[index]
        age = random.Random(f"people:{index}").randint(18, 90)
        record = demo_json.person_record(name, age, city)
        prompt = phrasings[index % len(phrasings)].format(name=name, age=age, city=city)
        examples.append(demo_data.Example(demo_data.JSON, "person", prompt, record, (record,)))
    return examples


def handwritten_tool_examples(count: int, answer: bool) -> list[demo_data.Example]:
    """TOOL_CASES as calls to make (``answer=False``) or as conversations after the call and its result."""
    from diffgemma_adapters.formats import format_tool_call

    examples = []
    for case in sets.TOOL_CASES[:count]:
        tools = tuple(sets.TOOLS[name] for name in case.offered)
        if not answer:
            call = format_tool_call(case.tool, case.args)
            examples.append(demo_data.Example("tool", "call", case.request, call, (call,), tools=tools))
            continue
        history = ({"role": "assistant", "content": "", "tool_calls": [[case.tool, case.args]]},
                   {"role": "tool", "name": case.tool, "content": case.result})  # fmt: skip
        examples.append(demo_data.Example("tool", "answer", case.request, case.result, (case.result,), tools=tools,
                                          history=history))  # fmt: skip
    return examples


def handwritten_rag_examples(count: int) -> list[demo_data.Example]:
    """RAG_CASES' questions over their passages: LlamaIndex's own QA prompt (when installed) and the
    set's plain frame by turns; the answer is the span."""
    frames = demo_rag.framework_rag_frames()
    examples = []
    pairs = [(case, question) for case in sets.RAG_CASES for question in case.questions]
    for index, (case, question) in enumerate(pairs[:count]):
        context = "\n\n".join(case.passages)
        if frames and index % 2 == 0:
            system, prompt = frames[0](context, question.question)
        else:
            system, prompt = "", sets.RAG_FRAME.format(context=context, question=question.question)
        examples.append(demo_data.Example("rag", "span", prompt, question.span, (question.span,), system=system))
    return examples


def long_rag_examples(engine: Any, count: int, min_tokens: int, max_tokens: int, seed: int = 2048) -> list[tuple[demo_data.Example, int]]:
    """``count`` generated RAG prompts of ``min_tokens``–``max_tokens`` prompt tokens (as rendered), with lengths."""
    rng = random.Random(f"{seed}:long")
    found = []
    while len(found) < count:
        example = demo_rag.rag_example(rng, passages=rng.randint(36, 64))
        tokens = engine.count_tokens(engine.render_chat(demo_data.chat_messages(example)))
        if min_tokens <= tokens <= max_tokens:
            found.append((example, tokens))
    return found


# -- running requests -------------------------------------------------------------------------------


def run_all(submitters: Sequence[Any]) -> tuple[list[Any], float]:
    """Submit every request at once (the engine batches them step by step), then collect the results; a
    request the engine refuses or fails yields its error in place of a result."""
    from diffgemma_engine import DiffGemmaError

    started = time.monotonic()
    handles: list[Any] = []
    for submit in submitters:
        try:
            handles.append(submit())
        except (DiffGemmaError, ValueError) as error:
            handles.append(error)
    results = []
    for handle in handles:
        if isinstance(handle, Exception):
            results.append(handle)
            continue
        try:
            results.append(handle.result())
        except (DiffGemmaError, ValueError) as error:
            results.append(error)
    return results, time.monotonic() - started


@dataclass(frozen=True)
class Evaluator:
    """The engine and the request settings every measurement shares."""

    engine: Any
    max_new_tokens: int

    def params(self, index: int, validators: bool = False, steps: int | None = None,
               schema: Mapping[str, Any] = RECORD_SCHEMA) -> Any:  # fmt: skip
        from diffgemma_engine import SamplingParams

        extra: dict[str, Any] = {}
        if validators:
            extra = {"validators": ("builtin.json",), "validator_options": {"builtin.json": {"schema": dict(schema)}},
                     "on_exhausted": "return_flagged"}  # fmt: skip
        return SamplingParams(seed=index, max_new_tokens=self.max_new_tokens, max_denoising_steps=steps, **extra)

    def generate(self, examples: Sequence[demo_data.Example], validators: bool = False, steps: int | None = None,
                 schema: Callable[[demo_data.Example], Mapping[str, Any]] = lambda example: RECORD_SCHEMA,
                 ) -> tuple[list[Any], float]:  # fmt: skip
        """Every example's answer; ``schema(example)`` is the schema ``builtin.json`` checks (with ``validators``)."""
        submitters = [
            (lambda e=example, i=index: self.engine.submit(messages=demo_data.chat_messages(e),
                                                           params=self.params(i, validators, steps, schema(e))))
            for index, example in enumerate(examples)
        ]  # fmt: skip
        return run_all(submitters)

    def adapter_calls(self, examples: Sequence[demo_data.Example], validators: bool, steps: int | None = None,
                      forced: bool = True) -> tuple[list[Any], list[list[Any]], float]:  # fmt: skip
        """Tool calls requested as the adapters and the server request them (their one request builder). With
        ``forced``, as ``tool_choice=<the expected tool>`` forces them: the turn is prefilled with the call
        marker and the name, and ``builtin.tool_call`` checks and repairs the arguments; without, as
        ``tool_choice="auto"``: the model may call or not, and ``builtin.tool_call`` (``anywhere``) checks and
        repairs every call it writes. ``validators=False`` drops the validator, keeping the prefill."""
        import dataclasses

        from diffgemma_adapters.chat import Turn
        from diffgemma_adapters.request import prepare_request
        from diffgemma_adapters.settings import GenerationSettings

        settings = GenerationSettings(engine=self.engine)
        prepared = []
        for index, example in enumerate(examples):
            turns = ([Turn("system", example.system)] if example.system else []) + [Turn("user", example.prompt)]
            choice = expected_call(example)[0] if forced else "auto"
            request = prepare_request(settings, turns=turns, tools=example.tools, tool_choice=choice,
                                      seed=index, max_tokens=self.max_new_tokens, max_denoising_steps=steps,
                                      on_validation_failure="return_flagged")  # fmt: skip
            if not validators:
                request = dataclasses.replace(request, params=dataclasses.replace(request.params, validators=(), validator_options={}))
            prepared.append(request)
        results, seconds = run_all([request.submit for request in prepared])
        calls = [[] if isinstance(result, Exception) else request.tool_assembler().finish(result.token_ids)[1]
                 for request, result in zip(prepared, results)]  # fmt: skip
        return results, calls, seconds

    def decode_calls(self, result: Any) -> tuple[str, list[Any]]:
        from diffgemma_adapters.formats import marker_decoder, split_tool_calls

        return split_tool_calls(marker_decoder(self.engine.tokenizer)(result.token_ids))


def scored_row(task: str, source: str, setting: str, examples: Sequence[demo_data.Example], results: Sequence[Any],
               seconds: float, score: Any, eos_ids: Sequence[int]) -> ScoreRow:  # fmt: skip
    """``score(example, result) -> {column: bool}`` for each answered request; refused requests score False."""
    columns: dict[str, list[float]] = {}
    answered = [r for r in results if not isinstance(r, Exception)]
    for example, result in zip(examples, results):
        marks = score(example, result) if not isinstance(result, Exception) else None
        if marks is None:
            marks = {column: False for column in score(example, None)}
        marks["ends in EOS"] = not isinstance(result, Exception) and ended_with_eos(result.finish_reason, result.stop_reason, eos_ids)
        for column, mark in marks.items():
            columns.setdefault(column, []).append(float(mark))
    samples = tuple((e.prompt[-80:], r.text if not isinstance(r, Exception) else f"<{type(r).__name__}: {r}>")
                    for e, r in list(zip(examples, results))[:3])  # fmt: skip
    return ScoreRow(
        task, source, setting, len(results), tuple((column, mean(marks)) for column, marks in columns.items()),
        mean([float(r.stats.denoising_steps) for r in answered]), mean([float(r.validation.extra_steps) for r in answered]),
        seconds, samples,
    )  # fmt: skip


def _text_scores(check: Any) -> Any:
    def score(example: demo_data.Example, result: Any) -> dict[str, bool]:
        return check(example, "" if result is None else result.text)

    return score


def measure_short(ev: Evaluator, count: int, eos_ids: Sequence[int]) -> list[ScoreRow]:
    examples = demo_data.heldout_examples(demo_data.SHORT, count)
    results, seconds = ev.generate(examples)
    score = _text_scores(lambda e, text: {"exact": is_exact_answer(e, text)})
    return [scored_row("short answers", "held-out phrasings", "none", examples, results, seconds, score, eos_ids)]


def _json_score(example: demo_data.Example, text: str) -> dict[str, bool]:
    return {"exact record": is_exact_answer(example, text), "valid JSON": is_valid_json(text),
            "schema-valid": is_schema_valid(text, RECORD_SCHEMA)}  # fmt: skip


def json_sets(count: int) -> list[tuple[str, list[demo_data.Example]]]:
    return [
        ("generator held-out", demo_data.heldout_examples(demo_data.JSON, count)),
        ("hand-written PEOPLE, training phrasings", people_examples(demo_json.JSON_TEMPLATES_CITY, count)),
        ("hand-written PEOPLE, own phrasings", people_examples(sets.PERSON_PHRASINGS, count)),
    ]


def measure_json(ev: Evaluator, count: int, eos_ids: Sequence[int]) -> list[ScoreRow]:
    rows = []
    for source, examples in json_sets(count):
        for validators in (False, True):
            results, seconds = ev.generate(examples, validators=validators)
            setting = "`builtin.json` + schema + repair" if validators else "none"
            rows.append(scored_row("JSON persons", source, setting, examples, results, seconds, _text_scores(_json_score), eos_ids))
    return rows


def stated_schema(example: demo_data.Example) -> dict:
    """The schema an open-record example's system turn states (every one of them states one)."""
    schema = demo_example.stated_schema(example)
    if schema is None:
        raise ValueError(f"no schema line in the system turn of {example.prompt!r}")
    return schema


def open_record_sets(count: int) -> list[tuple[str, list[demo_data.Example]]]:
    """Records the model fills in itself: the generator's kinds on fresh draws, and the hand-written
    ``OPEN_CASES`` (new kinds of record, LangChain's joke)."""
    from diffgemma_adapters.formats import schema_instruction

    generated = [demo_invented.invented_record_example(random.Random(f"open-heldout:{index}"), schema_instruction)
                 for index in range(count)]  # fmt: skip
    handwritten = [demo_data.Example(demo_data.JSON, "open", case.request, "", (), system=schema_instruction(case.schema))
                   for case in sets.OPEN_CASES[:count]]  # fmt: skip
    return [("generator kinds, fresh draws", generated), ("hand-written OPEN_CASES", handwritten)]


def measure_open_records(ev: Evaluator, count: int, eos_ids: Sequence[int]) -> list[ScoreRow]:
    def score(example: demo_data.Example, text: str) -> dict[str, bool]:
        return {"valid JSON": is_valid_json(text), "schema-valid": is_schema_valid(text, stated_schema(example))}

    rows = []
    for source, examples in open_record_sets(count):
        for validators in (False, True):
            results, seconds = ev.generate(examples, validators=validators, schema=stated_schema)
            setting = "`builtin.json` + schema + repair" if validators else "none"
            rows.append(scored_row("JSON records the model fills in", source, setting, examples, results, seconds,
                                   _text_scores(score), eos_ids))  # fmt: skip
    return rows


def _call_scores(example: demo_data.Example, calls: Sequence[Any]) -> dict[str, bool]:
    name, args = expected_call(example)
    return {"right tool and args": is_right_call(calls, name, args), "parse-valid": are_valid_calls(calls, tool_names(example))}


def measure_tools(ev: Evaluator, count: int, eos_ids: Sequence[int]) -> list[ScoreRow]:
    """The model's own calls (the engine, no validator), then the same requests as the adapters send them
    with ``tool_choice="auto"`` (``builtin.tool_call`` checking every call written)."""

    def score(example: demo_data.Example, result: Any) -> dict[str, bool]:
        return _call_scores(example, [] if result is None else ev.decode_calls(result)[1])

    rows = []
    for source, examples in (("generator held-out tools", demo_data.heldout_examples("tool", count)),
                             ("hand-written TOOL_CASES", handwritten_tool_examples(count, answer=False))):  # fmt: skip
        results, seconds = ev.generate(examples)
        rows.append(scored_row("tool calls", source, "none (tool_choice auto)", examples, results, seconds, score, eos_ids))
        results, calls, seconds = ev.adapter_calls(examples, validators=True, forced=False)
        by_example = {id(example): example_calls for example, example_calls in zip(examples, calls)}

        def adapter_score(example: demo_data.Example, result: Any) -> dict[str, bool]:
            return _call_scores(example, [] if result is None else by_example[id(example)])

        setting = "`builtin.tool_call` anywhere + repair (tool_choice auto)"
        rows.append(scored_row("tool calls", source, setting, examples, results, seconds, adapter_score, eos_ids))
    return rows


def measure_tool_answers(ev: Evaluator, count: int, eos_ids: Sequence[int]) -> list[ScoreRow]:
    def score(example: demo_data.Example, result: Any) -> dict[str, bool]:
        visible = "" if result is None else ev.decode_calls(result)[0]
        return {"contains the result": contains_span(visible, example.history[-1]["content"])}

    rows = []
    for source, examples in (("generator held-out tools", demo_data.heldout_examples("tool_answer", count)),
                             ("hand-written TOOL_CASES", handwritten_tool_examples(count, answer=True))):  # fmt: skip
        results, seconds = ev.generate(examples)
        rows.append(scored_row("answer from a tool result", source, "none", examples, results, seconds, score, eos_ids))
    return rows


def _rag_score(example: demo_data.Example, text: str) -> dict[str, bool]:
    return {"exact span": is_exact_span(text, example.answer), "contains span": contains_span(text, example.answer)}


def measure_rag(ev: Evaluator, count: int, eos_ids: Sequence[int]) -> list[ScoreRow]:
    rows = []
    for source, examples in (("generator held-out", demo_data.heldout_examples("rag", count)),
                             ("hand-written RAG_CASES", handwritten_rag_examples(count))):  # fmt: skip
        results, seconds = ev.generate(examples)
        rows.append(scored_row("RAG (extractive)", source, "none", examples, results, seconds, _text_scores(_rag_score), eos_ids))
    return rows


def measure_long(ev: Evaluator, count: int, min_tokens: int, eos_ids: Sequence[int]) -> tuple[list[ScoreRow], list[int]]:
    """Long generated RAG prompts (>= ``min_tokens`` prompt tokens): accuracy, and how many the engine took."""
    room = ev.engine.context_length - ev.max_new_tokens
    # A checkpoint whose room is smaller still gets prompts just over min_tokens: the engine must refuse them.
    found = long_rag_examples(ev.engine, count, min_tokens, room if room >= min_tokens else min_tokens + 1024)
    examples, lengths = [e for e, _ in found], [n for _, n in found]

    def score(example: demo_data.Example, result: Any) -> dict[str, bool]:
        marks = _rag_score(example, "" if result is None else result.text)
        marks["accepted"] = result is not None
        return marks

    results, seconds = ev.generate(examples)
    source = f"generated, {min(lengths)}–{max(lengths)} prompt tokens"
    return [scored_row("long RAG prompts", source, "none", examples, results, seconds, score, eos_ids)], lengths


STEP_CAPS = (1, 2, 4, None)


def measure_curve(ev: Evaluator, count: int, caps: Sequence[int | None] = STEP_CAPS) -> list[CurveRow]:
    """Denoising-step cap vs validity vs time, on the hand-written sets, with and without validators."""
    rows = []
    people = people_examples(demo_json.JSON_TEMPLATES_CITY, count)
    tools = handwritten_tool_examples(count, answer=False)
    rag = handwritten_rag_examples(count)
    for cap in caps:
        label = "default" if cap is None else str(cap)
        for validators in (False, True):
            results, seconds = ev.generate(people, validators=validators, steps=cap)
            texts = ["" if isinstance(r, Exception) else r.text for r in results]
            rows.append(CurveRow(
                "JSON persons (hand-written)", label, "`builtin.json`" if validators else "none", len(people),
                mean([float(is_schema_valid(t, RECORD_SCHEMA)) for t in texts]),
                mean([float(is_exact_answer(e, t)) for e, t in zip(people, texts)]), _steps(results), seconds,
            ))  # fmt: skip
            results, calls, seconds = ev.adapter_calls(tools, validators=validators, steps=cap)
            rows.append(CurveRow(
                "tool calls, forced (hand-written)", label, "`builtin.tool_call`" if validators else "none", len(tools),
                mean([float(are_valid_calls(c, tool_names(e))) for e, c in zip(tools, calls)]),
                mean([float(is_right_call(c, *expected_call(e))) for e, c in zip(tools, calls)]), _steps(results), seconds,
            ))  # fmt: skip
        results, seconds = ev.generate(rag, steps=cap)
        texts = ["" if isinstance(r, Exception) else r.text for r in results]
        rows.append(CurveRow("RAG (hand-written)", label, "none", len(rag), None,
                             mean([float(is_exact_span(t, e.answer)) for e, t in zip(rag, texts)]), _steps(results), seconds))  # fmt: skip
    order = list(dict.fromkeys(row.task for row in rows))
    return sorted(rows, key=lambda row: order.index(row.task))  # stable: caps in order within a task


def _steps(results: Sequence[Any]) -> float:
    return mean([float(r.stats.denoising_steps) for r in results if not isinstance(r, Exception)])


TASKS = ("loss", "short", "json", "open", "tool", "tool_answer", "rag", "long", "curve")


def parse_tasks(text: str) -> tuple[str, ...]:
    chosen = tuple(task.strip() for task in text.split(",") if task.strip())
    unknown = [task for task in chosen if task not in TASKS]
    if unknown:
        raise ValueError(f"--tasks: unknown {unknown}; choose from {', '.join(TASKS)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate the demo checkpoint (Markdown tables on stdout).")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="checkpoint directory")
    parser.add_argument("--count", type=int, default=40, help="prompts per set at most (hand-written sets have 40)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of: {', '.join(TASKS)}")
    parser.add_argument("--long-count", type=int, default=20, help="long RAG prompts")
    parser.add_argument("--long-min-tokens", type=int, default=2048, help="prompt tokens of a long RAG prompt at least")
    parser.add_argument("--curve-count", type=int, default=0, help="prompts per set in the steps curve (0: --count)")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="0: three canvases")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-running", type=int, default=16, help="requests denoised together")
    parser.add_argument("--unigram-examples", type=int, default=20_000, help="training examples for the unigram baseline")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruption draws in the loss")
    parser.add_argument("--check-contamination", metavar="SEED:STEPS[:SCALE[:WEIGHTS]]", action="append", default=[],
                        help="regenerate the batches of a training run (its --seed, its steps, its --batch-size / 48, "
                             "its --family-weights) and "
                             "count the examples holding a hand-written value; once per stage of a warm-started checkpoint")
    parser.add_argument("--json-out", type=Path, help="also write the raw numbers here")
    parser.add_argument("--write-results", action="store_true",
                        help="write the tables into the checkpoint's README.md and docs/demo-model.md")
    args = parser.parse_args(argv)
    try:
        tasks = parse_tasks(args.tasks)
    except ValueError as error:
        parser.error(str(error))
    try:
        runs = [demo_contamination.TrainRun.parse(text) for text in args.check_contamination]
    except ValueError as error:
        parser.error(str(error))

    contamination = None
    if runs:
        started = time.monotonic()
        contamination = demo_contamination.check_contamination(sets.handwritten_values(), runs)
        print(demo_contamination.contamination_report(contamination) + f" ({time.monotonic() - started:.0f} s)\n", flush=True)
        if not tasks:
            return 0

    from diffgemma_engine import Engine

    engine = Engine(model=str(args.model), device=args.device, max_running=args.max_running)
    losses: list[LossRow] = []
    rows: list[ScoreRow] = []
    curve: list[CurveRow] = []
    meta: dict[str, Any] = {}
    try:
        eos_ids = engine.loaded.defaults.eos_token_ids
        ev = Evaluator(engine, args.max_new_tokens or 3 * engine.canvas_length)
        if "loss" in tasks:
            counts = training_unigram(engine.tokenizer, engine.canvas_length, args.unigram_examples, seed=0)
            for task in demo_data.TASK_FORMATS:
                examples = demo_data.heldout_examples(task, args.count)
                losses.append(measure_losses(engine, examples, task, counts, args.seed))
        measures = {"short": measure_short, "json": measure_json, "open": measure_open_records, "tool": measure_tools,
                    "tool_answer": measure_tool_answers, "rag": measure_rag}  # fmt: skip
        for task in tasks:
            if task in measures:
                for row in measures[task](ev, args.count, eos_ids):
                    rows.append(row)
                    _print_progress(row)
        if "long" in tasks:
            long_rows, meta["long_lengths"] = measure_long(ev, args.long_count, args.long_min_tokens, eos_ids)
            rows += long_rows
        if "curve" in tasks:
            curve = measure_curve(ev, args.curve_count or args.count)
        measured = ("count", "tasks", "long_count", "long_min_tokens", "curve_count", "max_new_tokens", "seed", "unigram_examples")
        shown = [f"--{key.replace('_', '-')} {getattr(args, key)}" for key in measured
                 if getattr(args, key) != parser.get_default(key)]  # fmt: skip
        meta.update({"model_name": args.model.name, "device": engine.device, "count": args.count,
                     "max_new_tokens": ev.max_new_tokens, "context_length": engine.context_length,
                     "arguments": shown})  # fmt: skip
        report = markdown_report(losses, rows, curve, meta)
        if contamination is not None:
            report += "\n\n" + demo_contamination.contamination_report(contamination)
    finally:
        engine.shutdown()

    print(report)
    print("\nSamples (prompt end → answer):")
    for row in rows:
        print(f"\n{row.task} / {row.source} / {row.setting}:")
        for prompt, text in row.samples:
            print(f"  …{prompt!r} → {text!r}")
    if args.json_out:
        payload = {"meta": meta, "losses": [asdict(r) for r in losses], "sets": [asdict(r) for r in rows],
                   "curve": [asdict(r) for r in curve], "contamination": contamination and asdict(contamination)}  # fmt: skip
        args.json_out.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.write_results:
        write_results([args.model / "README.md", DOCS_PAGE], report)
    return 0


def _print_progress(row: ScoreRow) -> None:
    scores = ", ".join(f"{column} {pct(value)}" for column, value in row.scores)
    print(f"[{row.task} / {row.source} / {row.setting}] {scores}; {row.seconds:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
