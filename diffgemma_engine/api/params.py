"""Per-request sampling parameters, validated up front; the one place sampler setting names are written.

Every field left ``None`` takes the model's default from its ``generation_config.json``
(see :class:`SamplerDefaults`). :data:`SAMPLER_FIELDS` (the settings a checkpoint has defaults for) and
:data:`OVERRIDABLE_FIELDS` (what a regeneration may change) are derived from or listed next to the two
dataclasses; every other layer (plugins, adapters, the remote backend) reads them from here. ``max_new_tokens`` is the one exception to "the checkpoint decides":
the checkpoint's ``max_new_tokens`` only applies when the caller gives none, and never caps a caller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from diffgemma_engine.api.errors import GenerationTooLongError, InvalidRequestError
from diffgemma_engine.api.validation import OnExhausted, RequestInfo


@dataclass(frozen=True)
class SamplerDefaults:
    """The sampler defaults a checkpoint ships in ``generation_config.json``."""

    max_new_tokens: int = 256
    max_denoising_steps: int = 48
    entropy_bound: float = 0.1
    t_min: float = 0.4
    t_max: float = 0.8
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    eos_token_ids: tuple[int, ...] = (1,)
    pad_token_id: int = 0


@dataclass(frozen=True)
class SamplingParams:
    """How one request is sampled. Immutable; invalid values raise :class:`InvalidRequestError`.

    Attributes:
        max_new_tokens: exact cap on generated tokens, even mid-canvas (``finish_reason="length"``).
        max_denoising_steps: denoising steps per canvas at most.
        entropy_bound: joint-entropy budget of the entropy-bound acceptance rule.
        t_min: temperature at the end of the linear schedule.
        t_max: temperature at the start of the linear schedule (must be > ``t_min``).
        stability_threshold: steps the argmax canvas must stay unchanged for adaptive stopping.
        confidence_threshold: mean entropy below which a stable canvas stops early.
        adaptive_stopping: ``False`` always runs ``max_denoising_steps`` steps per canvas.
        seed: seeds this request's own generator; ``None`` draws a fresh seed (reported in the result).
        stop: strings that end the response; the text is cut before the first one found.
        stop_token_ids: token ids that end the response, in addition to the model's EOS ids.
        ignore_eos: keep generating past EOS tokens (benchmarks).
        draft_events: also emit a :class:`~diffgemma_engine.api.outputs.DraftEvent` after every step.
        validators: validator selection (``"default"``, ``"name"``, ``"+name"``, ``"-name"``); empty: none.
        validator_options: per-validator options and repair budgets, see ``docs/plugins.md``.
        on_exhausted: what happens when a block cannot be made to pass validation.
        timeout: seconds after which the request is cancelled with ``RequestTimeoutError``.
    """

    max_new_tokens: int | None = None
    max_denoising_steps: int | None = None
    entropy_bound: float | None = None
    t_min: float | None = None
    t_max: float | None = None
    stability_threshold: int | None = None
    confidence_threshold: float | None = None
    adaptive_stopping: bool = True
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    draft_events: bool = False
    validators: tuple[str, ...] = ()
    validator_options: Mapping[str, Any] = field(default_factory=dict)
    on_exhausted: OnExhausted = OnExhausted.RAISE
    timeout: float | None = None

    def __post_init__(self) -> None:
        _check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        _check_int("max_denoising_steps", self.max_denoising_steps, minimum=1)
        _check_float("entropy_bound", self.entropy_bound, positive=True)
        _check_float("t_min", self.t_min, positive=False)
        _check_float("t_max", self.t_max, positive=True)
        _check_int("stability_threshold", self.stability_threshold, minimum=0)
        _check_float("confidence_threshold", self.confidence_threshold, positive=True)
        _check_float("timeout", self.timeout, positive=True)
        if self.t_min is not None and self.t_max is not None and self.t_max <= self.t_min:
            raise InvalidRequestError("t_max", f"must be greater than t_min ({self.t_max} <= {self.t_min})")
        for name in ("adaptive_stopping", "ignore_eos", "draft_events"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidRequestError(name, f"must be a bool, got {type(getattr(self, name)).__name__}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise InvalidRequestError("seed", f"must be an int or None, got {type(self.seed).__name__}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise InvalidRequestError("seed", f"must be in [0, 2**63), got {self.seed}")
        object.__setattr__(self, "stop", _string_tuple("stop", self.stop))
        object.__setattr__(self, "validators", _string_tuple("validators", self.validators))
        object.__setattr__(self, "stop_token_ids", _int_tuple("stop_token_ids", self.stop_token_ids))
        if not isinstance(self.validator_options, Mapping):
            raise InvalidRequestError("validator_options", "must be a mapping")
        object.__setattr__(self, "validator_options", MappingProxyType(dict(self.validator_options)))
        try:
            object.__setattr__(self, "on_exhausted", OnExhausted(self.on_exhausted))
        except ValueError:
            choices = ", ".join(repr(m.value) for m in OnExhausted)
            raise InvalidRequestError("on_exhausted", f"must be one of {choices}, got {self.on_exhausted!r}") from None

    def resolve(self, defaults: SamplerDefaults) -> SamplingParams:
        """Fill every unset sampler field from ``defaults`` and re-check cross-field rules."""
        filled = {
            f.name: getattr(defaults, f.name)
            for f in fields(SamplerDefaults)
            if f.name in SAMPLER_FIELDS and getattr(self, f.name) is None
        }
        return replace(self, **filled)

    def validation_request(
        self, request_id: str, canvas_length: int, eos_token_ids: tuple[int, ...]
    ) -> RequestInfo | None:
        """What a checker factory needs to build this request's checker; ``None`` when no validator is selected."""
        if not self.validators:
            if self.validator_options:
                raise InvalidRequestError("validator_options", "given without any validators selected")
            return None
        return RequestInfo(request_id, self.validators, self.validator_options, canvas_length, eos_token_ids)

    def with_overrides(self, overrides: Mapping[str, float]) -> SamplingParams:
        """A copy with some sampler fields replaced (used by regeneration); unknown keys are an error."""
        unknown = set(overrides) - set(OVERRIDABLE_FIELDS)
        if unknown:
            raise InvalidRequestError("sampler_overrides", f"unknown fields {sorted(unknown)}")
        return replace(self, **overrides)


def fit_context_window(
    requested: SamplingParams, resolved: SamplingParams, *, prompt_tokens: int, context_length: int, canvas_length: int
) -> SamplingParams:
    """Keep generation inside the model's context window, as OpenAI-compatible servers do.

    Generation runs in whole canvases, so ``prompt_tokens + ceil(max_new_tokens / canvas) * canvas`` must fit
    ``context_length``. A ``max_new_tokens`` the caller asked for that does not fit is refused
    (:class:`GenerationTooLongError`, naming ``max_new_tokens``); the checkpoint's default is lowered to what fits.
    """
    room = (context_length - prompt_tokens) // canvas_length * canvas_length
    if resolved.max_new_tokens <= room:
        return resolved
    if requested.max_new_tokens is not None:
        raise GenerationTooLongError(requested.max_new_tokens, prompt_tokens, context_length, room)
    return replace(resolved, max_new_tokens=max(room, 1))


SAMPLER_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(SamplerDefaults) if f.name in {g.name for g in fields(SamplingParams)}
)
"""The sampler settings a request may set and a checkpoint gives defaults for, in declaration order
(``max_new_tokens``, ``max_denoising_steps``, ``entropy_bound``, ``t_min``, ``t_max``, ...): the fields
:class:`SamplerDefaults` and :class:`SamplingParams` share. Adding one is adding it to both."""

OVERRIDABLE_FIELDS: tuple[str, ...] = ("max_denoising_steps", "entropy_bound", "t_min", "t_max")
"""The sampler settings a regeneration may change (``RepairDecision.sampler_overrides`` keys)."""


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(name, f"must be an int, got {type(value).__name__}")
    if value < minimum:
        raise InvalidRequestError(name, f"must be >= {minimum}, got {value}")


def _check_float(name: str, value: object, *, positive: bool) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(name, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidRequestError(name, f"must be finite, got {value}")
    if positive and value <= 0:
        raise InvalidRequestError(name, f"must be > 0, got {value}")
    if not positive and value < 0:
        raise InvalidRequestError(name, f"must be >= 0, got {value}")


def _string_tuple(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
        raise InvalidRequestError(name, "must be a string or a sequence of strings")
    if any(v == "" for v in value):
        raise InvalidRequestError(name, "must not contain empty strings")
    return tuple(value)


def _int_tuple(name: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise InvalidRequestError(name, "must be a sequence of non-negative ints")
    return tuple(value)
