"""Random-weight DiffusionGemma checkpoints at benchmark sizes, saved once under a cache directory."""

from __future__ import annotations

import os
import tempfile

from diffgemma_engine import tiny_random

SIZES = {
    # compute-meaningful on a CPU: real layout, hidden 512, 4 layers, 64-token canvas
    "cpu-512": dict(canvas_length=64, hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
                    num_attention_heads=8, num_key_value_heads=4, head_dim=64, global_head_dim=128,
                    num_experts=8, top_k_experts=2, moe_intermediate_size=256, sliding_window=512,
                    layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
                    max_position_embeddings=4096),
}


def checkpoint(size: str) -> str:
    """Path of a saved checkpoint of ``size`` (built on first use)."""
    settings = dict(SIZES[size])
    directory = os.path.join(tempfile.gettempdir(), f"diffgemma-bench-{size}")
    if not os.path.isfile(os.path.join(directory, "model.safetensors")):
        canvas = settings.pop("canvas_length")
        config = tiny_random.build_config(canvas_length=canvas, **settings)
        model = tiny_random.build_model(config, seed=0)
        model.save_pretrained(directory)
        tiny_random.build_tokenizer().save_pretrained(directory)
    return directory
