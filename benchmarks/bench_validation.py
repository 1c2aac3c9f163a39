"""Validation overhead: the same requests with every built-in validator enabled vs none, side by side.

Repairs are switched off for the measurement with a per-request policy that accepts every block: a
random-weight model fails several validators, and re-denoising (or stopping at the first failing block)
would measure something else. So both runs denoise and commit exactly the same canvases, and the time
difference is the cost of building the block views, running every validator and the policy hook. A
``diffgemma_block_validated`` observer collects each validator's time per block.

Usage: ``python benchmarks/bench_validation.py [--size cpu-512] [--requests 6]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

from diffgemma_engine import Engine, SamplingParams
from diffgemma_engine.tools.benchmark import checkpoint, prompts_for
from diffgemma_engine.api.validation import RepairAction, RepairDecision
from diffgemma_plugins import get_plugin_manager, hookimpl


class _Timings:
    def __init__(self) -> None:
        self.per_validator: dict[str, list[float]] = defaultdict(list)

    @hookimpl
    def diffgemma_block_validated(self, block, report, attempt, request):
        for name, milliseconds in report.elapsed_ms.items():
            self.per_validator[name].append(milliseconds)


def accept_every_block(report):
    """Per-request repair policy: commit the block as it is (flagged), never re-denoise."""
    return RepairDecision(RepairAction.ACCEPT, reason="benchmark: measure validation only")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="cpu-512")
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    manager = get_plugin_manager()
    names = manager.validator_registry().names
    timings = _Timings()
    manager.register(timings, name="bench-timings")
    engine = Engine(model=checkpoint(args.size), max_running=1)
    options = {"repair_policy": accept_every_block, "builtin.regex": {"pattern": r"[\s\S]*"}}
    prompts = prompts_for(args.requests)

    def run(validated: bool) -> float:
        start = time.perf_counter()
        for seed, prompt in enumerate(prompts):
            params = SamplingParams(max_new_tokens=args.max_new_tokens, seed=seed, ignore_eos=True)
            if validated:
                params = SamplingParams(max_new_tokens=args.max_new_tokens, seed=seed, ignore_eos=True,
                                        validators=names, validator_options=options)
            engine.generate(prompt_token_ids=prompt, params=params)
        return time.perf_counter() - start

    run(False), run(True)  # warm up
    timings.per_validator.clear()
    plain, validated = [], []
    for _ in range(3):
        plain.append(run(False))
        validated.append(run(True))
    engine.shutdown()
    manager.unregister(timings)
    base, with_validation = statistics.median(plain), statistics.median(validated)
    blocks = len(next(iter(timings.per_validator.values()), [])) // 3
    print(f"{args.requests} requests × {args.max_new_tokens} tokens, {args.size} ({engine.canvas_length}-token "
          f"canvas), {len(names)} validators, {blocks} validated blocks per run\n")
    print("| run | median wall time (s) | ratio |")
    print("|---|---|---|")
    print(f"| no validators | {base:.3f} | 1.000 |")
    print(f"| every built-in validator | {with_validation:.3f} | {with_validation / base:.3f} |")
    print("\n| validator | mean ms per block | max ms per block |")
    print("|---|---|---|")
    for name, values in sorted(timings.per_validator.items(), key=lambda item: -statistics.mean(item[1])):
        print(f"| `{name}` | {statistics.mean(values):.3f} | {max(values):.3f} |")
    total = sum(statistics.mean(values) for values in timings.per_validator.values())
    print(f"| **all** | **{total:.3f}** | |")


if __name__ == "__main__":
    main()
