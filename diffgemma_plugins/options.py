"""The request-level keys of ``validator_options``: error handling, repair budgets and the per-request policy.

Every other key of ``validator_options`` must be the name of a selected validator and map to that
validator's options. Anything else is an ``InvalidRequestError`` naming ``validator_options``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from diffgemma_engine.api.errors import InvalidRequestError
from diffgemma_engine.api.validation import RequestInfo

FIELD = "validator_options"
ON_VALIDATOR_ERROR_MODES = ("raise", "skip", "fail_block")
REPAIR_POLICY_ARGUMENTS = frozenset({"block", "report", "attempts", "request"})
RESERVED_KEYS = (
    "on_validator_error",
    "max_repairs",
    "max_regenerations",
    "repair_steps",
    "max_repair_fraction",
    "request_step_budget",
    "repair_policy",
)


MAX_ATTEMPTS = 32
"""The most repairs (or regenerations) one block may ask for: each costs denoising steps on the shared engine,
so a client's budget is bounded even where its own timeout is long."""


@dataclass(frozen=True)
class RepairBudget:
    """How much repairing one request may do.

    Attributes:
        max_repairs: targeted repairs per block.
        max_regenerations: fresh canvases per block.
        repair_steps: denoising steps of one repair; ``None`` leaves it to the engine's default.
        max_repair_fraction: a repair may renoise at most this fraction of the canvas.
        request_step_budget: extra denoising steps (repairs and regenerations) per request;
            ``None`` for no limit. No new attempt starts once it is spent.
    """

    max_repairs: int = 2
    max_regenerations: int = 1
    repair_steps: int | None = None
    max_repair_fraction: float = 0.5
    request_step_budget: int | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RepairBudget:
        """Read the budget keys of a request's ``validator_options``, raising ``InvalidRequestError``."""
        defaults = cls()
        return cls(
            max_repairs=_count(options, "max_repairs", defaults.max_repairs, minimum=0, maximum=MAX_ATTEMPTS),
            max_regenerations=_count(
                options, "max_regenerations", defaults.max_regenerations, minimum=0, maximum=MAX_ATTEMPTS
            ),
            repair_steps=_optional_count(options, "repair_steps", minimum=1),
            max_repair_fraction=_fraction(options, "max_repair_fraction", defaults.max_repair_fraction),
            request_step_budget=_optional_count(options, "request_step_budget", minimum=0),
        )

    @classmethod
    def of(cls, request: RequestInfo) -> RepairBudget:
        return cls.from_options(request.validator_options)


@dataclass(frozen=True)
class RequestOptions:
    """A request's ``validator_options``, checked and split into request-level and per-validator parts."""

    on_validator_error: str = "raise"
    budget: RepairBudget = field(default_factory=RepairBudget)
    repair_policy: Callable[..., Any] | None = None
    per_validator: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))


def parse_request_options(options: Mapping[str, Any], selected: frozenset[str], known: frozenset[str]) -> RequestOptions:
    """Check ``validator_options`` against the reserved keys and the selected validators."""
    if not isinstance(options, Mapping):
        raise InvalidRequestError(FIELD, f"expected a mapping, got {type(options).__name__}")
    per_validator: dict[str, Mapping[str, Any]] = {}
    for key, value in options.items():
        if key in RESERVED_KEYS:
            continue
        if key not in known:
            reserved = ", ".join(RESERVED_KEYS)
            raise InvalidRequestError(FIELD, f"unknown key {key!r}: not a registered validator nor one of {reserved}")
        if key not in selected:
            raise InvalidRequestError(FIELD, f"options given for {key!r}, which this request does not select")
        if not isinstance(value, Mapping):
            raise InvalidRequestError(FIELD, f"options of {key!r} must be a mapping, got {type(value).__name__}")
        per_validator[key] = MappingProxyType(dict(value))
    mode = options.get("on_validator_error", "raise")
    if mode not in ON_VALIDATOR_ERROR_MODES:
        raise InvalidRequestError(FIELD, f"on_validator_error must be one of {ON_VALIDATOR_ERROR_MODES}, got {mode!r}")
    return RequestOptions(
        on_validator_error=mode,
        budget=RepairBudget.from_options(options),
        repair_policy=_repair_policy(options.get("repair_policy")),
        per_validator=MappingProxyType(per_validator),
    )


def _repair_policy(policy: Any) -> Callable[..., Any] | None:
    if policy is None:
        return None
    if not callable(policy):
        raise InvalidRequestError(FIELD, f"repair_policy must be callable, got {type(policy).__name__}")
    try:
        parameters = inspect.signature(policy).parameters.values()
    except (TypeError, ValueError) as error:
        raise InvalidRequestError(FIELD, f"repair_policy has no inspectable signature: {error}") from error
    allowed = ", ".join(sorted(REPAIR_POLICY_ARGUMENTS))
    for parameter in parameters:
        if parameter.default is not inspect.Parameter.empty:
            continue
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            raise InvalidRequestError(
                FIELD, f"repair_policy has a required keyword-only parameter {parameter.name!r}; hooks pass none"
            )
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if parameter.kind in positional and parameter.name not in REPAIR_POLICY_ARGUMENTS:
            raise InvalidRequestError(
                FIELD, f"repair_policy parameter {parameter.name!r} is not one of the hook's arguments ({allowed})"
            )
    return policy


def _count(options: Mapping[str, Any], key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequestError(FIELD, f"{key} must be an int >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise InvalidRequestError(FIELD, f"{key} must be at most {maximum}, got {value!r}")
    return value


def _optional_count(options: Mapping[str, Any], key: str, *, minimum: int) -> int | None:
    if options.get(key) is None:
        return None
    return _count(options, key, 0, minimum=minimum)


def _fraction(options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise InvalidRequestError(FIELD, f"{key} must be a number in (0, 1], got {value!r}")
    return float(value)
