"""Framework adapters for the shared DiffusionGemma engine.

The adapters live in submodules so that importing this package pulls in no framework:

- ``diffgemma_adapters.langchain``: :class:`ChatDiffusionGemma` (chat model) and :class:`DiffusionGemmaLLM`
  (completion model), needing the ``langchain`` extra (``langchain-core``);
- ``diffgemma_adapters.llamaindex``: :class:`DiffusionGemma`, needing the ``llamaindex`` extra
  (``llama-index-core``).

Every adapter takes ``model=`` (resolved through :func:`diffgemma_engine.get_engine`, so all adapters that
name the same model share one engine and one copy of the weights) or ``engine=``.
"""

from __future__ import annotations

__all__: list[str] = []
