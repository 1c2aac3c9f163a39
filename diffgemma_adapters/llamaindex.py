"""A LlamaIndex LLM backed by the shared in-process DiffusionGemma engine.

Install with the ``llamaindex`` extra: ``pip install "diffgemma-plugins[llamaindex]"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.constants import DEFAULT_NUM_OUTPUTS
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.llm import LLMStructuredPredictEndEvent, LLMStructuredPredictStartEvent
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.llm import default_completion_to_prompt
from llama_index.core.base.llms.generic_utils import messages_to_prompt as generic_messages_to_prompt
from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel, ConfigDict, model_validator

from diffgemma_engine import BlockEvent, FinalEvent, GenerationResult, InvalidRequestError

from ._formats import json_instruction, parse_json_output
from ._params import GenerationSettings, PreparedRequest, TemplateRoles, Turn, normalize_messages, prepare_request

__all__ = ["ChatTemplatePrompt", "DiffusionGemma"]

dispatcher = get_dispatcher(__name__)

_TEXT_BLOCKS = frozenset({"text"})
_SKIPPED_BLOCKS = frozenset({"thinking", "cache"})  # earlier reasoning and cache markers are not re-sent


@dataclass(frozen=True)
class ChatTemplatePrompt:
    """The default ``messages_to_prompt`` / ``completion_to_prompt``: the model's own chat template.

    Messages are normalised first (system folding, same-role merging, tool turns, names; see
    :func:`diffgemma_adapters._params.normalize_messages`); a completion prompt becomes one user turn.
    """

    engine: Any
    roles: TemplateRoles

    def __call__(self, messages: Sequence[ChatMessage]) -> str:
        return self.engine.render_chat(normalize_messages(_to_turns(messages), self.roles))

    def completion(self, prompt: str, system_prompt: str | None = None) -> str:
        turns = [Turn("system", system_prompt)] if system_prompt else []
        return self.engine.render_chat(normalize_messages([*turns, Turn("user", prompt)], self.roles))


class DiffusionGemma(GenerationSettings, CustomLLM):
    """DiffusionGemma as a LlamaIndex LLM, served in-process by the shared diffgemma engine.

    Text is generated block by block; streaming yields one response per committed block (cumulative
    ``text``, new ``delta``), then a closing response with ``delta=""`` whose ``raw`` holds the usage. All
    four async methods await the engine without blocking the event loop. Every request that a consumer stops
    reading (``break``, ``aclose``, task cancellation) is cancelled in the engine.

    Setup:
        .. code-block:: bash

            pip install "diffgemma-plugins[llamaindex]"

    Key init args:
        model / engine
            Built-in name, checkpoint directory or hub id, resolved through ``get_engine`` (shared with
            every other adapter naming it), or an engine.
        base_url / api_key
            An OpenAI-compatible DiffusionGemma server (``diffgemma serve``, vLLM >= 0.24) and its key, to use
            instead of an in-process engine (``model`` is then its model id; see ``docs/serving.md``).
        temperature, max_tokens, stop, seed
            Standard generation settings (``temperature`` maps onto the denoising schedule).
        max_denoising_steps, entropy_bound, t_min, t_max, stability_threshold, confidence_threshold
            Denoising parameters (``None``: the checkpoint's).
        validators, validator_options, on_validation_failure
            Block validators and what to do when a block cannot be repaired.
        context_window
            Overrides the model's context length in ``metadata``.
        messages_to_prompt / completion_to_prompt / system_prompt
            Default to the model's chat template (:class:`ChatTemplatePrompt`).

    Instantiate:
        .. code-block:: python

            from llama_index.core import Settings
            from diffgemma_adapters.llamaindex import DiffusionGemma

            Settings.llm = DiffusionGemma(model="tiny-random", max_tokens=32, seed=0)
            Settings.tokenizer = Settings.llm.get_token_ids  # size prompts with the model's tokenizer

    Complete and chat:
        .. code-block:: python

            llm.complete("Why is the sky blue?").text
            llm.chat([ChatMessage(role="user", content="Hi")]).message.content

    Stream:
        .. code-block:: python

            for response in llm.stream_complete("Why is the sky blue?"):
                print(response.delta, end="")

    Async:
        .. code-block:: python

            await llm.acomplete("Why is the sky blue?")
            async for response in await llm.astream_chat(messages):
                ...

    Responses:
        ``raw`` holds ``usage`` (prompt/completion/total tokens, read by ``TokenCountingHandler``),
        ``model``, ``finish_reason``, ``seed``, ``validation`` and ``stats``. ``structured_predict`` asks for
        JSON matching the output class and has the ``builtin.json`` validator repair blocks in place.
    """

    model_config = ConfigDict(extra="forbid")

    context_window: int | None = None
    """The context length reported in ``metadata``; ``None``: the model's own."""

    @model_validator(mode="after")
    def _use_chat_template(self) -> DiffusionGemma:
        template = ChatTemplatePrompt(self.engine, self.roles_for(self.engine))
        if self.messages_to_prompt is generic_messages_to_prompt:  # LlamaIndex's "user: ..." default
            self.messages_to_prompt = template
        if self.completion_to_prompt is default_completion_to_prompt:
            self.completion_to_prompt = template.completion
        return self

    @classmethod
    def class_name(cls) -> str:
        return "DiffusionGemma"

    @property
    def metadata(self) -> LLMMetadata:
        """Model facts for prompt sizing. ``num_output`` is at least one canvas: the engine needs room for it."""
        context_window = self.context_window or int(self.engine.context_length)
        canvas = int(getattr(self.engine, "canvas_length", 0))
        num_output = max(self.max_tokens or DEFAULT_NUM_OUTPUTS, canvas)
        return LLMMetadata(
            context_window=context_window,
            num_output=min(num_output, context_window // 2),
            is_chat_model=True,
            is_function_calling_model=False,
            model_name=self.model,
            system_role=MessageRole.SYSTEM,
        )

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids under the model's tokenizer; use as ``Settings.tokenizer`` for exact prompt sizing."""
        return list(self.engine.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- requests -------------------------------------------------------------------------------------

    def _completion_request(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> PreparedRequest:
        if not formatted:
            template = self.completion_to_prompt
            if getattr(template, "__func__", None) is ChatTemplatePrompt.completion:
                prompt = template(prompt, self.system_prompt)
            else:
                prompt = template(prompt)
        stop = kwargs.pop("stop", None)
        return prepare_request(self, prompt=prompt, stop=stop, **kwargs)

    def _chat_request(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> PreparedRequest:
        stop = kwargs.pop("stop", None)
        return prepare_request(self, prompt=self.messages_to_prompt(messages), stop=stop, **kwargs)

    # -- completion -----------------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        request = self._completion_request(prompt, formatted, kwargs)
        return _Responses(request, chat=False).whole(request.run())

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        request = self._completion_request(prompt, formatted, kwargs)
        return _Responses(request, chat=False).whole(await request.arun())

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        request = self._completion_request(prompt, formatted, kwargs)
        return _stream(_Responses(request, chat=False))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        request = self._completion_request(prompt, formatted, kwargs)
        return _astream(_Responses(request, chat=False))

    # -- chat -----------------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request = self._chat_request(messages, kwargs)
        return _Responses(request, chat=True).whole(request.run())

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request = self._chat_request(messages, kwargs)
        return _Responses(request, chat=True).whole(await request.arun())

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        request = self._chat_request(messages, kwargs)
        return _stream(_Responses(request, chat=True))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        request = self._chat_request(messages, kwargs)
        return _astream(_Responses(request, chat=True))

    # -- structured output ----------------------------------------------------------------------------

    def _structured_request(
        self,
        output_cls: type[BaseModel],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None,
        prompt_args: dict[str, Any],
    ) -> PreparedRequest:
        dispatcher.event(
            LLMStructuredPredictStartEvent(output_cls=output_cls, template=prompt, template_args=prompt_args)
        )
        schema = output_cls.model_json_schema()
        messages = self._get_messages(prompt, **prompt_args)
        messages = [ChatMessage(role=MessageRole.SYSTEM, content=json_instruction(schema)), *messages]
        options = dict(llm_kwargs or {})
        stop = options.pop("stop", None)
        return prepare_request(
            self,
            prompt=self.messages_to_prompt(messages),
            stop=stop,
            response_format={"type": "json_schema", "schema": schema},
            **options,
        )

    @dispatcher.span
    def structured_predict(
        self,
        output_cls: type[BaseModel],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> BaseModel:
        """An ``output_cls`` instance: JSON asked for in the prompt and checked (and repaired in place) by the
        ``builtin.json`` validator against ``output_cls``'s JSON schema while it is generated."""
        result = self._structured_request(output_cls, prompt, llm_kwargs, prompt_args).run()
        return _structured_output(output_cls, result)

    @dispatcher.span
    async def astructured_predict(
        self,
        output_cls: type[BaseModel],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> BaseModel:
        """Async :meth:`structured_predict`."""
        result = await self._structured_request(output_cls, prompt, llm_kwargs, prompt_args).arun()
        return _structured_output(output_cls, result)


def _structured_output(output_cls: type[BaseModel], result: GenerationResult) -> BaseModel:
    output = output_cls.model_validate(parse_json_output(result.text))
    dispatcher.event(LLMStructuredPredictEndEvent(output=output))
    return output


# -- messages in ------------------------------------------------------------------------------------------


def _to_turns(messages: Sequence[ChatMessage]) -> list[Turn]:
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
            return parse_json_output(arguments)
        except ValueError:
            return {"arguments": arguments}
    return arguments or {}


# -- responses out ----------------------------------------------------------------------------------------


def _raw(request: PreparedRequest, result: GenerationResult) -> dict[str, Any]:
    summary = result.validation
    return {
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "total_tokens": result.usage.total_tokens,
        },
        "model": request.model_name,
        "finish_reason": result.finish_reason,
        "stop_reason": result.stop_reason,
        "seed": result.seed,
        "request_id": result.request_id,
        "validation": {"passed": summary.passed, "repairs": summary.repairs, "flags": list(summary.flags)},
        "stats": dataclasses.asdict(result.stats),
    }


class _Responses:
    """Builds one request's LlamaIndex responses (completion or chat), whole or streamed."""

    def __init__(self, request: PreparedRequest, chat: bool) -> None:
        self.request = request
        self.chat = chat
        self.text = ""

    def _response(self, text: str, delta: str | None, raw: dict[str, Any] | None) -> CompletionResponse | ChatResponse:
        if self.chat:
            message = ChatMessage(role=MessageRole.ASSISTANT, content=text)
            return ChatResponse(message=message, delta=delta, raw=raw)
        return CompletionResponse(text=text, delta=delta, raw=raw)

    def whole(self, result: GenerationResult) -> Any:
        return self._response(result.text, None, _raw(self.request, result))

    def on_event(self, event: Any) -> Any | None:
        if isinstance(event, BlockEvent) and event.text:
            self.text += event.text
            return self._response(self.text, event.text, None)
        if isinstance(event, FinalEvent):
            return self._response(self.text, "", _raw(self.request, event.result))
        return None


def _stream(responses: _Responses) -> Iterator[Any]:
    """The request is submitted when iteration starts and cancelled when it stops, however it stops."""
    handle = responses.request.submit()
    try:
        for event in handle:
            response = responses.on_event(event)
            if response is not None:
                yield response
    finally:
        handle.cancel()


async def _astream(responses: _Responses) -> AsyncIterator[Any]:
    handle = responses.request.submit()
    try:
        async for event in handle:
            response = responses.on_event(event)
            if response is not None:
                yield response
    finally:
        handle.cancel()
