"""How much can batching help on this device? Decoder-forward time for B rows vs one row.

If one forward over B canvases takes ``k`` times as long as over one canvas, step-level batching can at
best make B requests ``B / k`` times faster than running them one after another. On a GPU ``k`` stays
near 1 for small B (the step is memory-bound); on a CPU the step is compute-bound and ``k`` grows almost
linearly. This bounds every throughput ratio in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffgemma_engine import Engine
from diffgemma_engine.tools.benchmark import checkpoint
from diffgemma_engine.loop.model_runner import DenoiseRow


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="cpu-512")
    parser.add_argument("--batches", default="1,2,4,8,16")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    engine = Engine(model=checkpoint(args.size))
    runner = engine.runner
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        prefix = runner.prefill([2] + list(range(130, 161)))
        canvas = runner.new_canvas(generator)
        logits = runner.denoise([DenoiseRow(prefix, canvas, None)])
        sc = logits[0].clone()
        timings = {}
        for batch in (int(b) for b in args.batches.split(",")):
            rows = [DenoiseRow(prefix, canvas, sc) for _ in range(batch)]
            runner.denoise(rows)  # warm up and build the stacked cache
            samples = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                runner.denoise(rows)
                samples.append(time.perf_counter() - start)
            timings[batch] = statistics.median(samples)
    engine.shutdown()
    print(f"{args.size}, {engine.canvas_length}-token canvas, {torch.get_num_threads()} threads\n")
    print("| rows per forward | median forward (ms) | × one row | best batching speed-up (rows ÷ ×) |")
    print("|---|---|---|---|")
    for batch, seconds in timings.items():
        factor = seconds / timings[1]
        print(f"| {batch} | {seconds * 1000:.1f} | {factor:.2f} | {batch / factor:.2f}× |")


if __name__ == "__main__":
    main()
