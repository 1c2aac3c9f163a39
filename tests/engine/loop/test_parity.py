"""Reference parity: one request reproduces transformers' DiffusionGemmaForBlockDiffusion.generate()."""

from __future__ import annotations

import pytest
import torch
from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

from diffgemma_engine import Engine, SamplingParams
from diffgemma_engine.model.tiny_random import EOS_TOKEN_IDS

PROMPT = [2, 105, 245, 243, 229, 242, 138, 232, 233, 106, 138, 105, 237, 239, 228, 229, 236, 138]

CASES = [
    # canvas, max_new_tokens, seed, sampler settings
    pytest.param(8, 40, 0, {}, id="canvas8-defaults"),
    pytest.param(16, 48, 1, {}, id="canvas16-defaults"),
    pytest.param(32, 96, 2, {}, id="canvas32-three-canvases"),
    pytest.param(16, 40, 3, {"adaptive_stopping": False, "max_denoising_steps": 6}, id="adaptive-off"),
    pytest.param(16, 37, 4, {"entropy_bound": 0.7, "t_min": 0.2, "t_max": 1.1, "max_denoising_steps": 12},
                 id="non-default-sampler"),
    pytest.param(8, 64, 5, {"entropy_bound": 3.0, "stability_threshold": 2, "confidence_threshold": 0.8},
                 id="fast-convergence"),
    pytest.param(32, 20, 6, {"max_denoising_steps": 5}, id="length-cut-mid-canvas"),
]


def reference_tokens(model, max_new_tokens: int, seed: int, settings: dict) -> list[int]:
    adaptive = settings.get("adaptive_stopping", True)
    kwargs = dict(
        max_new_tokens=max_new_tokens,
        max_denoising_steps=settings.get("max_denoising_steps", 48),
        t_min=settings.get("t_min", 0.4),
        t_max=settings.get("t_max", 0.8),
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=settings.get("entropy_bound", 0.1)),
        stability_threshold=settings.get("stability_threshold", 1),
        confidence_threshold=settings.get("confidence_threshold", 0.005) if adaptive else None,
    )
    torch.manual_seed(seed)
    sequences = model.generate(torch.tensor([PROMPT]), **kwargs).sequences[0, len(PROMPT):].tolist()
    tokens = []
    for token in sequences[:max_new_tokens]:
        if token in EOS_TOKEN_IDS:
            break
        tokens.append(token)
    return tokens


@pytest.mark.parametrize(("canvas", "max_new_tokens", "seed", "settings"), CASES)
def test_tokens_identical_to_model_generate(checkpoint_factory, canvas, max_new_tokens, seed, settings):
    engine = Engine(model=checkpoint_factory(canvas_length=canvas))
    try:
        expected = reference_tokens(engine.loaded.model, max_new_tokens, seed, settings)
        result = engine.generate(
            prompt_token_ids=PROMPT, params=SamplingParams(max_new_tokens=max_new_tokens, seed=seed, **settings)
        )
    finally:
        engine.shutdown()
    assert list(result.token_ids) == expected
    if len(expected) == max_new_tokens:
        assert result.finish_reason == "length"
    else:
        assert result.finish_reason == "stop"


def test_parity_cases_cover_eos_inside_a_canvas_and_early_stopping(checkpoint_factory):
    """Guards the parity suite itself: at least one case ends on an EOS mid-canvas after some tokens,
    and adaptive stopping really fires somewhere (fewer steps than the cap)."""
    saw_mid_canvas_eos = saw_early_stop = False
    for case in CASES:
        canvas, max_new_tokens, seed, settings = case.values
        engine = Engine(model=checkpoint_factory(canvas_length=canvas))
        try:
            result = engine.generate(
                prompt_token_ids=PROMPT, params=SamplingParams(max_new_tokens=max_new_tokens, seed=seed, **settings)
            )
        finally:
            engine.shutdown()
        if result.finish_reason == "stop" and len(result.token_ids) % canvas != 0:
            saw_mid_canvas_eos = True
        cap = settings.get("max_denoising_steps", 48)
        if settings.get("adaptive_stopping", True) and result.stats.denoising_steps < cap * result.stats.blocks:
            saw_early_stop = True
    assert saw_mid_canvas_eos
    assert saw_early_stop
