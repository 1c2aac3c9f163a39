"""Prometheus metrics of ``diffgemma serve`` (``GET /metrics``), with bounded label sets.

Every label value comes from a closed set the server chooses, never from the request: routes are the
server's route templates (any other path is ``"other"``), methods the few the server knows (anything else
is ``"other"``), statuses the codes the server itself sends. However many distinct paths clients request,
the exposition stays the same size, and nothing a client sends is echoed into it.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from diffgemma_engine import GenerationResult
from diffgemma_engine.api.client import EngineClient

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")
OTHER = "other"
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
CLIENT_CLOSED = 499
"""The status recorded for a request whose client went away before its response was complete."""


def route_label(path: str) -> str:
    return path if path in ROUTES else OTHER


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


class ServerMetrics:
    """The server's counters and gauges in a registry of their own (one per app)."""

    def __init__(self, engine: EngineClient) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter("diffgemma_requests", "HTTP requests by route template, method and status; "
                                "a stream counts once, with the status it started with (499: client left).",
                                ["route", "method", "status"], registry=registry)
        self.duration = Histogram("diffgemma_request_duration_seconds", "Time from request to complete response.",
                                  ["route"], registry=registry,
                                  buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.prompt_tokens = Counter("diffgemma_prompt_tokens", "Prompt tokens of finished requests, by source: "
                                     "served from the prefix cache or computed.", ["source"], registry=registry)
        self.completion_tokens = Counter("diffgemma_completion_tokens", "Generated tokens of finished requests.",
                                         registry=registry)
        self.denoising_steps = Counter("diffgemma_denoising_steps", "Denoising steps of finished requests.",
                                       registry=registry)
        self.repairs = Counter("diffgemma_repairs", "Block repairs and regenerations.", registry=registry)
        self.validation_failures = Counter("diffgemma_validation_failures",
                                           "Responses with a block that failed validation.", registry=registry)
        self.cancelled = Counter("diffgemma_cancelled", "Generations cancelled because the client went away.",
                                 registry=registry)
        self.refused = Counter("diffgemma_refused_over_limit",
                               "Requests refused for asking more than a server limit allows.", ["limit"],
                               registry=registry)
        for source in ("cached", "computed"):
            self.prompt_tokens.labels(source)
        Gauge("diffgemma_queue_depth", "Requests waiting for a running slot.", registry=registry).set_function(
            lambda: engine.stats().waiting)
        Gauge("diffgemma_running", "Requests being denoised.", registry=registry).set_function(
            lambda: engine.stats().running)
        Gauge("diffgemma_engine_alive", "1 while the engine can serve requests.", registry=registry).set_function(
            lambda: 1 if engine.is_alive else 0)

    def record(self, result: GenerationResult) -> None:
        usage = result.usage
        cached = min(getattr(usage, "cached_tokens", 0) or 0, usage.prompt_tokens)
        self.prompt_tokens.labels("cached").inc(cached)
        self.prompt_tokens.labels("computed").inc(usage.prompt_tokens - cached)
        self.completion_tokens.inc(usage.completion_tokens)
        self.denoising_steps.inc(result.stats.denoising_steps)
        self.repairs.inc(result.stats.repairs)
        if not result.validation.passed:
            self.validation_failures.inc()

    def count(self, path: str, method: str, status: int, seconds: float) -> None:
        route = route_label(path)
        self.requests.labels(route, method_label(method), str(status)).inc()
        self.duration.labels(route).observe(seconds)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of one sample (tests and health reports)."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
