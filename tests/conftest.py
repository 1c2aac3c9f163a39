"""Shared fixtures: tiny checkpoints saved to disk, and engines that are shut down after use."""

from __future__ import annotations

import pytest
import torch

from diffgemma_engine import Engine, shutdown_engines

# The test models are tiny: one intra-op thread is faster than two that contend, and keeps the suite's
# timing steady on small shared machines.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_engine():
    """A private tiny-random engine for the session (not the shared one)."""
    engine = Engine(model="tiny-random")
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _shutdown_shared_engines():
    yield
    shutdown_engines()
