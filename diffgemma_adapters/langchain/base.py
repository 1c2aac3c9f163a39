"""What both LangChain models share: settings and identity, batching, message conversion, response metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.language_models import LangSmithParams
from langchain_core.messages import BaseMessage, ToolMessage, convert_to_openai_messages
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_config_list
from pydantic import model_validator

from diffgemma_engine import GenerationResult, InvalidRequestError, __version__
from diffgemma_engine.api.client import EngineClient

from ..chat import Turn
from ..request import PreparedRequest, result_view
from ..settings import SAMPLING_OPTIONS, GenerationSettings

PROVIDER = "diffusiongemma"
BATCH_WINDOW_PER_SLOT = 4
"""``batch``/``abatch`` keep up to this many requests per engine batch slot (``max_running``) in flight."""

MULTIMODAL_BLOCKS = frozenset({"image", "image_url", "audio", "input_audio", "video", "file", "media"})


class LangChainAdapter(GenerationSettings):
    """What both LangChain classes share: identity, tracing parameters, token counting, batching."""

    streaming: bool = False
    """Stream by default: ``invoke`` then goes through ``_stream`` (one callback per committed block)."""

    @model_validator(mode="after")
    def _set_diffgemma_version(self) -> LangChainAdapter:
        self._add_version("diffgemma-plugins", __version__)
        return self

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.model_dump(include={"model", "stop", "model_kwargs", *SAMPLING_OPTIONS})

    def _ls_params(
        self, model_type: Literal["chat", "llm"], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs.get("model") or self.model,
            ls_model_type=model_type,
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stops = [*(self.stop or ()), *(stop or ())]
        if stops:
            params["ls_stop"] = stops
        return params

    get_token_ids = GenerationSettings.get_token_ids  # the model's own tokenizer, not LangChain's GPT-2 default

    def _batch_config(self, config: RunnableConfig | list[RunnableConfig] | None, count: int) -> list[RunnableConfig]:
        """Let every input of a batch be in flight at once (up to a window), so the engine batches them."""
        configs = get_config_list(config, count)
        if configs and configs[0].get("max_concurrency") is None:
            window = min(count, batch_window(self.engine))
            configs = [{**c, "max_concurrency": window} for c in configs]
        return configs


def batch_window(engine: EngineClient) -> int:
    return max(1, BATCH_WINDOW_PER_SLOT * engine.max_running)



# -- messages in ------------------------------------------------------------------------------------------


def to_turns(messages: Sequence[BaseMessage]) -> list[Turn]:
    """LangChain messages as turns, through LangChain's own ``convert_to_openai_messages`` (text only)."""
    for index, message in enumerate(messages):
        if isinstance(message.content, list):
            for block in message.content:
                kind = block.get("type") if isinstance(block, dict) else None
                if kind in MULTIMODAL_BLOCKS:
                    raise InvalidRequestError(f"messages[{index}]", f"the adapters take text only, got a {kind!r} block")
    try:
        converted = convert_to_openai_messages(list(messages), text_format="string")
    except ValueError as error:
        raise InvalidRequestError("messages", str(error)) from error
    turns = []
    for message, openai in zip(messages, converted):
        text = openai.get("content") or ""
        if isinstance(message, ToolMessage) and message.status == "error":
            text = json.dumps({"error": text}, ensure_ascii=False)
        calls = tuple(
            (call["function"]["name"], json.loads(call["function"]["arguments"] or "{}"), call.get("id"))
            for call in openai.get("tool_calls", ())
        )
        turns.append(Turn(openai["role"], text, name=openai.get("name"), tool_calls=calls,
                          tool_call_id=openai.get("tool_call_id")))
    return turns


# -- responses out ----------------------------------------------------------------------------------------


def usage_metadata(result: GenerationResult) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=result.usage.prompt_tokens,
        output_tokens=result.usage.completion_tokens,
        total_tokens=result.usage.total_tokens,
        input_token_details=InputTokenDetails(cache_read=result.usage.cached_tokens),
    )


def response_metadata(request: PreparedRequest, result: GenerationResult) -> dict[str, Any]:
    view = result_view(request.model_name, result)
    del view["model"], view["usage"]  # LangChain names them model_name and usage_metadata
    return {"model_name": request.model_name, "model_provider": PROVIDER, **view}



def generation_info(result: GenerationResult) -> dict[str, Any]:
    view = result_view("", result)
    del view["model"]
    return view
