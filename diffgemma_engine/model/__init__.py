"""Checkpoints and weights: built-in names, reading and loading checkpoints (the built-in ``tiny-random``
model included), memory planning, placement, expert offload and quantization."""
