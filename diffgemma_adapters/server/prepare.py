"""One parsed request -> ``prepare_request`` arguments, under the operator's limits, and its submission.

The server's own settings fields stay here: the request's engine fields go to the adapters' options (or
straight into ``SamplingParams`` when the adapters' settings do not carry them), the standard sampler fields
block diffusion has no use for are accepted only at their neutral value, and :class:`ServerLimits` caps
``max_denoising_steps`` and the token limit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from diffgemma_engine import RequestStream
from diffgemma_engine.api.client import EngineClient

from ..request import PreparedRequest, prepare_request
from ..settings import SAMPLING_OPTIONS, TOLERATED_OPTIONS, GenerationSettings
from . import requests
from .metrics import ServerMetrics
from .openai_wire import invalid

DEFAULT_MAX_DENOISING_STEPS = 256
"""The default cap on a request's ``max_denoising_steps`` (the checkpoints' own default is 48)."""

NEUTRAL_VALUES = {"top_p": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0}
"""Standard sampler fields block diffusion has no use for, and the value at which they change nothing."""


@dataclass(frozen=True)
class ServerLimits:
    """Caps an operator sets on every request; a request over one is refused with a 400 naming the field.

    ``None`` means no cap beyond the engine's own (the context window)."""

    max_denoising_steps: int | None = DEFAULT_MAX_DENOISING_STEPS
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_denoising_steps", "max_new_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")



@dataclass(frozen=True)
class Call:
    """A parsed request as ``prepare_request`` arguments, plus SamplingParams fields it does not take."""

    prompt: str | None
    turns: list[Any] | None
    stop: list[str]
    tools: list[dict[str, Any]]
    tool_choice: str | None
    response_format: dict[str, Any] | None
    parallel_tool_calls: bool
    options: dict[str, Any]
    direct: dict[str, Any]
    default_caps: dict[str, int]


def _tokens_field(parsed: Any) -> str:
    """The field that sets the token limit: ``max_tokens`` wins over ``max_completion_tokens``, as in the
    adapters (``settings.OPTION_ALIASES``: the real name wins over the alias)."""
    if parsed.max_tokens is None and getattr(parsed, "max_completion_tokens", None) is not None:
        return "max_completion_tokens"
    return "max_tokens"


def renames(parsed: Any, chat: bool) -> dict[str, str]:
    """Engine field names -> the request's own (a validator's options may come from ``response_format``)."""
    tokens_field = _tokens_field(parsed)
    rename = {"max_new_tokens": tokens_field, "max_tokens": tokens_field, "prompt": "messages" if chat else "prompt",
              "on_exhausted": "on_validation_failure"}
    if parsed.validator_options is None and (parsed.response_format is not None or getattr(parsed, "tools", None)):
        rename["validator_options"] = "response_format" if parsed.response_format is not None else "tools"
    return rename


def call_from_request(parsed: Any, chat: bool, limits: ServerLimits, metrics: ServerMetrics, engine: EngineClient) -> Call:
    options: dict[str, Any] = {}
    direct: dict[str, Any] = {}
    for name in requests.ENGINE_FIELDS:
        value = getattr(parsed, name)
        if value is None:
            continue
        if name in SAMPLING_OPTIONS:
            options[name] = value
        else:  # a SamplingParams field the adapters' settings do not carry (stop_token_ids, ignore_eos, ...)
            direct[name] = tuple(value) if isinstance(value, list) else value
    for name in ("temperature", "seed", "on_validation_failure"):
        if getattr(parsed, name) is not None:
            options[name] = getattr(parsed, name)
    for name, neutral in NEUTRAL_VALUES.items():
        value = getattr(parsed, name)
        if value is None:
            continue
        if name in SAMPLING_OPTIONS or name in TOLERATED_OPTIONS:
            options[name] = value
        elif value != neutral:
            raise invalid(f"{name}: block diffusion does not use it; only {neutral:g} (no effect) is accepted",
                               param=name)
    tokens_field = _tokens_field(parsed)
    max_tokens = getattr(parsed, tokens_field)
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    shadowed = getattr(parsed, "max_completion_tokens", None) if tokens_field == "max_tokens" else None
    if shadowed is not None and limits.max_new_tokens is not None and shadowed > limits.max_new_tokens:
        _apply_limits({"max_tokens": shadowed}, "max_completion_tokens", limits, metrics, engine)  # raises
    default_caps = _apply_limits(options, tokens_field, limits, metrics, engine)
    stop = requests.stop_strings(parsed.stop)
    if chat:
        tools = [tool.model_dump(exclude_none=True) for tool in parsed.tools or ()]
        return Call(None, requests.to_turns(parsed.messages), stop, tools, requests.requested_tool_choice(parsed),
                     requests.response_format(parsed),
                     parsed.parallel_tool_calls if parsed.parallel_tool_calls is not None else True,
                     options, direct, default_caps)
    return Call(requests.completion_prompt(parsed), None, stop, [], None, requests.response_format(parsed), True,
                 options, direct, default_caps)


def _apply_limits(options: dict[str, Any], tokens_field: str, limits: ServerLimits, metrics: ServerMetrics,
                  engine: EngineClient) -> dict[str, int]:
    """Refuse values over a cap; returns the caps to apply when the request leaves the value to the model."""
    defaults = engine.sampler_defaults
    caps = {}
    for option, param, cap, default_name in (
        ("max_denoising_steps", "max_denoising_steps", limits.max_denoising_steps, "max_denoising_steps"),
        ("max_tokens", tokens_field, limits.max_new_tokens, "max_new_tokens"),
    ):
        if cap is None:
            continue
        value = options.get(option)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            metrics.refused.labels(option).inc()
            raise invalid(f"{param}: {value} is over this server's limit of {cap}", param=param,
                               code="over_server_limit")
        default = None if defaults is None else getattr(defaults, default_name)
        if value is None and (default is None or default > cap):
            caps[option] = cap
    return caps


def submit(settings: GenerationSettings, call: Call) -> tuple[PreparedRequest, RequestStream]:
    """Render, tokenize and submit (in a worker thread: templates and tokenizers are CPU work)."""
    options = {**call.default_caps, **call.options}
    if call.prompt is not None:
        prepared = prepare_request(settings, prompt=call.prompt, stop=call.stop,
                                   response_format=call.response_format, **options)
    else:
        prepared = prepare_request(settings, turns=call.turns, stop=call.stop, tools=call.tools,
                                   tool_choice=call.tool_choice, response_format=call.response_format,
                                   parallel_tool_calls=call.parallel_tool_calls, **options)
    if call.direct:
        prepared = dataclasses.replace(prepared, params=dataclasses.replace(prepared.params, **call.direct))
    return prepared, prepared.submit()
