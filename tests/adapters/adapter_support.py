"""Test doubles and helpers shared by the adapter tests (imported by ``conftest.py`` and test modules)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from diffgemma_engine import Engine, RequestStream, SamplingParams


@dataclass
class Submitted:
    """One request an engine saw."""

    prompt: str | None
    params: SamplingParams
    messages: list[dict[str, str]] | None
    handle: RequestStream
    outstanding_at_submit: int = 0


class RecordingEngine:
    """Passes every request to a real engine and records it (and its handle)."""

    def __init__(self, engine: Engine) -> None:
        self.inner = engine
        self.requests: list[Submitted] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # model_name, tokenizer, config, render_chat, ...
        return getattr(self.inner, name)

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return self.inner.render_chat(messages)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def submit(self, prompt: str | None = None, params: SamplingParams | None = None, **kwargs: Any) -> RequestStream:
        handle = self.inner.submit(prompt, params, **kwargs)
        with self._lock:
            outstanding = sum(not r.handle.done for r in self.requests)
            self.requests.append(Submitted(prompt, params, kwargs.get("messages"), handle, outstanding))
        return handle

    @property
    def max_in_flight(self) -> int:
        return max((r.outstanding_at_submit + 1 for r in self.requests), default=0)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run an ASGI ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(10)


class RejectBlocks:
    """A test validator: fails the ``(block index, attempt)`` pairs named in its ``fail`` option and records
    every view it sees."""

    name = "test.reject"
    default_enabled = False

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def parse_options(self, options: Mapping[str, Any]) -> frozenset[tuple[int, int]]:
        return frozenset((int(index), int(attempt)) for index, attempt in options.get("fail", ()))

    def validate(self, block, ctx):
        from diffgemma_plugins import Violation

        self.seen.append(block)
        if (block.index, block.attempt) in ctx.options:
            yield Violation(self.name, "rejected", "rejected by the test", spans=((0, len(block.token_ids)),))


def checker_factory_for(validator: Any):
    """A checker factory from a plugin manager of its own that registers only ``validator`` (and the built-ins)."""
    from diffgemma_plugins import hookimpl, make_checker_factory, make_plugin_manager

    class Plugin:
        @hookimpl
        def diffgemma_register_validators(self, register):
            register(validator)

    manager = make_plugin_manager(autoload=False)
    manager.register(Plugin(), name=f"test-{validator.name}")
    return make_checker_factory(manager)
