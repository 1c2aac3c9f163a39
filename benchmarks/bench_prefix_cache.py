"""Prefix caching: the same workloads with the cache on and off, side by side in one run.

Workloads (token-id prompts on the byte-level benchmark tokenizer, seeded):
  (a) RAG: 16 questions over one ~1,500-token context;
  (b) a 6-turn chat, each turn repeating the whole conversation so far (the model's answers included);
  (c) a chain: 8 calls that share a 600-token system prompt.

Each request runs on the cache-on engine and then on the cache-off engine (the order alternates), so
load on the machine affects both alike. Reported per workload: time to first block and total time
(``GenerationStats``), mean over every request after the first (the first fills the cache); the prompt
tokens each engine encoded (``Engine.prefix_cache_stats()``); and whether every request produced the
same tokens with and without the cache.

Canvases converge in at most ``--steps`` denoising steps (default 3): a random-weight model does not
stop adaptively, and the demo model's short answers converge in 2-3 steps, which is where the prompt's
encoder pass is a large share of a response.

Usage: ``python benchmarks/bench_prefix_cache.py [--size cpu-512] [--steps 3] [--new-tokens 128]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import dataclass, field

import torch

from diffgemma_engine import Engine, SamplingParams
from diffgemma_engine.tools.benchmark import checkpoint

BOS, TURN, END = 2, 105, 106


def _text(rng: random.Random, length: int) -> list[int]:
    return [rng.randrange(160, 250) for _ in range(length)]


@dataclass
class Side:
    first_block: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    tokens: list[tuple[int, ...]] = field(default_factory=list)
    computed_before: int = 0
    computed: int = 0


def run(engine: Engine, side: Side, prompt: list[int], params: SamplingParams):
    result = engine.generate(prompt_token_ids=prompt, params=params)
    side.first_block.append(result.stats.first_block_time)
    side.total.append(result.stats.total_time)
    side.tokens.append(result.token_ids)
    return result


def workload(name: str, engines: dict[str, Engine], prompts, params: SamplingParams) -> dict:
    """``prompts``: a generator that receives each request's cache-on result and yields the next prompt."""
    sides = {label: Side() for label in engines}
    for label, side in sides.items():
        side.computed_before = engines[label].prefix_cache_stats().computed_prompt_tokens
    results = None
    index = 0
    while True:
        try:
            prompt = prompts.send(results)
        except StopIteration:
            break
        order = list(engines) if index % 2 == 0 else list(reversed(engines))
        results = {}
        for label in order:
            results[label] = run(engines[label], sides[label], prompt, params)
        results = results["on"]
        index += 1
    for label, side in sides.items():
        side.computed = engines[label].prefix_cache_stats().computed_prompt_tokens - side.computed_before
    on, off = sides["on"], sides["off"]
    return dict(
        name=name,
        requests=len(on.total),
        ttfb_on=statistics.mean(on.first_block[1:]),
        ttfb_off=statistics.mean(off.first_block[1:]),
        total_on=statistics.mean(on.total[1:]),
        total_off=statistics.mean(off.total[1:]),
        computed_on=on.computed,
        computed_off=off.computed,
        identical=on.tokens == off.tokens,
    )


def rag(rng: random.Random):
    context = [BOS, TURN, *_text(rng, 1500), END]
    for _ in range(16):
        yield [*context, TURN, *_text(rng, 24), END, TURN]


def chat(rng: random.Random):
    prompt = [BOS, TURN, *_text(rng, 200), END, TURN, *_text(rng, 40), END, TURN]
    for _ in range(6):
        answer = yield prompt
        prompt = [*prompt, *answer.token_ids, END, TURN, *_text(rng, 40), END, TURN]


def chain(rng: random.Random):
    system = [BOS, TURN, *_text(rng, 600), END]
    for _ in range(8):
        yield [*system, TURN, *_text(rng, 30), END, TURN]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="cpu-512")
    parser.add_argument("--steps", type=int, default=3, help="max denoising steps per canvas")
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    path = checkpoint(args.size)
    engines = {"on": Engine(model=path, prefix_cache=True), "off": Engine(model=path, prefix_cache=False)}
    params = SamplingParams(max_new_tokens=args.new_tokens, seed=1, ignore_eos=True, max_denoising_steps=args.steps)
    for engine in engines.values():  # warm-up on an unrelated prompt
        engine.generate(prompt_token_ids=[BOS, *range(140, 200)], params=params)
    rows = [
        workload("(a) RAG: 16 questions, 1,500-token context", engines, rag(random.Random(1)), params),
        workload("(b) chat: 6 turns", engines, chat(random.Random(2)), params),
        workload("(c) chain: 8 calls, 600-token system prompt", engines, chain(random.Random(3)), params),
    ]
    for engine in engines.values():
        engine.shutdown()
    print(f"size {args.size}, {args.new_tokens} new tokens per request, <= {args.steps} denoising steps per canvas; "
          "times are means over every request after the first")
    print("| workload | requests | first block on / off (s) | ratio | total on / off (s) | ratio "
          "| prompt tokens computed on / off | tokens identical |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['name']} | {row['requests']} | {row['ttfb_on']:.3f} / {row['ttfb_off']:.3f} "
              f"| {row['ttfb_off'] / row['ttfb_on']:.1f}x | {row['total_on']:.3f} / {row['total_off']:.3f} "
              f"| {row['total_off'] / row['total_on']:.1f}x | {row['computed_on']:,} / {row['computed_off']:,} "
              f"| {'yes' if row['identical'] else 'NO'} |")


if __name__ == "__main__":
    main()
