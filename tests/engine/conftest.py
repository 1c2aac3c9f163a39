from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from diffgemma_engine.model import tiny_random


def save_tiny_checkpoint(directory, canvas_length: int = 16, seed: int = 3, **text_overrides) -> str:
    """A tiny DiffusionGemma checkpoint in the real on-disk format (model, tokenizer, generation config)."""
    config = tiny_random.build_config(canvas_length=canvas_length, **text_overrides)
    model = tiny_random.build_model(config, seed=seed)
    model.save_pretrained(directory)
    tiny_random.build_tokenizer().save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory) -> Callable[..., str]:
    cache: dict[tuple, str] = {}

    def make(canvas_length: int = 16, seed: int = 3, **text_overrides) -> str:
        key = (canvas_length, seed, tuple(sorted(text_overrides.items())))
        if key not in cache:
            directory = tmp_path_factory.mktemp(f"ckpt_c{canvas_length}_s{seed}")
            cache[key] = save_tiny_checkpoint(directory, canvas_length, seed, **text_overrides)
        return cache[key]

    return make


@pytest.fixture
def run_batched():
    return _run_batched


@pytest.fixture
def core_engine():
    """An engine whose worker thread is never started, for driving ``engine.core`` by hand."""
    from diffgemma_engine import Engine

    engine = Engine(model="tiny-random")
    yield engine
    engine.shutdown()


def _run_batched(engine, requests) -> list:
    """Drive the engine core by hand so that every request is in the same batch from the first step.

    ``requests``: (prompt, params) pairs. Returns each request's GenerationResult (or its exception).
    The engine's worker thread must not be running (use the ``core_engine`` fixture).
    """
    if engine._thread is not None:
        raise RuntimeError("run_batched needs an engine whose worker thread never started")
    from diffgemma_engine.api.outputs import FinalEvent

    outcomes: dict[int, object] = {}

    def sink(index):
        def emit(item):
            if isinstance(item, FinalEvent):
                outcomes[index] = item.result
            elif isinstance(item, BaseException):
                outcomes[index] = item

        return emit

    for index, (prompt, params) in enumerate(requests):
        sequence, _ = engine._prepare(prompt, params, None, None, None)
        sequence.emit = sink(index)
        engine.core.add(sequence)
    with torch.inference_mode():
        while engine.core.has_work:
            engine.core.step()
    return [outcomes[index] for index in range(len(requests))]
