"""Batch invariance: a request's output does not depend on what else is in its batch."""

from __future__ import annotations

from diffgemma_engine import SamplingParams

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
