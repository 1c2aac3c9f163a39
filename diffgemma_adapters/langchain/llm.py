"""``DiffusionGemmaLLM``: the LangChain completion model (text in, text out)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM, LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict

from diffgemma_engine import BlockEvent, FinalEvent, GenerationResult, RequestStream

from ..chat import Turn
from ..request import PreparedRequest, prepare_request
from .base import LangChainAdapter, batch_window, generation_info

__all__ = ["DiffusionGemmaLLM"]


class DiffusionGemmaLLM(LangChainAdapter, BaseLLM):
    """DiffusionGemma completion model (text in, text out), served in-process by the shared engine.

    The prompt is sent as raw text; set ``apply_chat_template=True`` to wrap it as one user turn of the
    model's chat template (instruction-tuned checkpoints answer better that way), or use
    :class:`ChatDiffusionGemma` for conversations.

    Setup:
        .. code-block:: bash

            pip install "diffgemma-plugins[langchain]"

    Key init args:
        The same as :class:`ChatDiffusionGemma` (``model``/``engine``, ``temperature``, ``max_tokens``,
        ``stop``, ``seed``, the denoising parameters, ``validators``, ``on_validation_failure``), plus
        ``apply_chat_template``.

    Instantiate:
        .. code-block:: python

            from diffgemma_adapters.langchain import DiffusionGemmaLLM

            llm = DiffusionGemmaLLM(model="tiny-random", max_tokens=32, seed=0)

    Invoke:
        .. code-block:: python

            text = llm.invoke("The capital of France is")

    Stream:
        .. code-block:: python

            for piece in llm.stream("The capital of France is"):
                print(piece, end="")

    Async:
        .. code-block:: python

            text = await llm.ainvoke("The capital of France is")

    Batch:
        ``llm.batch(prompts)`` submits every prompt (up to a window) before collecting any result, so the
        engine denoises them together. ``generation_info`` of each generation holds ``finish_reason``,
        ``usage``, ``seed`` and ``validation``; ``llm_output`` holds ``model_name`` and summed ``token_usage``.
    """

    model_config = ConfigDict(extra="forbid")

    apply_chat_template: bool = False
    """Wrap each prompt as a single user turn of the model's chat template."""

    @property
    def _llm_type(self) -> str:
        return "diffusiongemma-llm"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._ls_params("llm", stop, kwargs)

    def _prepare(self, prompt: str, stop: list[str] | None, kwargs: Mapping[str, Any]) -> PreparedRequest:
        options = dict(kwargs)
        options.pop("stream", None)
        if self.apply_chat_template:
            return prepare_request(self, turns=[Turn("user", prompt)], stop=stop, **options)
        return prepare_request(self, prompt=prompt, stop=stop, **options)

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        streaming = bool(kwargs.get("stream", self.streaming)) and run_manager is not None
        requests = [self._prepare(prompt, stop, kwargs) for prompt in prompts]
        window = batch_window(self.engine)

        def on_block(text: str) -> None:
            run_manager.on_llm_new_token(text, chunk=GenerationChunk(text=text))

        results = _run_all(requests, window, on_block if streaming else None)
        return _llm_result(requests, results)

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        streaming = bool(kwargs.get("stream", self.streaming)) and run_manager is not None
        requests = [self._prepare(prompt, stop, kwargs) for prompt in prompts]
        window = batch_window(self.engine)

        async def on_block(text: str) -> None:
            await run_manager.on_llm_new_token(text, chunk=GenerationChunk(text=text))

        results = await _arun_all(requests, window, on_block if streaming else None)
        return _llm_result(requests, results)

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        handle = self._prepare(prompt, stop, kwargs).submit()
        try:
            for event in handle:
                chunk = _text_chunk(event)
                if chunk is not None:
                    if run_manager:  # BaseLLM.stream does not fire token callbacks itself
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
        finally:
            handle.cancel()

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        handle = self._prepare(prompt, stop, kwargs).submit()
        try:
            async for event in handle:
                chunk = _text_chunk(event)
                if chunk is not None:
                    if run_manager:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
        finally:
            handle.cancel()



# -- responses out ----------------------------------------------------------------------------------------


def _text_chunk(event: Any) -> GenerationChunk | None:
    if isinstance(event, BlockEvent) and event.text:
        return GenerationChunk(text=event.text)
    if isinstance(event, FinalEvent):
        return GenerationChunk(text="", generation_info=generation_info(event.result))
    return None



def _llm_result(requests: list[PreparedRequest], results: list[GenerationResult]) -> LLMResult:
    usage = {
        "prompt_tokens": sum(r.usage.prompt_tokens for r in results),
        "completion_tokens": sum(r.usage.completion_tokens for r in results),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return LLMResult(
        generations=[[Generation(text=r.text, generation_info=generation_info(r))] for r in results],
        llm_output={"model_name": requests[0].model_name if requests else None, "token_usage": usage},
    )


# -- running many requests --------------------------------------------------------------------------------


def _run_all(
    requests: list[PreparedRequest], window: int, on_block: Callable[[str], None] | None
) -> list[GenerationResult]:
    """Submit up to ``window`` requests ahead, collect results in order; cancel what is left on error."""
    handles: list[RequestStream] = []
    results: list[GenerationResult] = []
    try:
        for request in requests[:window]:
            handles.append(request.submit())
        for index in range(len(requests)):
            for event in handles[index]:
                if isinstance(event, BlockEvent) and event.text and on_block is not None:
                    on_block(event.text)
                elif isinstance(event, FinalEvent):
                    results.append(event.result)
            if index + window < len(requests):
                handles.append(requests[index + window].submit())
    finally:
        for handle in handles:
            handle.cancel()
    return results


async def _arun_all(
    requests: list[PreparedRequest], window: int, on_block: Callable[[str], Any] | None
) -> list[GenerationResult]:
    """Async :func:`_run_all`: awaits each result without blocking the event loop."""
    handles: list[RequestStream] = []
    results: list[GenerationResult] = []
    try:
        for request in requests[:window]:
            handles.append(request.submit())
        for index in range(len(requests)):
            async for event in handles[index]:
                if isinstance(event, BlockEvent) and event.text and on_block is not None:
                    await on_block(event.text)
                elif isinstance(event, FinalEvent):
                    results.append(event.result)
            if index + window < len(requests):
                handles.append(requests[index + window].submit())
    finally:
        for handle in handles:
            handle.cancel()
    return results
