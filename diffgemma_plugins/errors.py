"""Errors of the plugin layer. Each one names its culprit (a plugin or a validator)."""

from __future__ import annotations

from diffgemma_engine.api.errors import DiffGemmaError


class PluginLoadError(DiffGemmaError):
    """An installed or requested plugin could not be loaded. ``plugin`` names it."""

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(f"diffgemma plugin {plugin!r}: {message}")


class ValidatorRegistrationError(DiffGemmaError, ValueError):
    """A plugin registered a validator that cannot be used (bad object, bad attribute, duplicate name).

    ``plugin`` names the registering plugin (``None`` when registered outside a plugin) and
    ``validator`` the validator's name, where one is known.
    """

    def __init__(self, message: str, *, plugin: str | None = None, validator: str | None = None) -> None:
        self.plugin = plugin
        self.validator = validator
        culprit = f"plugin {plugin!r}: " if plugin else ""
        super().__init__(f"{culprit}{message}")


class PluginContractError(DiffGemmaError, TypeError):
    """A plugin's hook returned something the hook's contract does not allow. ``hook`` names the hook."""

    def __init__(self, hook: str, message: str) -> None:
        self.hook = hook
        super().__init__(f"{hook}: {message}")
