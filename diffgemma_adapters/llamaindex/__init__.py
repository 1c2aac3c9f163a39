"""A LlamaIndex LLM backed by the shared in-process DiffusionGemma engine (or a server, with ``base_url``).

Install with the ``llamaindex`` extra: ``pip install "diffgemma-plugins[llamaindex]"``.

Modules: :mod:`.llm` (:class:`DiffusionGemma`, :class:`ChatTemplatePrompt`), :mod:`.messages` (LlamaIndex
messages -> chat turns), :mod:`.responses` (results and events -> LlamaIndex responses).
"""

from __future__ import annotations

from .llm import ChatTemplatePrompt, DiffusionGemma

__all__ = ["ChatTemplatePrompt", "DiffusionGemma"]
