"""diffgemma's plugin layer: pluggy hooks, the validator registry, the built-in validators and the checker.

Write a validator and hand it over from a plugin::

    from diffgemma_plugins import Violation, hookimpl

    class NoTabs:
        name = "acme.no_tabs"

        def validate(self, block, ctx):
            at = block.text.find("\\t")
            if at >= 0:
                yield Violation(self.name, "tab", "tab character", spans=(block.char_span_to_tokens(at, at + 1),))

    @hookimpl
    def diffgemma_register_validators(register):
        register(NoTabs())
"""

from __future__ import annotations

from diffgemma_engine.api.validation import (
    BlockView,
    RepairAction,
    RepairDecision,
    Severity,
    ValidationReport,
    Violation,
)

from .checker import ValidatorChecker, ValidatorCheckerFactory, make_checker_factory
from .errors import PluginContractError, PluginLoadError, ValidatorRegistrationError
from .hookspecs import hookimpl, hookspec
from .manager import PluginInfo, PluginManager, get_plugin_manager, list_plugins, make_plugin_manager
from .validator_registry import ValidationContext, ValidatorRegistrar, ValidatorRegistry

__all__ = [
    "BlockView",
    "ValidatorChecker",
    "PluginContractError",
    "PluginInfo",
    "PluginLoadError",
    "PluginManager",
    "RepairAction",
    "RepairDecision",
    "Severity",
    "ValidationContext",
    "ValidationReport",
    "ValidatorCheckerFactory",
    "ValidatorRegistrar",
    "ValidatorRegistrationError",
    "ValidatorRegistry",
    "Violation",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "list_plugins",
    "make_checker_factory",
    "make_plugin_manager",
]
