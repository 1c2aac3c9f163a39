"""What an adapter may use of an engine: the in-process :class:`diffgemma_engine.Engine` and the HTTP
``RemoteEngine`` both satisfy :class:`EngineClient`, so adapters call these members directly instead of
probing with ``getattr`` or reading engine internals (``engine.core.scheduler``). Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from diffgemma_engine.api.params import SamplerDefaults, SamplingParams
from diffgemma_engine.api.stats import EngineStats, PrefixCacheStats
from diffgemma_engine.api.stream import RequestStream

__all__ = ["EngineClient", "EngineStats", "PrefixCacheStats"]


@runtime_checkable
class EngineClient(Protocol):
    """The engine surface adapters build on (``isinstance(engine, EngineClient)`` checks the names)."""

    @property
    def model_name(self) -> str:
        """The served model's name (a registry name, a path, or the remote server's model id)."""
        ...

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (callable like a Hugging Face tokenizer: ``tokenizer(text)["input_ids"]``)."""
        ...

    @property
    def context_length(self) -> int:
        """Prompt plus generated tokens at most."""
        ...

    @property
    def canvas_length(self) -> int:
        """Tokens per denoised block."""
        ...

    @property
    def max_running(self) -> int:
        """Requests denoised together at most."""
        ...

    @property
    def sampler_defaults(self) -> SamplerDefaults | None:
        """The checkpoint's sampler defaults (its ``generation_config.json``), which a request's unset fields
        take; ``None`` when the engine cannot know them (a remote server does not publish them)."""
        ...

    @property
    def is_alive(self) -> bool:
        """False once the engine has died or been shut down: new requests would fail."""
        ...

    def render_chat(self, messages: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        """The prompt text the model's chat template makes of ``messages`` (declaring ``tools``)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes under the model's tokenizer (no special tokens added)."""
        ...

    def submit(
        self,
        prompt: str | None = None,
        params: SamplingParams | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        prompt_token_ids: list[int] | None = None,
        request_id: str | None = None,
    ) -> RequestStream:
        """Queue one request (exactly one of ``prompt``, ``messages``, ``prompt_token_ids``); returns its
        stream at once. Bad input raises :class:`~diffgemma_engine.api.errors.InvalidRequestError` here."""
        ...

    def stats(self) -> EngineStats:
        """A snapshot of the engine's load (running, waiting, prefix cache counters)."""
        ...

    def for_model(self, model: str) -> EngineClient:
        """The engine that serves ``model``: this one when it already does, else one for that model
        (a remote engine asks the same server; the in-process engine uses ``get_engine(model)``)."""
        ...
