"""Does a demo checkpoint copy from the prompt? A teacher-forced probe, one decoder pass per corruption rate.

For JSON prompts naming people the model never saw (the validation split's generated names, or the
eval's held-out names) the clean answer canvas is corrupted at a fixed rate and decoded once without
self-conditioning; the probe counts how often the argmax at the name, age and city tokens is the right
token. It does the same for the first token of "Repeat after me: NAME." answers. A model that only keeps
the uncorrupted tokens scores about ``1 - rate`` at every slot; copying from the prompt shows as a
score above that, most clearly at rate 1 (a canvas of pure noise, where nothing is left to keep).

    python scripts/probe_copying.py                       # the shipped demo checkpoint
    python scripts/probe_copying.py --model DIR --names heldout
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_data  # noqa: E402
import demo_json  # noqa: E402
import demo_batches  # noqa: E402
import train_demo_model as training  # noqa: E402

RATES = (1.0, 0.5, 0.1)
FIELDS = ("name", "age", "city")


def _span(tokens: list[int], piece: list[int], after: int = 0) -> int | None:
    for start in range(after, len(tokens) - len(piece) + 1):
        if tokens[start : start + len(piece)] == piece:
            return start
    return None


def probe(model_dir: Path, names: str = "validation", count: int = 48, seed: int = 0) -> dict[str, dict[float, float]]:
    """Accuracy per slot (``name``, ``age``, ``city``, ``repeat``) and corruption rate."""
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(model_dir).eval()
    canvas_length = int(model.config.canvas_length)
    vocab = int(model.config.text_config.vocab_size)
    if names == "validation":
        records = demo_data.validation_examples(count)
    else:
        records = demo_data.heldout_examples(demo_data.JSON, count)
    rng = random.Random(seed)
    repeats = [demo_data._repeat_example(rng, demo_json._generated_name(rng, "validation")) for _ in range(count)]
    generator = torch.Generator().manual_seed(seed)
    scores: dict[str, dict[float, float]] = {slot: {} for slot in (*FIELDS, "repeat")}
    for examples, slots in ((records, FIELDS), (repeats, ("repeat",))):
        batch = demo_batches.make_batch([demo_batches.encode_example(tokenizer, e) for e in examples], canvas_length,
                                    random.Random(seed))  # fmt: skip
        for rate in RATES:
            noisy = training.corrupt(batch.canvas, torch.full((len(examples),), rate), vocab, generator)
            with torch.no_grad():
                logits = training.decode_canvas(model, training.encode_prefix(model, batch), batch, noisy)
            predicted = logits.argmax(-1)
            for slot in slots:
                right = total = 0
                for row, example in enumerate(examples):
                    tokens = batch.canvas[row].tolist()
                    if slot == "repeat":
                        positions = [0]
                    else:
                        value = str(json.loads(example.answer)[slot])
                        piece = tokenizer.encode(value, add_special_tokens=False)
                        start = _span(tokens, piece, after=_span(tokens, tokenizer.encode(slot, add_special_tokens=False)) or 0)
                        if start is None:
                            continue
                        positions = list(range(start, start + len(piece)))
                    right += sum(int(predicted[row, p] == tokens[p]) for p in positions)
                    total += len(positions)
                scores[slot][rate] = right / total if total else float("nan")
    return scores


def main(argv: Sequence[str] | None = None) -> int:
    from diffgemma_engine.model.registry import DEMO_DIRECTORY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEMO_DIRECTORY)
    parser.add_argument("--names", choices=("validation", "heldout"), default="validation")
    parser.add_argument("--count", type=int, default=48)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scores = probe(args.model, args.names, args.count)
    print("| slot | " + " | ".join(f"rate {rate:g} (uncorrupted share {1 - rate:.0%})" for rate in RATES) + " |")
    print("|---|" + "---|" * len(RATES))
    for slot, by_rate in scores.items():
        print(f"| {slot} | " + " | ".join(f"{by_rate[rate]:.0%}" for rate in RATES) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
