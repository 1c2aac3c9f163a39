"""LangChain chat and completion models backed by the shared in-process DiffusionGemma engine.

Install with the ``langchain`` extra: ``pip install "diffgemma-plugins[langchain]"``.

- :class:`ChatDiffusionGemma` (``chat_model``): the chat model;
- :class:`DiffusionGemmaLLM` (``llm``): the completion model;
- ``base``: what both share (settings, batching, message conversion, response metadata);
- ``chat_results``: engine results and events as chat results and chunks.
"""

from __future__ import annotations

from .chat_model import ChatDiffusionGemma
from .llm import DiffusionGemmaLLM

__all__ = ["ChatDiffusionGemma", "DiffusionGemmaLLM"]
