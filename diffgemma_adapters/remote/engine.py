""":class:`RemoteEngine`: a remote DiffusionGemma server with the engine members the adapters use."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import openai

from diffgemma_engine.api.errors import (
    DiffGemmaError,
    InvalidRequestError,
    RequestCancelledError,
    RequestTimeoutError,
)
from diffgemma_engine.api.outputs import GenerationResult
from diffgemma_engine.api.params import SamplingParams
from diffgemma_engine.api.stats import EngineStats
from diffgemma_engine.loop.prompts import check_messages
from diffgemma_engine.api.stream import RequestStream
from diffgemma_engine.api.validation import BlockChecker, CheckerFactory

from .request import Next, RemoteRequest
from .server import RULES, ServerKind, ServerRules, check_settings, kind_of, server_kind
from .template import ChatTemplate
from .transport import _Transport
from .wire import (
    PieceTokenizer,
    RemoteAuthenticationError,
    RemoteConnectionError,
    RemoteEngineError,
    gemma_turns,
    map_api_error,
    text_pieces,
)

logger = logging.getLogger("diffgemma_adapters.remote")

DEFAULT_CANVAS_LENGTH = 256
"""DiffusionGemma's canvas length (tokens per committed block)."""

DEFAULT_CONTEXT_LENGTH = 8192
"""The context length assumed when neither a parameter nor the server (``max_model_len``) gives one."""

MAX_CONTINUATIONS = 32
"""Continuation requests per response at most, whatever the validator budgets say."""

DEFAULT_MAX_RUNNING = 4
"""Requests a server is assumed to run together (servers do not report it): sizes the adapters' batch windows."""

PLACEHOLDER_API_KEY = "EMPTY"
"""Sent when no key is given (the ``openai`` client requires one; servers without a key ignore it)."""

ON_UNSUPPORTED = ("error", "warn")


def connect(
    base_url: str,
    *,
    api_key: str | None = None,
    model: str | None = None,
    max_retries: int | None = None,
    server: str | ServerKind | None = None,
    chat_template: str | os.PathLike[str] | None = None,
    on_unsupported: str = "error",
) -> RemoteEngine:
    """The engine behind an adapter's ``base_url=`` (``GenerationSettings`` calls this when it is validated).

    A :class:`RemoteEngine` with the adapter's settings and every other argument at its default. Building it
    makes no network call; its background event-loop thread (one per engine, shared with its ``for_model``
    siblings) starts on first use (a request, or a ``/v1/models`` look-up); it is a daemon thread, stopped by
    ``close()`` or when the engine is garbage-collected.
    """
    return RemoteEngine(base_url, api_key=api_key, model=model, max_retries=max_retries, server=server,
                        chat_template=chat_template, on_unsupported=on_unsupported)


class RemoteEngine:
    """An OpenAI-compatible DiffusionGemma server, with the engine members the adapters use.

    Args:
        base_url: the server's OpenAI API root, e.g. ``"http://127.0.0.1:8000/v1"``.
        api_key: its bearer key (``None``: a placeholder, for servers without one).
        model: the served model id; ``None``: the first id in the server's ``/v1/models`` (one look-up).
        server: what the server is: ``"diffgemma"`` (``diffgemma serve``), ``"vllm"`` or ``"openai"`` (any
            other OpenAI-compatible server); ``None``: read from ``/v1/models`` ``owned_by`` on the first
            request (one look-up, shared with the model id's). It decides what is sent: see
            :mod:`diffgemma_adapters.remote.server`.
        on_unsupported: what a request setting the server cannot honour does (a ``seed`` or a sampler
            field for vLLM, ``stop_token_ids`` for a plain OpenAI server): ``"error"`` raises
            ``InvalidRequestError`` naming it before any traffic; ``"warn"`` sends the request without it
            and warns (:class:`~diffgemma_adapters.remote.RemoteSettingWarning` and a log record).
        context_length: the model's context length; ``None``: the server's ``max_model_len`` from
            ``/v1/models`` (vLLM reports it), else :data:`DEFAULT_CONTEXT_LENGTH` (asked again later while
            the server cannot be reached).
        canvas_length: tokens per block of the served model (DiffusionGemma: 256): block boundaries in a
            stream with token counts, and the tokens a continuation has already spent.
        timeout: seconds an HTTP call may take (a whole streamed response counts as one).
        max_retries: retries of a failed HTTP call (connection errors, 429, 5xx; ``None``: the ``openai``
            client's default). A stream is never retried once it has started.
        checker_factory: builds each request's validator checker; ``None``: ``make_checker_factory()`` over
            the process-wide plugin manager, loaded on the first request that selects validators.
        chat_template: the checkpoint's chat template, for continuation prompts and raw-prompt adapters: a
            local checkpoint directory, its ``chat_template.jinja`` or ``tokenizer_config.json``, or a
            :class:`ChatTemplate`. ``None``: :func:`gemma_turns`, a plain turn format (the fallback).
        chat_format: instead of a template, any callable rendering messages into a prompt.
        max_continuations: continuation requests per response at most (a bound on top of the budgets).

    Constructing one makes no network call; the first request (or ``model_name`` / ``context_length``)
    does the look-ups it needs.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        server: str | ServerKind | None = None,
        on_unsupported: str = "error",
        context_length: int | None = None,
        canvas_length: int = DEFAULT_CANVAS_LENGTH,
        timeout: float = 600.0,
        max_retries: int | None = None,
        checker_factory: CheckerFactory | None = None,
        chat_template: str | os.PathLike[str] | ChatTemplate | None = None,
        chat_format: Callable[[Sequence[Mapping[str, str]]], str] | None = None,
        max_continuations: int = MAX_CONTINUATIONS,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise InvalidRequestError("base_url", f"must be an http(s) URL, got {base_url!r}")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise InvalidRequestError("model", f"must be a non-empty string or None, got {model!r}")
        for name, value in (("context_length", context_length), ("canvas_length", canvas_length),
                            ("max_continuations", max_continuations), ("max_retries", max_retries)):
            minimum = 0 if name in ("max_continuations", "max_retries") else 1
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
                raise InvalidRequestError(name, f"must be an int >= {minimum}, got {value!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidRequestError("timeout", f"must be a number > 0, got {timeout!r}")
        if on_unsupported not in ON_UNSUPPORTED:
            raise InvalidRequestError("on_unsupported", f"must be 'error' or 'warn', got {on_unsupported!r}")
        if chat_template is not None and chat_format is not None:
            raise InvalidRequestError("chat_template", "give chat_template or chat_format, not both")
        self.base_url = base_url.rstrip("/")
        self.canvas_length = canvas_length
        self.max_continuations = max_continuations
        self.on_unsupported = on_unsupported
        self.chat_template = (chat_template if isinstance(chat_template, ChatTemplate) or chat_template is None
                              else ChatTemplate.from_pretrained(chat_template))
        self.chat_format = chat_format or self.chat_template or gemma_turns
        self._server = server_kind(server)
        self._model = model
        self._context_length = context_length
        self._checker_factory = checker_factory
        self._transport = _Transport(self.base_url, api_key or PLACEHOLDER_API_KEY, float(timeout), max_retries)
        self._tokenizer = PieceTokenizer()
        self._in_flight: set[Any] = set()  # requests' futures, shared with for_model siblings (one transport)

    # -- facts about the model and the server (EngineClient) -------------------------------------------

    @property
    def model_name(self) -> str:
        if self._model is None:
            models = self._transport.models()
            if not models:
                raise RemoteEngineError(f"{self.base_url}/models lists no model")
            self._model = models[0].id
        return self._model

    @property
    def server(self) -> ServerKind:
        """What the server is: given, or read from ``/v1/models`` ``owned_by`` (looked up once)."""
        if self._server is None:
            try:
                self._server = kind_of(self._transport.models(), self._model)
            except (RemoteConnectionError, RemoteAuthenticationError):
                raise  # the request could not be sent either
            except DiffGemmaError as error:  # no /v1/models (a bare OpenAI-compatible proxy)
                logger.info("%s has no model listing (%s): treating it as a plain OpenAI-compatible server",
                            self.base_url, error)
                self._server = ServerKind.OPENAI
            logger.debug("%s is a %s server", self.base_url, self._server.value)
        return self._server

    @property
    def rules(self) -> ServerRules:
        """What the server accepts in a request."""
        return RULES[self.server]

    @property
    def tokenizer(self) -> PieceTokenizer:
        """The pseudo-token tokenizer (the model's own tokenizer is on the server)."""
        return self._tokenizer

    @property
    def context_length(self) -> int:
        if self._context_length is None:
            found = self._server_context_length()
            if found is None:
                return DEFAULT_CONTEXT_LENGTH
            self._context_length = found
        return self._context_length

    @property
    def sampler_defaults(self) -> None:
        """``None``: an OpenAI-compatible server does not publish its checkpoint's sampler defaults."""
        return None

    @property
    def is_alive(self) -> bool:
        return not self._transport.closed

    @property
    def max_running(self) -> int:
        """:data:`DEFAULT_MAX_RUNNING`: a server does not report how many requests it runs together."""
        return DEFAULT_MAX_RUNNING

    def stats(self) -> EngineStats:
        """Requests in flight over this connection as ``running`` (a server's own queue is not visible:
        ``waiting`` is 0); no prefix-cache counters."""
        return EngineStats(running=len(self._in_flight), waiting=0, max_running=self.max_running)

    def count_tokens(self, text: str) -> int:
        """Pseudo-tokens in ``text`` (see the package docstring); the server's usage counts are exact."""
        return len(text_pieces(text))

    def render_chat(self, messages: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        """The prompt the chat template (or ``chat_format``) makes of ``messages``; ``tools`` needs a template."""
        if tools:
            if self.chat_template is None or self.chat_format is not self.chat_template:
                raise InvalidRequestError("tools", "rendering tools needs the checkpoint's chat_template")
            return self.chat_template.render(messages, tools=tools)
        return self.chat_format(messages)

    def for_model(self, model: str) -> RemoteEngine:
        """This engine for another model of the same server (sharing its connection and event loop)."""
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequestError("model", f"must be a non-empty string, got {model!r}")
        sibling = copy.copy(self)
        sibling._model = model
        sibling._context_length = None
        return sibling

    def use_checker_factory(self, factory: CheckerFactory) -> None:
        """Install the factory that builds each request's validator checker."""
        self._checker_factory = factory

    def _server_context_length(self) -> int | None:
        try:
            models = self._transport.models()
            model = self.model_name
        except DiffGemmaError as error:  # not cached: asked again on the next use
            logger.debug("no context length from %s yet (%s)", self.base_url, error)
            return None
        for entry in models:
            if entry.id == model:
                value = (entry.model_extra or {}).get("max_model_len")
                return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
        return None

    # -- requests --------------------------------------------------------------------------------------

    def submit(
        self,
        prompt: str | None = None,
        params: SamplingParams | None = None,
        *,
        messages: list[dict[str, str]] | None = None,
        prompt_token_ids: list[int] | None = None,
        request_id: str | None = None,
    ) -> RequestStream:
        """Start a streamed request; returns its stream at once. Bad input, and settings the server cannot
        honour (with ``on_unsupported="error"``), raise here, before any request is sent.

        Exactly one of ``prompt`` (sent to ``/v1/completions``) and ``messages`` (``/v1/chat/completions``).
        """
        params = params if params is not None else SamplingParams()
        if not isinstance(params, SamplingParams):
            raise InvalidRequestError("params", f"must be a SamplingParams, got {type(params).__name__}")
        if prompt_token_ids is not None:
            raise InvalidRequestError("prompt_token_ids", "a remote server takes text: give prompt or messages")
        if (prompt is None) == (messages is None):
            raise InvalidRequestError("prompt", "give exactly one of prompt and messages")
        if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
            raise InvalidRequestError("prompt", "must be a non-empty string")
        if messages is not None:
            check_messages(messages)
        if params.draft_events:
            raise InvalidRequestError("draft_events", "servers stream committed blocks only, never drafts")
        rules = self.rules
        check_settings(params, rules, self.on_unsupported, self.base_url)
        request_id = request_id or f"remote-{uuid.uuid4().hex}"
        checker = self._checker_for(request_id, params)
        job = RemoteRequest(self, request_id, params, prompt, messages, checker, self.model_name, rules)
        future = self._transport.run(self._drive(job))
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        job.attach(future)
        return job.stream

    def generate(self, prompt: str | None = None, params: SamplingParams | None = None, **kwargs: Any) -> GenerationResult:
        """Run one request to the end and return its result."""
        stream = self.submit(prompt, params, **kwargs)
        try:
            return stream.result()
        finally:
            stream.cancel()

    def close(self) -> None:
        """Cancel in-flight requests, close the HTTP client and stop the event loop. Idempotent."""
        self._transport.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _checker_for(self, request_id: str, params: SamplingParams) -> BlockChecker | None:
        info = params.validation_request(request_id, self.canvas_length, ())
        if info is None:
            return None
        if self._checker_factory is None:
            from diffgemma_plugins import make_checker_factory

            self._checker_factory = make_checker_factory()
        return self._checker_factory(info)

    # -- the request driver (runs on the transport's loop) ---------------------------------------------

    async def _drive(self, job: RemoteRequest) -> None:
        try:
            if job.params.timeout is None:
                await self._segments(job)
            else:
                await asyncio.wait_for(self._segments(job), job.params.timeout)
        except asyncio.CancelledError:
            job.fail(RequestCancelledError(f"request {job.request_id} was cancelled"))
        except asyncio.TimeoutError:
            job.fail(RequestTimeoutError(f"request {job.request_id} ran over its timeout of {job.params.timeout} s"))
        except (DiffGemmaError, openai.OpenAIError) as error:
            job.fail(map_api_error(error))
        except Exception as error:  # nothing may leave a consumer waiting
            job.fail(RemoteEngineError(f"request {job.request_id} failed: {type(error).__name__}: {error}"))

    async def _segments(self, job: RemoteRequest) -> None:
        """One streamed request, then one continuation per retried block, within the bounds."""
        for _ in range(self.max_continuations + 1):
            request = job.next_request()
            if request is None:  # max_tokens is spent by what was accepted
                job.finish("length")
                return
            endpoint, kwargs = request
            stream = await endpoint.create(**kwargs)
            try:
                step = await self._read(job, stream)
            finally:
                await stream.close()
            if step is not Next.RESTART:
                job.complete()
                return
        raise RemoteEngineError(f"request {job.request_id} exceeded {self.max_continuations} continuations")

    async def _read(self, job: RemoteRequest, stream: Any) -> Next:
        counts = job.rules.counts_tokens_per_chunk
        async for chunk in stream:
            usage = getattr(chunk, "usage", None)
            if usage is not None:
                job.note_usage(usage.prompt_tokens, usage.completion_tokens)
            for choice in chunk.choices[:1]:
                text = choice.delta.content if job.chat_segment else choice.text
                stop_reason = (choice.model_extra or {}).get("stop_reason")
                running = usage.completion_tokens if counts and usage is not None else None
                step = job.on_chunk(text or "", choice.finish_reason, stop_reason, running)
                if step is not Next.CONTINUE:
                    return step
        return Next.CONTINUE
