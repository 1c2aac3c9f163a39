"""Host memory while loading: peak resident set during ``load_model`` vs the bytes of the loaded model.

Builds (once, in a temporary directory unless ``--checkpoint`` names one) a mid-size DiffusionGemma
checkpoint with the real layer layout, saved in bf16 by ``save_pretrained`` in shards of
``--shard-mb`` MB, with a small vision tower. Each load runs in a fresh subprocess that imports
everything first, resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``), loads
on the CPU in bf16, and reports:

* ``peak``: the high-water mark of the resident set during the load, above the resident set before it
  (file pages the safetensors reader maps count too);
* ``final``: bytes the loaded model holds (parameters and buffers, shared storage once);
* ``ratio``: peak / final; and for int8/int4 ``peak - final`` against the largest shard;
* the peak after reading every weight once: an unquantized CPU load keeps the weights as views of the
  mapped checkpoint files, which become resident only when read.

Targets (issue 12): unquantized <= 1.3 x final; int8/int4 <= final + one shard.

    python benchmarks/bench_load_memory.py            # table on stdout
    python benchmarks/bench_load_memory.py --markdown # the table as markdown
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, torch
torch.set_num_threads(2)
from diffgemma_engine.model.loader import load_model
from diffgemma_engine.model.quantization import held_parameter_bytes
import safetensors.torch
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
from transformers.models.diffusion_gemma import modeling_diffusion_gemma  # code imported before measuring

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

directory, mode = sys.argv[1], sys.argv[2]
mode = None if mode == "none" else mode
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset VmHWM to the current resident set
before = status("VmRSS")
loaded = load_model(directory, "cpu", torch.bfloat16, mode)
peak = status("VmHWM")
after = status("VmRSS")
with torch.no_grad():  # read every weight once: lazily mapped file pages become resident
    for tensor in [*loaded.model.parameters(), *loaded.model.buffers()]:
        tensor.float().sum()
print(json.dumps({"before": before, "peak": peak, "after": after, "touched_peak": status("VmHWM"),
                  "final": held_parameter_bytes(loaded.model)}))
"""

MODES = ("none", "int8", "int4")


def build_checkpoint(directory: str, shard_mb: int) -> None:
    from diffgemma_engine.model import tiny_random

    config = tiny_random.build_real_layout_config(
        canvas_length=32, hidden_size=512, intermediate_size=1024, num_hidden_layers=12, num_attention_heads=8,
        num_key_value_heads=4, num_global_key_value_heads=2, head_dim=64, global_head_dim=128,
        num_experts=32, top_k_experts=4, moe_intermediate_size=256, sliding_window=256,
    )
    import torch

    model = tiny_random.build_model(config, seed=0).to(torch.bfloat16)  # the published checkpoint is bf16
    model.save_pretrained(directory, max_shard_size=f"{shard_mb}MB")
    tiny_random.build_tokenizer().save_pretrained(directory)


def shard_bytes(directory: str) -> list[int]:
    return sorted(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory)
                  if name.endswith(".safetensors"))


def measure(directory: str, mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    output = subprocess.run([sys.executable, "-c", CHILD, directory, mode], check=True, capture_output=True,
                            text=True, env=env).stdout  # fmt: skip
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="an existing sharded checkpoint directory (default: build one)")
    parser.add_argument("--shard-mb", type=int, default=40)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.checkpoint or os.path.join(scratch, "checkpoint")
        if not args.checkpoint:
            build_checkpoint(directory, args.shard_mb)
        shards = shard_bytes(directory)
        largest = shards[-1]
        mib = 1 << 20
        rows = []
        for mode in MODES:
            result = measure(directory, mode)
            peak = result["peak"] - result["before"]
            final = result["final"]
            target = f"<= {1.3 * final / mib:.0f}" if mode == "none" else f"<= {(final + largest) / mib:.0f}"
            met = peak <= (1.3 * final if mode == "none" else final + largest)
            touched = result["touched_peak"] - result["before"]
            rows.append((mode, f"{final / mib:.0f}", f"{peak / mib:.0f}", f"{peak / final:.2f}",
                         f"{(peak - final) / largest:.2f}", target, "yes" if met else "no",
                         f"{touched / mib:.0f} ({touched / final:.2f}x)"))
        header = ("weights", "final MiB", "peak MiB", "peak/final", "(peak-final)/shard", "target MiB", "met",
                  "peak after reading every weight")
        total = sum(shards) / mib
        print(f"checkpoint: {len(shards)} bf16 shards, {total:.0f} MiB in all, largest {largest / mib:.0f} MiB")
        if args.markdown:
            print("| " + " | ".join(header) + " |")
            print("|" + "---|" * len(header))
            for row in rows:
                print("| " + " | ".join(row) + " |")
        else:
            widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
            for row in (header, *rows):
                print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
