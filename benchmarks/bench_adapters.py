"""Adapter overhead: LangChain ``invoke`` and LlamaIndex ``complete`` vs ``engine.generate`` directly.

The three make the same request (one user turn through the chat template, same sampling parameters and
seed) on the same shared engine; the script checks that they return the same text, then times them in
interleaved repetitions (the order rotates every repetition) and prints a Markdown table of median wall
times and of the median per-repetition ratio to the direct call. On a busy machine those ratios carry the
machine's noise, so it also measures the adapters' fixed cost per call exactly: the same calls against an
engine stub that answers at once.

Usage: ``python benchmarks/bench_adapters.py [--size cpu-512 | --model tiny-random] [--repeats 15]``
(needs the ``langchain`` and ``llamaindex`` extras).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from diffgemma_adapters.langchain import ChatDiffusionGemma
from diffgemma_adapters.llamaindex import DiffusionGemma
from diffgemma_engine import BlockEvent, FinalEvent, GenerationResult, RequestStream, SamplingParams, get_engine

try:
    from ._models import checkpoint
except ImportError:  # run as a script
    from _models import checkpoint

QUESTION = "Explain in a few sentences why the sky is blue."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="cpu-512", help="a benchmark checkpoint size from _models.py")
    parser.add_argument("--model", default=None, help="a model name or path instead of --size")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    model = args.model or checkpoint(args.size)
    engine = get_engine(model)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, seed=0)
    chat = ChatDiffusionGemma(model=model, max_tokens=args.max_new_tokens, seed=0)
    llm = DiffusionGemma(model=model, max_tokens=args.max_new_tokens, seed=0)
    if not (chat.engine is engine is llm.engine):
        raise SystemExit("the adapters did not resolve to the shared engine")

    messages = [{"role": "user", "content": QUESTION}]
    variants: dict[str, Callable[[], str]] = {
        "`engine.generate` (direct)": lambda: engine.generate(messages=messages, params=params).text,
        "LangChain `ChatDiffusionGemma.invoke`": lambda: chat.invoke(QUESTION).content,
        "LlamaIndex `DiffusionGemma.complete`": lambda: llm.complete(QUESTION).text,
    }
    texts = {name: run() for name, run in variants.items()}  # warm-up, and the same-request check
    identical = len(set(texts.values())) == 1

    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)

    direct = names[0]
    result = engine.generate(messages=messages, params=params)
    print(f"model {model}: {engine.canvas_length}-token canvas, {len(result.token_ids)} tokens, "
          f"{result.stats.denoising_steps} denoising steps, {torch.get_num_threads()} threads, "
          f"{args.repeats} interleaved repetitions, identical text: {identical}\n")
    print("| call | median wall time (s) | median ratio vs direct | overhead |")
    print("|---|---|---|---|")
    for name in names:
        ratios = [t / d for t, d in zip(times[name], times[direct])]
        ratio = statistics.median(ratios)
        print(f"| {name} | {statistics.median(times[name]):.4f} | {ratio:.4f} | {100 * (ratio - 1):+.2f}% |")
    fixed = _fixed_costs(engine, result, args.max_new_tokens)
    direct_s = statistics.median(times[direct])
    print("\nFixed cost per call, measured with the engine replaced by one that answers at once (so only the "
          "adapter runs), and as a share of the direct call: "
          + ", ".join(f"{name} {1000 * cost:.2f} ms ({100 * cost / direct_s:.3f}%)" for name, cost in fixed.items()))


class _InstantEngine:
    """The real engine's tokenizer and template, answering every request at once with a recorded result."""

    def __init__(self, engine, result: GenerationResult) -> None:
        self.inner, self.result = engine, result
        self.model_name, self.tokenizer = engine.model_name, engine.tokenizer
        self.context_length = engine.context_length
        self.canvas_length, self.config = engine.canvas_length, engine.config

    def render_chat(self, messages):
        return self.inner.render_chat(messages)

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def submit(self, prompt=None, params=None, **kwargs):
        stream = RequestStream(self.result.request_id, lambda *_: None)
        stream.push(BlockEvent(self.result.request_id, 0, self.result.text, self.result.token_ids, steps=1))
        stream.push(FinalEvent(self.result))
        return stream


def _fixed_costs(engine, result: GenerationResult, max_new_tokens: int, repeats: int = 200) -> dict[str, float]:
    instant = _InstantEngine(engine, result)
    chat = ChatDiffusionGemma(engine=instant, max_tokens=max_new_tokens, seed=0)
    llm = DiffusionGemma(engine=instant, max_tokens=max_new_tokens, seed=0)
    calls = {"LangChain invoke": lambda: chat.invoke(QUESTION), "LlamaIndex complete": lambda: llm.complete(QUESTION)}
    costs = {}
    for name, call in calls.items():
        call()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        costs[name] = statistics.median(samples)
    return costs


if __name__ == "__main__":
    main()
