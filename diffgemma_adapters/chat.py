"""Chat turns in framework-neutral form, and what the model's chat template accepts.

- :class:`Turn` and :data:`ROLE_ALIASES`: a message of any framework (LangChain, LlamaIndex, OpenAI);
- :func:`template_roles`: probe a template for system and tool turns and tool declarations;
- :func:`normalize_messages`: any conversation -> turns the model's chat template accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from diffgemma_engine import InvalidRequestError

from .formats import format_tool_call, format_tool_response

if TYPE_CHECKING:
    from diffgemma_engine.api.client import EngineClient


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


def template_roles(engine: EngineClient) -> TemplateRoles:
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

