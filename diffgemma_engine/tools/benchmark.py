"""Throughput benchmark: our engine vs transformers' ``model.generate()``, side by side in one run.

For each concurrency ``c`` the same ``c`` prompts (equal length, so the static batch needs no padding)
and sampling parameters run three ways:

* ``sequential``: ``c`` separate ``model.generate()`` calls, one after another;
* ``static batch``: one ``model.generate()`` call over all ``c`` prompts (everyone waits for the slowest row);
* ``diffgemma``: ``c`` concurrent requests submitted to one engine (continuous, step-level batching).

Tokens are counted up to (not including) the first EOS, for every system. Results are tokens per second
of wall time (median of the repeats, run in rotating order so background load hits every system alike),
and their ratios. ``sequential`` seeds each call like our per-request generators, so it produces the same
tokens as our engine; the static batch draws every row from one global generator, so its rows (and where
they stop) differ — which is why its token count differs.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

from diffgemma_engine.model import tiny_random
from diffgemma_engine.api.params import SamplingParams
from diffgemma_engine.loop.service import Engine

SIZES = {
    # compute-meaningful on a CPU: real layout, hidden 512, 4 layers, 64-token canvas
    "cpu-512": dict(canvas_length=64, hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
                    num_attention_heads=8, num_key_value_heads=4, head_dim=64, global_head_dim=128,
                    num_experts=8, top_k_experts=2, moe_intermediate_size=256, sliding_window=512,
                    layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
                    max_position_embeddings=4096),
    # the published checkpoint's widths (checkpoint.REAL_CHECKPOINT_CONFIG) with 4 of its 30 layers; for GPUs
    "gpu-full": dict(canvas_length=256, vocab_size=262144, hidden_size=2816, intermediate_size=2112,
                     num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=8,
                     num_global_key_value_heads=2, head_dim=256, global_head_dim=512, attention_k_eq_v=True,
                     num_experts=128, top_k_experts=8, moe_intermediate_size=704, sliding_window=1024,
                     layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
                     max_position_embeddings=8192, final_logit_softcapping=30.0),
}


def checkpoint(size: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> str:
    """Path of a saved checkpoint of ``size`` in ``dtype`` (built on ``device`` on first use)."""
    settings = dict(SIZES[size])
    suffix = "" if dtype == torch.float32 else f"-{str(dtype).removeprefix('torch.')}"
    directory = os.path.join(tempfile.gettempdir(), f"diffgemma-bench-{size}{suffix}")
    if not any(os.path.isfile(os.path.join(directory, name))
               for name in ("model.safetensors", "model.safetensors.index.json")):  # fmt: skip
        canvas = settings.pop("canvas_length")
        config = tiny_random.build_config(canvas_length=canvas, **settings)
        model = tiny_random.build_model(config, seed=0, device=device)
        model.to(dtype).save_pretrained(directory)
        tiny_random.build_tokenizer().save_pretrained(directory)
    return directory


@dataclass(frozen=True)
class ThroughputRow:
    """One system at one concurrency."""

    system: str
    concurrency: int
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def prompts_for(concurrency: int, length: int = 32) -> list[list[int]]:
    return [[2] + [130 + (i * 31 + j * 7) % 250 for j in range(length - 1)] for i in range(concurrency)]


def run_throughput(
    engine: Engine,
    concurrencies: Sequence[int] = (1, 4, 8, 16),
    max_new_tokens: int = 128,
    progress: Callable[[str], None] | None = None,
    repeats: int = 1,
) -> list[ThroughputRow]:
    """Measure every system at every concurrency (median of ``repeats`` runs in rotating order)."""
    model = engine.loaded.model
    defaults = engine.loaded.defaults
    eos = set(defaults.eos_token_ids)
    rows: list[ThroughputRow] = []
    reference_kwargs = dict(
        max_new_tokens=max_new_tokens, max_denoising_steps=defaults.max_denoising_steps, t_min=defaults.t_min,
        t_max=defaults.t_max, sampler_config=EntropyBoundSamplerConfig(entropy_bound=defaults.entropy_bound),
        stability_threshold=defaults.stability_threshold, confidence_threshold=defaults.confidence_threshold,
    )

    def count(sequences: torch.Tensor, prompt_length: int) -> int:
        total = 0
        for row in sequences[:, prompt_length:].tolist():
            row = row[:max_new_tokens]
            total += next((i for i, token in enumerate(row) if token in eos), len(row))
        return total

    def generate(batch: list[list[int]], seed: int) -> int:
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(torch.tensor(batch, device=engine.device), **reference_kwargs)
        return count(out.sequences, len(batch[0]))

    def sequential(prompts: list[list[int]]) -> int:
        return sum(generate([prompt], seed) for seed, prompt in enumerate(prompts))

    def static_batch(prompts: list[list[int]]) -> int:
        return generate(prompts, 0)

    def ours(prompts: list[list[int]]) -> int:
        handles = [engine.submit(prompt_token_ids=prompt, params=SamplingParams(max_new_tokens=max_new_tokens, seed=seed))
                   for seed, prompt in enumerate(prompts)]
        return sum(len(handle.result().token_ids) for handle in handles)

    systems = {"sequential model.generate()": sequential, "static-batched model.generate()": static_batch,
               "diffgemma engine": ours}
    ours(prompts_for(1))
    generate(prompts_for(1)[:1], 0)  # warm up both paths
    for concurrency in concurrencies:
        prompts = prompts_for(concurrency)
        times: dict[str, list[float]] = {name: [] for name in systems}
        tokens: dict[str, int] = {}
        names = list(systems)
        for repeat in range(repeats):
            for name in names[repeat % len(names):] + names[: repeat % len(names)]:  # rotate the order
                if progress:
                    progress(f"concurrency {concurrency}: {name} (run {repeat + 1}/{repeats})")
                start = time.perf_counter()
                tokens[name] = systems[name](prompts)
                times[name].append(time.perf_counter() - start)
        rows.extend(ThroughputRow(name, concurrency, tokens[name], statistics.median(times[name])) for name in systems)
    return rows


def markdown_table(rows: Sequence[ThroughputRow]) -> str:
    """Tokens/s per system and concurrency, with our engine's ratio to each baseline."""
    by_key = {(row.system, row.concurrency): row for row in rows}
    lines = ["| concurrency | system | tokens | seconds | tokens/s | diffgemma ÷ this |", "|---|---|---|---|---|---|"]
    for concurrency in sorted({row.concurrency for row in rows}):
        ours = by_key.get(("diffgemma engine", concurrency))
        for system in ("sequential model.generate()", "static-batched model.generate()", "diffgemma engine"):
            row = by_key.get((system, concurrency))
            if row is None:
                continue
            ratio = ours.tokens_per_second / row.tokens_per_second if ours and row.tokens_per_second else 0.0
            lines.append(f"| {concurrency} | {system} | {row.tokens} | {row.seconds:.2f} | "
                         f"{row.tokens_per_second:.1f} | {ratio:.2f}× |")
    return "\n".join(lines)


def plot(rows: Sequence[ThroughputRow], path: str, title: str) -> bool:
    """Tokens/s vs concurrency, one line per system, as a PNG. Returns False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(6, 4))
    for system in dict.fromkeys(row.system for row in rows):
        points = sorted((row.concurrency, row.tokens_per_second) for row in rows if row.system == system)
        axes.plot([c for c, _ in points], [t for _, t in points], marker="o", label=system)
    axes.set_xlabel("concurrent requests")
    axes.set_ylabel("aggregate tokens / s")
    axes.set_xscale("log", base=2)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
