"""Adapter settings and the single params builder: settings + per-call options -> :class:`SamplingParams`.

- :class:`GenerationSettings`: the fields every adapter (LangChain, LlamaIndex, the server) has, declared once
  with their documentation; it resolves its engine (in-process, or remote with ``base_url``);
- :func:`sampling_params`: settings + call options -> :class:`~diffgemma_engine.SamplingParams`.

Requests are assembled in :mod:`diffgemma_adapters.request`, chat turns in :mod:`diffgemma_adapters.chat`.

Temperature. DiffusionGemma has no single sampling temperature: each canvas is denoised under a linear
schedule from ``t_max`` (first step) down to ``t_min`` (last step). The standard ``temperature`` maps onto
that schedule as ``t_max = temperature`` and ``t_min = temperature / 2`` (the checkpoint's own ratio,
0.4 / 0.8). ``temperature=None`` keeps the checkpoint's schedule; values below
:data:`GREEDY_TEMPERATURE` (including 0) are raised to it, which is greedy for all practical purposes.
Explicit ``t_min`` / ``t_max`` win over ``temperature``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from diffgemma_engine import InvalidRequestError, SamplingParams
from diffgemma_engine.api.client import EngineClient
from diffgemma_engine.api.params import SAMPLER_FIELDS

from .chat import TemplateRoles, template_roles

GREEDY_TEMPERATURE = 0.01
"""The lowest ``t_max`` a ``temperature`` maps to; ``temperature=0`` means this (near-greedy) schedule."""

T_MIN_RATIO = 0.5
"""``t_min = T_MIN_RATIO * temperature`` (the ratio of the checkpoint's default schedule)."""

TOLERATED_OPTIONS = frozenset({"max_retries", "api_key", "top_p", "frequency_penalty", "presence_penalty"})
"""Per-call options of hosted chat APIs that are accepted (so adapters are drop-in replacements) and ignored,
exactly as ``diffgemma serve`` ignores them: the sampler has no nucleus cut-off or penalties (its acceptance
rule is the entropy bound). ``max_retries``/``api_key`` as settings are fields, used with ``base_url``."""

OPTION_ALIASES = {"max_completion_tokens": "max_tokens"}
"""OpenAI's newer names for options, mapped as the server maps them (an explicit ``max_tokens`` wins)."""

DENOISING_OPTIONS = tuple(name for name in SAMPLER_FIELDS if name != "max_new_tokens")
"""The engine's sampler settings (:data:`diffgemma_engine.api.params.SAMPLER_FIELDS`) that adapters take under
the engine's own names: all but ``max_new_tokens``, which is ``max_tokens`` here (OpenAI's name)."""

SAMPLING_OPTIONS = (
    "temperature",
    "max_tokens",
    "seed",
    *DENOISING_OPTIONS,
    "adaptive_stopping",
    "validators",
    "validator_options",
    "on_validation_failure",
    "timeout",
)
"""The settings a single call may override (``llm.invoke(..., temperature=0.2)``)."""

JSON_VALIDATOR = "builtin.json"
TOOL_CALL_VALIDATOR = "builtin.tool_call"

ValidationFailure = Literal["raise", "return_flagged", "truncate"]


class GenerationSettings(BaseModel):
    """The settings every DiffusionGemma adapter shares; each can be overridden per call."""

    model_config = ConfigDict(use_attribute_docstrings=True, arbitrary_types_allowed=True, extra="forbid")

    model: str | None = None
    """The model to serve: a built-in name (``"tiny-random"``), a checkpoint directory or a hub id.

    Resolved through ``diffgemma_engine.get_engine``, so every adapter (LangChain or LlamaIndex) that names
    the same model shares one engine and one copy of the weights. Defaults to ``engine``'s model, or to the
    packaged default model when neither is given. A per-call ``model=`` routes that call to that model's
    shared engine."""

    engine: Any = Field(default=None, exclude=True)
    """An engine to use instead of resolving ``model`` (for instance one built with a custom
    ``EngineConfig``, or a ``diffgemma_adapters.remote.RemoteEngine``). Anything with the :class:`~diffgemma_engine.api.client.EngineClient`
    members works."""

    base_url: str | None = None
    """An OpenAI-compatible DiffusionGemma server to use instead of an in-process engine, e.g.
    ``"http://127.0.0.1:8000/v1"`` (``diffgemma serve``, or ``vllm serve`` >= 0.24 for multi-GPU). No model
    is loaded here: ``model`` is the server's model id (``None``: the first one it lists), requests stream from
    the server, and validators run client-side, regenerating a failing block by continuation (in-place repair
    is only available in-process). See ``diffgemma_adapters.remote``."""

    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    """The bearer key of ``base_url``'s server. Ignored in-process (nothing to authenticate)."""

    max_retries: int | None = Field(default=None, ge=0)
    """Retries of a failed HTTP call to ``base_url`` (connection errors, 429, 5xx; ``None``: the ``openai``
    client's default). Ignored in-process (nothing to retry)."""

    server: Literal["diffgemma", "vllm", "openai"] | None = None
    """What ``base_url``'s server is (``diffgemma serve``, vLLM, or another OpenAI-compatible server); it
    decides which request settings are sent. ``None``: read from its ``/v1/models``. Ignored in-process."""

    chat_template: str | None = None
    """The checkpoint's chat template for ``base_url`` (continuation prompts and tool declarations): a local
    checkpoint directory, its ``chat_template.jinja`` or ``tokenizer_config.json``. ``None``: a plain Gemma
    turn format. Ignored in-process (the engine has the checkpoint's own)."""

    on_unsupported: Literal["error", "warn"] = "error"
    """What a setting ``base_url``'s server cannot honour does (a ``seed`` or sampler field for vLLM):
    ``"error"`` raises ``InvalidRequestError`` naming it before any traffic; ``"warn"`` sends the request
    without it, with a ``RemoteSettingWarning``. Ignored in-process."""

    temperature: float | None = None
    """Sampling temperature, mapped onto the denoising schedule: ``t_max = temperature``,
    ``t_min = temperature / 2``. ``None`` keeps the checkpoint's schedule; 0 is near-greedy."""

    max_tokens: int | None = None
    """Maximum number of generated tokens (exact, even mid-canvas). ``None``: the checkpoint's default."""

    stop: list[str] | None = None
    """Stop strings. The response ends before the first one found (it is not included); stop strings given
    to a call are added to these."""

    seed: int | None = None
    """Seed of the request's own random generator. Same seed, prompt and settings: same output."""

    max_denoising_steps: int | None = None
    """Denoising steps per canvas at most (checkpoint default: 48)."""

    entropy_bound: float | None = None
    """Joint-entropy budget of the entropy-bound acceptance rule (checkpoint default: 0.1)."""

    t_min: float | None = None
    """Temperature at the end of each canvas's schedule. Overrides the value derived from ``temperature``."""

    t_max: float | None = None
    """Temperature at the start of each canvas's schedule. Overrides the value derived from ``temperature``."""

    stability_threshold: int | None = None
    """Steps the argmax canvas must stay unchanged before a canvas may stop early."""

    confidence_threshold: float | None = None
    """Mean entropy below which a stable canvas stops early."""

    adaptive_stopping: bool = True
    """Stop denoising a canvas once it is stable and confident; ``False`` always runs every step."""

    validators: list[str] = Field(default_factory=list)
    """Output validators run on every block before it is committed (``"default"``, ``"builtin.json"``,
    ``"+name"``, ``"-name"``). Empty: none. Failing blocks are repaired in place."""

    validator_options: dict[str, Any] = Field(default_factory=dict)
    """Per-validator options and repair budgets, keyed by validator name (see ``docs/plugins.md``)."""

    on_validation_failure: ValidationFailure = "raise"
    """What happens when a block cannot be repaired: ``"raise"`` a ``BlockValidationError`` (carrying the
    partial result), ``"return_flagged"`` the block as it is, or ``"truncate"`` the response before it.
    Both non-raising modes end the response with ``finish_reason="validation_failed"``."""

    timeout: float | None = None
    """Seconds after which a request is cancelled with ``RequestTimeoutError``. ``None``: no limit."""

    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Options sent with every call, below the call's own: any per-call option (``{"max_denoising_steps": 24}``)
    and the hosted-API options that are accepted and ignored (``top_p``, penalties). Unknown names raise
    ``InvalidRequestError`` naming ``model_kwargs.<name>`` when the model is built."""

    _template_roles: dict[str, TemplateRoles] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        # Declared so that pydantic's private-attribute setup chains to the framework base class's hook
        # (LangChain records package versions there) instead of replacing it.
        super().model_post_init(context)

    @model_validator(mode="after")
    def _resolve_diffusion_engine(self) -> GenerationSettings:
        """Acquires the engine (:meth:`_acquire_engine`: the shared in-process one, or a ``RemoteEngine`` from
        :func:`diffgemma_adapters.remote.connect`, which starts its event-loop thread on first use) and
        checks every setting now rather than at the first call."""
        if self.engine is not None and self.base_url is not None:
            raise InvalidRequestError("base_url", "give either engine or base_url, not both")
        if self.engine is None:
            self.engine = self._acquire_engine()
        elif not isinstance(self.engine, EngineClient):
            raise InvalidRequestError("engine", f"must be a diffgemma Engine, got {type(self.engine).__name__}")
        if self.model is None:
            self.model = self.engine.model_name
        unknown = sorted(set(self.model_kwargs) - _KNOWN_OPTIONS)
        if unknown:
            raise InvalidRequestError(f"model_kwargs.{unknown[0]}", f"is not a DiffusionGemma option ({_KNOWN_TEXT})")
        sampling_params(self)  # every setting is checked here, not at the first call
        return self

    def _acquire_engine(self) -> EngineClient:
        """The process-wide in-process engine of ``model``, or with ``base_url`` a remote one
        (:func:`diffgemma_adapters.remote.connect`: no network call until the first request)."""
        if self.base_url is not None:
            from .remote import connect  # needs the openai client, which in-process use does not

            key = self.api_key.get_secret_value() if self.api_key is not None else None
            return connect(self.base_url, api_key=key, model=self.model, max_retries=self.max_retries,
                           server=self.server, chat_template=self.chat_template, on_unsupported=self.on_unsupported)
        from diffgemma_engine import get_engine  # imports torch: only an in-process engine needs it

        return get_engine(self.model)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the engine (it holds threads and weights): unpickling acquires it again, from the
        process-wide registry (``get_engine(model)``, so every copy shares one engine) or from ``base_url``."""
        fields = dict(self.__dict__)
        state = super().__getstate__()
        pickled = {**state["__dict__"], "engine": None}
        self.__dict__.update(fields)  # llama-index's __getstate__ deletes unpicklable fields from the live object
        return {**state, "__dict__": pickled}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if self.engine is None:
            object.__setattr__(self, "engine", self._acquire_engine())

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> GenerationSettings:
        """A deep copy shares the engine (one engine per model and process)."""
        memo = {} if memo is None else memo
        memo[id(self.engine)] = self.engine
        return super().__deepcopy__(memo)

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` under the model's own tokenizer (LangChain's ``get_num_tokens`` and
        LlamaIndex's ``Settings.tokenizer = llm.get_token_ids`` size prompts with it; nothing is downloaded)."""
        return list(self.engine.tokenizer(text, add_special_tokens=False)["input_ids"])

    def engine_for(self, model: str | None) -> EngineClient:
        """The engine serving ``model`` (a per-call override), or this adapter's engine."""
        if model is None or model in (self.model, self.engine.model_name):
            return self.engine
        if not isinstance(model, str):
            raise InvalidRequestError("model", f"must be a string, got {type(model).__name__}")
        return self.engine.for_model(model)

    def roles_for(self, engine: EngineClient) -> TemplateRoles:
        """What ``engine``'s chat template accepts (probed once per model and adapter)."""
        roles = self._template_roles.get(engine.model_name)
        if roles is None:
            roles = self._template_roles[engine.model_name] = template_roles(engine)
        return roles



# -- sampling parameters ----------------------------------------------------------------------------------


def sampling_params(
    settings: GenerationSettings,
    stop: Sequence[str] | None = None,
    *,
    json_schema: Mapping[str, Any] | None = None,
    json_output: bool = False,
    tool_call_check: Mapping[str, Any] | None = None,
    **options: Any,
) -> SamplingParams:
    """Settings, overridden by this call's ``options``, as the engine's :class:`SamplingParams`.

    ``stop`` strings of the call are added to the settings' ones. ``json_output`` selects the JSON
    validator (with ``json_schema`` as its schema, if given). Options in :data:`TOLERATED_OPTIONS` are
    ignored; any other unknown option raises :class:`InvalidRequestError`.
    """
    options = _canonical_options({**settings.model_kwargs, **options})
    unknown = sorted(set(options) - set(SAMPLING_OPTIONS) - TOLERATED_OPTIONS)
    if unknown:
        raise InvalidRequestError(unknown[0], f"is not a DiffusionGemma option ({_KNOWN_TEXT})")
    value = {name: options.get(name, getattr(settings, name)) for name in SAMPLING_OPTIONS}
    value["t_min"], value["t_max"] = _schedule(settings, options)  # temperature, mapped onto the schedule
    validators = _string_list("validators", value["validators"])
    validator_options = dict(as_mapping("validator_options", value["validator_options"]))
    if json_output:
        validators, validator_options = _with_validator(JSON_VALIDATOR, validators, validator_options,
                                                        None if json_schema is None else {"schema": dict(json_schema)})
    if tool_call_check is not None:
        validators, validator_options = _with_validator(TOOL_CALL_VALIDATOR, validators, validator_options,
                                                        dict(tool_call_check))
    stops = [*(settings.stop or ()), *_string_list("stop", stop or ())]
    return SamplingParams(
        max_new_tokens=value["max_tokens"],
        **{name: value[name] for name in DENOISING_OPTIONS},
        adaptive_stopping=value["adaptive_stopping"],
        seed=value["seed"],
        stop=tuple(dict.fromkeys(stops)),
        validators=tuple(validators),
        validator_options=validator_options,
        on_exhausted=value["on_validation_failure"],
        timeout=value["timeout"],
    )


_KNOWN_OPTIONS = frozenset(SAMPLING_OPTIONS) | TOLERATED_OPTIONS | frozenset(OPTION_ALIASES)
_KNOWN_TEXT = "options: " + ", ".join(SAMPLING_OPTIONS) + "; accepted and ignored: " + ", ".join(sorted(TOLERATED_OPTIONS))


def _canonical_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with :data:`OPTION_ALIASES` mapped to their DiffusionGemma names (the real name wins)."""
    canonical = {name: value for name, value in options.items() if name not in OPTION_ALIASES}
    for alias, name in OPTION_ALIASES.items():
        if alias in options and name not in canonical:
            canonical[name] = options[alias]
    return canonical


def _schedule(settings: GenerationSettings, options: Mapping[str, Any]) -> tuple[float | None, float | None]:
    t_min, t_max = _from_temperature(settings.temperature, settings.t_min, settings.t_max)
    if "temperature" in options:  # a call's temperature replaces the whole schedule of the settings
        t_min, t_max = _from_temperature(options["temperature"], None, None)
    return options.get("t_min", t_min), options.get("t_max", t_max)


def _from_temperature(
    temperature: object, t_min: float | None, t_max: float | None
) -> tuple[float | None, float | None]:
    if temperature is None:
        return t_min, t_max
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
        raise InvalidRequestError("temperature", f"must be a finite number or None, got {temperature!r}")
    if temperature < 0:
        raise InvalidRequestError("temperature", f"must be >= 0, got {temperature}")
    top = max(float(temperature), GREEDY_TEMPERATURE)
    return (T_MIN_RATIO * top if t_min is None else t_min), (top if t_max is None else t_max)


def _with_validator(
    name: str, validators: list[str], options: dict[str, Any], own: Mapping[str, Any] | None
) -> tuple[list[str], dict[str, Any]]:
    """``validators`` with ``name`` selected, and ``own`` options merged over the caller's ones for it."""
    if name not in validators and f"+{name}" not in validators:
        validators = [*validators, f"+{name}"] if validators else [name]
    if own is not None:
        options[name] = {**as_mapping("validator_options", options.get(name, {})), **own}
    return validators, options


def _string_list(name: str, value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise InvalidRequestError(name, f"must be a list of strings, got {value!r}")
    return list(value)


def as_mapping(name: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRequestError(name, f"must be a mapping, got {type(value).__name__}")
    return value

