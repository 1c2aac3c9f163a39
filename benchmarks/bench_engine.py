"""One request: our engine vs transformers' model.generate(), same checkpoint, prompt, seed and parameters.

Runs both side by side (interleaved repetitions), checks the tokens are identical, and prints a
Markdown table of median wall times and their ratio. Usage: ``python benchmarks/bench_engine.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

from diffgemma_engine import Engine, SamplingParams

try:
    from ._models import checkpoint
except ImportError:  # run as a script
    from _models import checkpoint


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="cpu-512")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    engine = Engine(model=checkpoint(args.size))
    model = engine.loaded.model
    prompt = [2] + [130 + (i * 37) % 250 for i in range(63)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, seed=0, ignore_eos=False)
    resolved = params.resolve(engine.loaded.defaults)
    reference_kwargs = dict(
        max_new_tokens=args.max_new_tokens, max_denoising_steps=resolved.max_denoising_steps,
        t_min=resolved.t_min, t_max=resolved.t_max,
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=resolved.entropy_bound),
        stability_threshold=resolved.stability_threshold, confidence_threshold=resolved.confidence_threshold,
    )

    def ours():
        return engine.generate(prompt_token_ids=prompt, params=params)

    def theirs():
        torch.manual_seed(0)
        with torch.inference_mode():
            return model.generate(torch.tensor([prompt]), **reference_kwargs)

    ours(), theirs()  # warm up
    our_times, their_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter(); result = ours(); our_times.append(time.perf_counter() - start)
        start = time.perf_counter(); output = theirs(); their_times.append(time.perf_counter() - start)
    reference = output.sequences[0, len(prompt):].tolist()[: args.max_new_tokens]
    eos = set(engine.loaded.defaults.eos_token_ids)
    cut = next((i for i, t in enumerate(reference) if t in eos), len(reference))
    identical = list(result.token_ids) == reference[:cut]
    ours_s, theirs_s = statistics.median(our_times), statistics.median(their_times)
    print(f"config {args.size}: {engine.canvas_length}-token canvas, {result.stats.denoising_steps} steps, "
          f"{len(result.token_ids)} tokens, {torch.get_num_threads()} threads, identical tokens: {identical}\n")
    print("| system | median wall time (s) | ratio vs model.generate() |")
    print("|---|---|---|")
    print(f"| transformers `model.generate()` | {theirs_s:.3f} | 1.00 |")
    print(f"| diffgemma engine | {ours_s:.3f} | {ours_s / theirs_s:.3f} |")


if __name__ == "__main__":
    main()
