"""The opt-in torch.compile of the decoder forward gives the same tokens (slow: compilation takes ~30 s)."""

from __future__ import annotations

import pytest

from diffgemma_engine import Engine, SamplingParams


@pytest.mark.slow
def test_compiled_decoder_gives_the_same_tokens(tiny_engine):
    params = SamplingParams(max_new_tokens=40, seed=0, max_denoising_steps=6)
    with Engine(model="tiny-random", compile=True) as compiled:
        assert compiled.generate("compile me", params).token_ids == tiny_engine.generate("compile me", params).token_ids
