"""``diffgemma plan``: the memory plan as readable tables (the command line itself is in ``diffgemma_adapters.cli``)."""

from __future__ import annotations

from collections.abc import Sequence

from diffgemma_engine.model.memory import GIB, HEADROOM_FIXED_BYTES, HEADROOM_FRACTION, KV_COPIES_WHEN_BATCHED
from diffgemma_engine.model.planner import MemoryPlan, format_bytes

# -- rendering --------------------------------------------------------------------------------------

def render_plan(plan: MemoryPlan) -> str:
    """The plan as a readable text report with tables."""
    params = plan.parameters
    lines = [
        f"DiffusionGemma memory plan: {plan.source}",
        f"model: hidden {plan.hidden_size}, {plan.num_layers} layers ({plan.kv.sliding_layers} sliding "
        f"[window {plan.kv.sliding_window}] / {plan.kv.full_layers} full), {plan.num_experts} experts "
        f"top-{plan.top_k_experts}, vocab {plan.vocab_size:,}, canvas {plan.canvas_length}",
        "",
        _table(
            ("parameters", "count", "share"),
            [(name, _count(value), f"{100 * value / params.total:.1f}%")
             for name, value in (("experts (fused 3-D)", params.experts), ("other linear", params.linear),
                                 ("embeddings (tied)", params.embeddings), ("norms and scales", params.norms),
                                 ("vision tower (not placed)", params.vision), ("total", params.total),
                                 ("placed (text only)", params.placed),
                                 (f"active per token (top-{plan.top_k_experts} of {plan.num_experts} experts)",
                                  params.active))],
        ),
        "",
        _table(
            ("weights", "quantized", "floating", "total"),
            [(_mode_label(option.mode, plan.dtype), format_bytes(option.quantized_bytes), format_bytes(option.floating_bytes),
              format_bytes(option.total_bytes)) for option in plan.weight_options],
        ),
        "",
        f"per request at context {plan.kv.context:,} ({plan.dtype} KV cache, "
        f"{format_bytes(plan.kv.bytes_per_token)}/token before the window cap):",
        _table(
            ("item", "bytes", "how"),
            [
                ("KV cache", format_bytes(plan.kv.bytes_per_request),
                 f"sliding layers capped at {plan.kv.sliding_window} tokens"),
                ("KV copies", str(plan.kv_copies), f"1 alone; {KV_COPIES_WHEN_BATCHED} while batched (own + batch stack)"),
                ("sampler buffers", format_bytes(plan.sampler.bytes_per_row),
                 f"{plan.sampler.buffers_per_row:.2f} x fp32 [{plan.canvas_length}, {plan.vocab_size:,}] "
                 f"= {format_bytes(plan.sampler.logits_bytes)} each"),
                ("per request", format_bytes(plan.per_request_bytes), "KV x copies + sampler"),
            ],
            left=(0, 2),
        ),
        "",
        f"total for --max-batch {plan.max_batch} with {plan.weight_mode} weights: {format_bytes(plan.total_bytes)}"
        f"; needs a card of at least {format_bytes(plan.required_bytes)} "
        f"(headroom {HEADROOM_FRACTION:.0%} + {HEADROOM_FIXED_BYTES / GIB:g} GiB)",
        "",
        _table(
            ("card", "usable", f"fits --max-batch {plan.max_batch}", "max concurrent"),
            [(v.name, format_bytes(v.usable_bytes), "yes" if v.fits else "no", str(v.max_concurrent))
             for v in plan.verdicts],
        ),
    ]
    return "\n".join(lines)


def _mode_label(mode: str, dtype: str) -> str:
    if mode in ("int8", "int4"):
        short = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[dtype]
        return f"{mode} (+{short} scales)"
    return mode


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> str:
    """Columns padded to width; columns in ``left`` are left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(cell).ljust(width) if index in left else str(cell).rjust(width)
                         for index, (cell, width) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * width for width in widths])] + [line(row) for row in rows])


def _count(value: int) -> str:
    if value >= 1e9:
        return f"{value / 1e9:.2f} B"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    return f"{value:,}"
