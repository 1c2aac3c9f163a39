"""Automatic prefix caching: requests served from the cache produce the tokens computing gives."""

from __future__ import annotations

import random

import pytest
import torch

from diffgemma_engine import Engine, SamplingParams
from diffgemma_engine.api.errors import InvalidRequestError
from diffgemma_engine.loop.prefix_cache import DEFAULT_BLOCK_TOKENS, PrefixCache, PromptTokenCounters

BLOCK = DEFAULT_BLOCK_TOKENS


def _ids(seed: int, length: int) -> list[int]:
    """Printable byte tokens of the tiny-random tokenizer, seeded."""
    rng = random.Random(seed)
    return [rng.randrange(160, 250) for _ in range(length)]


SYSTEM = [2, 105, *_ids(1, 150), 106]  # longer than tiny-random's 64-token sliding window
CONTEXT = [2, 105, *_ids(2, 400), 106]


@pytest.fixture(scope="module")
def engines():
    on = Engine(model="tiny-random")
    off = Engine(model="tiny-random", prefix_cache=False)
    yield on, off
    on.shutdown()
    off.shutdown()


def _both(engines, prompt: list[int], params: SamplingParams):
    on, off = engines
    return (on.generate(prompt_token_ids=prompt, params=params),
            off.generate(prompt_token_ids=prompt, params=params))  # fmt: skip


def test_shared_system_prompt_served_from_cache_gives_identical_tokens(engines):
    for index, question in enumerate(_ids(10 + i, 20 + 7 * i) for i in range(4)):
        params = SamplingParams(max_new_tokens=40, seed=100 + index)
        cached, computed = _both(engines, [*SYSTEM, *question], params)
        assert cached.token_ids == computed.token_ids
        assert computed.usage.cached_tokens == 0
        if index > 0:  # every block wholly inside the system prompt is reused
            assert cached.usage.cached_tokens == (len(SYSTEM) // BLOCK) * BLOCK


def test_rag_context_questions_reuse_the_context(engines):
    for index in range(3):
        prompt = [*CONTEXT, 105, *_ids(30 + index, 25), 106]
        cached, computed = _both(engines, prompt, SamplingParams(max_new_tokens=48, seed=7 + index))
        assert cached.token_ids == computed.token_ids
        assert cached.text == computed.text
        if index > 0:
            assert cached.usage.cached_tokens >= (len(CONTEXT) // BLOCK) * BLOCK
        assert cached.usage.cached_tokens <= cached.usage.prompt_tokens


def test_chat_continuing_the_previous_answer_reuses_the_committed_canvases(engines):
    on, _ = engines
    canvas = on.canvas_length
    prompt = [*SYSTEM, 105, *_ids(40, 30), 106, 105]
    params = SamplingParams(max_new_tokens=3 * canvas, seed=3, ignore_eos=True)
    for turn in range(3):
        cached, computed = _both(engines, prompt, params)
        assert cached.token_ids == computed.token_ids
        if turn > 0:
            # everything the previous request encoded up to its last whole block: its prompt and the
            # canvases it committed (all but the last), which this prompt repeats
            previous_encoded = previous_prompt_length + 2 * canvas
            assert cached.usage.cached_tokens == (previous_encoded // BLOCK) * BLOCK
            assert cached.usage.cached_tokens > previous_prompt_length
        previous_prompt_length = len(prompt)
        prompt = [*prompt, *cached.token_ids, 106, 105, *_ids(50 + turn, 12), 106, 105]


def test_batched_mix_of_cached_and_uncached_prompts(core_engine):
    warm = [*CONTEXT, *_ids(60, 10)]
    requests = [
        ([*CONTEXT, *_ids(61, 9)], SamplingParams(max_new_tokens=40, seed=1)),
        (_ids(62, 90), SamplingParams(max_new_tokens=40, seed=2)),
        ([*SYSTEM, *_ids(63, 5)], SamplingParams(max_new_tokens=70, seed=3)),
        ([*CONTEXT, *_ids(64, 33)], SamplingParams(max_new_tokens=33, seed=4, entropy_bound=0.5)),
    ]
    off = Engine(model="tiny-random", prefix_cache=False)
    try:
        expected = [off.generate(prompt_token_ids=ids, params=params) for ids, params in requests]
    finally:
        off.shutdown()
    _run_ids(core_engine, [(warm, SamplingParams(max_new_tokens=8, seed=0))])
    results = _run_ids(core_engine, requests)
    for got, want in zip(results, expected):
        assert not isinstance(got, BaseException), got
        assert got.token_ids == want.token_ids
    assert results[0].usage.cached_tokens > 0 and results[3].usage.cached_tokens > 0
    assert results[1].usage.cached_tokens == 0 and results[2].usage.cached_tokens == 0


def _run_ids(engine, requests):
    """Every request in one batch from the first step (``Engine.hold``): token-id prompts."""
    with engine.hold():
        streams = [engine.submit(prompt_token_ids=ids, params=params) for ids, params in requests]
    outcomes: list = []
    for stream in streams:
        try:
            outcomes.append(stream.result(timeout=120))
        except Exception as error:  # noqa: BLE001 - the caller asserts on it
            outcomes.append(error)
    return outcomes


def test_restored_cache_state_equals_computed_state_including_sliding_layers(engines):
    on, off = engines
    prompt = [*CONTEXT, *_ids(70, 21)]
    on.runner.prefill(prompt).release()  # warm the cache
    restored = on.runner.prefill(prompt)
    computed = off.runner.prefill(prompt)
    try:
        assert restored.cached_tokens == (len(prompt) // BLOCK) * BLOCK
        assert restored.length == computed.length == len(prompt)
        for layer_a, layer_b in zip(restored.cache.layers, computed.cache.layers):
            assert layer_a.keys.shape == layer_b.keys.shape
            assert layer_a.get_seq_length() == layer_b.get_seq_length()
            torch.testing.assert_close(layer_a.keys, layer_b.keys, rtol=0, atol=1e-5)
            torch.testing.assert_close(layer_a.values, layer_b.values, rtol=0, atol=1e-5)
        sliding = [layer for layer in computed.cache.layers if getattr(layer, "is_sliding", False)]
        assert sliding and all(layer.keys.shape[-2] == layer.sliding_window - 1 for layer in sliding)
    finally:
        restored.release()


def test_memory_stays_within_budget_while_streaming_distinct_prefixes():
    probe = Engine(model="tiny-random")
    try:
        probe.runner.prefill(_ids(0, BLOCK)).release()
        block_bytes = probe.prefix_cache_stats().stored_bytes
    finally:
        probe.shutdown()
    budget = 6 * block_bytes + block_bytes // 2
    engine = Engine(model="tiny-random", prefix_cache_bytes=budget)
    try:
        for index in range(25):
            prompt = [2, *_ids(1000 + index, 3 * BLOCK + 5)]
            engine.generate(prompt_token_ids=prompt, params=SamplingParams(max_new_tokens=8, seed=index))
            stats = engine.prefix_cache_stats()
            assert stats.stored_bytes <= budget
        assert stats.evicted_blocks > 0
        # the most recent prefix is still there; the first one was evicted
        recent = engine.generate(prompt_token_ids=prompt, params=SamplingParams(max_new_tokens=8, seed=0))
        first = engine.generate(prompt_token_ids=[2, *_ids(1000, 3 * BLOCK + 5)],
                                params=SamplingParams(max_new_tokens=8, seed=0))  # fmt: skip
        assert recent.usage.cached_tokens == 3 * BLOCK
        assert first.usage.cached_tokens == 0
    finally:
        engine.shutdown()


def test_counters_add_up_and_off_means_nothing_cached(engines):
    on, off = engines
    before = on.prefix_cache_stats()
    prompt = [*SYSTEM, *_ids(80, 17)]
    results = [on.generate(prompt_token_ids=prompt, params=SamplingParams(max_new_tokens=8, seed=s)) for s in (1, 2)]
    after = on.prefix_cache_stats()
    cached = sum(r.usage.cached_tokens for r in results)
    assert after.cached_prompt_tokens - before.cached_prompt_tokens == cached
    assert (after.cached_prompt_tokens + after.computed_prompt_tokens
            - before.cached_prompt_tokens - before.computed_prompt_tokens) == 2 * len(prompt)  # fmt: skip
    assert results[1].usage.cached_tokens > 0
    off_stats = off.prefix_cache_stats()
    assert off_stats.cached_prompt_tokens == 0 and off_stats.stored_bytes == 0 and off_stats.computed_prompt_tokens > 0


def test_pins_protect_blocks_in_use_and_release_makes_them_evictable():
    tensor = torch.zeros(1, 1, 4, 2)  # 32 bytes
    per_block = 2 * tensor.numel() * tensor.element_size()
    cache = PrefixCache(budget_bytes=2 * per_block, block_tokens=4)
    first = cache.insert(None, (1, 2, 3, 4), [tensor], [tensor])
    second = cache.insert(first, (5, 6, 7, 8), [tensor], [tensor])
    assert cache.insert(None, (9, 9, 9, 9), [tensor], [tensor]) is None  # all pinned: nothing to evict
    cache.release([first, second])
    assert cache.match([1, 2, 3, 4, 5, 6, 7, 8, 0]) == [first, second]  # pins them again
    cache.release([first, second])
    other = cache.insert(None, (9, 9, 9, 9), [tensor], [tensor])  # evicts the leaf, then nothing more
    assert other is not None and cache.stored_bytes <= 2 * per_block
    assert cache.match([1, 2, 3, 4, 5, 6, 7, 8]) == [first]
    assert cache.stats(PromptTokenCounters()).evicted_blocks == 1


def test_prefix_cache_settings_are_validated():
    from diffgemma_engine import EngineConfig

    with pytest.raises(InvalidRequestError, match="prefix_cache_bytes"):
        EngineConfig(prefix_cache_bytes=-1)
    with pytest.raises(InvalidRequestError, match="prefix_cache"):
        EngineConfig(prefix_cache="yes")


def test_sliding_kv_of_interior_blocks_goes_first_and_matches_stay_exact():
    """A budget that holds a long context's full-attention KV but not all of its sliding-layer KV:
    interior blocks give up their sliding KV (shallowest first), later questions still reuse the
    context, and their tokens equal computing."""
    probe = Engine(model="tiny-random")
    try:
        probe.runner.prefill(_ids(0, BLOCK)).release()
        block = next(iter(probe.runner.prefix_cache._blocks.values()))
        parts = [key.numel() * key.element_size() * 2 for key in block.keys]  # keys and values per layer
        full_part = sum(size for size, sliding in zip(parts, block.sliding) if not sliding)
        sliding_part = sum(parts) - full_part
    finally:
        probe.shutdown()
    blocks = (len(CONTEXT) + 22) // BLOCK
    budget = blocks * full_part + 2 * sliding_part  # every block's full KV, sliding KV for two of them
    assert budget < blocks * (full_part + sliding_part)
    engine = Engine(model="tiny-random", prefix_cache_bytes=budget)
    off = Engine(model="tiny-random", prefix_cache=False)
    try:
        for index in range(3):
            prompt = [*CONTEXT, 105, *_ids(90 + index, 20), 106]
            params = SamplingParams(max_new_tokens=24, seed=index)
            cached = engine.generate(prompt_token_ids=prompt, params=params)
            assert cached.token_ids == off.generate(prompt_token_ids=prompt, params=params).token_ids
            if index > 0:
                assert cached.usage.cached_tokens == (len(CONTEXT) // BLOCK) * BLOCK
        stats = engine.prefix_cache_stats()
        assert stats.dropped_sliding_blocks > 0 and stats.stored_bytes <= budget
    finally:
        engine.shutdown()
        off.shutdown()


def test_a_match_ends_where_the_sliding_window_is_whole():
    tensor = torch.zeros(1, 1, 4, 2)
    cache = PrefixCache(budget_bytes=1 << 20, block_tokens=4)
    chain, parent = [], None
    for start in range(0, 16, 4):
        parent = cache.insert(parent, tuple(range(start, start + 4)), [tensor, tensor], [tensor, tensor],
                              sliding=(True, False))  # fmt: skip
        chain.append(parent)
    cache.release(chain)
    cache._drop_sliding(chain[2])
    assert cache.match(list(range(16)), window_blocks=1) == chain  # the last block's window is whole
    cache.release(chain)
    assert cache.match(list(range(16)), window_blocks=2) == chain[:2]  # block 2 lost its sliding KV
    cache.release(chain[:2])
    assert cache.match(list(range(16)), window_blocks=5) == chain[:2]  # shorter than a window: all held
