"""Engine results and events -> LangChain chat results and chunks (text, tool calls, usage, metadata)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from diffgemma_engine import BlockEvent, FinalEvent, GenerationResult

from ..formats import ToolCall, ToolCallAssembler
from ..request import PreparedRequest
from .base import response_metadata, usage_metadata


def _invalid_args(call: ToolCall) -> str:
    """An invalid call's ``args``: its raw text as a JSON string, which LangChain never reads as arguments
    (its lenient parser turns many broken objects into ``{}``), so summed stream chunks keep it invalid."""
    return json.dumps(call.raw_args, ensure_ascii=False)


def _settled_calls(assembler: ToolCallAssembler | None, token_ids: Sequence[int]) -> tuple[str, list[ToolCall]]:
    return ("", []) if assembler is None else assembler.finish(token_ids)


def chat_result(request: PreparedRequest, result: GenerationResult) -> ChatResult:
    assembler = request.tool_assembler()
    content, calls = (result.text, []) if assembler is None else assembler.finish(result.token_ids)
    message = AIMessage(
        content=content,
        tool_calls=[tool_call(name=c.name, args=c.args, id=c.id) for c in calls if c.valid],
        invalid_tool_calls=[
            invalid_tool_call(name=c.name, args=_invalid_args(c), id=c.id, error=c.error) for c in calls if not c.valid
        ],
        usage_metadata=usage_metadata(result),
        response_metadata=response_metadata(request, result),
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


class ChatChunks:
    """Turns one request's events into chat chunks: one per committed block, then a closing chunk."""

    def __init__(self, request: PreparedRequest) -> None:
        self.request = request
        self.tools: ToolCallAssembler | None = request.tool_assembler()

    def make(self, event: Any) -> ChatGenerationChunk | None:
        if isinstance(event, BlockEvent):
            text = event.text if self.tools is None else self.tools.add_block(event.token_ids)
            return ChatGenerationChunk(message=AIMessageChunk(content=text)) if text else None
        if isinstance(event, FinalEvent):
            return self._last(event.result)
        return None  # draft events are never content

    def _last(self, result: GenerationResult) -> ChatGenerationChunk:
        text, calls = _settled_calls(self.tools, result.token_ids)
        message = AIMessageChunk(
            content=text,
            tool_call_chunks=[  # whole calls, settled by the same parser as invoke's
                tool_call_chunk(
                    name=call.name,
                    args=json.dumps(call.args, ensure_ascii=False) if call.valid else _invalid_args(call),
                    id=call.id,
                    index=index,
                )
                for index, call in enumerate(calls)
            ],
            usage_metadata=usage_metadata(result),
            response_metadata=response_metadata(self.request, result),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)
