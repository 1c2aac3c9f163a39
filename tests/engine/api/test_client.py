"""The engine surface adapters use: the in-process engine satisfies EngineClient and reports its load."""

from __future__ import annotations

import dataclasses

from diffgemma_engine import Engine, EngineClient, EngineStats, PrefixCacheStats, SamplingParams


def test_the_in_process_engine_is_an_engine_client_and_reports_its_load():
    with Engine(model="tiny-random", max_running=2) as engine:
        assert isinstance(engine, EngineClient)
        idle = engine.stats()
        assert (idle.running, idle.waiting, idle.max_running) == (0, 0, 2)
        assert isinstance(idle.prefix_cache, PrefixCacheStats)
        engine.generate("hello", SamplingParams(max_new_tokens=4, seed=0))
        after = engine.stats()
        assert (after.running, after.waiting) == (0, 0)
        assert after.prefix_cache.lookups == idle.prefix_cache.lookups + 1
        assert engine.for_model(engine.model_name) is engine
        assert engine.sampler_defaults == engine.loaded.defaults  # the checkpoint's generation_config


def test_engine_stats_is_a_frozen_value():
    stats = EngineStats(running=1, waiting=2, max_running=4)
    assert stats.prefix_cache is None
    assert dataclasses.is_dataclass(stats) and dataclasses.fields(stats)
    try:
        stats.running = 3  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("EngineStats must be frozen")
