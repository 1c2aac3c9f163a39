"""Chunked prefill and token-budget admission: bounded prefill memory without changing results."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch

from diffgemma_engine import Engine, SamplingParams
from diffgemma_engine.api.errors import InvalidRequestError
from diffgemma_engine.model.placement import plan_placement
from diffgemma_engine.model.checkpoint import REAL_CHECKPOINT
from diffgemma_engine.model.memory import GIB
from diffgemma_engine.model.planner import plan_memory, safe_max_running, safe_running_tokens
from diffgemma_engine.loop.scheduler import Scheduler

from test_parity import PROMPT, reference_tokens  # same directory (rootdir-relative imports)


def _ids(seed: int, length: int) -> list[int]:
    rng = random.Random(seed)
    return [2, *(rng.randrange(160, 250) for _ in range(length - 1))]


LONG = _ids(5, 301)  # several sliding windows (tiny-random's is 64 tokens)


@pytest.mark.parametrize("prefix_cache", [False, True], ids=["cache-off", "cache-on"])
def test_chunked_prefill_leaves_the_state_one_pass_leaves(prefix_cache):
    whole = Engine(model="tiny-random", prefix_cache=False)
    chunked = Engine(model="tiny-random", prefix_cache=prefix_cache, prefill_chunk_tokens=24)
    try:
        expected = whole.runner.prefill(LONG)
        got = chunked.runner.prefill(LONG)
        assert got.length == expected.length == len(LONG)
        for layer_a, layer_b in zip(got.cache.layers, expected.cache.layers):
            assert layer_a.keys.shape == layer_b.keys.shape
            assert layer_a.get_seq_length() == layer_b.get_seq_length()
            torch.testing.assert_close(layer_a.keys, layer_b.keys, rtol=0, atol=1e-5)
            torch.testing.assert_close(layer_a.values, layer_b.values, rtol=0, atol=1e-5)
        got.release()
        params = SamplingParams(max_new_tokens=70, seed=9)
        assert (chunked.generate(prompt_token_ids=LONG, params=params).token_ids
                == whole.generate(prompt_token_ids=LONG, params=params).token_ids)  # fmt: skip
        if prefix_cache:  # blocks completed across chunk boundaries were stored whole
            assert chunked.prefix_cache_stats().stored_blocks >= len(LONG) // 64
    finally:
        whole.shutdown()
        chunked.shutdown()


def test_chunked_prefill_keeps_parity_with_model_generate(checkpoint_factory):
    engine = Engine(model=checkpoint_factory(canvas_length=16), prefill_chunk_tokens=5)
    try:
        expected = reference_tokens(engine.loaded.model, 48, 1, {})
        result = engine.generate(prompt_token_ids=PROMPT, params=SamplingParams(max_new_tokens=48, seed=1))
    finally:
        engine.shutdown()
    assert list(result.token_ids) == expected


@dataclass
class _Request:
    budget_tokens: int
    released: bool = False

    def release(self) -> None:
        self.released = True


def test_admission_respects_the_token_budget_and_runs_an_oversized_request_alone():
    scheduler = Scheduler(max_running=8, max_running_tokens=100)
    small = [_Request(40) for _ in range(3)]
    huge = _Request(500)
    for request in [*small, huge]:
        scheduler.add(request)
    assert scheduler.admit() == small[:2]  # 80 tokens; a third would make 120
    assert scheduler.admit() == []
    scheduler.remove(small[0])
    assert small[0].released
    assert scheduler.admit() == [small[2]]
    scheduler.remove(small[1])
    scheduler.remove(small[2])
    assert scheduler.admit() == [huge]  # larger than the budget: admitted once nothing else runs
    unbounded = Scheduler(max_running=2)
    for request in [_Request(10**6) for _ in range(3)]:
        unbounded.add(request)
    assert len(unbounded.admit()) == 2


def test_engine_admits_by_tokens_end_to_end():
    engine = Engine(model="tiny-random", max_running_tokens=120)
    batch_sizes: list[int] = []
    denoise = engine.runner.denoise

    def recording_denoise(rows):
        batch_sizes.append(len(rows))
        return denoise(rows)

    engine.runner.denoise = recording_denoise
    try:
        with engine.hold():  # all three wait together: only the token budget keeps them apart
            streams = [engine.submit(prompt_token_ids=_ids(index, 50), params=SamplingParams(max_new_tokens=40, seed=index))
                       for index in range(3)]  # 50 prompt + 40 new tokens each: one fits the budget at a time
        for stream in streams:
            stream.result(timeout=120)
        assert batch_sizes and max(batch_sizes) == 1
    finally:
        engine.shutdown()


def test_planner_reserves_the_prefix_cache_and_derives_a_token_budget():
    memory = 80 * GIB
    plan = plan_memory(REAL_CHECKPOINT, quantization="int4", card_sizes_gb=())
    reserved = plan_memory(REAL_CHECKPOINT, quantization="int4", card_sizes_gb=(), prefix_cache_bytes=8 * GIB)
    assert reserved.total_bytes == plan.total_bytes + 8 * GIB
    assert safe_max_running(reserved, memory) < safe_max_running(plan, memory)
    assert safe_running_tokens(reserved, memory, 4) < safe_running_tokens(plan, memory, 4)
    assert safe_running_tokens(plan, memory, 4) >= plan.kv.context
    placement = plan_placement(REAL_CHECKPOINT, "cuda:0", torch.bfloat16, quantization="int4",
                               device_memory_bytes=memory, prefix_cache_bytes=GIB)  # fmt: skip
    assert placement.max_running_tokens >= plan.kv.context
    asked = plan_placement(REAL_CHECKPOINT, "cuda:0", torch.bfloat16, quantization="int4",
                           device_memory_bytes=memory, max_running_tokens=5000)  # fmt: skip
    assert asked.max_running_tokens == 5000
    assert plan_placement("tiny-random", "cpu", torch.float32).max_running_tokens is None


@pytest.mark.parametrize("gib", [20, 24, 80])
def test_the_default_prefix_cache_budget_never_costs_a_running_slot(gib):
    def place(budget):
        return plan_placement(REAL_CHECKPOINT, "cuda:0", torch.bfloat16, quantization="int4",
                              device_memory_bytes=gib * GIB, prefix_cache_bytes=budget)  # fmt: skip

    default, none = place(None), place(0)
    assert default.max_running == none.max_running
    assert 0 <= default.prefix_cache_bytes <= GIB
    assert default.max_running_tokens >= default.max_running * plan_memory(REAL_CHECKPOINT, card_sizes_gb=()).kv.context
    assert plan_placement("tiny-random", "cpu", torch.float32, prefix_cache_bytes=None).prefix_cache_bytes == GIB


@pytest.mark.parametrize("field", ["prefill_chunk_tokens", "max_running_tokens"])
def test_prefill_settings_are_validated(field):
    from diffgemma_engine import EngineConfig

    with pytest.raises(InvalidRequestError, match=field):
        EngineConfig(**{field: 0})
