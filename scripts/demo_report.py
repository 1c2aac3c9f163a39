"""The demo checkpoint's evaluation results as values and as Markdown: the rows ``eval_demo_model.py``
measures (held-out losses, scored sets, the denoising-steps curve), the tables they make, and the writing of
those tables between the results markers of the model card and docs/demo-model.md."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo_card import RESULTS_BEGIN, RESULTS_END


@dataclass(frozen=True)
class LossRow:
    """The held-out canvas-denoising loss of one task: the model's at t = 1 and averaged over t, and a unigram
    baseline's, over the canvas and over the response positions alone."""

    label: str
    model_t1: float
    model_t1_response: float
    model_avg: float
    model_avg_response: float
    unigram: float
    unigram_response: float


@dataclass(frozen=True)
class ScoreRow:
    """One evaluation set under one setting: each score is the fraction of requests that met it."""

    task: str
    source: str
    setting: str
    count: int
    scores: tuple[tuple[str, float], ...]
    denoising_steps: float
    extra_steps: float
    seconds: float
    samples: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CurveRow:
    """One point of the denoising-steps curve: a task under a step cap, with or without its validator."""

    task: str
    cap: str
    validators: str
    count: int
    valid: float | None
    exact: float
    denoising_steps: float
    seconds: float


# -- Markdown ----------------------------------------------------------------------------------------------


def pct(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.0f} %"


def _num(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f}"


def _score_tables(rows: Sequence[ScoreRow]) -> list[str]:
    lines: list[str] = []
    for task in dict.fromkeys(row.task for row in rows):
        group = [row for row in rows if row.task == task]
        columns = list(dict.fromkeys(column for row in group for column, _ in row.scores))
        lines += ["", f"{task}:", "",
                  "| set | validators | n | " + " | ".join(columns) + " | denoising steps / answer | wall time |",
                  "|---|---|---|" + "---|" * len(columns) + "---|---|"]  # fmt: skip
        for row in group:
            scores = dict(row.scores)
            cells = " | ".join(pct(scores.get(column)) for column in columns)
            lines.append(f"| {row.source} | {row.setting} | {row.count} | {cells} | {_num(row.denoising_steps)} | {row.seconds:.0f} s |")
    return lines


def markdown_report(losses: Sequence[LossRow], rows: Sequence[ScoreRow], curve: Sequence[CurveRow],
                    meta: Mapping[str, Any]) -> str:  # fmt: skip
    lines = [
        f"Measured by `{' '.join(['python scripts/eval_demo_model.py', *meta['arguments']])}` on `{meta['model_name']}` ({meta['device']}; "
        f"up to {meta['count']} prompts per set, rendered as the adapters render them, one seed per prompt (its index), "
        f"sampler defaults from `generation_config.json`, max_new_tokens {meta['max_new_tokens']}, every request of a set "
        f"submitted at once). Generator sets come from `scripts/demo_data.py`'s held-out split; hand-written sets from "
        f"`scripts/demo_eval_sets.py`, a separate source whose values the generator never draws.",
    ]
    if losses:
        lines += [
            "", "Held-out canvas-denoising loss (nats per position; lower is better; no self-conditioning):", "",
            "| Task | model, t = 1 (canvas) | model, t = 1 (response) | model, mean t (canvas) | model, mean t (response) "
            "| unigram (canvas) | unigram (response) |",
            "|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for row in losses:
            lines.append(f"| {row.label} | {row.model_t1:.3f} | {row.model_t1_response:.3f} | {row.model_avg:.3f} | "
                         f"{row.model_avg_response:.3f} | {row.unigram:.3f} | {row.unigram_response:.3f} |")  # fmt: skip
    lines += _score_tables(rows)
    if meta.get("long_lengths"):
        lengths = sorted(meta["long_lengths"])
        lines += ["", f"Long prompts: {len(lengths)} prompts of {lengths[0]}–{lengths[-1]} tokens (median "
                      f"{lengths[len(lengths) // 2]}); prompt room of the checkpoint: {meta['context_length']} tokens "
                      f"(prompt plus response)."]  # fmt: skip
    if curve:
        lines += [
            "", "Denoising steps vs validity vs time (hand-written sets; cap = `max_denoising_steps` per canvas; tool calls "
            "forced as `tool_choice=<tool>` forces them; valid = schema-valid JSON / every call parses and names an "
            "offered tool):", "",
            "| task | step cap | validators | n | valid | exact | denoising steps / answer | wall time |",
            "|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for row in curve:
            lines.append(f"| {row.task} | {row.cap} | {row.validators} | {row.count} | {pct(row.valid)} | {pct(row.exact)} "
                         f"| {_num(row.denoising_steps)} | {row.seconds:.0f} s |")  # fmt: skip
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
