"""The shared engine: one model copy, one worker thread, any number of callers.

``get_engine(model)`` returns the process-wide engine for a model (created once, under a lock).
Callers ``submit`` requests from any thread or event loop and consume a
:class:`~diffgemma_engine.api.stream.RequestStream`; the worker thread owns all model work and runs
``EngineCore.step()`` while there is work.

Why one module of ~450 lines: :class:`Engine` is the only object that touches both the callers' threads
and the worker thread, and its lock, inbox, cancellation and crash handling only make sense together;
the per-model registry (:func:`get_engine`) stays beside it because ``Engine.for_model`` uses it.
Everything that is not thread hand-off lives in the request path's own modules (``core``, ``settle``,
``scheduler``, ...).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import secrets
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from importlib import metadata
from typing import Any

import torch

from diffgemma_engine.config import EngineConfig, resolve_device, resolve_dtype
from diffgemma_engine.loop.core import EngineCore
from diffgemma_engine.loop.detokenizer import Detokenizer
from diffgemma_engine.api.errors import (
    DiffGemmaError,
    EngineDeadError,
    EngineOverloadedError,
    InvalidRequestError,
    ModelLoadError,
    RequestCancelledError,
    WorkerCrashedError,
)
from diffgemma_engine.model.loader import load_model
from diffgemma_engine.loop.model_runner import ModelRunner
from diffgemma_engine.api.outputs import Event, FinalEvent, GenerationResult
from diffgemma_engine.api.params import SamplerDefaults, SamplingParams, fit_context_window
from diffgemma_engine.model.placement import plan_placement
from diffgemma_engine.api.stats import EngineStats, PrefixCacheStats
from diffgemma_engine.loop.prefix_cache import PrefixCache
from diffgemma_engine.loop.prompts import prompt_token_ids, render_messages
from diffgemma_engine.model.registry import DEFAULT_MODEL, resolve_model_ref
from diffgemma_engine.loop.sequence import Sequence
from diffgemma_engine.api.stream import RequestStream
from diffgemma_engine.api.validation import CheckerFactory
from diffgemma_engine.loop.validation_pool import ValidationPool

CHECKER_FACTORY_ENTRY_POINT_GROUP = "diffgemma.checker_factory"
MAX_WORKER_CRASHES = 3
"""Crashes of the worker thread in a row (no successful step between them) after which the engine is dead."""

_LOG = logging.getLogger(__name__)


class Engine:
    """One loaded model serving many concurrent requests with step-level batching.

    Use :func:`get_engine` to share one engine per model and process. Every request entry point takes
    exactly one of ``prompt`` (text), ``messages`` (chat, through the model's chat template) or
    ``prompt_token_ids``, plus optional :class:`SamplingParams`.
    """

    def __init__(self, config: EngineConfig | None = None, **settings: Any) -> None:
        self.config = config if config is not None else EngineConfig(**settings)
        self.device = resolve_device(self.config.device)
        self.dtype = resolve_dtype(self.config.dtype, self.device)
        cache_budget = self.config.prefix_cache_bytes if self.config.prefix_cache else 0
        self.placement = plan_placement(self.config.model, self.device, self.dtype,
                                        quantization=self.config.quantization, offload=self.config.offload,
                                        max_running=self.config.max_running, prefix_cache_bytes=cache_budget,
                                        max_running_tokens=self.config.max_running_tokens)  # fmt: skip
        self.loaded = load_model(self.config.model, self.device, self.dtype, self.config.quantization,
                                 offload=self.placement.offload)  # fmt: skip
        prefix_cache = PrefixCache(self.placement.prefix_cache_bytes) if self.config.prefix_cache else None
        self.runner = ModelRunner(self.loaded, compile_decoder=self.config.compile, prefix_cache=prefix_cache,
                                  prefill_chunk_tokens=self.config.prefill_chunk_tokens)  # fmt: skip
        self.core = EngineCore(self.loaded, self.runner, self.max_running, self.placement.max_running_tokens)
        self.core.validations = ValidationPool(self.config.validation_workers, self.config.validation_timeout,
                                               wake=self._notify_worker)  # fmt: skip
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inbox: list[Sequence] = []
        self._cancels: dict[str, BaseException] = {}
        self._outstanding = 0
        self._thread: threading.Thread | None = None
        self._dead: EngineDeadError | None = None
        self._crash_streak = 0
        self._held = 0
        self._closed = False
        self._checker_factory: CheckerFactory | None = None
        atexit.register(_shutdown_at_exit, weakref.ref(self))

    # -- facts about the model -----------------------------------------------------------------------

    @property
    def max_running(self) -> int:
        """Sequences denoised together at most: ``config.max_running``, or the planner's choice when unset."""
        return self.placement.max_running

    @property
    def model_name(self) -> str:
        return self.loaded.name

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def canvas_length(self) -> int:
        return self.loaded.canvas_length

    @property
    def context_length(self) -> int:
        return self.loaded.context_length

    @property
    def sampler_defaults(self) -> SamplerDefaults:
        return self.loaded.defaults

    def prefix_cache_stats(self) -> PrefixCacheStats:
        """Cumulative prompt tokens served from the prefix cache vs computed, and the cache's size now."""
        return self.runner.prefix_cache_stats()

    def stats(self) -> EngineStats:
        """A snapshot of the load: requests running, waiting (queued for a slot or not yet seen by the
        worker), and the prefix cache's counters. Safe to call from any thread (each count is one read)."""
        scheduler = self.core.scheduler
        return EngineStats(running=len(scheduler.running), waiting=len(scheduler.waiting) + len(self._inbox),
                           max_running=self.max_running, prefix_cache=self.prefix_cache_stats())  # fmt: skip

    def for_model(self, model: str) -> Engine:
        """This engine when it serves ``model``, else the process-wide engine for ``model``."""
        if model in (self.model_name, self.config.model):
            return self
        return get_engine(model)

    @property
    def is_alive(self) -> bool:
        return self._dead is None and not self._closed

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render_chat(self, messages: list[dict[str, str]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt text the chat template makes of ``messages`` (declaring ``tools`` if it supports them)."""
        return render_messages(self.tokenizer, messages, tools)

    # -- requests ------------------------------------------------------------------------------------

    def submit(
        self,
        prompt: str | None = None,
        params: SamplingParams | None = None,
        *,
        messages: list[dict[str, str]] | None = None,
        prompt_token_ids: list[int] | None = None,
        request_id: str | None = None,
    ) -> RequestStream:
        """Queue a request; returns its stream at once. Bad input raises here, before any compute."""
        sequence, stream = self._prepare(prompt, params, messages, prompt_token_ids, request_id)
        with self._lock:
            self._check_open()
            if self._outstanding >= self.max_running + self.config.max_waiting:
                raise EngineOverloadedError(
                    f"{self._outstanding} requests in flight; the engine admits "
                    f"{self.max_running} running + {self.config.max_waiting} waiting"
                )
            self._outstanding += 1
            self._inbox.append(sequence)
            self._ensure_worker()
            self._wake.notify()
        return stream

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the worker between steps while the block runs: requests submitted inside it are taken up
        together when it ends, so they start in the same step and are denoised as one batch (as far as
        ``max_running`` allows). For batching tests and benchmarks; requests already running pause too.
        """
        with self._lock:
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1
                self._wake.notify()

    def generate(self, prompt: str | None = None, params: SamplingParams | None = None, **kwargs: Any) -> GenerationResult:
        """Run one request to the end and return its result."""
        stream = self.submit(prompt, params, **kwargs)
        try:
            return stream.result()
        finally:
            stream.cancel()

    async def agenerate(self, prompt: str | None = None, params: SamplingParams | None = None, **kwargs: Any) -> GenerationResult:
        stream = self.submit(prompt, params, **kwargs)
        try:
            return await stream.aresult()
        finally:
            stream.cancel()

    def stream(self, prompt: str | None = None, params: SamplingParams | None = None, **kwargs: Any) -> Iterator[Event]:
        """Events of one request. Leaving the loop early cancels the request."""
        handle = self.submit(prompt, params, **kwargs)
        return _cancelling_iterator(handle)

    def astream(self, prompt: str | None = None, params: SamplingParams | None = None, **kwargs: Any) -> AsyncIterator[Event]:
        """Async events of one request. ``aclose()``, ``break`` or task cancellation cancel the request."""
        handle = self.submit(prompt, params, **kwargs)
        return _cancelling_async_iterator(handle)

    def cancel(self, request_id: str, error: BaseException) -> None:
        with self._lock:
            self._cancels[request_id] = error
            self._wake.notify()

    # -- lifecycle -----------------------------------------------------------------------------------

    def shutdown(self, timeout: float | None = 10.0) -> None:
        """Cancel in-flight work, stop the worker and release it. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.core.validations.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # -- internals -----------------------------------------------------------------------------------

    def _prepare(self, prompt, params, messages, token_ids, request_id) -> tuple[Sequence, RequestStream]:
        self._check_open()
        if params is None:
            params = SamplingParams()
        if not isinstance(params, SamplingParams):
            raise InvalidRequestError("params", f"must be a SamplingParams, got {type(params).__name__}")
        ids = prompt_token_ids(
            self.tokenizer, prompt=prompt, messages=messages, token_ids=token_ids,
            vocab_size=self.loaded.vocab_size, context_length=self.context_length,
            canvas_length=self.canvas_length,
        )
        resolved = fit_context_window(params, params.resolve(self.loaded.defaults), prompt_tokens=len(ids),
                                      context_length=self.context_length, canvas_length=self.canvas_length)
        request_id = request_id or uuid.uuid4().hex
        seed = resolved.seed if resolved.seed is not None else secrets.randbits(63)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        stream = RequestStream(request_id, self.cancel)
        sequence = Sequence(
            request_id=request_id,
            prompt_ids=ids,
            params=resolved,
            seed=seed,
            generator=generator,
            detokenizer=Detokenizer(self.tokenizer, resolved.stop),
            emit=lambda item: self._deliver(stream, item),
            checker=self._checker_for(request_id, resolved),
            eos_ids=frozenset(self.loaded.defaults.eos_token_ids) | frozenset(resolved.stop_token_ids),
        )
        if resolved.timeout is not None:
            sequence.deadline = sequence.submitted_at + resolved.timeout
        return sequence, stream

    def _checker_for(self, request_id: str, params: SamplingParams):
        info = params.validation_request(request_id, self.canvas_length, tuple(self.loaded.defaults.eos_token_ids))
        if info is None:
            return None
        if not self.config.validation:
            raise InvalidRequestError("validators", "validation is disabled on this engine (EngineConfig.validation)")
        return self._load_checker_factory()(info)

    def use_checker_factory(self, factory: CheckerFactory) -> None:
        """Install the factory that builds each request's validator checker (``diffgemma_plugins`` does)."""
        self._checker_factory = factory

    def _load_checker_factory(self) -> CheckerFactory:
        if self._checker_factory is None:
            points = metadata.entry_points(group=CHECKER_FACTORY_ENTRY_POINT_GROUP, name="default")
            if not points:
                raise InvalidRequestError(
                    "validators", "no validator support is installed (the diffgemma_plugins package provides it)"
                )
            self._checker_factory = next(iter(points)).load()()
        return self._checker_factory

    def _check_open(self) -> None:
        if self._dead is not None:
            raise self._dead
        if self._closed:
            raise EngineDeadError("this engine was shut down")

    def _deliver(self, stream: RequestStream, item: Any) -> None:
        terminal = not stream.done and isinstance(item, (BaseException, FinalEvent))
        stream.push(item)
        if terminal:
            with self._lock:
                self._outstanding -= 1

    def _ensure_worker(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"diffgemma-engine:{self.model_name}", daemon=True)
            self._thread.start()

    def _notify_worker(self) -> None:
        with self._lock:
            self._wake.notify()

    def _run(self) -> None:
        """The worker thread. If it crashes, the requests in flight fail with :class:`WorkerCrashedError` and it
        carries on with the queue; after :data:`MAX_WORKER_CRASHES` crashes in a row the engine is dead."""
        while True:
            try:
                self._serve()
                break
            except BaseException as error:  # the worker itself failed: nobody may hang
                self._crash_streak += 1
                _LOG.error("diffgemma engine worker crashed (%d in a row)", self._crash_streak, exc_info=error)
                if self._crash_streak >= MAX_WORKER_CRASHES:
                    self._dead = EngineDeadError(
                        f"the engine worker died ({self._crash_streak} crashes in a row): {type(error).__name__}: {error}"
                    )
                    self._dead.__cause__ = error
                    self._fail_everything(self._dead)
                    return
                crashed = WorkerCrashedError(
                    f"the engine worker crashed while this request was in flight: {type(error).__name__}: {error}; "
                    "the worker restarted"
                )
                crashed.__cause__ = error
                self.core.fail_all(crashed)
        self._fail_everything(RequestCancelledError("the engine was shut down"))

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (self._held or not (self._inbox or self._cancels or self.core.ready)):
                    self._wake.wait(None if self._held else self.core.seconds_until_due())
                if self._closed:
                    return
                inbox, self._inbox = self._inbox, []
                cancels, self._cancels = self._cancels, {}
            for sequence in inbox:
                self.core.add(sequence)
            for sequence in self.core.scheduler.all():
                if sequence.request_id in cancels:
                    sequence.cancel_error = cancels[sequence.request_id]
            with torch.inference_mode():
                self.core.step()
            self._crash_streak = 0

    def _fail_everything(self, error: DiffGemmaError) -> None:
        with self._lock:
            inbox, self._inbox = self._inbox, []
        for sequence in inbox:
            sequence.emit(error)
        self.core.fail_all(error)


def _cancelling_iterator(handle: RequestStream) -> Iterator[Event]:
    try:
        yield from handle
    finally:
        handle.cancel()


async def _cancelling_async_iterator(handle: RequestStream) -> AsyncIterator[Event]:
    try:
        async for event in handle:
            yield event
    finally:
        handle.cancel()


def _shutdown_at_exit(engine_ref: weakref.ref) -> None:
    engine = engine_ref()
    if engine is not None:
        engine.shutdown(timeout=5.0)


class _EngineRegistry:
    """The process-wide engines, one per (model, device, dtype)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: dict[tuple[str, str, str], Engine] = {}

    def get(self, model: str | None, settings: dict[str, Any]) -> Engine:
        config = EngineConfig(model=model or DEFAULT_MODEL, **settings)
        ref = resolve_model_ref(config.model)
        if ref is None:
            load_model(config.model, "cpu", torch.float32)  # raises the precise ModelLoadError
            raise ModelLoadError(f"cannot resolve model {config.model!r}")
        device = resolve_device(config.device)
        key = (ref.key, device, str(resolve_dtype(config.dtype, device)))
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None and engine.is_alive:
                _check_compatible(engine, config)
                return engine
            engine = Engine(config)
            self._engines[key] = engine
            return engine

    def clear(self) -> None:
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.shutdown()


def _check_compatible(engine: Engine, wanted: EngineConfig) -> None:
    """An unset ``max_running`` accepts whatever the engine chose; every other setting must match."""
    for name in ("max_running", "max_waiting", "compile", "validation", "quantization", "offload", "prefix_cache",
                 "prefix_cache_bytes", "prefill_chunk_tokens", "max_running_tokens", "validation_workers",
                 "validation_timeout"):
        running = engine.max_running if name == "max_running" else getattr(engine.config, name)
        asked = getattr(wanted, name)
        if name in ("max_running", "max_running_tokens") and asked is None:
            continue
        if running != asked:
            raise InvalidRequestError(
                name,
                f"the shared engine for {wanted.model!r} already runs with {name}={running!r}; "
                f"asked for {asked!r} (a second copy of the weights is never made)",
            )


_REGISTRY = _EngineRegistry()


def get_engine(model: str | None = None, **settings: Any) -> Engine:
    """The process-wide shared engine for ``model`` (default: the embedded default model).

    ``settings`` are :class:`EngineConfig` fields. Asking again for the same model, device and dtype
    returns the same engine; asking with conflicting settings raises :class:`InvalidRequestError`.
    """
    return _REGISTRY.get(model, settings)


def shutdown_engines() -> None:
    """Shut down every shared engine (tests, and long-lived hosts that reload models)."""
    _REGISTRY.clear()
