"""Contamination of the demo model's training data: regenerate the batches a run trained on and count the
examples that hold a hand-written evaluation value (``scripts/eval_demo_model.py --check-contamination``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import demo_data
from demo_example import example_text
from demo_values import value_pattern


@dataclass(frozen=True)
class TrainRun:
    """One training stage as ``train_demo_model.py`` ran it: its ``--seed``, its steps, its batch scale
    (``--batch-size`` / 48) and its ``--family-weights``; its batch ``i`` is
    ``TrainingStream(seed, family_weights(weights)).batch(i, scale)``."""

    seed: int
    steps: int
    scale: float = 1.0
    weights: str = ""

    @classmethod
    def parse(cls, text: str) -> TrainRun:
        """``SEED:STEPS``, ``SEED:STEPS:SCALE`` or ``SEED:STEPS:SCALE:WEIGHTS`` (``--family-weights``' text)."""
        parts = text.split(":")
        reason = ""
        if 2 <= len(parts) <= 4:
            try:
                run = cls(int(parts[0]), int(parts[1]), float(parts[2]) if len(parts) >= 3 else 1.0,
                          parts[3] if len(parts) == 4 else "")  # fmt: skip
                demo_data.family_weights(run.weights)
                return run
            except ValueError as error:
                reason = f": {error}"
        raise ValueError(f"a training run is SEED:STEPS[:SCALE[:WEIGHTS]] (integers, a number, --family-weights' "
                         f"text), not {text!r}{reason}")  # fmt: skip


@dataclass(frozen=True)
class Contamination:
    steps: int
    examples: int
    contaminated: int
    hits: tuple[tuple[str, int], ...]  # (value as found, lower-cased; examples holding it), most first
    snippets: tuple[str, ...] = ()  # the text around the first few finds


def check_contamination(values: Iterable[str], runs: Sequence[TrainRun]) -> Contamination:
    """Regenerate the batches of the training ``runs`` exactly as ``train_demo_model.py`` drew them and
    count the examples whose text holds a hand-written value as a whole word."""
    pattern = value_pattern(values)
    examples = contaminated = steps = 0
    hits: Counter[str] = Counter()
    snippets: list[str] = []
    for run in runs:
        stream = demo_data.TrainingStream(run.seed, demo_data.family_weights(run.weights))
        steps += run.steps
        for step in range(run.steps):
            for example in stream.batch(step, run.scale):
                examples += 1
                text = example_text(example)
                matches = [] if pattern is None else list(pattern.finditer(text))
                contaminated += bool(matches)
                hits.update({match.group(0).lower() for match in matches})
                if matches and len(snippets) < 5:
                    snippets.append(text[max(0, matches[0].start() - 40) : matches[0].end() + 40].replace("\n", " "))
    return Contamination(steps, examples, contaminated, tuple(hits.most_common()), tuple(snippets))


def contamination_report(found: Contamination) -> str:
    top = ", ".join(f"{value} ({count})" for value, count in found.hits[:15]) or "none"
    return (f"Contamination: {found.contaminated} of {found.examples} training examples ({found.steps} steps) hold a "
            f"hand-written value as a whole word; most frequent: {top}."
            + "".join(f"\n- …{snippet}…" for snippet in found.snippets))  # fmt: skip
