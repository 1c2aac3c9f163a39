"""Benchmark model sizes live in the engine (``diffgemma bench`` uses them too)."""

from diffgemma_engine.tools.benchmark import SIZES, checkpoint

__all__ = ["SIZES", "checkpoint"]
