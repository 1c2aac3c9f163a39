"""Framework adapters for the shared DiffusionGemma engine.

The adapters live in submodules so that importing this package pulls in no framework:

- ``diffgemma_adapters.langchain``: :class:`ChatDiffusionGemma` (chat model) and :class:`DiffusionGemmaLLM`
  (completion model), needing the ``langchain`` extra (``langchain-core``);
- ``diffgemma_adapters.llamaindex``: :class:`DiffusionGemma`, needing the ``llamaindex`` extra
  (``llama-index-core``).

Every adapter takes ``model=`` (resolved through :func:`diffgemma_engine.get_engine`, so all adapters that
name the same model share one engine and one copy of the weights), ``engine=`` or ``base_url=``.

What they share, framework-free:

- ``settings``: :class:`GenerationSettings` (the fields every adapter has) and ``sampling_params``;
- ``request``: ``prepare_request`` (prompt or turns, tools, ``tool_choice``, ``response_format``) and
  ``result_view``;
- ``chat``: ``Turn``, role aliases, what a chat template accepts, ``normalize_messages``;
- ``formats``: the model's tool-call and tool-response text formats, and their parser.

Also ``server`` (``diffgemma serve``), ``remote`` (an OpenAI-compatible server as an engine) and ``cli``.
"""

from __future__ import annotations

__all__: list[str] = []
