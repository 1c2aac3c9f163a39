"""The LlamaIndex LLM :class:`DiffusionGemma` (completion, chat, tools, structured output) and
:class:`ChatTemplatePrompt`. Messages are converted in :mod:`.messages`, responses built in :mod:`.responses`.

This module is about 400 lines because ``DiffusionGemma`` is one class whose surface is LlamaIndex's
(four completion and four chat entry points, tool calling, four structured-output entry points); each
method is a few lines over the shared request and response helpers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    ToolCallBlock,
)
from llama_index.core.constants import DEFAULT_NUM_OUTPUTS
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.llm import LLMStructuredPredictEndEvent, LLMStructuredPredictStartEvent
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import default_completion_to_prompt
from llama_index.core.base.llms.generic_utils import messages_to_prompt as generic_messages_to_prompt
from llama_index.core.output_parsers.utils import parse_json_markdown
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import ToolSelection
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ..chat import TemplateRoles, Turn, normalize_messages
from ..request import PreparedRequest, prepare_request
from ..settings import GenerationSettings
from .messages import to_turns
from .responses import Responses, astream_responses, stream_responses

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["ChatTemplatePrompt", "DiffusionGemma"]

dispatcher = get_dispatcher("diffgemma_adapters.llamaindex")



@dataclass(frozen=True)
class ChatTemplatePrompt:
    """The default ``messages_to_prompt`` / ``completion_to_prompt``: the model's own chat template.

    Messages are normalised first (system folding, same-role merging, tool turns, names; see
    :func:`diffgemma_adapters.chat.normalize_messages`); a completion prompt becomes one user turn.
    """

    engine: Any
    roles: TemplateRoles

    def __call__(self, messages: Sequence[ChatMessage]) -> str:
        return self.engine.render_chat(normalize_messages(to_turns(messages), self.roles))

    def completion(self, prompt: str, system_prompt: str | None = None) -> str:
        turns = [Turn("system", system_prompt)] if system_prompt else []
        return self.engine.render_chat(normalize_messages([*turns, Turn("user", prompt)], self.roles))


class DiffusionGemma(GenerationSettings, FunctionCallingLLM):
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

    Tools (a ``FunctionCallingLLM``: ``FunctionAgent``, ``chat_with_tools``, ``predict_and_call``):
        .. code-block:: python

            response = llm.chat_with_tools([weather_tool], user_msg="Weather in Paris?", tool_required=True)
            llm.get_tool_calls_from_response(response)  # [ToolSelection(tool_name="weather", ...)]

    Responses:
        ``raw`` holds ``usage`` (prompt/completion/total tokens, read by ``TokenCountingHandler``, and
        ``prompt_tokens_details.cached_tokens``), ``model``, ``finish_reason``, ``seed``, ``validation`` and
        ``stats``. ``structured_predict`` (and its stream and async variants) has the ``builtin.json``
        validator check the output against the output class's JSON schema and repair blocks in place; the
        schema is stated in a system turn before the template's messages (not with a custom
        ``messages_to_prompt``).
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
        canvas = int(self.engine.canvas_length)
        num_output = max(self.max_tokens or DEFAULT_NUM_OUTPUTS, canvas)
        return LLMMetadata(
            context_window=context_window,
            num_output=min(num_output, context_window // 2),
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=self.model,
            system_role=MessageRole.SYSTEM,
        )

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
        if kwargs.get("tools"):  # from _prepare_chat_with_tools: the shared request path renders the tools
            return prepare_request(self, turns=to_turns(messages), stop=stop, **kwargs)
        kwargs.pop("tools", None)
        kwargs.pop("tool_choice", None)
        return prepare_request(self, prompt=self.messages_to_prompt(messages), stop=stop, **kwargs)

    # -- tools ----------------------------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``chat`` arguments that offer ``tools`` (declared by the model's chat template).

        ``tool_required=True`` forces a call of one of them; ``tool_choice`` (a tool name, ``"auto"``,
        ``"none"``, ``"required"``, or OpenAI's dict) wins over it. A forced call is checked and repaired in
        place by the ``builtin.tool_call`` validator (a bound tool, arguments valid against its schema).
        """
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(user_msg if isinstance(user_msg, ChatMessage) else ChatMessage(role="user", content=user_msg))
        if tool_choice is None and tool_required:
            tool_choice = "required"
        return {
            "messages": messages,
            "tools": [tool.metadata.to_openai_tool() for tool in tools],
            "tool_choice": tool_choice,
            "parallel_tool_calls": allow_parallel_tool_calls,
            **kwargs,
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The valid tool calls of ``response`` (invalid ones are in ``message.additional_kwargs
        ["invalid_tool_calls"]``, with the reason)."""
        calls = [
            ToolSelection(tool_id=block.tool_call_id or "", tool_name=block.tool_name, tool_kwargs=block.tool_kwargs)
            for block in response.message.blocks
            if isinstance(block, ToolCallBlock)
        ]
        if not calls and error_on_no_tool_call:
            invalid = response.message.additional_kwargs.get("invalid_tool_calls") or []
            reason = f" ({len(invalid)} invalid: {invalid[0]['error']})" if invalid else ""
            raise ValueError(f"the response holds no valid tool call{reason}")
        return calls

    # -- completion -----------------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        request = self._completion_request(prompt, formatted, kwargs)
        return Responses(request, chat=False).whole(request.run())

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        request = self._completion_request(prompt, formatted, kwargs)
        return Responses(request, chat=False).whole(await request.arun())

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        request = self._completion_request(prompt, formatted, kwargs)
        return stream_responses(Responses(request, chat=False))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        request = self._completion_request(prompt, formatted, kwargs)
        return astream_responses(Responses(request, chat=False))

    # -- chat -----------------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request = self._chat_request(messages, kwargs)
        return Responses(request, chat=True).whole(request.run())

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request = self._chat_request(messages, kwargs)
        return Responses(request, chat=True).whole(await request.arun())

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        request = self._chat_request(messages, kwargs)
        return stream_responses(Responses(request, chat=True))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        request = self._chat_request(messages, kwargs)
        return astream_responses(Responses(request, chat=True))

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
        options = dict(llm_kwargs or {})
        stop = options.pop("stop", None)
        messages = self._get_messages(prompt, **prompt_args)
        response_format = {"type": "json_schema", "schema": output_cls.model_json_schema()}
        if isinstance(self.messages_to_prompt, ChatTemplatePrompt):  # the default: the shared path states the schema
            return prepare_request(self, turns=to_turns(messages), stop=stop, response_format=response_format, **options)
        return prepare_request(
            self, prompt=self.messages_to_prompt(messages), stop=stop, response_format=response_format, **options
        )

    @dispatcher.span
    def structured_predict(
        self,
        output_cls: type[BaseModel],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> BaseModel:
        """An ``output_cls`` instance, checked (and repaired in place) by the ``builtin.json`` validator against
        ``output_cls``'s JSON schema while it is generated. With the default ``messages_to_prompt`` the schema
        is also stated in a system turn (as on every path); a custom ``messages_to_prompt`` is sent unchanged."""
        result = self._structured_request(output_cls, prompt, llm_kwargs, prompt_args).run()
        return _structured_output(output_cls, result.text)

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
        return _structured_output(output_cls, result.text)

    @dispatcher.span
    def stream_structured_predict(
        self,
        output_cls: type[BaseModel],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Iterator[Any]:
        """:meth:`structured_predict`, streamed: a partial ``output_cls`` (fields may be ``None``) per committed
        block that parses, then the validated instance."""
        request = self._structured_request(output_cls, prompt, llm_kwargs, prompt_args)
        partial = _PartialObjects(output_cls)
        for response in stream_responses(Responses(request, chat=False)):
            if response.raw is not None:  # the closing response: the whole, validated output
                yield _structured_output(output_cls, response.text)
            elif (obj := partial.parse(response.text)) is not None:
                yield obj

    @dispatcher.span
    async def astream_structured_predict(
        self,
        output_cls: type[BaseModel],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncIterator[Any]:
        """Async :meth:`stream_structured_predict`."""
        request = self._structured_request(output_cls, prompt, llm_kwargs, prompt_args)

        async def generate() -> AsyncIterator[Any]:
            partial = _PartialObjects(output_cls)
            async for response in astream_responses(Responses(request, chat=False)):
                if response.raw is not None:
                    yield _structured_output(output_cls, response.text)
                elif (obj := partial.parse(response.text)) is not None:
                    yield obj

        return generate()


def _structured_output(output_cls: type[BaseModel], text: str) -> BaseModel:
    output = output_cls.model_validate(parse_json_markdown(text))
    dispatcher.event(LLMStructuredPredictEndEvent(output=output))
    return output


class _PartialObjects:
    """Partial instances of a streamed structured output (llama-index's own flexible model of the class)."""

    def __init__(self, output_cls: type[BaseModel]) -> None:
        from llama_index.core.program.utils import create_flexible_model

        self.flexible = create_flexible_model(output_cls)

    def parse(self, text: str) -> BaseModel | None:
        try:
            return self.flexible.model_validate(parse_json_markdown(text))
        except (ValueError, ValidationError):
            return None
