"""The numbers memory planning works with: card sizes, headroom, buffer counts, dtype widths, defaults.

Torch-free, so the command line can show them (``diffgemma plan --help``) without importing torch; the
planner (:mod:`diffgemma_engine.model.planner`) and the size counters (:mod:`~diffgemma_engine.model.sizes`)
use them.
"""

from __future__ import annotations

GIB = 1 << 30
CARD_SIZES_GB = (8, 12, 16, 24, 48, 80)
"""Common GPU memory sizes. A "24 GB" card has 24 GiB (24,576 MiB) of device memory."""

HEADROOM_FRACTION = 0.10
"""Share of device memory kept free: allocator fragmentation and everything not modelled below."""

HEADROOM_FIXED_BYTES = 1 * GIB
"""Also kept free: the CUDA context (~0.3-0.5 GiB) and the decoder/encoder forward activations."""

SAMPLER_EXTRA_LOGITS_BUFFERS = 1.13
"""Transient ``[canvas, vocab]`` fp32 buffers one row's sampling step allocates on top of the logits
it works on, as measured for this engine's sampler by ``benchmarks/bench_sampler_memory.py``
(resident high-water mark of one row's step at the real vocabulary and canvas; transformers'
reference step needs several times more)."""

HELD_LOGITS_BUFFERS = 2
"""Logits-sized fp32 buffers every running request holds: the step's logits and the previous step's
logits kept for self-conditioning."""

KV_COPIES_WHEN_BATCHED = 2
"""Copies of a running request's KV cache while two or more requests are denoised together: its own
cache and the padded batch stack the model runner keeps between steps (the runner drops the old stack
before building a new one)."""

DEFAULT_CONTEXT = 8192
DEFAULT_PREFIX_CACHE_BYTES = 1 * GIB
"""The prefix cache's budget when the caller sets none; on a device, at most what is left after the
running requests (see :func:`default_prefix_cache_bytes`)."""
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
