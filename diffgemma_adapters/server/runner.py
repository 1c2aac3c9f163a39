"""Running the app with uvicorn: timeouts, graceful shutdown, and an exit when the engine dies."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from diffgemma_engine import InvalidRequestError

from .app import DEFAULT_MAX_DENOISING_STEPS, DEFAULT_MAX_REQUEST_BYTES, create_app
from .guard import ANY_HOST, is_loopback
from .openai_wire import ApiError

API_KEY_ENV = "DIFFGEMMA_API_KEY"
EXIT_ENGINE_DEAD = 3
"""The exit status of ``diffgemma serve`` after its engine died (a supervisor restarts it)."""

logger = logging.getLogger("diffgemma.server")


def resolve_api_key(api_key: str | None = None, api_key_file: str | os.PathLike[str] | None = None,
                    environ: dict[str, str] | None = None) -> str | None:
    """The bearer key: ``api_key``, else the first line of ``api_key_file``, else ``$DIFFGEMMA_API_KEY``."""
    environ = os.environ if environ is None else environ
    if api_key is not None and api_key_file is not None:
        raise InvalidRequestError("api_key_file", "give either an API key or a key file, not both")
    if api_key_file is not None:
        try:
            lines = Path(api_key_file).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise InvalidRequestError("api_key_file", f"cannot read the key file: {error.strerror}") from None
        api_key = lines[0].strip() if lines else ""
        if not api_key:
            raise InvalidRequestError("api_key_file", "the key file is empty")
    if api_key is None:
        api_key = environ.get(API_KEY_ENV) or None
    if api_key is not None and (not api_key.strip() or any(c.isspace() for c in api_key)):
        raise InvalidRequestError("api_key", "must be non-empty and hold no whitespace")
    return api_key


def default_allowed_hosts(host: str, allowed_hosts: Iterable[str] | None) -> list[str] | None:
    """Who may be named in ``Host``: given names, else loopback names for a loopback bind, else any."""
    if allowed_hosts:
        return list(allowed_hosts)
    if is_loopback(host):
        return None  # the loopback names
    return [ANY_HOST]


def warn_if_exposed(host: str, api_key: str | None) -> bool:
    """Log a loud warning for a non-loopback bind without a key; returns whether it warned."""
    if is_loopback(host) or api_key is not None:
        return False
    banner = "=" * 78
    logger.warning("%s\ndiffgemma serve is listening on %s WITHOUT an API key: anyone who can reach this port can "
                   "run generations.\nSet --api-key-file or $%s.\n%s", banner, host, API_KEY_ENV, banner)
    return True


def guarded_protocol(header_timeout: float, max_connections: int | None = None) -> type:
    """uvicorn's h11 protocol with a deadline for each request's headers (idle or trickling connections
    are closed; uvicorn's own keep-alive timeout only covers the gap between two requests) and, with
    ``max_connections``, an OpenAI-shaped 503 for a connection over the limit (closed before reading)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    seconds = header_timeout

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if max_connections is not None and len(self.connections) > max_connections:
                transport.write(_TOO_MANY_CONNECTIONS)
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a complete request head arrived
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:  # uvicorn's is plain text
            if self.cycle is not None and not self.cycle.response_complete:
                super().send_400_response(msg)
                return
            self.transport.write(_MALFORMED_HTTP)
            self.transport.close()

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

    return GuardedH11Protocol


def _raw_response(error: ApiError, reason: str) -> bytes:
    """A complete HTTP/1.1 response carrying ``error``, for the protocol level (the connection then closes)."""
    body = json.dumps(error.body()).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in error.headers().items())
    head = (f"HTTP/1.1 {error.status} {reason}\r\ncontent-type: application/json\r\n{extra}"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


_TOO_MANY_CONNECTIONS = _raw_response(ApiError(503, "too many open connections; retry shortly", "server_error",
                                               code="too_many_connections", retry_after=1), "Service Unavailable")
_MALFORMED_HTTP = _raw_response(ApiError(400, "malformed HTTP request", "invalid_request_error",
                                         code="malformed_http"), "Bad Request")


def serve(
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    *,
    max_denoising_steps: int | None = DEFAULT_MAX_DENOISING_STEPS,
    max_new_tokens: int | None = None,
    allowed_hosts: Sequence[str] | None = None,
    protect_observability: bool = False,
    served_model_names: Sequence[str] = (),
    header_timeout: float = 10.0,
    idle_timeout: int = 5,
    body_timeout: float = 30.0,
    shutdown_grace: int = 10,
    max_connections: int | None = None,
    **engine_settings: Any,
) -> int:
    """Run the server in the foreground (``diffgemma serve``); returns the process exit status.

    ``engine_settings`` go to ``get_engine`` (``device``, ``quantization``, ``offload``, ``max_running``).
    The first SIGTERM / SIGINT refuses new requests and cancels in-flight generations (their clients get
    a 503 or a final error event), then uvicorn closes the connections. If the engine dies, the server
    stops and the status is :data:`EXIT_ENGINE_DEAD`, so a supervisor can restart it.
    """
    from diffgemma_engine import get_engine

    engine = get_engine(model, **engine_settings)
    hosts = default_allowed_hosts(host, allowed_hosts)
    warn_if_exposed(host, api_key)
    holder: dict[str, Any] = {}

    def engine_died() -> None:
        holder["dead"] = True
        server = holder.get("server")
        if server is not None:
            server.should_exit = True

    app = create_app(engine, api_key=api_key, max_request_bytes=max_request_bytes,
                     max_denoising_steps=max_denoising_steps, max_new_tokens=max_new_tokens, allowed_hosts=hosts,
                     protect_observability=protect_observability, served_model_names=served_model_names,
                     body_timeout=body_timeout, on_engine_dead=engine_died)
    server = uvicorn_server(app, host, port, header_timeout=header_timeout, idle_timeout=idle_timeout,
                            shutdown_grace=shutdown_grace, max_connections=max_connections)
    holder["server"] = server
    try:
        server.run()
    finally:
        engine.shutdown(timeout=shutdown_grace)
    if holder.get("dead"):
        logger.critical("exiting with status %d: the engine died", EXIT_ENGINE_DEAD)
        return EXIT_ENGINE_DEAD
    return 0


def uvicorn_server(app: Any, host: str = "127.0.0.1", port: int = 8000, *, header_timeout: float = 10.0,
                   idle_timeout: int = 5, shutdown_grace: int = 10, max_connections: int | None = None,
                   log_level: str = "info") -> Any:
    """A ``uvicorn.Server`` for an app made by :func:`create_app`, with the timeouts set and in-flight
    generations cancelled on the first shutdown signal (``server.run()`` runs it)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            http=guarded_protocol(header_timeout, max_connections), timeout_keep_alive=idle_timeout,
                            timeout_graceful_shutdown=shutdown_grace, server_header=False)
    return _make_server(config, app.state.server)


def _make_server(config: Any, state: Any) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            loop = getattr(self, "_diffgemma_loop", None)
            if loop is not None:  # a signal handler must not take the engine's locks itself
                loop.call_soon_threadsafe(state.begin_shutdown)

        async def startup(self, sockets: Any = None) -> None:
            self._diffgemma_loop = asyncio.get_running_loop()
            await super().startup(sockets)

        async def shutdown(self, sockets: Any = None) -> None:
            state.begin_shutdown()  # also when the engine died
            await super().shutdown(sockets)

    return Server(config)


