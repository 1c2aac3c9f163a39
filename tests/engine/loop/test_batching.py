"""What batching guarantees (docs/architecture.md, "Batch invariance"): each request draws from its
own generator, a batch of one reproduces ``model.generate`` (tests/engine/loop/test_parity_real_layout.py),
and a given batch is reproducible; a row's arithmetic may still move in the last bits when its batch
changes, by a bounded amount in fp32 and visibly in bf16 when its prefix is padded beside a longer one.
"""

from __future__ import annotations

import pytest
import torch

from diffgemma_engine import SamplingParams
from diffgemma_engine.model import tiny_random
from diffgemma_engine.model.loader import load_model
from diffgemma_engine.loop.model_runner import DenoiseRow, ModelRunner

REQUESTS = [
    ("Hello there", SamplingParams(max_new_tokens=70, seed=1)),
    ("A much longer prompt with many more tokens in it than any of the other prompts", SamplingParams(
        max_new_tokens=40, seed=2, t_min=0.2, t_max=0.9)),
    ("Short", SamplingParams(max_new_tokens=100, seed=3, entropy_bound=0.5, max_denoising_steps=10)),
    ("Mid-size prompt here", SamplingParams(max_new_tokens=33, seed=4, adaptive_stopping=False,
                                            max_denoising_steps=6)),
    ("Stops early, please", SamplingParams(max_new_tokens=64, seed=5, entropy_bound=3.0, confidence_threshold=0.8)),
]


def test_batched_results_equal_solo_results(core_engine, run_batched):
    solo = [run_batched(core_engine, [request])[0] for request in REQUESTS]
    batched = run_batched(core_engine, REQUESTS)
    for alone, together in zip(solo, batched):
        assert not isinstance(together, BaseException), together
        assert together.token_ids == alone.token_ids
        assert together.text == alone.text
        assert together.finish_reason == alone.finish_reason
        assert together.stats.denoising_steps == alone.stats.denoising_steps


def test_batch_really_mixes_prefix_lengths_and_step_counts(core_engine, run_batched):
    """The invariance test above is only meaningful if rows differ: check that they do."""
    batched = run_batched(core_engine, REQUESTS)
    prompt_lengths = {result.usage.prompt_tokens for result in batched}
    steps = {result.stats.denoising_steps for result in batched}
    assert len(prompt_lengths) == len(REQUESTS)
    assert len(steps) > 2


def test_requests_submitted_inside_hold_start_as_one_batch(core_engine, run_batched, monkeypatch):
    batch_sizes: list[int] = []
    denoise = core_engine.runner.denoise

    def recording_denoise(rows):
        batch_sizes.append(len(rows))
        return denoise(rows)

    monkeypatch.setattr(core_engine.runner, "denoise", recording_denoise)
    outcomes = run_batched(core_engine, REQUESTS)
    assert all(not isinstance(outcome, BaseException) for outcome in outcomes)
    assert batch_sizes[0] == len(REQUESTS)


def test_same_seed_same_output_different_seed_different_output(tiny_engine):
    first = tiny_engine.generate("seeded", SamplingParams(max_new_tokens=32, seed=11))
    again = tiny_engine.generate("seeded", SamplingParams(max_new_tokens=32, seed=11))
    other = tiny_engine.generate("seeded", SamplingParams(max_new_tokens=32, seed=12))
    assert first.token_ids == again.token_ids
    assert first.token_ids != other.token_ids
    assert first.seed == 11


def test_unseeded_requests_report_the_seed_that_reproduces_them(tiny_engine):
    first = tiny_engine.generate("unseeded", SamplingParams(max_new_tokens=24))
    replay = tiny_engine.generate("unseeded", SamplingParams(max_new_tokens=24, seed=first.seed))
    assert replay.token_ids == first.token_ids


def test_back_to_back_requests_never_reuse_a_finished_requests_prefix(tiny_engine):
    """Each request's prefix cache is keyed by a unique serial, not by an address that can be recycled."""
    params = SamplingParams(max_new_tokens=16, seed=0, max_denoising_steps=3)
    first = [tiny_engine.generate(prompt, params).token_ids for prompt in ("alpha", "beta", "gamma")]
    again = [tiny_engine.generate(prompt, params).token_ids for prompt in ("gamma", "alpha", "beta")]
    assert again == [first[2], first[0], first[1]]


# -- the real layer layout (5 sliding : 1 full, K=V full layers, window 64) -------------------------

REAL_LAYOUT_REQUESTS = [
    ("Hi", SamplingParams(max_new_tokens=32, seed=1, max_denoising_steps=8)),
    ("A long prompt: " + "the quick brown fox jumps over the lazy dog; " * 4,
     SamplingParams(max_new_tokens=32, seed=2, max_denoising_steps=8)),
    ("Mid-size prompt", SamplingParams(max_new_tokens=24, seed=3, entropy_bound=0.5, max_denoising_steps=8)),
]


@pytest.fixture(scope="module")
def real_layout_directory(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("batching_real_layout")
    tiny_random.build_model(tiny_random.build_real_layout_config(canvas_length=16), seed=3).save_pretrained(directory)
    tiny_random.build_tokenizer().save_pretrained(directory)
    return str(directory)


def solo_and_batched_logits(directory: str, dtype: torch.dtype) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Decoder logits of a 20-token and a 150-token prefix (window 64), each alone and both in one batch."""
    runner = ModelRunner(load_model(directory, "cpu", dtype))
    generator = torch.Generator().manual_seed(0)
    prefixes = [runner.prefill([2] + torch.randint(130, 380, (n - 1,), generator=generator).tolist()) for n in (20, 150)]
    rows = [DenoiseRow(prefix, runner.new_canvas(generator), None) for prefix in prefixes]
    solo = [runner.denoise([row])[0].clone() for row in rows]
    batched = runner.denoise(rows).clone()
    return solo, list(batched)


def test_real_layout_fp32_batched_logits_stay_within_a_small_bound_of_solo(real_layout_directory):
    solo, batched = solo_and_batched_logits(real_layout_directory, torch.float32)
    for alone, together in zip(solo, batched):
        assert torch.allclose(alone, together, rtol=0, atol=1e-3)


def test_real_layout_bf16_padded_row_is_not_bitwise_its_solo_run(real_layout_directory):
    """The limit the docs state: a short prefix left-padded beside a longer one is computed with other
    reduction orders, and in bf16 its logits move visibly (so its tokens can differ from its solo run)."""
    solo, batched = solo_and_batched_logits(real_layout_directory, torch.bfloat16)
    assert not torch.equal(solo[0], batched[0])


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_real_layout_same_batch_twice_gives_the_same_tokens(real_layout_directory, run_batched, dtype):
    from diffgemma_engine import Engine

    with Engine(model=real_layout_directory, device="cpu", dtype=dtype) as engine:
        first = run_batched(engine, REAL_LAYOUT_REQUESTS)
        again = run_batched(engine, REAL_LAYOUT_REQUESTS)
        solo = run_batched(engine, REAL_LAYOUT_REQUESTS[:1])
        solo_again = run_batched(engine, REAL_LAYOUT_REQUESTS[:1])
    for one, other in zip(first, again):
        assert not isinstance(one, BaseException), one
        assert (one.token_ids, one.seed, one.finish_reason) == (other.token_ids, other.seed, other.finish_reason)
    assert solo[0].token_ids == solo_again[0].token_ids
    assert len({result.usage.prompt_tokens for result in first}) == len(REAL_LAYOUT_REQUESTS)
