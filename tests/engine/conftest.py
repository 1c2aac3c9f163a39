from __future__ import annotations

from collections.abc import Callable

import pytest

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
    """A tiny-random engine for batching tests (see :func:`_run_batched`)."""
    from diffgemma_engine import Engine

    engine = Engine(model="tiny-random")
    yield engine
    engine.shutdown()


def _run_batched(engine, requests, timeout: float = 120) -> list:
    """Submit every request while the engine is held (``Engine.hold``), so that all of them start in the
    same step and are denoised in the same batch from the first step.

    ``requests``: (prompt, params) pairs. Returns each request's GenerationResult (or its exception).
    """
    with engine.hold():
        streams = [engine.submit(prompt, params) for prompt, params in requests]
    outcomes: list = []
    for stream in streams:
        try:
            outcomes.append(stream.result(timeout=timeout))
        except Exception as error:  # noqa: BLE001 - the caller asserts on it
            outcomes.append(error)
    return outcomes
