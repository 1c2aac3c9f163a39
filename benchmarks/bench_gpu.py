"""The GPU benchmark, in one script sized for a short device lease.

On a full-width random config (the published checkpoint's hidden size, heads, experts, vocabulary and
canvas; a few layers) in bf16 it measures, side by side in one run:

1. throughput: our engine vs sequential and static-batched ``model.generate()`` at several concurrencies
   (:func:`diffgemma_engine.tools.benchmark.run_throughput`, the same code as ``diffgemma bench``);
2. each weight mode (``--modes``: ``base`` = unquantized, ``int8``, ``int4``, and ``int4+offload`` = int4
   with the experts in host memory): device memory held after loading, peak device memory while
   serving, and aggregate tokens/s of our engine at ``--mode-concurrency`` requests.

Writes ``gpu-bench.md`` and ``gpu-bench.json`` into ``--out`` (default ``$OUT`` or ``build/gpu-bench``).
``--size cpu-512 --device cpu --modes base,int4`` runs the same code on a CPU in a minute (a smoke test;
offload needs a GPU).

    python benchmarks/bench_gpu.py                      # on the GPU machine: about 5 minutes
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from diffgemma_engine import Engine, SamplingParams
from diffgemma_engine.tools.benchmark import SIZES, checkpoint, markdown_table, prompts_for, run_throughput

MODES = {"base": {}, "int8": {"quantization": "int8"}, "int4": {"quantization": "int4"},
         "int4+offload": {"quantization": "int4", "offload": "experts"}}  # fmt: skip


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _memory(device: str) -> tuple[int, int]:
    """(allocated now, peak since the last reset) on a CUDA device; zeros elsewhere."""
    if not device.startswith("cuda"):
        return 0, 0
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()


def measure_mode(directory: str, mode: str, device: str, concurrency: int, max_new_tokens: int) -> dict:
    """Load ``directory`` in ``mode``, serve ``concurrency`` requests once to warm up and once timed."""
    _free(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    engine = Engine(model=directory, device=device, max_running=concurrency, **MODES[mode])
    load_seconds = time.perf_counter() - started
    held, _ = _memory(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    prompts = prompts_for(concurrency)

    def serve(engine: Engine) -> tuple[int, float]:
        start = time.perf_counter()
        handles = [engine.submit(prompt_token_ids=p, params=SamplingParams(max_new_tokens=max_new_tokens, seed=i))
                   for i, p in enumerate(prompts)]  # fmt: skip
        tokens = sum(len(h.result().token_ids) for h in handles)
        return tokens, time.perf_counter() - start

    try:
        serve(engine)  # warm-up
        tokens, seconds = serve(engine)
        _, peak = _memory(device)
    finally:
        engine.shutdown()
        del engine  # the weights go before the next mode loads its own
        _free(device)
    return {"mode": mode, "concurrency": concurrency, "tokens": tokens, "seconds": seconds,
            "tokens_per_second": tokens / seconds, "held_bytes": held, "peak_bytes": peak,
            "load_seconds": load_seconds}  # fmt: skip


def modes_table(rows: Sequence[dict]) -> str:
    base = next((r for r in rows if r["mode"] == "base"), None)
    lines = ["| weights | device memory after load | peak while serving | tokens/s | ÷ base tokens/s | load s |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        ratio = row["tokens_per_second"] / base["tokens_per_second"] if base else float("nan")
        lines.append(f"| {row['mode']} | {row['held_bytes'] / 2**30:.2f} GiB | {row['peak_bytes'] / 2**30:.2f} GiB | "
                     f"{row['tokens_per_second']:.1f} | {ratio:.2f}× | {row['load_seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="gpu-full", choices=sorted(SIZES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--modes", default="base,int4,int4+offload")
    parser.add_argument("--mode-concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/gpu-bench")))
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {sorted(MODES)}")
    device = args.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    log(f"building {args.size} on {device}")
    directory = checkpoint(args.size, device, dtype)
    concurrencies = tuple(int(c) for c in args.concurrency.split(",") if c)
    log("throughput")
    engine = Engine(model=directory, device=device, max_running=max(concurrencies))
    try:
        rows = run_throughput(engine, concurrencies, args.max_new_tokens, progress=log)
    finally:
        engine.shutdown()
        del engine
        _free(device)
    mode_rows = []
    for mode in modes:
        log(f"mode {mode}")
        mode_rows.append(measure_mode(directory, mode, device, args.mode_concurrency, args.max_new_tokens))

    report = (f"Device: {name}; torch {torch.__version__}; size {args.size} ({dtype}); max_new_tokens "
              f"{args.max_new_tokens}.\n\n{markdown_table(rows)}\n\nWeight modes at {args.mode_concurrency} "
              f"concurrent requests:\n\n{modes_table(mode_rows)}\n")  # fmt: skip
    (args.out / "gpu-bench.md").write_text(report, encoding="utf-8")
    payload = {"device": name, "size": args.size, "dtype": str(dtype), "max_new_tokens": args.max_new_tokens,
               "throughput": [dict(r.__dict__, tokens_per_second=r.tokens_per_second) for r in rows],
               "modes": mode_rows}  # fmt: skip
    (args.out / "gpu-bench.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
