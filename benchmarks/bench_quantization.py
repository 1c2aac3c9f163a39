"""Weight-only quantization on the mid-size random-weight config (hidden 512, 4 layers, 8 experts), on CPU.

Prints two Markdown tables, every mode built from the same seeded fp32 model:

1. memory and speed: parameter bytes actually held, the ratio to fp32, the bytes of the quantized
   (expert + linear) weights alone, and the engine's decoder step (``ModelRunner.denoise`` over a
   cached prompt, one row) time relative to fp32 — medians over interleaved rounds, so a busy machine
   slows every mode alike;
2. output fidelity: the relative RMS error of the expert + linear weights, mean KL(fp32 || mode) of the decoder's output distribution and the share of
   positions whose argmax agrees, on a fixed prompt and canvas, for a first step (no self-conditioning)
   and a second step (self-conditioned on the fp32 first step's logits). ``bf16 weights`` rounds the
   weights to bf16 and computes in fp32: the floor any 16-bit deployment pays. The weights are random,
   so these numbers show the size of the perturbation, not the quality of a trained model.

Run: ``python benchmarks/bench_quantization.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch

from diffgemma_engine.model import tiny_random
from diffgemma_engine.tools.benchmark import SIZES
from diffgemma_engine.model.loader import LoadedModel, sampler_defaults
from diffgemma_engine.loop.model_runner import DenoiseRow, ModelRunner
from diffgemma_engine.model.quantization import (
    QuantizedLinear,
    QuantizedTensor,
    held_parameter_bytes,
    quantization_targets,
    quantize_model,
)

MODES = ("fp32", "bf16 weights", "int8", "int4")
PROMPT_LENGTH = 96


def build(mode: str, config, seed: int = 0) -> tuple[torch.nn.Module, int | None, float]:
    """The seeded model in ``mode``; also the bytes of its quantized weights (``None`` for float modes)
    and the relative RMS error of the expert + linear weights against the fp32 originals."""
    model = tiny_random.build_model(config, seed=seed)
    targets = quantization_targets(model, "int8")
    originals = {t.name: model.get_parameter(t.name).detach().clone() for t in targets}
    quantized = None
    if mode == "bf16 weights":
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(parameter.to(torch.bfloat16).to(torch.float32))
    elif mode in ("int8", "int4"):
        quantized = quantize_model(model, mode).target_bytes_after
    error = squares = 0.0
    for name, original in originals.items():
        restored = _weight(model, name)
        error += float(((restored - original) ** 2).sum())
        squares += float((original**2).sum())
    return model, quantized, (error / squares) ** 0.5


def _weight(model: torch.nn.Module, name: str) -> torch.Tensor:
    """The weight ``name`` as the forward sees it (dequantized if it was quantized)."""
    module_name, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_name)
    if isinstance(module, QuantizedLinear):
        return module.qweight.dequantize(dtype=torch.float32)
    held = getattr(module, attribute)
    return held.dequantize(dtype=torch.float32) if isinstance(held, QuantizedTensor) else held.detach()


def runner_for(model, config) -> ModelRunner:
    text = config.text_config
    loaded = LoadedModel(name="bench", model=model, tokenizer=None, defaults=sampler_defaults(model.generation_config),
                         canvas_length=int(config.canvas_length), vocab_size=int(text.vocab_size),
                         context_length=int(text.max_position_embeddings))
    return ModelRunner(loaded)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="cpu-512", choices=sorted(SIZES))
    parser.add_argument("--rounds", type=int, default=5, help="timed decoder steps per mode (interleaved)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    settings = dict(SIZES[args.size])
    config = tiny_random.build_config(canvas_length=settings.pop("canvas_length"), **settings)
    vocab = int(config.text_config.vocab_size)
    generator = torch.Generator().manual_seed(0)
    prompt = [2] + torch.randint(5, vocab, (PROMPT_LENGTH - 1,), generator=generator).tolist()
    canvas = torch.randint(0, vocab, (int(config.canvas_length),), generator=generator)

    fp32_targets = build("fp32", config)[0]
    target_bytes_fp32 = quantize_model(fp32_targets, "int8").target_bytes_before
    del fp32_targets

    runners, prefixes, held, targets, weight_error = {}, {}, {}, {}, {}
    for mode in MODES:
        model, quantized, weight_error[mode] = build(mode, config)
        held[mode] = held_parameter_bytes(model)
        targets[mode] = quantized if quantized is not None else target_bytes_fp32
        runners[mode] = runner_for(model, config)
        prefixes[mode] = runners[mode].prefill(prompt)

    first = {mode: runners[mode].denoise([DenoiseRow(prefixes[mode], canvas, None)])[0] for mode in MODES}
    condition = first["fp32"]
    second = {mode: runners[mode].denoise([DenoiseRow(prefixes[mode], canvas, condition)])[0] for mode in MODES}

    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            start = time.perf_counter()
            runners[mode].denoise([DenoiseRow(prefixes[mode], canvas, condition)])
            times[mode].append(time.perf_counter() - start)
    median = {mode: statistics.median(values) for mode, values in times.items()}

    text = config.text_config
    print(f"config {args.size}: hidden {text.hidden_size}, {text.num_hidden_layers} layers, {text.num_experts} "
          f"experts top-{text.top_k_experts}, canvas {config.canvas_length}, prompt {PROMPT_LENGTH} tokens; "
          f"CPU, {args.threads} threads, median of {args.rounds} decoder steps\n")
    print("| mode | parameter bytes | vs fp32 | expert + linear bytes | vs fp32 | decoder step | time vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    for mode in MODES:
        print(f"| {mode} | {held[mode]:,} | {held['fp32'] / held[mode]:.2f}x smaller | {targets[mode]:,} | "
              f"{target_bytes_fp32 / targets[mode]:.2f}x smaller | {median[mode] * 1000:.0f} ms | "
              f"{median[mode] / median['fp32']:.2f}x |")

    print("\n| mode | weight error (relative RMS) | mean KL step 1 (nats) | argmax agrees step 1 "
          "| mean KL step 2 (nats) | argmax agrees step 2 |")
    print("|---|---|---|---|---|---|")
    for mode in MODES[1:]:
        cells = [f"{weight_error[mode]:.2%}"]
        for logits in (first, second):
            cells += [f"{_kl(logits['fp32'], logits[mode]):.4f}", f"{_agree(logits['fp32'], logits[mode]):.1%}"]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    reference = first["fp32"].log_softmax(-1)
    entropy = float(-(reference.exp() * reference).sum(-1).mean())
    print(f"\nfp32 reference: mean entropy of the step-1 distribution {entropy:.3f} nats "
          f"(uniform over the vocabulary: {torch.log(torch.tensor(float(vocab))):.3f})")


def _kl(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    p = reference.float().log_softmax(-1)
    q = candidate.float().log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def _agree(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    return float((reference.argmax(-1) == candidate.argmax(-1)).float().mean())


if __name__ == "__main__":
    main()
