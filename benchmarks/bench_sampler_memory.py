"""Sampler memory per row at the real vocabulary (262,144) and canvas (256), on CPU.

Each variant runs in a fresh subprocess: allocate the row's processed logits ``[256, 262144]`` fp32
(268 MB), warm up, record the resident-set high-water mark, run one sampling step, and report how much
the high-water mark rose, in MB and in logits-sized buffers. Large buffers are mmap-backed and returned
to the OS on free, so the high-water mark sees every transient buffer.

* ``diffgemma``: our per-row step (chunked entropy, candidates, acceptance, renoise, argmax, stop test);
* ``reference``: transformers' step for one row (softmax + multinomial, ``EntropyBoundSampler``
  acceptance and renoise, argmax, and ``StableAndConfidentStoppingCriteria``'s second entropy).
"""

from __future__ import annotations

import json
import subprocess
import sys

CANVAS, VOCAB = 256, 262_144

CHILD = r"""
import json, resource, sys, torch
CANVAS, VOCAB = 256, 262_144
torch.set_num_threads(2)
variant = sys.argv[1]
generator = torch.Generator().manual_seed(0)
logits = torch.randn(CANVAS, VOCAB, generator=generator) * 4
canvas = torch.randint(0, VOCAB, (CANVAS,), generator=generator)

def ours():
    from diffgemma_engine.loop.sampler import RowSchedule, denoise_row, confident
    schedule = RowSchedule(48, 48, 0.4, 0.8, 0.1)
    result = denoise_row(logits, canvas, schedule, generator, VOCAB)
    confident(result.entropy, 0.005)

def reference():
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        EntropyBoundSampler, EntropyBoundSamplerConfig, StableAndConfidentStoppingCriteria)
    sampler = EntropyBoundSampler(EntropyBoundSamplerConfig(0.1), CANVAS, VOCAB, 48)
    stopping = StableAndConfidentStoppingCriteria(1, 0.005)
    batch = logits[None]
    probs = torch.softmax(batch, dim=-1, dtype=torch.float32)
    candidates = torch.multinomial(probs.view(-1, VOCAB), num_samples=1).view(1, CANVAS)
    del probs
    argmax = torch.argmax(batch, dim=-1)
    accepted = sampler.accept_canvas(canvas[None], candidates, batch, 1)
    sampler.renoise_canvas(accepted, 1)
    stopping(argmax, batch)

import diffgemma_engine.loop.sampler, transformers.models.diffusion_gemma.generation_diffusion_gemma  # imports first
step = ours if variant == "diffgemma" else reference
with torch.inference_mode():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "after_kb": after}))
"""


def measure(variant: str) -> dict:
    completed = subprocess.run([sys.executable, "-c", CHILD, variant], capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    logits_mb = CANVAS * VOCAB * 4 / 1e6
    print(f"one row's logits: [{CANVAS}, {VOCAB}] fp32 = {logits_mb:.0f} MB\n")
    print("| sampler step (one row) | peak above the logits (MB) | in logits-sized buffers |")
    print("|---|---|---|")
    for variant in ("reference", "diffgemma"):
        result = measure(variant)
        rise_mb = max(result["after_kb"] - result["before_kb"], 0) * 1024 / 1e6
        print(f"| {variant} | {rise_mb:.0f} | {rise_mb / logits_mb:.2f} |")


if __name__ == "__main__":
    main()
