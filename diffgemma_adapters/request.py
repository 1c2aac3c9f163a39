"""One engine request from settings and a call: prompt or turns, tools, ``tool_choice``, ``response_format``.

- :func:`prepare_request`: settings + one call -> a :class:`PreparedRequest` (every adapter and the server
  build requests here, so a request is the same whatever the path);
- :func:`resolve_tool_choice`: the one reading of ``tool_choice``;
- :func:`result_view`: a result's facts as plain data (every adapter and the server report them so).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from diffgemma_engine import GenerationResult, InvalidRequestError, RequestStream, SamplingParams
from diffgemma_engine.api.client import EngineClient

from .chat import Turn, normalize_messages
from .formats import (
    CALL_CLOSE,
    CALL_OPEN,
    ToolCallAssembler,
    declare_tools,
    format_tool_call,
    marker_decoder,
    schema_instruction,
)
from .settings import GenerationSettings, as_mapping, sampling_params


@dataclass(frozen=True)
class PreparedRequest:
    """Everything one engine request needs, ready to submit.

    Exactly one of ``prompt`` (raw text, the template already applied) and ``messages`` is set. ``tools`` are
    the OpenAI-format tools the response may call; ``prefill`` is text forced at the start of the model's
    turn (and so part of its output).
    """

    engine: EngineClient
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
    in place, that the call names a bound tool and that its arguments match that tool's JSON schema; when it is
    not forced, the same validator holds every call the model chooses to write to those rules.
    ``response_format`` is ``{"type": "json_object"}`` or ``{"type": "json_schema", "schema": {...}}``: it
    selects the ``builtin.json`` validator (with the schema), which repairs invalid blocks in place; a schema
    is also stated in a system turn (:func:`~diffgemma_adapters.formats.schema_instruction`), so the model
    knows the keys it must write. A raw ``prompt`` is sent unchanged. ``parallel_tool_calls=False`` keeps only the first call of a response.
    """
    if (prompt is None) == (turns is None):
        raise InvalidRequestError("prompt", "give exactly one of a prompt and messages")
    engine = settings.engine_for(options.pop("model", None))
    json_output, schema = _response_format(response_format)
    tools, forced = resolve_tool_choice(tools, tool_choice)
    if prompt is not None and tools:
        raise InvalidRequestError("tools", "tools need chat messages, not a raw prompt")
    prefill = "" if forced is None else forced_prefill(tools, forced)
    tool_check = _tool_call_check(tools, forced, prefill)
    params = sampling_params(
        settings, stop, json_schema=schema, json_output=json_output, tool_call_check=tool_check, **options
    )
    if prompt is not None:  # already formatted: a response format only selects the validator
        return PreparedRequest(engine, params, prompt=prompt)
    roles = settings.roles_for(engine)
    if schema is not None:
        turns = [Turn("system", schema_instruction(schema)), *turns]
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
        schema = as_mapping(
            "response_format", response_format.get("schema") or (response_format.get("json_schema") or {}).get("schema")
        )
        try:
            json.dumps(schema)
        except (TypeError, ValueError) as error:  # the schema is stated in the prompt and checked as JSON
            raise InvalidRequestError("response_format.schema", f"must be JSON data: {error}") from None
        return True, schema
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


def _tool_call_check(tools: Sequence[Mapping[str, Any]], forced: str | None, prefill: str) -> dict[str, Any] | None:
    """``builtin.tool_call`` options, or ``None`` when there is nothing to check: a forced call names its tool
    (or any bound one) after the prefill; an unforced one (``anywhere``) may be written or not, but every
    call written names a bound tool with arguments that match its schema."""
    if not tools or prefill.endswith(CALL_CLOSE):
        return None
    schemas = {_tool_name(tool): _tool_parameters(tool) for tool in tools if not forced or _tool_name(tool) == forced}
    if forced is None:
        return {"tools": schemas, "anywhere": True}
    return {"tools": schemas, "prefill": prefill}


def _tool_name(tool: Mapping[str, Any]) -> str:
    return tool.get("function", tool)["name"]


def _tool_parameters(tool: Mapping[str, Any]) -> dict[str, Any]:
    return dict(tool.get("function", tool).get("parameters") or {"type": "object", "properties": {}})



# -- one view of a result ---------------------------------------------------------------------------------


def result_view(model_name: str, result: GenerationResult) -> dict[str, Any]:
    """A result's facts as plain data, shared by every adapter and the server: ``model`` and
    :meth:`GenerationResult.summary` (``usage`` with OpenAI's names, the validators' ``validation`` summary,
    ``stats``, ``finish_reason``, ``stop_reason``, ``seed``, ``request_id``)."""
    return {"model": model_name, **result.summary()}
