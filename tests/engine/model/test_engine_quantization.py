"""Quantization through the engine's front door: EngineConfig(quantization=...)."""

from __future__ import annotations

import pytest

from diffgemma_engine import Engine, EngineConfig, InvalidRequestError, SamplingParams
from diffgemma_engine.model.quantization import quantized_modules


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_engine_loads_and_generates(mode):
    with Engine(model="tiny-random", quantization=mode) as engine:
        assert quantized_modules(engine.loaded.model)
        result = engine.generate("quantized", SamplingParams(max_new_tokens=40, seed=0, ignore_eos=True,
                                                             max_denoising_steps=4))
    assert len(result.token_ids) == 40


def test_unknown_quantization_is_a_typed_error():
    with pytest.raises(InvalidRequestError) as raised:
        EngineConfig(quantization="int3")
    assert raised.value.field == "quantization"
