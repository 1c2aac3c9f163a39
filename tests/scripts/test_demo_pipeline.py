"""The demo-model pipeline: corpus generator, tokenizer, block-diffusion objective, eval metrics.

Fast (seconds): the models here are a few hundred thousand parameters. The full training run and its
measured numbers are in docs/demo-model.md.
"""

from __future__ import annotations

import json
import math
import random
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import demo_data  # noqa: E402
import demo_json  # noqa: E402
import demo_example  # noqa: E402
import demo_report  # noqa: E402
import eval_demo_model as evaluation  # noqa: E402
import demo_batches  # noqa: E402
import demo_contamination  # noqa: E402
import train_demo_model as training  # noqa: E402

TINY = training.ModelSize(
    vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
    global_head_dim=32, intermediate_size=96, num_experts=2, top_k_experts=1, moe_intermediate_size=32,
    canvas_length=16, sliding_window=128, max_position_embeddings=256,
)  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return training.train_tokenizer(training.tokenizer_corpus(training.TrainSettings(tokenizer_examples=2000)), 512)


# -- the corpus -------------------------------------------------------------------------------------


def test_training_stream_is_deterministic_and_seed_dependent():
    first = demo_data.TrainingStream(seed=7).take(300)
    again = demo_data.TrainingStream(seed=7).take(300)
    other = demo_data.TrainingStream(seed=8).take(300)
    assert first == again
    assert first != other
    assert demo_data.heldout_examples(demo_data.JSON, 20) == demo_data.heldout_examples(demo_data.JSON, 20)


def test_training_stream_resumes_from_saved_state():
    stream = demo_data.TrainingStream(seed=3)
    stream.take(50)
    state = stream.getstate()
    expected = stream.take(20)
    resumed = demo_data.TrainingStream(seed=3)
    resumed.setstate(state)
    assert resumed.take(20) == expected


def test_numbered_batches_depend_on_seed_and_index_alone():
    stream = demo_data.TrainingStream(seed=4)
    later_first = [stream.batch(i, 0.5) for i in (7, 3, 7)]
    fresh = demo_data.TrainingStream(seed=4)
    assert later_first[0] == later_first[2] == fresh.batch(7, 0.5)
    assert later_first[1] == fresh.batch(3, 0.5) != later_first[0]
    assert demo_data.TrainingStream(seed=5).batch(7, 0.5) != later_first[0]
    sizes = {len(demo_data.TrainingStream(seed=4).batch(i, 2.0)) for i in range(40)}
    assert sizes <= {round(2.0 * n) for n in demo_data.FAMILY_BATCH.values()} and len(sizes) > 2


def test_data_workers_make_the_same_batches_as_the_training_process(tokenizer):
    settings = training.TrainSettings(batch_size=12)
    maker = demo_batches.BatchMaker(tokenizer, settings, canvas_length=16)
    inline = demo_batches.BatchSource(maker)
    workers = demo_batches.BatchSource(maker, workers=2)
    try:
        for index in (0, 1, 2, 9, 10):  # a jump (a resumed run) restarts the prefetch at the new step
            expected, got = inline.batch(index), workers.batch(index)
            for name in ("prefix", "prefix_mask", "prefix_lengths", "canvas", "content"):
                assert torch.equal(getattr(expected, name), getattr(got, name)), (index, name)
    finally:
        workers.close()


def test_heldout_prompts_never_occur_in_training():
    train_space = {prompt for _, prompt in demo_data.short_prompts("train")}
    heldout_space = {prompt for _, prompt in demo_data.short_prompts("heldout")}
    assert heldout_space and not train_space & heldout_space
    sample = demo_data.TrainingStream(seed=0).take(20_000)
    sampled_prompts = {example.prompt for example in sample}
    heldout = demo_data.heldout_examples(demo_data.SHORT, 100) + demo_data.heldout_examples(demo_data.JSON, 100)
    others = [e for task in ("tool", "tool_answer", "rag") for e in demo_data.heldout_examples(task, 100)]
    assert not sampled_prompts & {example.prompt for example in heldout + others}
    # held-out names appear nowhere in training, prompts or answers
    held_names = set(demo_json.HELDOUT_NAMES)
    for example in sample:
        assert not held_names & set(demo_data.WORD_PATTERN.findall(example.prompt + " " + example.answer))
    assert all(example.task == demo_data.JSON for example in heldout[100:])
    assert all(json.loads(example.answer)["name"] in held_names for example in heldout[100:])


def _person_name(example: demo_data.Example) -> str:
    return json.loads(example.answer)["name"]


def test_person_names_are_generated_and_validation_is_seeded_and_apart():
    sample = demo_data.TrainingStream(seed=0).take(3000, family="json")
    names = [_person_name(example) for example in sample if example.kind == "person"]
    assert len(names) > 1000
    assert len(set(names)) > 0.9 * len(names)  # a generated name is almost never seen twice
    assert not set(names) & set(demo_json.HELDOUT_NAMES)
    validation = demo_data.validation_examples(64)
    assert [e.prompt for e in demo_data.validation_examples(64)] == [e.prompt for e in validation]  # seeded
    assert {e.task for e in validation} == {demo_data.JSON, "tool", "rag"}
    assert {e.kind for e in validation if e.task == "tool"} == {"call", "answer"}
    training_prompts = {e.prompt for e in demo_data.TrainingStream(seed=0).take(5000)}
    heldout_prompts = {e.prompt for task in demo_data.TASK_FORMATS for e in demo_data.heldout_examples(task, 50)}
    assert not {e.prompt for e in validation} & (training_prompts | heldout_prompts)
    for example in validation:
        if example.kind == "person":
            assert _person_name(example) not in demo_json.HELDOUT_NAMES


def test_every_heldout_short_prompt_asks_a_trained_fact():
    trained = {(fact.kind, fact.key) for fact, _ in demo_data.short_prompts("train")}
    for fact, _ in demo_data.short_prompts("heldout"):
        assert (fact.kind, fact.key) in trained


def test_json_answers_copy_the_prompt_unless_the_model_fills_them_in():
    kinds = set()
    for example in demo_data.TrainingStream(seed=1).take(1500, family="json"):
        kinds.add(example.kind)
        record = json.loads(example.answer)
        assert isinstance(record, dict) and example.answer in example.answers
        if example.kind == "invented":  # nothing to copy: the schema's shape (test_demo_corpus checks it)
            continue
        if example.kind == "person":
            assert record["name"] in example.prompt and str(record["age"]) in example.prompt
            if record["city"] not in example.prompt:  # a prompt that names no city: any open city is right
                assert {json.loads(a)["city"] for a in example.answers} == set(demo_json.OPEN_CITIES)
        else:  # a record of generated keys: every value is said in the prompt
            for value in record.values():
                assert demo_example.spoken(value) in example.prompt, (value, example.prompt)
    assert kinds == {"person", "record", "invented"}


def test_short_answers_are_sentences_of_lexicon_words():
    lexicon = demo_data.lexicon()
    for example in demo_data.TrainingStream(seed=2).take(2000):
        if example.task == demo_data.SHORT:
            assert example.answer.endswith(".") and example.answer in example.answers
            if example.kind == demo_data.REPEAT:  # a generated name (of any shape), copied from the prompt
                assert example.answer[:-1] in example.prompt
                assert example.answer[:-1] not in demo_json.HELDOUT_NAMES
            else:
                assert all(word in lexicon for word in demo_data.words(example.answer))


# -- tokenizer and data -----------------------------------------------------------------------------


def test_tokenizer_keeps_gemma_special_ids_and_chat_format(tokenizer):
    for token_id, token in training.SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (0, 1, 2)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Name a fruit."}], tokenize=False,
                                         add_generation_prompt=True)  # fmt: skip
    assert text == "<bos><|turn>user\nName a fruit.<turn|>\n<|turn>model\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[:2] == [2, 105] and ids.count(105) == 2 and ids.count(106) == 1
    record = '{"name": "Igor", "age": 35, "city": "Oslo"}'
    assert tokenizer.decode(tokenizer(record, add_special_tokens=False)["input_ids"]) == record


def test_a_name_is_the_same_tokens_in_the_prompt_and_in_the_json_answer(tokenizer):
    people = demo_data.heldout_examples(demo_data.JSON, 20) + demo_data.TrainingStream(9).take(60, family="json")
    people = [example for example in people if example.kind == "person" and _person_name(example).isascii()]
    assert len(people) > 30
    for example in people:
        name = tokenizer.tokenize(_person_name(example))
        for text in (example.prompt, example.answer):
            tokens = tokenizer.tokenize(text)
            assert any(tokens[i : i + len(name)] == name for i in range(len(tokens))), (text, name)


def test_a_non_ascii_name_is_copied_verbatim_into_the_json_answer():
    people = [e for e in demo_data.TrainingStream(9).take(200, family="json") if e.kind == "person"]
    accented = [e for e in people if not _person_name(e).isascii()]
    assert len(accented) > 5
    for example in accented:
        assert _person_name(example) in example.answer


def test_make_batch_places_response_canvas_after_its_prefix(tokenizer):
    long = demo_batches.Encoded(prompt=(2, 105, 7), response=tuple(range(200, 221)) + (demo_batches.END_OF_TURN_ID,))
    short = demo_batches.Encoded(prompt=(2, 105, 7, 8, 9), response=(300, demo_batches.END_OF_TURN_ID))
    seen_blocks = set()
    for seed in range(20):
        batch = demo_batches.make_batch([long, short], canvas_length=8, rng=random.Random(seed))
        start = int(batch.prefix_lengths[0]) - len(long.prompt)
        seen_blocks.add(start // 8)
        assert batch.prefix[0, : batch.prefix_lengths[0]].tolist() == list(long.prompt + long.response[:start])
        assert batch.canvas[0].tolist()[: len(long.response[start : start + 8])] == list(long.response[start : start + 8])
        assert batch.canvas[1].tolist() == [300, demo_batches.END_OF_TURN_ID] + [demo_batches.PAD_ID] * 6
        assert batch.content[1].tolist() == [True, True] + [False] * 6
        assert not batch.prefix_mask[1, 5:].any() and batch.prefix_mask[1, :5].all()
    assert seen_blocks == {0, 1, 2}  # 22 response tokens = three canvases of 8


def test_corruption_replaces_tokens_at_the_given_rate():
    generator = torch.Generator().manual_seed(0)
    canvas = torch.full((4, 4000), 7)
    rates = torch.tensor([0.0, 0.25, 0.75, 1.0])
    noisy = training.corrupt(canvas, rates, vocab_size=1000, generator=generator)
    changed = (noisy != canvas).float().mean(dim=1)
    assert changed[0] == 0
    expected = rates * (1 - 1 / 1000)  # a replacement draws the original token 1 time in 1000
    assert torch.allclose(changed[1:], expected[1:], atol=0.03)
    assert noisy[3].unique().numel() > 900  # uniform over the vocabulary, no mask token


# -- the objective ----------------------------------------------------------------------------------


def _tiny_batch(tokenizer, count: int = 8) -> demo_batches.Batch:
    examples = [demo_batches.encode_example(tokenizer, e) for e in demo_data.TrainingStream(seed=5).take(count, family="json")]
    return demo_batches.make_batch(examples, TINY.canvas_length, random.Random(0))


def test_self_conditioning_is_trained_only_where_the_mask_enables_it(tokenizer):
    model = training.build_model(TINY, seed=0)
    batch = _tiny_batch(tokenizer, 4)
    sc = model.model.decoder.self_conditioning
    for probability, expect_gradient in ((0.0, False), (1.0, True)):
        model.zero_grad(set_to_none=False)
        parts = training.diffusion_loss(model, batch, torch.Generator().manual_seed(0), self_conditioning_prob=probability)
        parts.loss.backward()
        gradient = sc.gate_proj.weight.grad.abs().sum().item()
        assert (gradient > 0) == expect_gradient
        assert parts.self_conditioned == (4 if expect_gradient else 0)


def test_objective_overfits_a_tiny_batch(tokenizer):
    model = training.build_model(TINY, seed=0)
    settings = training.TrainSettings(lr=3e-3, warmup_steps=1, batch_size=8)
    optimizer = training.make_optimizer(model, settings)
    batch = _tiny_batch(tokenizer)
    rates = torch.full((8,), 0.7)

    def measured() -> float:
        with torch.no_grad():
            return float(training.diffusion_loss(model, batch, torch.Generator().manual_seed(1), rates=rates,
                                                 self_conditioning_prob=0.0).loss)  # fmt: skip

    before = measured()
    generator = torch.Generator().manual_seed(2)
    for step in range(30):
        training.train_step(model, optimizer, batch, generator, settings, settings.lr)
    after = measured()
    assert before > 5.0  # ~log(512) at initialisation
    assert after < 0.5 * before


def test_learning_rate_warms_up_holds_then_decays_to_the_floor():
    settings = training.TrainSettings(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    rates = [training.learning_rate(step, 100, 50, settings) for step in range(101)]
    assert rates[0] < rates[9] == pytest.approx(1e-3)
    assert rates[10:51] == [pytest.approx(1e-3)] * 41
    assert all(a > b for a, b in zip(rates[50:], rates[51:]))
    assert rates[100] == pytest.approx(1e-4)
    assert training.learning_rate(5000, None, 0, settings) == pytest.approx(1e-3)  # total not decided yet


# Every test run decodes two noisy copies of each canvas and shifts half the canvases off block boundaries,
# so resuming must restore the draws those make too.
CANVAS_ARGS = ("--canvas-repeats=2", "--canvas-shift=0.5")


def _train(tmp_path: Path, name: str, *extra: str, work: str | None = None) -> Path:
    out = tmp_path / name
    size_args = [f"--{k.replace('_', '-')}={v}" for k, v in asdict(TINY).items()]
    heldout, validation = demo_data.heldout_examples, demo_data.validation_examples
    with pytest.MonkeyPatch.context() as patch:  # small evaluation sets: these runs test the mechanics
        patch.setattr(demo_data, "heldout_examples", lambda task, count, seed=1234: heldout(task, min(count, 4), seed))
        patch.setattr(demo_data, "validation_examples", lambda count, seed=4321: validation(min(count, 8), seed))
        code = training.main([f"--out={out}", f"--work-dir={tmp_path / (work or name + '-work')}", "--batch-size=4",
                              "--tokenizer-examples=500", "--eval-every=1000", "--decay-steps=0", *CANVAS_ARGS,
                              *size_args, *extra])  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("demo"), "straight", "--max-steps=2")


def test_exported_checkpoint_loads_through_its_directory(exported):
    from diffgemma_engine import Engine, SamplingParams

    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {
        p.name for p in exported.iterdir()
    }
    generation = json.loads((exported / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [1, 106, 50]
    assert generation["sampler_config"]["entropy_bound"] == 0.1
    card = (exported / "README.md").read_text()
    assert demo_report.RESULTS_BEGIN in card and demo_report.RESULTS_END in card
    engine = Engine(model=str(exported))
    try:
        assert engine.canvas_length == TINY.canvas_length
        result = engine.generate(messages=[{"role": "user", "content": "Name a fruit."}],
                                 params=SamplingParams(seed=0, max_new_tokens=8, max_denoising_steps=2))  # fmt: skip
        assert result.usage.completion_tokens <= 8
    finally:
        engine.shutdown()


def test_interrupted_and_resumed_run_matches_a_straight_run(exported, tmp_path):
    from safetensors.torch import load_file

    _train(tmp_path, "first-half", "--max-steps=1", work="shared-work")
    resumed = _train(tmp_path, "resumed", "--max-steps=2", "--resume", work="shared-work")
    straight, again = load_file(exported / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert straight.keys() == again.keys()
    assert all(torch.equal(straight[name], again[name]) for name in straight)
    first = load_file(tmp_path / "first-half" / "model.safetensors")
    assert not all(torch.equal(first[name], straight[name]) for name in straight)  # the second step did change it
    recipe = torch.load(tmp_path / "shared-work" / "state.pt", weights_only=False)["recipe"]["settings"]
    assert (recipe["canvas_repeats"], recipe["canvas_shift"]) == (2, 0.5)


def test_a_warm_start_keeps_the_tokenizer_and_lists_every_stage_in_the_card(exported, tmp_path):
    from safetensors.torch import load_file

    out = _train(tmp_path, "warm", f"--init-from={exported}", "--max-steps=1", "--lr=1e-9", "--warmup-steps=1")
    assert (out / "tokenizer.json").read_bytes() == (exported / "tokenizer.json").read_bytes()
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert not set(training.LOAD_OPTIONS) & set(config)  # how it was loaded is not part of the checkpoint
    before, after = load_file(exported / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.allclose(before[name], after[name], atol=1e-6) for name in before)  # started from it
    card = (out / "README.md").read_text()
    block = card.split("Reproduce with:", 1)[1].split("```", 2)[1]
    assert block.count(training.STAGES_HEADER) == 1
    assert f"# then, from the checkpoint above (--out of the line before: {exported})" in block
    assert block.count("python scripts/train_demo_model.py") == 2 and f"--init-from {exported}" in block


def test_the_export_is_the_step_with_the_lowest_validation_loss(tmp_path):
    from safetensors.torch import load_file

    out = _train(tmp_path, "picked", "--max-steps=4", "--eval-every=1", "--lr=0.05", "--warmup-steps=1")
    log = json.loads((tmp_path / "picked-work" / "train_log.json").read_text())
    losses = {entry["step"]: entry["validation_content_loss"] for entry in log}
    assert sorted(losses) == [1, 2, 3, 4]
    best_step = min(losses, key=losses.get)
    assert f"| exported weights | step {best_step} " in (out / "README.md").read_text()
    best = torch.load(tmp_path / "picked-work" / "best.pt", weights_only=True)
    exported = load_file(out / "model.safetensors")
    assert all(torch.equal(exported[name], best[name]) for name in exported)


# -- eval metrics -----------------------------------------------------------------------------------


def test_family_weights_replace_the_named_families_only_and_name_a_bad_one():
    weights = demo_data.family_weights("tool_answer=0.3, long=0")
    assert weights == {**demo_data.FAMILY_WEIGHTS, "tool_answer": 0.3, "long": 0.0}
    assert demo_data.family_weights("") == demo_data.FAMILY_WEIGHTS
    for bad, named in (("tools=1", "'tools'"), ("json=x", "'json=x'"), ("rag=-1", "rag"), ("rag=nan", "rag")):
        with pytest.raises(ValueError, match=named):
            demo_data.family_weights(bad)
    with pytest.raises(ValueError, match="every family"):
        demo_data.family_weights(",".join(f"{family}=0" for family in demo_data.FAMILIES))
    with pytest.raises(SystemExit):
        training.parse_args(["--family-weights", "tools=1"])


def test_a_run_with_family_weights_draws_its_batches_from_those_families_only():
    only_json = ",".join(f"{family}={int(family == 'json')}" for family in demo_data.FAMILIES)
    settings = training.TrainSettings(seed=5, family_weights=only_json)
    maker = demo_batches.BatchMaker(None, settings, canvas_length=32)
    assert {e.task for i in range(12) for e in maker.stream.batch(i)} == {demo_data.JSON}
    run = demo_contamination.TrainRun.parse(f"5:12:1:{only_json}")  # the contamination check draws the same
    stream = demo_data.TrainingStream(run.seed, demo_data.family_weights(run.weights))
    assert [e.prompt for e in stream.batch(3)] == [e.prompt for e in maker.stream.batch(3)]


def test_contamination_check_regenerates_the_numbered_batches_of_each_stage():
    runs = [demo_contamination.TrainRun.parse("3:2"), demo_contamination.TrainRun.parse("4:1:0.5")]
    assert runs[1] == demo_contamination.TrainRun(4, 1, 0.5)
    for bad in ("3", "a:2", "1:2:x", "1:2:3:4"):
        with pytest.raises(ValueError, match="SEED:STEPS"):
            demo_contamination.TrainRun.parse(bad)
    trained = [*demo_data.TrainingStream(3).batch(0), *demo_data.TrainingStream(3).batch(1),
               *demo_data.TrainingStream(4).batch(0, 0.5)]  # fmt: skip
    planted = trained[-1].answer.strip(".").split()[-1]  # a word of the last stage's last example
    found = demo_contamination.check_contamination([planted], runs)
    assert (found.steps, found.examples) == (3, len(trained))
    assert found.contaminated >= 1 and found.hits[0][0] == planted.lower()
    assert demo_contamination.check_contamination(["Zyxwvutsrq"], runs).contaminated == 0


def test_real_word_fraction_counts_words_in_the_lexicon():
    lexicon = frozenset({"seven", "cold", "name", "age", "city", "paris"})
    fraction, count = evaluation.real_word_fraction(["Seven.", "Cold blorp", '{"name": "Paris", "age": 3}'], lexicon)
    assert count == 6 and fraction == pytest.approx(5 / 6)  # seven cold blorp name paris age
    assert math.isnan(evaluation.real_word_fraction(["42", ""], lexicon)[0])
    assert {"seven", "paris", "name", "opposite", "beatrice"} <= demo_data.lexicon()
    assert "blorp" not in demo_data.lexicon()


def test_json_validity_and_schema_validity():
    schema = demo_json.PERSON_SCHEMA
    good = ' {"name": "Igor", "age": 35, "city": "Oslo"}\n'
    assert evaluation.is_valid_json(good) and evaluation.is_schema_valid(good, schema)
    assert evaluation.is_valid_json('{"name": "Igor", "age": 35}')
    assert not evaluation.is_schema_valid('{"name": "Igor", "age": 35}', schema)  # city missing
    assert not evaluation.is_schema_valid('{"name": "Igor", "age": 35, "city": "Atlantis"}', schema)  # not in the enum
    assert not evaluation.is_schema_valid('{"name": "Igor", "age": "35", "city": "Oslo"}', schema)  # age a string
    assert not evaluation.is_valid_json('{"name": "Igor", "age": 35, "city": "Oslo"')
    assert not evaluation.is_valid_json("Seven.")


def test_exact_answer_compares_text_and_parsed_records():
    short = demo_data.Example(demo_data.SHORT, "arithmetic", "What is three plus four?", "Seven.", ("Seven.",))
    assert evaluation.is_exact_answer(short, " seven. ")
    assert not evaluation.is_exact_answer(short, "Eight.")
    record = demo_json.person_record("Igor", 35, "Oslo")
    person = demo_data.Example(demo_data.JSON, "person", "…", record, (record,))
    assert evaluation.is_exact_answer(person, '{"city":"Oslo","name":"Igor","age":35}')
    assert not evaluation.is_exact_answer(person, '{"name": "Igor", "age": 36, "city": "Oslo"}')
    assert not evaluation.is_exact_answer(person, "not json")


def test_ended_with_eos_needs_an_eos_token_stop():
    assert evaluation.ended_with_eos("stop", 106, (1, 106, 50))
    assert not evaluation.ended_with_eos("stop", "\n\n", (1, 106, 50))  # a stop string
    assert not evaluation.ended_with_eos("length", None, (1, 106, 50))
    assert not evaluation.ended_with_eos("validation_failed", 106, (1, 106, 50))


def test_unigram_cross_entropy_by_hand():
    counts = evaluation.unigram_counts([[5, 5, 5], [6]])  # 5: 3, 6: 1; add-one over 4 ids → total 8
    loss = evaluation.unigram_cross_entropy(counts, [5, 7], vocab_size=4)
    assert loss == pytest.approx((-math.log(4 / 8) - math.log(1 / 8)) / 2)


def test_open_record_sets_state_each_schema_as_the_adapters_do():
    from diffgemma_adapters.formats import schema_instruction

    generated, handwritten = evaluation.open_record_sets(12)
    assert [len(generated[1]), len(handwritten[1])] == [12, 12]
    for example, case in zip(handwritten[1], evaluation.sets.OPEN_CASES):
        assert example.system == schema_instruction(case.schema)
        assert evaluation.stated_schema(example) == case.schema
    for example in generated[1]:
        record = json.loads(example.answer)  # the generator's own target meets the schema it states
        assert evaluation.is_schema_valid(example.answer, evaluation.stated_schema(example)), record


def test_results_are_written_between_the_markers():
    text = f"# Card\n\n{demo_report.RESULTS_BEGIN}\nold\n{demo_report.RESULTS_END}\n\nrest\n"
    updated = demo_report.replace_between_markers(text, "| new | table |\n")
    assert updated == f"# Card\n\n{demo_report.RESULTS_BEGIN}\n| new | table |\n{demo_report.RESULTS_END}\n\nrest\n"
    with pytest.raises(ValueError):
        demo_report.replace_between_markers("no markers", "x")
