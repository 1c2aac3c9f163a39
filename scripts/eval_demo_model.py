"""Measure the demo checkpoint on held-out prompts, with and without the JSON validator's in-place repair.

The checkpoint is loaded the way users load it, through its directory: ``Engine(model=DIR)``. On
``--count`` (50) held-out prompts of each task format (prompts that never occur in training, see
``scripts/demo_data.py``) it reports:

* the held-out **canvas-denoising loss** (the training objective: cross-entropy of the clean response
  canvas, no self-conditioning) at full corruption (t = 1, the canvas is pure noise, as at the first
  sampling step) and averaged over t = 1/8 … 1, against a **unigram baseline** (add-one smoothed token
  frequencies of response canvases from the training stream) on the same held-out canvases; "response"
  columns count only the response tokens (up to and including ``<turn|>``), "canvas" all positions;
* from generations (one seed per prompt, the checkpoint's sampler defaults): the fraction of generated
  words that are **real words** (a word is a run of ASCII letters; real means it is in the corpus
  vocabulary, :func:`demo_data.lexicon`), the fraction of answers that **end in EOS**, and the
  **exact-answer** rate (any right answer; JSON compared as parsed objects);
* for JSON records: the **valid-JSON** and **schema-valid** rates (against ``demo_data.PERSON_SCHEMA``)
  without validators, and with ``validators=("builtin.json",)`` (schema option, in-place repair,
  ``on_exhausted="return_flagged"``), with the extra denoising steps the repairs cost.

    python scripts/eval_demo_model.py                                  # the shipped checkpoint
    python scripts/eval_demo_model.py --model DIR --write-results      # and fill the model card + docs

The output is a Markdown table (and ``--json-out`` writes the raw numbers).
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# On a shared CPU, OpenMP threads that spin while waiting for a core make every step several times slower;
# passive waiting must be chosen before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_data  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "diffgemma_engine" / "model" / "demo"
DOCS_PAGE = REPO_ROOT / "docs" / "demo-model.md"
RESULTS_BEGIN = "<!-- demo-results:begin -->"
RESULTS_END = "<!-- demo-results:end -->"
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


@dataclass(frozen=True)
class GenerationRow:
    """Generation metrics of one task format under one validation setting."""

    task: str
    validators: str
    count: int
    real_words: float
    words: int
    ended_eos: float
    exact: float
    valid_json: float | None = None
    schema_valid: float | None = None
    flagged: float | None = None
    denoising_steps: float = 0.0
    extra_steps: float = 0.0
    repairs: float = 0.0
    seconds: float = 0.0


def generate_all(engine: Any, examples: Sequence[demo_data.Example], params_for: Any) -> list[Any]:
    """Submit every prompt at once (the engine batches them step by step) and collect the results."""
    streams = [
        engine.submit(messages=[{"role": "user", "content": example.prompt}], params=params_for(index))
        for index, example in enumerate(examples)
    ]
    return [stream.result() for stream in streams]


def summarise(task: str, validators: str, examples: Sequence[demo_data.Example], results: Sequence[Any], eos_ids: Sequence[int],
              lexicon: frozenset[str], seconds: float, schema: Mapping[str, Any] | None) -> GenerationRow:  # fmt: skip
    texts = [result.text for result in results]
    fraction, word_count = real_word_fraction(texts, lexicon)
    return GenerationRow(
        task=task,
        validators=validators,
        count=len(results),
        real_words=fraction,
        words=word_count,
        ended_eos=mean([float(ended_with_eos(r.finish_reason, r.stop_reason, eos_ids)) for r in results]),
        exact=mean([float(is_exact_answer(e, r.text)) for e, r in zip(examples, results)]),
        valid_json=None if schema is None else mean([float(is_valid_json(t)) for t in texts]),
        schema_valid=None if schema is None else mean([float(is_schema_valid(t, schema)) for t in texts]),
        flagged=mean([float(r.finish_reason == "validation_failed") for r in results]),
        denoising_steps=mean([float(r.stats.denoising_steps) for r in results]),
        extra_steps=mean([float(r.validation.extra_steps) for r in results]),
        repairs=mean([float(r.validation.repairs) for r in results]),
        seconds=seconds,
    )


@dataclass(frozen=True)
class LossRow:
    label: str
    model_t1: float
    model_t1_response: float
    model_avg: float
    model_avg_response: float
    unigram: float
    unigram_response: float


def measure_losses(engine: Any, examples: Sequence[demo_data.Example], label: str, train_counts: tuple[Counter[int], Counter[int]],
                   seed: int) -> LossRow:  # fmt: skip
    """Held-out canvas-denoising loss of the engine's model vs the unigram baseline, on ``examples``."""
    import torch

    import train_demo_model as trainer

    model, tokenizer = engine.loaded.model, engine.tokenizer
    canvas_length, vocab_size = engine.canvas_length, engine.loaded.vocab_size
    encoded = [trainer.encode_example(tokenizer, e) for e in examples]
    device = next(model.parameters()).device
    batches = [
        trainer._to_device(trainer.make_batch(encoded[i : i + 25], canvas_length, random.Random(i)), device)
        for i in range(0, len(encoded), 25)
    ]

    def loss_at(levels: Sequence[float]) -> tuple[float, float]:
        generator = torch.Generator().manual_seed(seed)
        all_positions, response = [], []
        with torch.no_grad():
            for level in levels:
                for batch in batches:
                    rates = torch.full((batch.canvas.shape[0],), level)
                    parts = trainer.diffusion_loss(model, batch, generator, rates=rates, self_conditioning_prob=0.0)
                    all_positions.append(float(parts.loss))
                    response.append(parts.content_loss)
        return mean(all_positions), mean(response)

    t1 = loss_at([1.0])
    average = loss_at([level / 8 for level in range(1, 9)])
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
    import train_demo_model as trainer

    canvases, responses = [], []
    for example in demo_data.TrainingStream(seed).take(examples):
        response = list(trainer.encode_example(tokenizer, example).response)
        responses.append(response)
        for start in range(0, len(response), canvas_length):
            block = response[start : start + canvas_length]
            canvases.append(block + [trainer.PAD_ID] * (canvas_length - len(block)))
    return unigram_counts(canvases), unigram_counts(responses)


# -- report -----------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.0f} %"


def markdown_report(model_dir: str, losses: Sequence[LossRow], rows: Sequence[GenerationRow], meta: Mapping[str, Any]) -> str:
    lines = [
        f"Measured by `python scripts/eval_demo_model.py` on `{meta['model_name']}` ({meta['device']}, "
        f"{meta['count']} held-out prompts per task format, seeds 0–{meta['count'] - 1}, sampler defaults from "
        f"`generation_config.json`, max_new_tokens {meta['max_new_tokens']}).",
        "",
        "Held-out canvas-denoising loss (nats per position; lower is better; no self-conditioning):",
        "",
        "| Task | model, t = 1 (canvas) | model, t = 1 (response) | model, mean t (canvas) | model, mean t (response) "
        "| unigram (canvas) | unigram (response) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in losses:
        lines.append(f"| {row.label} | {row.model_t1:.3f} | {row.model_t1_response:.3f} | {row.model_avg:.3f} | "
                     f"{row.model_avg_response:.3f} | {row.unigram:.3f} | {row.unigram_response:.3f} |")  # fmt: skip
    lines += [
        "",
        "Generations:",
        "",
        "| Task | validators | real words | ends in EOS | exact answer | valid JSON | schema-valid | flagged "
        "| denoising steps / answer | extra steps (repair) | repairs | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.task} | {row.validators} | {_pct(row.real_words)} ({row.words} words) | {_pct(row.ended_eos)} | {_pct(row.exact)} | "
            f"{_pct(row.valid_json)} | {_pct(row.schema_valid)} | {_pct(row.flagged)} | {row.denoising_steps:.1f} | "
            f"{row.extra_steps:.1f} | {row.repairs:.2f} | {row.seconds:.0f} s |"
        )
    return "\n".join(lines)


def replace_between_markers(text: str, body: str) -> str:
    """Replace what lies between the results markers in ``text`` with ``body`` (markers kept)."""
    start, end = text.find(RESULTS_BEGIN), text.find(RESULTS_END)
    if start < 0 or end < start:
        raise ValueError(f"the results markers {RESULTS_BEGIN} … {RESULTS_END} are missing")
    return text[: start + len(RESULTS_BEGIN)] + "\n" + body.strip() + "\n" + text[end:]


def write_results(paths: Iterable[Path], body: str) -> None:
    for path in paths:
        if path.is_file():
            path.write_text(replace_between_markers(path.read_text(encoding="utf-8"), body), encoding="utf-8")
            print(f"wrote the results into {path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate the demo checkpoint (Markdown table on stdout).")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="checkpoint directory")
    parser.add_argument("--count", type=int, default=50, help="held-out prompts per task format")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="0: two canvases")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-running", type=int, default=16, help="requests denoised together")
    parser.add_argument("--unigram-examples", type=int, default=20_000, help="training examples for the unigram baseline")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruption draws in the loss")
    parser.add_argument("--skip-repair", action="store_true", help="only measure without validators")
    parser.add_argument("--json-out", type=Path, help="also write the raw numbers here")
    parser.add_argument("--write-results", action="store_true",
                        help="write the table into the checkpoint's README.md and docs/demo-model.md")
    args = parser.parse_args(argv)

    from diffgemma_engine import Engine, SamplingParams

    engine = Engine(model=str(args.model), device=args.device, max_running=args.max_running)
    try:
        eos_ids = engine.loaded.defaults.eos_token_ids
        max_new_tokens = args.max_new_tokens or 2 * engine.canvas_length
        lexicon = demo_data.lexicon()
        schema = demo_data.PERSON_SCHEMA
        tasks = {task: demo_data.heldout_examples(task, args.count) for task in demo_data.TASK_FORMATS}

        counts = training_unigram(engine.tokenizer, engine.canvas_length, args.unigram_examples, seed=0)
        labels = {demo_data.SHORT: "short answers", demo_data.JSON: "JSON records"}
        losses = [measure_losses(engine, tasks[task], labels[task], counts, args.seed) for task in demo_data.TASK_FORMATS]

        rows = []
        plain = lambda index: SamplingParams(seed=index, max_new_tokens=max_new_tokens)  # noqa: E731
        repaired = lambda index: SamplingParams(  # noqa: E731
            seed=index, max_new_tokens=max_new_tokens, validators=("builtin.json",),
            validator_options={"builtin.json": {"schema": schema}}, on_exhausted="return_flagged",
        )  # fmt: skip
        settings = [("short answers", demo_data.SHORT, "none", plain, None),
                    ("JSON records", demo_data.JSON, "none", plain, schema)]  # fmt: skip
        if not args.skip_repair:
            settings.append(("JSON records", demo_data.JSON, "`builtin.json` + repair", repaired, schema))
        samples: dict[str, list[tuple[str, str]]] = {}
        for label, task, validators, params_for, row_schema in settings:
            started = time.monotonic()
            results = generate_all(engine, tasks[task], params_for)
            seconds = time.monotonic() - started
            rows.append(summarise(label, validators, tasks[task], results, eos_ids, lexicon, seconds, row_schema))
            samples[f"{label} / {validators}"] = [(e.prompt, r.text) for e, r in zip(tasks[task][:5], results[:5])]
        meta = {"model_name": args.model.name, "device": engine.device, "count": args.count, "max_new_tokens": max_new_tokens}
        report = markdown_report(str(args.model), losses, rows, meta)
    finally:
        engine.shutdown()

    print(report)
    print("\nSamples (prompt → answer):")
    for setting, pairs in samples.items():
        print(f"\n{setting}:")
        for prompt, text in pairs:
            print(f"  {prompt!r} → {text!r}")
    if args.json_out:
        payload = {"meta": meta, "losses": [vars(r) for r in losses], "generations": [vars(r) for r in rows], "samples": samples}
        args.json_out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    if args.write_results:
        write_results([args.model / "README.md", DOCS_PAGE], report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
