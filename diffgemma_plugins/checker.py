"""The engine's :class:`~diffgemma_engine.api.validation.BlockChecker`, built from the registered validators.

:func:`make_checker_factory` is what the engine loads through the ``diffgemma.checker_factory`` entry
point: a :class:`ValidatorCheckerFactory` bound to the process-wide plugin manager. It turns a
request's ``validators`` / ``validator_options`` into a :class:`ValidatorChecker` (or raises
``InvalidRequestError`` before any compute); the checker runs the validators, keeps their cross-block
state transactional, tells the observer hooks, and asks the policy hooks what to do with a failed block.

The engine runs ``check`` and ``decide`` on a validation thread (one request's calls never overlap), and
``on_commit`` / ``on_exhausted`` on its worker thread; :attr:`ValidatorChecker.running_validator` names the
validator running now, so a block check that runs over the engine's limit is reported against it.

The names: the engine declares two protocols, :class:`~diffgemma_engine.api.validation.BlockChecker` (checks
one request's blocks) and :class:`~diffgemma_engine.api.validation.CheckerFactory` (builds a request's
checker); this module implements them from the registered validators as :class:`ValidatorChecker` and
:class:`ValidatorCheckerFactory`; :func:`make_checker_factory` builds the factory and is the target of the
``diffgemma.checker_factory`` entry-point group.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from diffgemma_engine.api.errors import InvalidRequestError, ValidatorCrashedError
from diffgemma_engine.api.params import OVERRIDABLE_FIELDS
from diffgemma_engine.api.validation import (
    BlockView,
    RepairAction,
    RepairAttempt,
    RepairDecision,
    RequestInfo,
    Severity,
    ValidationReport,
    Violation,
)

from .errors import PluginContractError
from .manager import PluginManager, get_plugin_manager
from .options import FIELD, RequestOptions, parse_request_options
from .policy import enforce_budget
from .validator_registry import RegisteredValidator, ValidationContext

SAMPLER_OVERRIDE_KEYS = frozenset(OVERRIDABLE_FIELDS)  # the engine's list: what SamplingParams.with_overrides takes
CRASH_CODE = "validator_crashed"


class PluginHooks:
    """Typed, keyword-complete calls of the per-request hooks (so no argument is ever forgotten)."""

    def __init__(self, plugin_manager: PluginManager) -> None:
        self._hook = plugin_manager.hook

    def repair_decision(
        self,
        block: BlockView,
        report: ValidationReport,
        attempts: tuple[RepairAttempt, ...],
        request: RequestInfo,
        override: Callable[..., Any] | None,
    ) -> Any:
        kwargs = {"block": block, "report": report, "attempts": attempts, "request": request}
        caller = self._hook.diffgemma_repair_decision
        return caller.call_extra([override], kwargs) if override is not None else caller(**kwargs)

    def select_renoise_positions(
        self, block: BlockView, report: ValidationReport, attempts: tuple[RepairAttempt, ...], request: RequestInfo
    ) -> Any:
        return self._hook.diffgemma_select_renoise_positions(
            block=block, report=report, attempts=attempts, request=request
        )

    def block_validated(self, block: BlockView, report: ValidationReport, attempt: int, request: RequestInfo) -> None:
        self._hook.diffgemma_block_validated(block=block, report=report, attempt=attempt, request=request)

    def block_committed(self, block: BlockView, report: ValidationReport, request: RequestInfo) -> None:
        self._hook.diffgemma_block_committed(block=block, report=report, request=request)

    def validation_exhausted(
        self, block: BlockView, report: ValidationReport, attempts: tuple[RepairAttempt, ...], request: RequestInfo
    ) -> None:
        self._hook.diffgemma_validation_exhausted(block=block, report=report, attempts=attempts, request=request)


@dataclasses.dataclass(frozen=True)
class _Provisional:
    """Validator states written while checking one attempt, kept only if that attempt is committed."""

    block_index: int
    attempt: int
    states: Mapping[str, dict[str, Any]]


class ValidatorChecker:
    """Checks the blocks of one request (implements the engine's ``BlockChecker`` protocol).

    ``check`` runs the selected validators in ``(stage, cost, name)`` order, each on a copy of its committed
    state; a validator's exception is handled per ``on_validator_error``; once a stage produced a FATAL
    violation, later stages are skipped. ``on_commit`` keeps the checked attempt's states and calls the
    validators' ``on_commit``; anything else discards them. ``decide`` asks the policy hooks and then
    enforces the request's budgets.
    """

    def __init__(
        self,
        request: RequestInfo,
        validators: tuple[RegisteredValidator, ...],
        validator_options: Mapping[str, Any],
        options: RequestOptions,
        hooks: PluginHooks,
    ) -> None:
        self.request = request
        self.validators = validators
        self.options = options
        self._validator_options = validator_options
        self._hooks = hooks
        self._committed: dict[str, dict[str, Any]] = {v.name: {} for v in validators}
        self._provisional: _Provisional | None = None
        self._disabled: dict[str, None] = {}
        self._extra_steps = 0
        self._last_attempts: tuple[int, tuple[RepairAttempt, ...]] = (-1, ())
        self.running_validator: str | None = None  # read by the engine to name a validator that runs too long

    @property
    def extra_steps(self) -> int:
        """Denoising steps spent on repairs and regenerations so far in this request."""
        return self._extra_steps

    def check(self, block: BlockView) -> ValidationReport:
        if block.attempt > 0:
            self._extra_steps += block.steps_used
        violations: list[Violation] = []
        ran: list[str] = []
        crashed: list[str] = list(self._disabled)
        elapsed: dict[str, float] = {}
        states: dict[str, dict[str, Any]] = {}
        fatal_stage: int | None = None
        for validator in self.validators:
            if fatal_stage is not None and validator.stage > fatal_stage:
                break
            if validator.name in self._disabled or not validator.applies_to(block):
                continue
            state = copy.deepcopy(self._committed[validator.name])
            started = time.perf_counter()
            self.running_validator = validator.name
            try:
                found = self._run(validator, block, state)
            except Exception as error:
                found = self._crashed(validator, error, crashed)
            else:
                ran.append(validator.name)
                states[validator.name] = state
            finally:
                elapsed[validator.name] = (time.perf_counter() - started) * 1000
                self.running_validator = None
            violations.extend(found)
            if any(v.severity >= Severity.FATAL for v in found):
                fatal_stage = validator.stage
        self._provisional = _Provisional(block.index, block.attempt, states)
        report = ValidationReport(tuple(violations), tuple(ran), tuple(crashed), elapsed)
        self._hooks.block_validated(block, report, block.attempt, self.request)
        return report

    def decide(
        self, block: BlockView, report: ValidationReport, attempts: tuple[RepairAttempt, ...]
    ) -> RepairDecision:
        self._last_attempts = (block.index, attempts)
        decision = self._hooks.repair_decision(block, report, attempts, self.request, self.options.repair_policy)
        if decision is None:
            decision = RepairDecision(RepairAction.GIVE_UP, reason="no repair policy made a decision")
        if not isinstance(decision, RepairDecision):
            raise PluginContractError(
                "diffgemma_repair_decision", f"expected a RepairDecision or None, got {type(decision).__name__}"
            )
        _check_overrides(decision)
        if decision.action is RepairAction.REPAIR:
            positions: Any = decision.positions
            if not positions:
                positions = self._hooks.select_renoise_positions(block, report, attempts, self.request) or ()
                hook = "diffgemma_select_renoise_positions"
            else:
                hook = "diffgemma_repair_decision"
            decision = dataclasses.replace(decision, positions=_canvas_positions(positions, block, hook))
        return enforce_budget(decision, block, attempts, self.options.budget, self._extra_steps)

    def on_commit(self, block: BlockView, report: ValidationReport) -> None:
        provisional, self._provisional = self._provisional, None
        if provisional is not None and (provisional.block_index, provisional.attempt) == (block.index, block.attempt):
            self._committed.update(provisional.states)
        for validator in self.validators:
            if validator.name in self._disabled or not validator.has_on_commit or not validator.applies_to(block):
                continue
            ctx = self._context(validator, self._committed[validator.name])
            try:
                validator.on_commit(block, ctx)
            except Exception as error:
                if self.options.on_validator_error == "raise":
                    raise ValidatorCrashedError(validator.name, error) from error
                self._disabled[validator.name] = None
        self._hooks.block_committed(block, report, self.request)

    def on_exhausted(self, block: BlockView, report: ValidationReport) -> None:
        self._provisional = None
        index, attempts = self._last_attempts
        self._hooks.validation_exhausted(block, report, attempts if index == block.index else (), self.request)

    def _context(self, validator: RegisteredValidator, state: dict[str, Any]) -> ValidationContext:
        return ValidationContext(self.request, self._validator_options[validator.name], state)

    def _run(self, validator: RegisteredValidator, block: BlockView, state: dict[str, Any]) -> list[Violation]:
        result = validator.validate(block, self._context(validator, state))
        return [_own_violation(validator.name, item, block) for item in (result or ())]

    def _crashed(self, validator: RegisteredValidator, error: Exception, crashed: list[str]) -> list[Violation]:
        mode = self.options.on_validator_error
        if mode == "raise":
            raise ValidatorCrashedError(validator.name, error) from error
        crashed.append(validator.name)
        if mode == "skip":
            return []
        message = f"validator crashed: {type(error).__name__}: {error}"
        return [Violation(validator.name, CRASH_CODE, message, severity=Severity.FATAL, repairable=False)]


def _own_violation(name: str, item: object, block: BlockView) -> Violation:
    """Check one returned item; a broken one counts as the validator's own exception."""
    if not isinstance(item, Violation):
        raise TypeError(f"validate() must yield Violation objects, got {type(item).__name__}")
    for span in item.spans:
        if (
            len(span) != 2
            or not all(isinstance(p, int) for p in span)
            or not 0 <= span[0] <= span[1] <= block.canvas_length
        ):
            raise ValueError(f"span {span!r} of {item.code!r} is not within the canvas [0, {block.canvas_length}]")
    if not isinstance(item.severity, Severity):
        raise TypeError(f"severity of {item.code!r} must be a Severity, got {item.severity!r}")
    return item if item.validator == name else dataclasses.replace(item, validator=name)


def _canvas_positions(positions: Iterable[Any], block: BlockView, hook: str) -> tuple[int, ...]:
    if isinstance(positions, (str, bytes)) or not isinstance(positions, Iterable):
        raise PluginContractError(hook, f"renoise positions must be ints, got {type(positions).__name__}")
    checked = set()
    for position in positions:
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < block.canvas_length:
            raise PluginContractError(hook, f"renoise position {position!r} is not in [0, {block.canvas_length})")
        checked.add(position)
    return tuple(sorted(checked))


def _check_overrides(decision: RepairDecision) -> None:
    unknown = set(decision.sampler_overrides) - SAMPLER_OVERRIDE_KEYS
    if unknown:
        raise PluginContractError(
            "diffgemma_repair_decision",
            f"unknown sampler_overrides {sorted(unknown)}; accepted: {sorted(SAMPLER_OVERRIDE_KEYS)}",
        )
    for key, value in decision.sampler_overrides.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise PluginContractError("diffgemma_repair_decision", f"sampler_overrides[{key!r}] must be > 0, got {value!r}")


class ValidatorCheckerFactory:
    """Builds the :class:`ValidatorChecker` of a request from the plugin manager's validators (a
    ``CheckerFactory``)."""

    def __init__(self, plugin_manager: PluginManager) -> None:
        self.plugin_manager = plugin_manager
        self._hooks = PluginHooks(plugin_manager)

    def __call__(self, request: RequestInfo) -> ValidatorChecker | None:
        registry = self.plugin_manager.validator_registry()
        selected = registry.select(request.validators)
        names = frozenset(v.name for v in selected)
        options = parse_request_options(request.validator_options, names, frozenset(registry.names))
        if not selected:
            return None
        parsed = {v.name: _parse_options(v, options.per_validator.get(v.name, {})) for v in selected}
        return ValidatorChecker(request, selected, parsed, options, self._hooks)


def _parse_options(validator: RegisteredValidator, options: Mapping[str, Any]) -> Any:
    try:
        return validator.parse_options(options)
    except (ValueError, TypeError) as error:
        raise InvalidRequestError(FIELD, f"{validator.name}: {error}") from error
    except Exception as error:
        raise ValidatorCrashedError(validator.name, error) from error


def make_checker_factory(plugin_manager: PluginManager | None = None) -> ValidatorCheckerFactory:
    """The engine's entry point (``diffgemma.checker_factory``): a factory bound to ``plugin_manager``,
    by default the process-wide one from :func:`~diffgemma_plugins.get_plugin_manager`."""
    return ValidatorCheckerFactory(plugin_manager if plugin_manager is not None else get_plugin_manager())
