"""Fixtures for the plugin-layer tests: a fresh plugin manager per test that never loads installed plugins."""

from __future__ import annotations

import pytest

from diffgemma_plugins import PluginManager, ValidatorCheckerFactory, make_checker_factory, make_plugin_manager


@pytest.fixture
def pm() -> PluginManager:
    return make_plugin_manager(autoload=False, environ={})


@pytest.fixture
def factory(pm: PluginManager) -> ValidatorCheckerFactory:
    return make_checker_factory(pm)
