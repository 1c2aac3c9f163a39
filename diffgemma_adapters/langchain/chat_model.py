"""``ChatDiffusionGemma``: the LangChain chat model (tools, structured output, streaming, batches)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, model_validator

from diffgemma_engine import BlockEvent, FinalEvent

from ..request import PreparedRequest, prepare_request, resolve_tool_choice
from .base import LangChainAdapter, to_turns
from .chat_results import ChatChunks, chat_result

__all__ = ["ChatDiffusionGemma"]


class ChatDiffusionGemma(LangChainAdapter, BaseChatModel):
    """DiffusionGemma chat model, served in-process by the shared diffgemma engine.

    Text is generated block by block (one canvas of the model at a time); streaming yields one chunk per
    committed block, append-only, never a draft. Output validators (``validators=``) check each block before
    it is committed and repair failures in place.

    Setup:
        .. code-block:: bash

            pip install "diffgemma-plugins[langchain]"

    Key init args — model:
        model: str | None
            Built-in name, checkpoint directory or hub id; shared through ``get_engine``.
        engine: Engine | None
            An engine to use instead of resolving ``model``.
        base_url: str | None
            An OpenAI-compatible DiffusionGemma server (``diffgemma serve``, vLLM >= 0.24) to drive instead of
            an in-process engine; ``model`` is then its model id. Validators run client-side and regenerate a
            failing block by continuation (see ``docs/serving.md``).
        api_key: str | None
            The server's bearer key (with ``base_url``).

    Key init args — generation:
        temperature: float | None
            Mapped onto the denoising schedule (``t_max = temperature``, ``t_min = temperature / 2``).
        max_tokens: int | None
            Maximum number of generated tokens.
        stop: list[str] | None
            Stop strings (the response ends before the first; call-level stops are added).
        seed: int | None
            Seed of the request's own generator (same seed, same output).
        max_denoising_steps, entropy_bound, t_min, t_max, stability_threshold, confidence_threshold
            Denoising parameters (``None``: the checkpoint's).
        validators, validator_options, on_validation_failure
            Block validators, their options, and what to do when a block cannot be repaired.

    ``timeout`` cancels slow requests; ``max_retries`` and ``api_key`` apply to a ``base_url`` server and are
    accepted and ignored in-process.

    Instantiate:
        .. code-block:: python

            from diffgemma_adapters.langchain import ChatDiffusionGemma

            chat = ChatDiffusionGemma(model="tiny-random", max_tokens=32, seed=0)

    Invoke:
        .. code-block:: python

            message = chat.invoke([("system", "Be brief."), ("human", "Why is the sky blue?")])
            message.content, message.usage_metadata, message.response_metadata["finish_reason"]

    Stream:
        .. code-block:: python

            for chunk in chat.stream("Why is the sky blue?"):
                print(chunk.content, end="")

    Async:
        .. code-block:: python

            message = await chat.ainvoke("Why is the sky blue?")
            async for chunk in chat.astream("Why is the sky blue?"):
                ...

    Batch (the engine denoises all inputs together):
        .. code-block:: python

            chat.batch(["one", "two", "three"])

    Tools and structured output:
        .. code-block:: python

            chat.bind_tools([get_weather]).invoke("Weather in Paris?").tool_calls
            chat.with_structured_output(Person).invoke("Alice is 30.")  # JSON validator repairs blocks

    Response metadata:
        ``usage_metadata`` (input/output/total tokens) and ``response_metadata`` with ``model_name``,
        ``model_provider``, ``finish_reason`` (``stop``/``length``/``validation_failed``), ``seed``,
        ``validation`` (passed, repairs, flags) and ``stats`` (blocks, denoising steps, timings).
    """

    model_config = ConfigDict(extra="forbid")

    @property
    def _llm_type(self) -> str:
        return "chat-diffusiongemma"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._ls_params("chat", stop, kwargs)

    @model_validator(mode="after")
    def _set_diffgemma_profile(self) -> ChatDiffusionGemma:
        if self.profile is None:  # core's profile validator runs before the engine is resolved
            self.profile = self._resolve_model_profile()
        return self

    def _resolve_model_profile(self) -> dict[str, Any] | None:
        if self.engine is None:
            return None
        return {
            "max_input_tokens": int(self.engine.context_length),
            "text_inputs": True,
            "text_outputs": True,
            "tool_calling": True,
            "tool_choice": True,
            "structured_output": True,
            "temperature": True,
            "open_weights": True,
        }

    # -- generation -----------------------------------------------------------------------------------

    def _prepare(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> PreparedRequest:
        options = dict(kwargs)
        options.pop("stream", None)  # core passes stream=True along when it streams
        return prepare_request(self, turns=to_turns(messages), stop=stop, **options)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._prepare(messages, stop, kwargs)
        if run_manager is None:
            return chat_result(request, request.run())
        chunks = ChatChunks(request)  # stream internally, so token callbacks fire per block (as ChatOllama)
        handle = request.submit()
        try:
            for event in handle:
                chunk = chunks.make(event)
                if chunk is not None and isinstance(event, BlockEvent):
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                if isinstance(event, FinalEvent):
                    return chat_result(request, event.result)
        finally:
            handle.cancel()
        raise RuntimeError("the request stream ended without a result")  # the engine always ends with one

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._prepare(messages, stop, kwargs)
        if run_manager is None:
            return chat_result(request, await request.arun())
        chunks = ChatChunks(request)
        handle = request.submit()
        try:
            async for event in handle:
                chunk = chunks.make(event)
                if chunk is not None and isinstance(event, BlockEvent):
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                if isinstance(event, FinalEvent):
                    return chat_result(request, event.result)
        finally:
            handle.cancel()
        raise RuntimeError("the request stream ended without a result")

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._prepare(messages, stop, kwargs)
        chunks = ChatChunks(request)
        handle = request.submit()
        try:
            for event in handle:
                chunk = chunks.make(event)
                if chunk is not None:
                    if run_manager:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
        finally:
            handle.cancel()  # a consumer that stops reading stops the generation

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request = self._prepare(messages, stop, kwargs)
        chunks = ChatChunks(request)
        handle = request.submit()
        try:
            async for event in handle:
                chunk = chunks.make(event)
                if chunk is not None:
                    if run_manager:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
        finally:
            handle.cancel()

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Run every input at once: the engine denoises them together, step by step.

        Without an explicit ``max_concurrency`` every input is in flight at once, up to
        ``4 * max_running`` requests of the engine (which keeps its batch full without filling its queue).
        """
        if not inputs:
            return []
        configs = self._batch_config(config, len(inputs))
        return super().batch(inputs, configs, return_exceptions=return_exceptions, **kwargs)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Async :meth:`batch`: every request is awaited on the event loop, none blocks a thread."""
        if not inputs:
            return []
        configs = self._batch_config(config, len(inputs))
        return await super().abatch(inputs, configs, return_exceptions=return_exceptions, **kwargs)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Prompt tokens of ``messages`` (and ``tools``) exactly as this model would see them."""
        formatted = [convert_to_openai_tool(tool) for tool in tools or ()]
        request = prepare_request(self, turns=to_turns(convert_to_messages(messages)), tools=formatted)
        prompt = request.prompt if request.prompt is not None else self.engine.render_chat(request.messages)
        return len(self.get_token_ids(prompt))

    # -- tools and structured output -------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the model in its chat template's tool format (Gemma 4 declarations).

        The tools are declared by the model's chat template (or, if it has no tool support, in Gemma 4's
        declaration syntax at the start of the system turn). The model calls a tool by writing
        ``<|tool_call>call:NAME{args}<tool_call|>``; calls are parsed into ``AIMessage.tool_calls``. A call
        that does not parse, or names a tool that was not bound, goes to ``invalid_tool_calls`` (its
        ``args`` is the raw call text as a JSON string), in ``invoke`` and ``stream`` alike.

        Args:
            tools: LangChain tools, functions, Pydantic models, TypedDicts or OpenAI tool dicts.
            tool_choice: ``"auto"``/``None`` (the model decides), ``"none"`` (tools not offered),
                ``"any"``/``"required"``/``True`` (a call is forced), or a tool name (that call is forced).
                A forced call is real: the model's turn starts with the call marker (and the name), and the
                ``builtin.tool_call`` validator repairs the call in place until it names a bound tool and
                its arguments match that tool's schema.
            parallel_tool_calls: ``False`` keeps only the first call of a response.
            strict: passed to ``convert_to_openai_tool`` (forced calls are always schema-checked).
            kwargs: further call options bound with the tools.
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        resolve_tool_choice(formatted, tool_choice)  # a bad choice raises here, not at the first call
        choice = "any" if tool_choice is True else tool_choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["json_schema", "json_mode", "function_calling"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """A runnable returning output that matches ``schema`` (Pydantic class, TypedDict or JSON schema).

        Methods:
            ``"json_schema"`` (default): the ``builtin.json`` validator checks every block against the schema,
            repairing invalid tokens in place. The schema is stated in a system turn, so the model knows the
            keys it must write (the same request as ``response_format`` on ``diffgemma serve``);
            ``"json_mode"``: the same for any JSON value (``schema`` is only used to parse);
            ``"function_calling"``: a forced call of a tool built from ``schema`` (its arguments are
            checked against the schema by the ``builtin.tool_call`` validator).

        Args:
            schema: the output schema.
            method: see above.
            include_raw: return ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}`` instead of raising
                on output that does not parse; it implies ``on_validation_failure="return_flagged"`` for these
                calls, so a block that cannot be repaired becomes a ``parsing_error`` too.
            strict: accepted for compatibility; validation against the schema is always on.
            kwargs: not accepted (raises ``ValueError``).
        """
        if kwargs:
            raise ValueError(f"with_structured_output got unsupported arguments {sorted(kwargs)}")
        if method not in ("json_schema", "json_mode", "function_calling"):
            raise ValueError(f"method must be 'json_schema', 'json_mode' or 'function_calling', got {method!r}")
        if schema is None and method != "json_mode":
            raise ValueError(f"method={method!r} needs a schema")
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        trace = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        model: ChatDiffusionGemma = self.model_copy(update={"on_validation_failure": "return_flagged"}) if include_raw else self
        if method == "function_calling":
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = model.bind_tools([schema], tool_choice=name, ls_structured_output_format=trace)
            parser: Runnable = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if is_pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        else:
            if method == "json_schema":
                # A pydantic class gives its own model_json_schema(), as LlamaIndex and an OpenAI client send it,
                # so one class is one prompt on every path.
                json_schema = schema.model_json_schema() if is_pydantic else convert_to_json_schema(schema)
                response_format = {"type": "json_schema", "schema": json_schema}
            else:
                response_format = {"type": "json_object"}
            llm = model.bind(response_format=response_format, ls_structured_output_format=trace)
            parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        keep_raw = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks([keep_raw], exception_key="parsing_error")
