"""Peak host memory of one prefill at 2k/4k/8k/16k tokens: chunked (the default) vs one pass.

Each measurement runs in a fresh subprocess (torch's CPU allocations are invisible to tracemalloc):
the child loads a small checkpoint with the real layer layout (3 sliding-window layers + 1 full
layer, 512-token window, 32k positions), records its resident memory, runs ``ModelRunner.prefill``
once, and reports the peak resident memory (``VmHWM``, reset just before) above that baseline. That includes the KV
cache the prefill leaves behind (linear in the prompt by nature), so the growth of the total is what
tells linear from quadratic. Modes: ``one-pass`` encodes the prompt in one encoder pass (the engine's
behaviour before chunked prefill, and still what happens up to ``prefill_chunk_tokens``);
``chunked`` uses ``prefill_chunk_tokens=2048`` with the prefix cache off; ``chunked+cache`` is the
default engine (its prefix cache also keeps a copy of the prompt's KV).

Usage: ``python benchmarks/bench_prefill_memory.py [--lengths 2048 4096 8192 16384] [--one-pass-max 8192]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CONFIG = dict(canvas_length=64, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=64, global_head_dim=128, num_experts=4, top_k_experts=2,
              moe_intermediate_size=128, sliding_window=512,
              layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
              max_position_embeddings=32768)  # fmt: skip
MODES = {"one-pass": dict(prefill_chunk_tokens=1 << 30, prefix_cache=False),
         "chunked": dict(prefill_chunk_tokens=2048, prefix_cache=False),
         "chunked+cache": dict(prefill_chunk_tokens=2048, prefix_cache=True)}  # fmt: skip


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets the peak resident size (VmHWM) to the current one."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def child(path: str, mode: str, length: int) -> None:
    import torch

    from diffgemma_engine import Engine

    engine = Engine(model=path, **MODES[mode])
    ids = [2, *(160 + (index * 7) % 90 for index in range(length - 1))]
    engine.runner.prefill(ids[:64]).release()  # warm-up: first-call allocations are not the prefill's
    baseline = _status_bytes("VmRSS")
    _reset_peak()
    with torch.inference_mode():
        prefix = engine.runner.prefill(ids)
    peak = _status_bytes("VmHWM")
    kv = sum(t.numel() * t.element_size() for layer in prefix.cache.layers for t in (layer.keys, layer.values))
    print(json.dumps(dict(mode=mode, length=length, peak_above_baseline=peak - baseline,
                          baseline=baseline, kv_bytes=kv)))  # fmt: skip


def build(directory: str) -> str:
    from diffgemma_engine.model import tiny_random

    settings = dict(CONFIG)
    canvas = settings.pop("canvas_length")
    model = tiny_random.build_model(tiny_random.build_config(canvas_length=canvas, **settings), seed=0)
    model.save_pretrained(directory)
    tiny_random.build_tokenizer().save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    parser.add_argument("--one-pass-max", type=int, default=8192, help="longest one-pass run (it grows quadratically)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    directory = os.path.join(tempfile.gettempdir(), "diffgemma-bench-prefill-memory")
    if not os.path.isfile(os.path.join(directory, "model.safetensors")):
        build(directory)
    rows = []
    for mode in MODES:
        for length in args.lengths:
            if mode == "one-pass" and length > args.one_pass_max:
                continue
            output = subprocess.run([sys.executable, __file__, "--child", directory, mode, str(length)],
                                    capture_output=True, text=True, check=True).stdout  # fmt: skip
            rows.append(json.loads(output.strip().splitlines()[-1]))
            print(f"{mode:14s} {length:6d} tokens: peak +{rows[-1]['peak_above_baseline'] / 2**20:8.1f} MiB "
                  f"(KV left behind {rows[-1]['kv_bytes'] / 2**20:.1f} MiB)", flush=True)
    print("\n| mode | " + " | ".join(f"{n:,} tokens" for n in args.lengths) + " | growth 2k→16k per 2× |")
    print("|---|" + "---:|" * (len(args.lengths) + 1))
    for mode in MODES:
        cells = {row["length"]: row["peak_above_baseline"] for row in rows if row["mode"] == mode}
        values = [cells.get(n) for n in args.lengths]
        shown = [f"{v / 2**20:.0f} MiB" if v is not None else "—" for v in values]
        present = [v for v in values if v is not None]
        growth = ""
        if len(present) >= 2 and present[0] > 0:
            growth = f"{(present[-1] / present[0]) ** (1 / (len(present) - 1)):.2f}×"
        print(f"| {mode} | " + " | ".join(shown) + f" | {growth} |")


if __name__ == "__main__":
    main()
