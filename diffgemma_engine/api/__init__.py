"""Torch-free parts of the engine that other layers build on (the remote backend, validator plugins).

Nothing under ``diffgemma_engine.api`` imports torch or transformers, directly or through
``diffgemma_engine/__init__``, which loads the torch-backed engine only when ``Engine`` or ``get_engine``
is first used. Import the submodules themselves (``diffgemma_engine.api.window_rules``); this package
re-exports nothing, so importing one submodule loads no other.
"""
