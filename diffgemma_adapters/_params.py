"""The one place where adapter settings and per-call options become an engine request.

Shared by the LangChain and LlamaIndex adapters (it imports neither framework):

- :class:`GenerationSettings`: the fields every adapter has, declared once with their documentation;
- :func:`sampling_params`: settings + call options -> :class:`~diffgemma_engine.SamplingParams`;
- :func:`normalize_messages`: any conversation -> turns the model's chat template accepts;
- :func:`prepare_request`: all of the above, plus tools and structured output -> a :class:`PreparedRequest`.

Temperature. DiffusionGemma has no single sampling temperature: each canvas is denoised under a linear
schedule from ``t_max`` (first step) down to ``t_min`` (last step). The standard ``temperature`` maps onto
that schedule as ``t_max = temperature`` and ``t_min = temperature / 2`` (the checkpoint's own ratio,
0.4 / 0.8). ``temperature=None`` keeps the checkpoint's schedule; values below
:data:`GREEDY_TEMPERATURE` (including 0) are raised to it, which is greedy for all practical purposes.
Explicit ``t_min`` / ``t_max`` win over ``temperature``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from diffgemma_engine import GenerationResult, InvalidRequestError, RequestStream, SamplingParams, get_engine

from ._formats import (
    CALL_CLOSE,
    CALL_OPEN,
    ToolCallAssembler,
    declare_tools,
    format_tool_call,
    format_tool_response,
    marker_decoder,
)

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

SAMPLING_OPTIONS = (
    "temperature",
    "max_tokens",
    "seed",
    "max_denoising_steps",
    "entropy_bound",
    "t_min",
    "t_max",
    "stability_threshold",
    "confidence_threshold",
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


@runtime_checkable
class EngineLike(Protocol):
    """What an adapter needs of an engine (:class:`diffgemma_engine.Engine` has it all)."""

    @property
    def model_name(self) -> str: ...

    @property
    def tokenizer(self) -> Any: ...

    @property
    def context_length(self) -> int: ...

    def render_chat(self, messages: list[dict[str, str]]) -> str: ...  # an Engine also takes ``tools=``

    def count_tokens(self, text: str) -> int: ...

    def submit(
        self, prompt: str | None = None, params: SamplingParams | None = None, **kwargs: Any
    ) -> RequestStream: ...


# An engine may also have ``for_model(model) -> EngineLike`` (a remote engine does): a per-call ``model=``
# is then served by that engine's server instead of a process-wide ``get_engine(model)``.


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
    ``EngineConfig``, or a ``diffgemma_adapters.remote.RemoteEngine``). Anything with the :class:`EngineLike`
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
        if self.engine is not None and self.base_url is not None:
            raise InvalidRequestError("base_url", "give either engine or base_url, not both")
        if self.engine is None:
            self.engine = self._acquire_engine()
        elif not isinstance(self.engine, EngineLike):
            raise InvalidRequestError("engine", f"must be a diffgemma Engine, got {type(self.engine).__name__}")
        if self.model is None:
            self.model = self.engine.model_name
        unknown = sorted(set(self.model_kwargs) - _KNOWN_OPTIONS)
        if unknown:
            raise InvalidRequestError(f"model_kwargs.{unknown[0]}", f"is not a DiffusionGemma option ({_KNOWN_TEXT})")
        sampling_params(self)  # every setting is checked here, not at the first call
        return self

    def _acquire_engine(self) -> EngineLike:
        if self.base_url is not None:
            from .remote import RemoteEngine  # needs the openai client, which in-process use does not

            key = self.api_key.get_secret_value() if self.api_key is not None else None
            return RemoteEngine(self.base_url, api_key=key, model=self.model, max_retries=self.max_retries)
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

    def engine_for(self, model: str | None) -> EngineLike:
        """The engine serving ``model`` (a per-call override), or this adapter's engine."""
        if model is None or model in (self.model, self.engine.model_name):
            return self.engine
        if not isinstance(model, str):
            raise InvalidRequestError("model", f"must be a string, got {type(model).__name__}")
        for_model = getattr(self.engine, "for_model", None)
        return for_model(model) if for_model is not None else get_engine(model)

    def roles_for(self, engine: EngineLike) -> TemplateRoles:
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
    t_min, t_max = _schedule(settings, options)
    validators = _string_list("validators", value["validators"])
    validator_options = dict(_mapping("validator_options", value["validator_options"]))
    if json_output:
        validators, validator_options = _with_validator(JSON_VALIDATOR, validators, validator_options,
                                                        None if json_schema is None else {"schema": dict(json_schema)})
    if tool_call_check is not None:
        validators, validator_options = _with_validator(TOOL_CALL_VALIDATOR, validators, validator_options,
                                                        dict(tool_call_check))
    stops = [*(settings.stop or ()), *_string_list("stop", stop or ())]
    return SamplingParams(
        max_new_tokens=value["max_tokens"],
        max_denoising_steps=value["max_denoising_steps"],
        entropy_bound=value["entropy_bound"],
        t_min=t_min,
        t_max=t_max,
        stability_threshold=value["stability_threshold"],
        confidence_threshold=value["confidence_threshold"],
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
        options[name] = {**_mapping("validator_options", options.get(name, {})), **own}
    return validators, options


def _string_list(name: str, value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise InvalidRequestError(name, f"must be a list of strings, got {value!r}")
    return list(value)


def _mapping(name: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRequestError(name, f"must be a mapping, got {type(value).__name__}")
    return value


# -- chat messages ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """One chat message in framework-neutral form.

    ``role`` is ``system``, ``user``, ``assistant`` or ``tool``. ``tool_calls`` (assistant) holds
    ``(name, args, id)`` triples; ``tool_call_id`` / ``name`` identify a tool result's tool.
    """

    role: str
    content: str
    name: str | None = None
    tool_calls: tuple[tuple[str, Mapping[str, Any], str | None], ...] = ()
    tool_call_id: str | None = None


ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatbot": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}


@dataclass(frozen=True)
class TemplateRoles:
    """Which roles the model's chat template takes as turns of their own."""

    system: bool = True
    tool: bool = True
    tools: bool = False
    """Whether the template declares tools itself (``apply_chat_template(..., tools=...)``)."""


def template_roles(engine: EngineLike) -> TemplateRoles:
    """Probe the chat template: does it render a system turn, and a tool turn, without raising?"""
    probe = "diffgemma-role-probe"

    def renders(messages: list[dict[str, str]]) -> bool:
        try:
            return probe in engine.render_chat(messages)
        except Exception:  # a template that rejects a role raises (jinja2 TemplateError, ValueError, ...)
            return False

    def declares_tools() -> bool:
        tool = {"type": "function", "function": {"name": probe.replace("-", "_"), "parameters": {"type": "object"}}}
        try:
            return probe.replace("-", "_") in engine.render_chat([{"role": "user", "content": "x"}], tools=[tool])
        except Exception:  # an engine without the ``tools`` argument (a remote one), or a template that fails
            return False

    return TemplateRoles(
        tools=declares_tools(),
        system=renders([{"role": "system", "content": probe}, {"role": "user", "content": "x"}]),
        tool=renders(
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": "y"},
                {"role": "tool", "content": probe},
            ]
        ),
    )


def normalize_messages(turns: Sequence[Turn], roles: TemplateRoles = TemplateRoles()) -> list[dict[str, str]]:
    """Turns the template accepts, from any conversation.

    1. ``name`` becomes a ``"name: "`` prefix of the content (Gemma templates have no name field).
    2. Assistant tool calls are written in the model's call syntax after the assistant's text; a tool result
       becomes a ``tool`` turn holding a ``<|tool_response>`` (its tool named from the matching call).
    3. Every system message is folded into one system turn at the start - or, if the template takes no system
       turn, into the first user turn.
    4. A ``tool`` turn becomes a ``user`` turn if the template takes no tool turn.
    5. Consecutive turns of the same role are merged (joined by a blank line), so roles alternate.
    """
    if not turns:
        raise InvalidRequestError("messages", "must not be empty")
    call_names: dict[str, str] = {}
    system: list[str] = []
    rendered: list[dict[str, str]] = []
    for index, turn in enumerate(turns):
        role = ROLE_ALIASES.get(turn.role)
        if role is None:
            raise InvalidRequestError(f"messages[{index}].role", f"unsupported role {turn.role!r}")
        content = turn.content
        if role == "assistant":
            for name, args, call_id in turn.tool_calls:
                content += format_tool_call(name, args)
                if call_id:
                    call_names[call_id] = name
        if role == "tool":
            tool = turn.name or call_names.get(turn.tool_call_id or "") or "tool"
            content = format_tool_response(tool, content)
        elif turn.name and role != "assistant":
            content = f"{turn.name}: {content}"
        if role == "system":
            system.append(content)
            continue
        if role == "tool" and not roles.tool:
            role = "user"
        rendered.append({"role": role, "content": content})
    if system:
        system_text = "\n\n".join(system)
        if roles.system:
            rendered.insert(0, {"role": "system", "content": system_text})
        elif rendered and rendered[0]["role"] == "user":
            rendered[0] = {"role": "user", "content": f"{system_text}\n\n{rendered[0]['content']}"}
        else:
            rendered.insert(0, {"role": "user", "content": system_text})
    merged: list[dict[str, str]] = []
    for message in rendered:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {"role": message["role"], "content": f"{merged[-1]['content']}\n\n{message['content']}"}
        else:
            merged.append(message)
    if not merged:
        raise InvalidRequestError("messages", "hold no user, assistant or tool turn")
    return merged


# -- one prepared request ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedRequest:
    """Everything one engine request needs, ready to submit.

    Exactly one of ``prompt`` (raw text, the template already applied) and ``messages`` is set. ``tools`` are
    the OpenAI-format tools the response may call; ``prefill`` is text forced at the start of the model's
    turn (and so part of its output).
    """

    engine: EngineLike
    params: SamplingParams
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    prefill: str = ""
    parallel_tool_calls: bool = True

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def submit(self) -> RequestStream:
        """Queue the request on the engine; bad input raises here."""
        return self.engine.submit(self.prompt, self.params, messages=self.messages)

    def run(self) -> GenerationResult:
        """Submit and wait for the result; an interrupted wait cancels the request."""
        handle = self.submit()
        try:
            return handle.result()
        finally:
            handle.cancel()

    async def arun(self) -> GenerationResult:
        """Submit and await the result without blocking the event loop; task cancellation cancels the request."""
        handle = self.submit()
        try:
            return await handle.aresult()
        finally:
            handle.cancel()

    def tool_assembler(self) -> ToolCallAssembler | None:
        """A fresh assembler for this request's output if it may hold tool calls, else ``None``.

        The one tool-call parser of every path (invoke, stream, server): ``add_block`` returns the visible
        text of each committed block, ``finish`` the last text and every call, settled - a call naming a tool
        that was not offered, or with arguments that do not parse, is invalid (``ToolCall.valid`` is false,
        ``error`` says why); with ``parallel_tool_calls=False`` only the first call is kept.
        """
        if not self.tools:
            return None
        return ToolCallAssembler(
            marker_decoder(self.engine.tokenizer),
            self.prefill,
            tool_names=tuple(_tool_name(tool) for tool in self.tools),
            max_calls=None if self.parallel_tool_calls else 1,
        )


ToolChoice = Literal["auto", "none", "any", "required"] | str | bool | Mapping[str, Any] | None


def prepare_request(
    settings: GenerationSettings,
    *,
    prompt: str | None = None,
    turns: Sequence[Turn] | None = None,
    stop: Sequence[str] | None = None,
    tools: Sequence[Mapping[str, Any]] = (),
    tool_choice: ToolChoice = None,
    response_format: Mapping[str, Any] | None = None,
    parallel_tool_calls: bool = True,
    **options: Any,
) -> PreparedRequest:
    """Settings + one call -> a :class:`PreparedRequest`. Every adapter and the server build requests here,
    so a request is the same prompt and the same constraints whatever the path.

    ``prompt`` is raw text sent as it is; ``turns`` a conversation rendered with the model's chat template.
    ``tools`` (OpenAI format) are declared by the chat template (``apply_chat_template(tools=...)``) where it
    supports tools; otherwise their Gemma 4 declarations open the system turn, where Gemma 4's own template
    puts them. ``tool_choice`` (see :func:`resolve_tool_choice`) may force a call: the model's turn is then
    prefilled with the call marker (and the name), and the ``builtin.tool_call`` validator checks, and repairs
    in place, that the call names a bound tool and that its arguments match that tool's JSON schema.
    ``response_format`` is ``{"type": "json_object"}`` or ``{"type": "json_schema", "schema": {...}}``: it
    selects the ``builtin.json`` validator (with the schema), which repairs invalid blocks in place; nothing
    is added to the prompt. ``parallel_tool_calls=False`` keeps only the first call of a response.
    """
    if (prompt is None) == (turns is None):
        raise InvalidRequestError("prompt", "give exactly one of a prompt and messages")
    engine = settings.engine_for(options.pop("model", None))
    json_output, schema = _response_format(response_format)
    tools, forced = resolve_tool_choice(tools, tool_choice)
    if prompt is not None and tools:
        raise InvalidRequestError("tools", "tools need chat messages, not a raw prompt")
    prefill = "" if forced is None else forced_prefill(tools, forced)
    tool_check = None if forced is None or prefill.endswith(CALL_CLOSE) else _tool_call_check(tools, forced, prefill)
    params = sampling_params(
        settings, stop, json_schema=schema, json_output=json_output, tool_call_check=tool_check, **options
    )
    if prompt is not None:  # already formatted: a response format only selects the validator
        return PreparedRequest(engine, params, prompt=prompt)
    roles = settings.roles_for(engine)
    if tools and not roles.tools:
        turns = [Turn("system", declare_tools(tools)), *turns]
    messages = normalize_messages(turns, roles)
    if not tools or (not roles.tools and forced is None):
        return PreparedRequest(engine, params, messages=messages, tools=tools, parallel_tool_calls=parallel_tool_calls)
    text = engine.render_chat(messages, tools=[dict(tool) for tool in tools]) if roles.tools else engine.render_chat(messages)
    return PreparedRequest(
        engine, params, prompt=text + prefill, tools=tools, prefill=prefill, parallel_tool_calls=parallel_tool_calls
    )


def _response_format(response_format: Mapping[str, Any] | None) -> tuple[bool, Mapping[str, Any] | None]:
    if response_format is None:
        return False, None
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "json_object":
        return True, None
    if kind == "json_schema":
        schema = response_format.get("schema") or (response_format.get("json_schema") or {}).get("schema")
        return True, _mapping("response_format", schema)
    expected = "{'type': 'json_object' | 'json_schema', ...}"
    raise InvalidRequestError("response_format", f"must be {expected}, got {response_format!r}")


def resolve_tool_choice(
    tools: Sequence[Mapping[str, Any]], choice: ToolChoice
) -> tuple[tuple[Mapping[str, Any], ...], str | None]:
    """The one reading of ``tool_choice`` (LangChain, LlamaIndex and OpenAI spellings).

    Returns the offered tools and the forced call: ``None`` (not forced), ``""`` (a call of any bound tool)
    or a tool name. ``None``/``"auto"``: the model decides; ``"none"``/``False``: tools are not offered;
    ``"any"``/``"required"``/``True``: a call is forced; a name, ``{"type": "function", "function":
    {"name": ...}}`` or ``{"type": "tool", "name": ...}``: that call is forced. Anything else raises
    :class:`InvalidRequestError` (a ``ValueError``) naming ``tool_choice``.
    """
    tools = tuple(tools)
    if isinstance(choice, Mapping):
        function = choice.get("function") or {}
        if choice.get("type") == "function" and "name" in function:
            choice = function["name"]
        elif choice.get("type") == "tool" and "name" in choice:
            choice = choice["name"]
        elif choice.get("type") in ("any", "auto", "none", "required") and len(choice) == 1:
            choice = choice["type"]
        else:
            raise InvalidRequestError("tool_choice", f"unsupported tool_choice {dict(choice)!r}")
    if choice is True:
        choice = "any"
    elif choice is False:
        choice = "none"
    if choice in (None, "auto"):
        return tools, None
    if choice == "none":
        return (), None
    if not tools:
        raise InvalidRequestError("tool_choice", f"{choice!r} needs tools")
    names = [_tool_name(tool) for tool in tools]
    if choice in ("any", "required"):
        return tools, (names[0] if len(names) == 1 else "")
    if choice not in names:
        raise InvalidRequestError(
            "tool_choice", f"{choice!r} is neither 'auto', 'none', 'any', 'required' nor one of the tools {names}"
        )
    return tools, choice


def forced_prefill(tools: Sequence[Mapping[str, Any]], forced: str) -> str:
    """The text a forced call starts with: the call marker, and the name and ``{`` when the name is known.

    A tool without parameters has one valid call, which is then written whole."""
    if not forced:
        return f"{CALL_OPEN}call:"
    parameters = _tool_parameters(next(tool for tool in tools if _tool_name(tool) == forced))
    if not parameters.get("properties") and not parameters.get("required"):
        return format_tool_call(forced, {})
    return f"{CALL_OPEN}call:{forced}{{"


def _tool_call_check(tools: Sequence[Mapping[str, Any]], forced: str, prefill: str) -> dict[str, Any]:
    """``builtin.tool_call`` options: the tools the call may name (with their argument schemas), the prefill."""
    offered = [tool for tool in tools if not forced or _tool_name(tool) == forced]
    return {"tools": {_tool_name(tool): _tool_parameters(tool) for tool in offered}, "prefill": prefill}


def _tool_name(tool: Mapping[str, Any]) -> str:
    return tool.get("function", tool)["name"]


def _tool_parameters(tool: Mapping[str, Any]) -> dict[str, Any]:
    return dict(tool.get("function", tool).get("parameters") or {"type": "object", "properties": {}})


# -- one view of a result ---------------------------------------------------------------------------------


def result_view(model_name: str, result: GenerationResult) -> dict[str, Any]:
    """A result's facts as plain data, shared by every adapter and the server.

    ``usage`` has OpenAI's names (``prompt_tokens_details.cached_tokens``: prompt tokens served from the
    prefix cache); ``validation`` is the summary of the block validators; ``stats`` how it was made.
    """
    summary = result.validation
    return {
        "model": model_name,
        "finish_reason": result.finish_reason,
        "stop_reason": result.stop_reason,
        "seed": result.seed,
        "request_id": result.request_id,
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "total_tokens": result.usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": result.usage.cached_tokens},
        },
        "validation": {
            "passed": summary.passed,
            "blocks": len(summary.blocks),
            "repairs": summary.repairs,
            "extra_steps": summary.extra_steps,
            "flags": list(summary.flags),
        },
        "stats": dataclasses.asdict(result.stats),
    }
