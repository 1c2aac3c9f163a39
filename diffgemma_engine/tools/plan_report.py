"""``diffgemma plan``: the memory plan as readable tables, and its command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from diffgemma_engine.api.errors import DiffGemmaError, InvalidRequestError
from diffgemma_engine.model.planner import (
    DTYPE_BYTES,
    CARD_SIZES_GB,
    DEFAULT_CONTEXT,
    GIB,
    HEADROOM_FIXED_BYTES,
    HEADROOM_FRACTION,
    KV_COPIES_WHEN_BATCHED,
    REAL_CHECKPOINT,
    MemoryPlan,
    format_bytes,
    plan_memory,
)
from diffgemma_engine.config import QUANTIZATION_MODES

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


# -- command line -----------------------------------------------------------------------------------

def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``plan`` command's options to ``parser``."""
    parser.add_argument("--model", default=REAL_CHECKPOINT,
                        help=f"checkpoint directory, config.json path, hub id or tiny-random "
                             f"(default: {REAL_CHECKPOINT}, whose dimensions ship with diffgemma)")
    parser.add_argument("--quantization", default="none", choices=("none",) + QUANTIZATION_MODES,
                        help="weight-only quantization to plan for")
    parser.add_argument("--dtype", default="bfloat16", choices=tuple(DTYPE_BYTES),
                        help="compute dtype (unquantized weights, scales, KV cache)")
    parser.add_argument("--max-batch", type=int, default=1, help="requests denoised together")
    parser.add_argument("--context", type=int, default=None,
                        help=f"tokens each request keeps in its KV cache, prompt + output (default: "
                             f"{DEFAULT_CONTEXT} or the model's window if shorter)")
    parser.add_argument("--cards", default=",".join(str(size) for size in CARD_SIZES_GB),
                        help="comma-separated card sizes in GB")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run_plan_command(args: argparse.Namespace) -> int:
    """Handle a parsed ``plan`` command: print the plan; returns the exit status."""
    try:
        cards = tuple(float(size) for size in str(args.cards).split(",") if size.strip())
    except ValueError as error:
        raise InvalidRequestError("cards", f"must be comma-separated numbers: {error}") from error
    plan = plan_memory(
        args.model,
        quantization=None if args.quantization == "none" else args.quantization,
        dtype=args.dtype,
        context=args.context,
        max_batch=args.max_batch,
        card_sizes_gb=cards,
    )
    print(json.dumps(asdict(plan), indent=2) if args.json else render_plan(plan))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m diffgemma_engine.tools.plan_report``: the ``plan`` command on its own."""
    parser = argparse.ArgumentParser(prog="diffgemma plan", description="Plan DiffusionGemma's GPU memory.")
    add_plan_arguments(parser)
    try:
        return run_plan_command(parser.parse_args(argv))
    except DiffGemmaError as error:
        print(f"diffgemma plan: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
