"""The validator registry: what plugins registered, under which names, and per-request selection.

A validator is a plain object::

    class NoTabs:
        name = "acme.no_tabs"            # required, unique, namespaced
        stage = 0                        # optional: 0 token-level, 1 structure, 2 semantic, 3 model-based
        cost = 1.0                       # optional: relative cost; orders validators within a stage
        default_enabled = True           # optional: part of the "default" selection
        scope = "block"                  # optional: "block" (every block) or "final" (the last block only)

        def validate(self, block, ctx):  # -> Iterable[Violation] | None
            ...

        def parse_options(self, options):  # optional: check this validator's per-request options
            ...                            # raise ValueError/TypeError for bad ones; the result is ctx.options

        def on_commit(self, block, ctx):   # optional: update ctx.state once the block is committed
            ...

Validators are run in ``(stage, cost, name)`` order by :class:`~diffgemma_plugins.checker.ValidatorChecker`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from diffgemma_engine.api.errors import InvalidRequestError
from diffgemma_engine.api.validation import BlockView, RequestInfo, Violation

from .errors import ValidatorRegistrationError

if TYPE_CHECKING:
    import pluggy

SCOPES = ("block", "final")
DEFAULT_SELECTION = "default"
_VALIDATOR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_SELECTION_ENTRY = re.compile(r"[+\-]?[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class ValidationContext:
    """The second argument of ``validate`` and ``on_commit``.

    Attributes:
        request: the request being checked.
        options: this validator's options for the request, as returned by its ``parse_options``
            (an empty mapping for validators without options).
        state: this validator's cross-block scratch space. Writes made during ``validate`` are
            provisional: they are kept when the checked attempt is committed and discarded otherwise.
    """

    request: RequestInfo
    options: Any
    state: dict[str, Any]


@dataclass(frozen=True)
class RegisteredValidator:
    """A validator as registered: the object plus its resolved attributes and the plugin behind it."""

    name: str
    validator: Any
    stage: int
    cost: float
    default_enabled: bool
    scope: str
    plugin: str | None

    @property
    def order(self) -> tuple[int, float, str]:
        return (self.stage, self.cost, self.name)

    @property
    def has_on_commit(self) -> bool:
        return callable(getattr(self.validator, "on_commit", None))

    def applies_to(self, block: BlockView) -> bool:
        return self.scope == "block" or block.is_final

    def parse_options(self, options: Mapping[str, Any]) -> Any:
        """Check this validator's per-request options; raise ``ValueError``/``TypeError`` for bad ones."""
        parser = getattr(self.validator, "parse_options", None)
        if parser is None:
            if options:
                raise ValueError(f"takes no options; got {sorted(options)}")
            return _NO_OPTIONS
        return parser(options)

    def validate(self, block: BlockView, ctx: ValidationContext) -> Iterable[Violation] | None:
        return self.validator.validate(block, ctx)

    def on_commit(self, block: BlockView, ctx: ValidationContext) -> None:
        self.validator.on_commit(block, ctx)


class FunctionValidator:
    """Adapts a plain ``(block, ctx) -> Iterable[Violation] | None`` function to the validator protocol."""

    __slots__ = ("name", "_function")

    def __init__(self, function: Callable[[BlockView, ValidationContext], Any], name: str) -> None:
        self.name = name
        self._function = function

    def validate(self, block: BlockView, ctx: ValidationContext) -> Iterable[Violation] | None:
        return self._function(block, ctx)

    def __repr__(self) -> str:
        return f"FunctionValidator({self.name!r}, {self._function!r})"


@dataclass(frozen=True)
class _Registration:
    validator: RegisteredValidator
    replaces: str | None


class ValidatorRegistrar:
    """The ``register`` callable handed to ``diffgemma_register_validators`` implementations."""

    def __init__(self) -> None:
        self._registrations: list[_Registration] = []
        self._plugin: str | None = None

    def __call__(
        self,
        validator: Any,
        *,
        name: str | None = None,
        stage: int | None = None,
        cost: float | None = None,
        default_enabled: bool | None = None,
        scope: str | None = None,
        replaces: str | None = None,
    ) -> RegisteredValidator:
        """Register one validator (an object, or a plain function with ``name=``).

        Keyword arguments override the object's own attributes. Missing attributes default to
        ``stage=1``, ``cost=1.0``, ``default_enabled=True``, ``scope="block"``. ``replaces`` names an
        already registered validator (e.g. a built-in) whose place this one takes.
        """
        if isinstance(validator, type):
            raise self._error(f"register an instance, not the class {validator.__name__}", name)
        if not hasattr(validator, "validate") and callable(validator):
            if name is None:
                raise self._error("a plain function needs register(fn, name=...)", None)
            validator = FunctionValidator(validator, name)
        resolved_name = name if name is not None else getattr(validator, "name", None)
        registered = RegisteredValidator(
            name=self._check_name(resolved_name),
            validator=validator,
            stage=_attribute(validator, "stage", stage, 1),
            cost=_attribute(validator, "cost", cost, 1.0),
            default_enabled=_attribute(validator, "default_enabled", default_enabled, True),
            scope=_attribute(validator, "scope", scope, "block"),
            plugin=self._plugin,
        )
        self._check_shape(registered)
        if replaces is None:
            self._check_unique(registered.name)
        self._registrations.append(_Registration(registered, replaces))
        return registered

    def registering_for(self, plugin: str | None) -> ValidatorRegistrar:
        """Attribute the following registrations to ``plugin``."""
        self._plugin = plugin
        return self

    def build(self) -> ValidatorRegistry:
        """Resolve ``replaces=`` and return the immutable registry."""
        by_name: dict[str, RegisteredValidator] = {}
        for registration in self._registrations:
            if registration.replaces is None:
                by_name[registration.validator.name] = registration.validator
        replacements: dict[str, RegisteredValidator] = {}
        for registration in self._registrations:
            target, new = registration.replaces, registration.validator
            if target is None:
                continue
            if target not in by_name:
                raise ValidatorRegistrationError(
                    f"{new.name!r} replaces {target!r}, which no plugin registered",
                    plugin=new.plugin,
                    validator=new.name,
                )
            if target in replacements:
                raise ValidatorRegistrationError(
                    f"{new.name!r} replaces {target!r}, already replaced by "
                    f"{replacements[target].name!r} of plugin {replacements[target].plugin!r}",
                    plugin=new.plugin,
                    validator=new.name,
                )
            replacements[target] = new
        for target in replacements:
            del by_name[target]
        for new in replacements.values():
            if new.name in by_name:
                raise ValidatorRegistrationError(
                    f"validator {new.name!r} is already registered by plugin {by_name[new.name].plugin!r}",
                    plugin=new.plugin,
                    validator=new.name,
                )
            by_name[new.name] = new
        ordered = sorted(by_name.values(), key=lambda v: v.order)
        return ValidatorRegistry(MappingProxyType({v.name: v for v in ordered}))

    def _error(self, message: str, validator: str | None) -> ValidatorRegistrationError:
        return ValidatorRegistrationError(message, plugin=self._plugin, validator=validator)

    def _check_name(self, name: object) -> str:
        if not isinstance(name, str) or not _VALIDATOR_NAME.fullmatch(name) or name == DEFAULT_SELECTION:
            raise self._error(
                f"validator name must be a string of letters, digits, '_', '.', '-' "
                f"(not starting with '.' or '-', and not {DEFAULT_SELECTION!r}); got {name!r}",
                None,
            )
        return name

    def _check_shape(self, registered: RegisteredValidator) -> None:
        name = registered.name
        if not callable(getattr(registered.validator, "validate", None)):
            raise self._error(f"validator {name!r} has no callable validate(block, ctx)", name)
        if isinstance(registered.stage, bool) or not isinstance(registered.stage, int) or registered.stage < 0:
            raise self._error(f"validator {name!r}: stage must be an int >= 0, got {registered.stage!r}", name)
        if isinstance(registered.cost, bool) or not isinstance(registered.cost, (int, float)) or registered.cost < 0:
            raise self._error(f"validator {name!r}: cost must be a number >= 0, got {registered.cost!r}", name)
        if not isinstance(registered.default_enabled, bool):
            raise self._error(
                f"validator {name!r}: default_enabled must be a bool, got {registered.default_enabled!r}", name
            )
        if registered.scope not in SCOPES:
            raise self._error(f"validator {name!r}: scope must be one of {SCOPES}, got {registered.scope!r}", name)

    def _check_unique(self, name: str) -> None:
        for registration in self._registrations:
            if registration.replaces is None and registration.validator.name == name:
                raise self._error(
                    f"validator {name!r} is already registered by plugin "
                    f"{registration.validator.plugin!r} (pass replaces={name!r} to take it over)",
                    name,
                )


def _attribute(validator: Any, attribute: str, override: Any, default: Any) -> Any:
    return override if override is not None else getattr(validator, attribute, default)


@dataclass(frozen=True)
class ValidatorRegistry:
    """Every registered validator by name, in run order ``(stage, cost, name)``."""

    validators: Mapping[str, RegisteredValidator]

    def __contains__(self, name: object) -> bool:
        return name in self.validators

    def __len__(self) -> int:
        return len(self.validators)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.validators)

    @property
    def defaults(self) -> tuple[str, ...]:
        return tuple(name for name, v in self.validators.items() if v.default_enabled)

    def registered_by(self, plugin: str) -> tuple[str, ...]:
        return tuple(name for name, v in self.validators.items() if v.plugin == plugin)

    def select(self, selection: Sequence[str]) -> tuple[RegisteredValidator, ...]:
        """Resolve a request's ``validators`` selection into validators, in run order.

        Plain names select exactly those; ``"default"`` adds every default-enabled validator;
        ``"+name"`` / ``"-name"`` add to / remove from the selection, which starts from the default
        set when every entry is a ``+``/``-`` entry. Raises ``InvalidRequestError("validators", ...)``.
        """
        if isinstance(selection, (str, bytes)) or not isinstance(selection, Sequence):
            raise InvalidRequestError("validators", f"expected a sequence of names, got {selection!r}")
        for entry in selection:
            if not isinstance(entry, str) or not _SELECTION_ENTRY.fullmatch(entry):
                raise InvalidRequestError("validators", f"bad selection entry {entry!r}")
        only_changes = bool(selection) and all(entry[0] in "+-" for entry in selection)
        chosen: dict[str, None] = dict.fromkeys(self.defaults if only_changes else ())
        for entry in selection:
            if entry == DEFAULT_SELECTION:
                chosen.update(dict.fromkeys(self.defaults))
                continue
            name = entry[1:] if entry[0] in "+-" else entry
            if name not in self.validators:
                known = ", ".join(self.names) or "none"
                raise InvalidRequestError("validators", f"unknown validator {name!r} (registered: {known})")
            if entry[0] == "-":
                chosen.pop(name, None)
            else:
                chosen[name] = None
        return tuple(v for name, v in self.validators.items() if name in chosen)


def collect_validators(plugin_manager: pluggy.PluginManager) -> ValidatorRegistry:
    """Call every ``diffgemma_register_validators`` implementation, attributing what each registers.

    Implementations are called in registration order (built-ins first), directly rather than through
    hook wrappers, so that a later plugin can ``replaces=`` a built-in.
    """
    registrar = ValidatorRegistrar()
    for impl in plugin_manager.hook.diffgemma_register_validators.get_hookimpls():
        if impl.wrapper or impl.hookwrapper:
            continue
        registrar.registering_for(impl.plugin_name)
        kwargs = {"register": registrar} if "register" in impl.argnames else {}
        try:
            impl.function(**kwargs)
        except ValidatorRegistrationError:
            raise
        except Exception as error:
            raise ValidatorRegistrationError(
                f"diffgemma_register_validators raised {type(error).__name__}: {error}", plugin=impl.plugin_name
            ) from error
    registrar.registering_for(None)
    return registrar.build()
