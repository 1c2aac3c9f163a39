"""LlamaIndex chat messages -> framework-neutral :class:`~diffgemma_adapters.chat.Turn` s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.output_parsers.utils import parse_json_markdown

from diffgemma_engine import InvalidRequestError

from ..chat import Turn

_TEXT_BLOCKS = frozenset({"text"})
_SKIPPED_BLOCKS = frozenset({"thinking", "cache"})  # earlier reasoning and cache markers are not re-sent



def to_turns(messages: Sequence[ChatMessage]) -> list[Turn]:
    turns = []
    for index, message in enumerate(messages):
        texts: list[str] = []
        calls: list[tuple[str, Any, str | None]] = []
        for block in message.blocks:
            kind = getattr(block, "block_type", None)
            if kind in _TEXT_BLOCKS:
                texts.append(block.text)
            elif kind == "tool_call":
                calls.append((block.tool_name, block.tool_kwargs, block.tool_call_id))
            elif kind not in _SKIPPED_BLOCKS:
                raise InvalidRequestError(f"messages[{index}]", f"the adapters take text only, got a {kind!r} block")
        extra = message.additional_kwargs
        for call in extra.get("tool_calls") or ():
            function = call.get("function", call) if isinstance(call, dict) else {}
            if function.get("name"):
                calls.append((function["name"], _arguments(function.get("arguments")), call.get("id")))
        role = message.role.value if isinstance(message.role, MessageRole) else str(message.role)
        turns.append(
            Turn(
                role,
                "\n".join(texts),
                name=extra.get("name"),
                tool_calls=tuple(calls),
                tool_call_id=extra.get("tool_call_id"),
            )
        )
    return turns


def _arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return parse_json_markdown(arguments)
        except ValueError:
            return {"arguments": arguments}
    return arguments or {}
