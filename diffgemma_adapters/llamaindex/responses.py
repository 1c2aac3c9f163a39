"""One request's LlamaIndex responses (completion or chat), whole or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, MessageRole, TextBlock, ToolCallBlock

from diffgemma_engine import BlockEvent, FinalEvent, GenerationResult

from ..formats import ToolCall, ToolCallAssembler
from ..request import PreparedRequest, result_view



def _raw(request: PreparedRequest, result: GenerationResult) -> dict[str, Any]:
    return result_view(request.model_name, result)


class Responses:
    """Builds one request's LlamaIndex responses (completion or chat), whole or streamed.

    With tools, text goes through the request's tool assembler (the parser every path shares): visible text
    streams as deltas, and the closing response carries the calls as ``ToolCallBlock``s (invalid ones in
    ``additional_kwargs["invalid_tool_calls"]``)."""

    def __init__(self, request: PreparedRequest, chat: bool) -> None:
        self.request = request
        self.chat = chat
        self.text = ""
        self.tools: ToolCallAssembler | None = request.tool_assembler()

    def _response(
        self, text: str, delta: str | None, raw: dict[str, Any] | None, calls: Sequence[ToolCall] = ()
    ) -> CompletionResponse | ChatResponse:
        if not self.chat:
            return CompletionResponse(text=text, delta=delta, raw=raw)
        blocks: list[Any] = [TextBlock(text=text)]
        blocks += [ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.args) for c in calls if c.valid]
        invalid = [{"id": c.id, "name": c.name, "args": c.raw_args, "error": c.error} for c in calls if not c.valid]
        extra = {"invalid_tool_calls": invalid} if invalid else {}
        message = ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)
        return ChatResponse(message=message, delta=delta, raw=raw)

    def whole(self, result: GenerationResult) -> Any:
        if self.tools is None:
            return self._response(result.text, None, _raw(self.request, result))
        text, calls = self.tools.finish(result.token_ids)
        return self._response(text, None, _raw(self.request, result), calls)

    def on_event(self, event: Any) -> Any | None:
        if isinstance(event, BlockEvent):
            delta = event.text if self.tools is None else self.tools.add_block(event.token_ids)
            if not delta:
                return None
            self.text += delta
            return self._response(self.text, delta, None)
        if isinstance(event, FinalEvent):
            calls: list[ToolCall] = []
            delta = ""
            if self.tools is not None:
                delta, calls = self.tools.finish(event.result.token_ids)
                self.text += delta
            return self._response(self.text, delta, _raw(self.request, event.result), calls)
        return None


def stream_responses(responses: Responses) -> Iterator[Any]:
    """The request is submitted when iteration starts and cancelled when it stops, however it stops."""
    handle = responses.request.submit()
    try:
        for event in handle:
            response = responses.on_event(event)
            if response is not None:
                yield response
    finally:
        handle.cancel()


async def astream_responses(responses: Responses) -> AsyncIterator[Any]:
    handle = responses.request.submit()
    try:
        async for event in handle:
            response = responses.on_event(event)
            if response is not None:
                yield response
    finally:
        handle.cancel()
