"""The server's front door: a pure ASGI middleware that runs before any route.

In order, for every HTTP request:

1. **Host and Origin.** The ``Host`` header must name an allowed host (loopback names by default), which
   defeats DNS rebinding against a loopback server; a request carrying an ``Origin`` header (a browser)
   must come from an allowed host too, which defeats cross-site requests from web pages.
2. **Bearer key** on ``/v1/*`` (and on ``/health`` and ``/metrics`` when they are protected).
3. **JSON only**: a ``POST`` must say ``Content-Type: application/json`` (a browser cannot send that
   cross-site without a CORS preflight, which this server never grants).
4. **Body size while reading**: a declared ``Content-Length`` over the limit is refused before reading; a
   chunked body is counted as it arrives and refused at the first byte over the limit, so at most the
   limit is ever buffered. The whole body must arrive within ``body_timeout`` seconds.
5. **Disconnects**: while the route runs, the client's connection is watched; when the client leaves
   before the response is complete, the route's task is cancelled (which cancels its generation), for
   streamed and non-streamed requests alike.
6. **Metrics**: every request is counted once, by route template, method and status (499 when the client
   left first).

Refusals are OpenAI-shaped JSON errors.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .metrics import CLIENT_CLOSED, ServerMetrics
from .openai_wire import ApiError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
ANY_HOST = "*"
OBSERVABILITY_ROUTES = frozenset({"/health", "/metrics"})

logger = logging.getLogger("diffgemma.server")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class AccessPolicy:
    """Who may call the server, and how much they may send.

    ``allowed_hosts``: names the ``Host`` and ``Origin`` headers may carry (``"*"``: any). ``api_key``:
    the bearer key of ``/v1/*`` (``None``: open). ``protect_observability``: ``/health`` and ``/metrics``
    need the key too.
    """

    api_key: str | None = None
    allowed_hosts: frozenset[str] = LOOPBACK_HOSTS
    protect_observability: bool = False
    max_request_bytes: int = 1_000_000
    body_timeout: float = 30.0

    def host_allowed(self, host: str) -> bool:
        return ANY_HOST in self.allowed_hosts or host.lower() in self.allowed_hosts

    def needs_key(self, path: str) -> bool:
        if self.api_key is None:
            return False
        return path.startswith("/v1/") or path == "/v1" or (self.protect_observability and path in OBSERVABILITY_ROUTES)

    def key_matches(self, authorization: str) -> bool:
        if self.api_key is None:
            return True
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"), self.api_key.encode())


def allowed_host_set(names: Iterable[str] | None) -> frozenset[str]:
    """Normalised host names (``[::1]`` -> ``::1``); ``None`` -> the loopback names."""
    if names is None:
        return LOOPBACK_HOSTS
    if isinstance(names, str):
        names = [names]
    return frozenset(_strip_brackets(name.strip().lower()) for name in names if name.strip())


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(_strip_brackets(host)).is_loopback
    except ValueError:
        return False


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def host_of(value: str) -> str | None:
    """The host name of a ``Host`` header value (port dropped); ``None`` when malformed."""
    try:
        parsed = urlsplit(f"//{value}")
        host = parsed.hostname
        parsed.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return None
    return host


def origin_host(value: str) -> str | None:
    try:
        parsed = urlsplit(value)
        return parsed.hostname if parsed.scheme in ("http", "https") else None
    except ValueError:
        return None


class Guard:
    """See the module docstring. ``policy`` may be replaced at runtime (tests do)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, policy: AccessPolicy,
                 metrics: ServerMetrics) -> None:
        self.app = app
        self.policy = policy
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []

        async def counted_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        complete = False
        try:
            complete = await self._serve(scope, receive, counted_send)
        finally:
            code = status[0] if status and complete else CLIENT_CLOSED
            self.metrics.count(scope.get("path", ""), scope.get("method", ""), code, time.perf_counter() - started)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Run the request; ``False`` when the client left before the response was complete."""
        refusal = self._refusal(scope)
        if refusal is not None:
            await send_error(send, refusal, close=scope.get("method") == "POST")
            return True
        body = b""
        if scope.get("method") == "POST":
            try:
                body = await asyncio.wait_for(self._read_body(scope, receive), self.policy.body_timeout)
            except ApiError as error:
                await send_error(send, error, close=True)
                return True
            except asyncio.TimeoutError:
                await send_error(send, ApiError(408, f"the request body did not arrive within "
                                                     f"{self.policy.body_timeout:g} s", "invalid_request_error",
                                                code="body_timeout"), close=True)
                return True
            except _ClientGone:
                return False
        return await self._run_watched(scope, receive, send, body)

    def _refusal(self, scope: Scope) -> ApiError | None:
        headers = _headers(scope)
        policy = self.policy
        host = host_of(headers.get("host", ""))
        if host is None or not policy.host_allowed(host):
            return ApiError(403, "this server does not answer to that Host header (see --allowed-host)",
                            "permission_error", code="host_not_allowed")
        origin = headers.get("origin")
        if origin is not None and origin != "null":
            origin_name = origin_host(origin)
            if origin_name is None or not policy.host_allowed(origin_name):
                return ApiError(403, "cross-origin requests are not allowed (see --allowed-host)",
                                "permission_error", code="origin_not_allowed")
        elif origin == "null":
            return ApiError(403, "cross-origin requests are not allowed", "permission_error",
                            code="origin_not_allowed")
        path = scope.get("path", "")
        if policy.needs_key(path) and not policy.key_matches(headers.get("authorization", "")):
            return ApiError(401, "missing or invalid API key (send 'Authorization: Bearer KEY')",
                            "authentication_error", code="invalid_api_key")
        if scope.get("method") == "POST":
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json":
                return ApiError(415, "the request body must be JSON, sent with 'Content-Type: application/json'",
                                "invalid_request_error", code="unsupported_media_type")
            declared = headers.get("content-length")
            if declared is not None:
                if not declared.isdigit():
                    return ApiError(400, "malformed Content-Length", "invalid_request_error")
                if int(declared) > policy.max_request_bytes:
                    return _too_large(policy.max_request_bytes)
        return None

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.policy.max_request_bytes
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _run_watched(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> bool:
        gone = asyncio.Event()
        delivered = False
        finished = asyncio.Event()

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        started: list[bool] = []

        async def tracked_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.append(True)
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finished.set()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        route = asyncio.ensure_future(self.app(scope, replay, tracked_send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({route, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            route.cancel()
            watcher.cancel()
            raise
        if route.done():
            watcher.cancel()
            error = None if route.cancelled() else route.exception()
            if error is not None:
                logger.error("unhandled error serving %s %s", scope.get("method"), scope.get("path"),
                             exc_info=error)
                if not started:
                    await send_error(send, ApiError(500, "internal server error", "server_error",
                                                    code="internal_error"))
                    return True
            return finished.is_set() or not started
        # the client left: cancel the route (its generation is cancelled with it)
        if not finished.is_set():
            route.cancel()
        try:
            await route
        except asyncio.CancelledError:
            pass
        except Exception:  # the route failed while cancelling; nobody is left to tell
            pass
        return finished.is_set()


class _ClientGone(Exception):
    """The client disconnected while sending its body."""


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is over the limit of {limit} bytes", "invalid_request_error",
                    code="request_too_large")


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        name = key.decode("latin-1").lower()
        if name not in headers:  # the first of repeated headers counts
            headers[name] = value.decode("latin-1")
    return headers


async def send_error(send: Send, error: ApiError, *, close: bool = False) -> None:
    """Send ``error`` as a complete OpenAI-shaped JSON response."""
    payload = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(name.encode(), value.encode()) for name, value in error.headers().items()]
    if close:  # the unread rest of a body cannot be skipped cheaply: end the connection instead
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
