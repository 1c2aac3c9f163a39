"""Shared fixtures: tiny checkpoints saved to disk, and engines that are shut down after use."""

from __future__ import annotations

import pytest

from diffgemma_engine import Engine, shutdown_engines


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
