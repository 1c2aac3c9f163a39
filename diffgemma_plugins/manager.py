"""The ``diffgemma`` plugin manager: built-ins first, then entry points, with the environment knobs.

Environment:
    ``DIFFGEMMA_DISABLE_PLUGINS``: comma-separated plugin names never to register (entry-point names,
        or ``builtin_validators`` / ``builtin_policy``).
    ``DIFFGEMMA_LOAD_PLUGINS``: comma-separated allow-list of entry-point or distribution names; only
        these are loaded (an empty value loads none), and each must be installed.
    ``DIFFGEMMA_DISABLE_PLUGIN_AUTOLOAD``: when set (not ``0``/``false``/``no``/``off``), installed
        plugins are not loaded unless ``DIFFGEMMA_LOAD_PLUGINS`` names them.
    ``DIFFGEMMA_TRACE_PLUGINS``: when set, every hook call and its result is written to stderr.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import pluggy

from . import hookspecs
from .errors import PluginLoadError, ValidatorRegistrationError
from .hookspecs import PROJECT_NAME
from .validator_registry import ValidatorRegistry, collect_validators

ENTRY_POINT_GROUP = PROJECT_NAME
DISTRIBUTION = "diffgemma-plugins"
BUILTIN_PLUGINS = (
    ("builtin_validators", "diffgemma_plugins.validators.plugin"),
    ("builtin_policy", "diffgemma_plugins.policy"),
)
ENV_LOAD = "DIFFGEMMA_LOAD_PLUGINS"
ENV_DISABLE = "DIFFGEMMA_DISABLE_PLUGINS"
ENV_DISABLE_AUTOLOAD = "DIFFGEMMA_DISABLE_PLUGIN_AUTOLOAD"
ENV_TRACE = "DIFFGEMMA_TRACE_PLUGINS"
_FALSE_VALUES = frozenset({"", "0", "false", "no", "off"})


class PluginManager(pluggy.PluginManager):
    """pluggy's manager for the ``diffgemma`` project, plus the validators its plugins registered.

    The validator registry is collected on first use and again after any ``register``/``unregister``.
    """

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self._registry_lock = threading.RLock()
        self._registry: ValidatorRegistry | None = None

    def register(self, plugin: object, name: str | None = None) -> str | None:
        with self._registry_lock:
            self._registry = None
            return super().register(plugin, name)

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any | None:
        with self._registry_lock:
            self._registry = None
            return super().unregister(plugin, name)

    def validator_registry(self) -> ValidatorRegistry:
        """Every registered validator; raises ``ValidatorRegistrationError`` naming a misbehaving plugin."""
        with self._registry_lock:
            if self._registry is None:
                self._registry = collect_validators(self)
            return self._registry


def make_plugin_manager(*, autoload: bool | None = None, environ: Mapping[str, str] | None = None) -> PluginManager:
    """Build an independent plugin manager (tests, multi-tenant servers).

    Args:
        autoload: ``False`` loads no entry point at all (not even allow-listed ones); ``True`` loads
            installed plugins even if ``DIFFGEMMA_DISABLE_PLUGIN_AUTOLOAD`` is set; ``None`` follows the
            environment.
        environ: the environment to read the knobs from (default ``os.environ``).

    Raises:
        PluginLoadError: a plugin failed to import or register, declares a hook that does not exist,
            fails while registering validators, or an allow-listed plugin is not installed.
    """
    env = os.environ if environ is None else environ
    manager = PluginManager()
    for name in _names(env.get(ENV_DISABLE, "")):
        manager.set_blocked(name)
    for name, module in BUILTIN_PLUGINS:
        manager.register(importlib.import_module(module), name=name)
    if autoload is not False:
        _load_entry_points(manager, env, autoload)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        raise PluginLoadError(manager.get_name(error.plugin) or repr(error.plugin), str(error)) from error
    try:
        manager.validator_registry()
    except ValidatorRegistrationError as error:
        raise PluginLoadError(error.plugin or "?", str(error)) from error
    if _is_set(env.get(ENV_TRACE)):
        trace_hook_calls(manager, sys.stderr)
    return manager


class _ProcessPluginManager:
    """The lazily created process-wide manager, behind a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._manager: PluginManager | None = None

    def get(self) -> PluginManager:
        with self._lock:
            if self._manager is None:
                self._manager = make_plugin_manager()
            return self._manager


_PROCESS = _ProcessPluginManager()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, created (and its plugins loaded) on the first call."""
    return _PROCESS.get()


def trace_hook_calls(manager: pluggy.PluginManager, stream: TextIO) -> Callable[[], None]:
    """Write every hook call (implementing plugins) and its outcome to ``stream``; returns the undo."""

    def before(hook_name: str, hook_impls: list[Any], kwargs: Mapping[str, Any]) -> None:
        plugins = ", ".join(impl.plugin_name for impl in reversed(hook_impls))
        stream.write(f"diffgemma: {hook_name} -> [{plugins}]\n")

    def after(outcome: pluggy.Result[Any], hook_name: str, hook_impls: list[Any], kwargs: Mapping[str, Any]) -> None:
        if outcome.exception is not None:
            stream.write(f"diffgemma: {hook_name} raised {outcome.exception!r}\n")
        else:
            stream.write(f"diffgemma: {hook_name} returned {repr(outcome.get_result())[:200]}\n")

    return manager.add_hookcall_monitoring(before, after)


@dataclass(frozen=True)
class _EntryPoint:
    name: str
    distribution: str


def _load_entry_points(manager: PluginManager, env: Mapping[str, str], autoload: bool | None) -> None:
    allow_list = env.get(ENV_LOAD)
    autoload_on = autoload if autoload is not None else not _is_set(env.get(ENV_DISABLE_AUTOLOAD))
    if allow_list is None and not autoload_on:
        return
    available = list(_installed_entry_points())
    if allow_list is None:
        chosen = available
    else:
        chosen = []
        for wanted in _names(allow_list):
            matches = [ep for ep in available if wanted == ep.name or _same_dist(ep.distribution, wanted)]
            if not matches:
                raise PluginLoadError(wanted, f"not installed: no {ENTRY_POINT_GROUP!r} entry point or distribution of that name")
            chosen += matches
    for entry_point in chosen:
        if manager.is_blocked(entry_point.name) or manager.has_plugin(entry_point.name):
            continue
        try:
            manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=entry_point.name)
        except pluggy.PluginValidationError as error:
            raise PluginLoadError(entry_point.name, f"invalid hook implementation: {error}") from error
        except Exception as error:
            raise PluginLoadError(
                entry_point.name, f"failed to load (from {entry_point.distribution}): {type(error).__name__}: {error}"
            ) from error


def _installed_entry_points() -> Iterator[_EntryPoint]:
    for dist in importlib.metadata.distributions():
        for entry_point in dist.entry_points:
            if entry_point.group == ENTRY_POINT_GROUP:
                yield _EntryPoint(entry_point.name, dist.metadata["Name"] or "?")


def _same_dist(distribution: str, wanted: str) -> bool:
    def normal(name: str) -> str:
        return name.lower().replace("_", "-").replace(".", "-")

    return normal(distribution) == normal(wanted)


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _is_set(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in _FALSE_VALUES


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin, for ``diffgemma plugins``."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    validators: tuple[str, ...]


def list_plugins(plugin_manager: PluginManager | None = None) -> tuple[PluginInfo, ...]:
    """Every registered plugin: name, distribution and version, the hooks it implements, its validators."""
    manager = plugin_manager if plugin_manager is not None else get_plugin_manager()
    registry = manager.validator_registry()
    distributions = {id(plugin): dist for plugin, dist in manager.list_plugin_distinfo()}
    builtin_names = {name for name, _ in BUILTIN_PLUGINS}
    infos = []
    for name, plugin in manager.list_name_plugin():
        if plugin is None:  # a blocked name
            continue
        dist = distributions.get(id(plugin))
        if dist is not None:
            distribution, version = dist.metadata["Name"], dist.version
        elif name in builtin_names:
            distribution, version = DISTRIBUTION, _own_version()
        else:
            distribution, version = None, None
        hooks = tuple(sorted(caller.name for caller in manager.get_hookcallers(plugin) or ()))
        infos.append(PluginInfo(name, distribution, version, hooks, registry.registered_by(name)))
    return tuple(infos)


def _own_version() -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
