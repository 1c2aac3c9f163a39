"""Quality cost of weight-only quantization on the trained demo checkpoint: held-out denoising loss.

Loads the shipped demo checkpoint in fp32 and with each quantization mode (through the engine's own
loader), and computes the held-out canvas-denoising loss exactly as the training script reports it
(8 corruption levels, fixed seed, the held-out prompts of ``scripts/demo_data.py``). Prints a Markdown
table with each mode's loss and its difference from fp32.

Usage: ``python benchmarks/bench_quantization_quality.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import demo_data  # noqa: E402
import demo_batches  # noqa: E402
import train_demo_model as training  # noqa: E402

from diffgemma_engine.model.loader import load_model  # noqa: E402
from diffgemma_engine.model.quantization import held_parameter_bytes  # noqa: E402
from diffgemma_engine.model.registry import DEMO_DIRECTORY  # noqa: E402


def main() -> None:
    rows = []
    for mode in (None, "int8", "int4"):
        loaded = load_model(str(DEMO_DIRECTORY), "cpu", torch.float32, mode)
        examples = demo_data.heldout_examples(demo_data.SHORT, 64) + demo_data.heldout_examples(demo_data.JSON, 64)
        batches = demo_batches.fixed_batches(loaded.tokenizer, examples, loaded.canvas_length, torch.device("cpu"))
        loss, content = training.heldout_loss(loaded.model, batches, seed=0)
        rows.append((mode or "fp32", loss, content, held_parameter_bytes(loaded.model)))
    base_loss, base_content, base_bytes = rows[0][1], rows[0][2], rows[0][3]
    print("| weights | parameter bytes held | held-out loss (all positions) | Δ vs fp32 | response positions | Δ vs fp32 |")
    print("|---|---|---|---|---|---|")
    for mode, loss, content, size in rows:
        print(f"| {mode} | {size / 1e6:.1f} MB ({base_bytes / size:.2f}× smaller) | {loss:.4f} | {loss - base_loss:+.4f} | "
              f"{content:.4f} | {content - base_content:+.4f} |")


if __name__ == "__main__":
    main()
