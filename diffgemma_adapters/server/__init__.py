"""An OpenAI-compatible HTTP server over the shared engine (``diffgemma serve``).

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, ``GET /health``,
``GET /metrics`` (Prometheus). Streaming uses server-sent events with one delta per committed block.
DiffusionGemma's own request fields are every :class:`diffgemma_engine.SamplingParams` field under its own
name (``max_denoising_steps``, ``stop_token_ids``, ``ignore_eos``, ...) plus ``validators`` /
``validator_options`` / ``on_validation_failure``; OpenAI ``tools`` / ``tool_choice`` and
``response_format`` are supported. See ``docs/serving.md`` for the limits, the access rules and the
threat model.

Modules: :mod:`.requests` (strict request models, their checks and conversion), :mod:`.openai_wire`
(errors, response bodies), :mod:`.prepare` (a parsed request under the operator's limits -> an engine
request), :mod:`.guard` (the ASGI front door), :mod:`.metrics`, :mod:`.app` (routes), :mod:`.runner` (uvicorn,
signals, exit status).
"""

from .app import DEFAULT_MAX_REQUEST_BYTES, create_app
from .prepare import DEFAULT_MAX_DENOISING_STEPS, ServerLimits
from .openai_wire import ApiError
from .runner import API_KEY_ENV, EXIT_ENGINE_DEAD, resolve_api_key, serve

__all__ = ["create_app", "serve", "resolve_api_key", "ServerLimits", "ApiError", "API_KEY_ENV",
           "EXIT_ENGINE_DEAD", "DEFAULT_MAX_DENOISING_STEPS", "DEFAULT_MAX_REQUEST_BYTES"]
