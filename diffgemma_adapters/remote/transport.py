"""The remote backend's background event loop and its one ``AsyncOpenAI`` client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import weakref
from collections.abc import Coroutine
from typing import Any

import openai

from diffgemma_engine.api.errors import EngineDeadError

from .wire import RemoteConnectionError, map_api_error

logger = logging.getLogger("diffgemma_adapters.remote")

METADATA_TIMEOUT = 5.0
"""Seconds the ``/v1/models`` look-up (model id, context length) may take."""

# -- the background event loop -------------------------------------------------------------------------------


class _Transport:
    """One event-loop thread and one ``AsyncOpenAI`` client, shared by an engine and its ``for_model`` siblings."""

    def __init__(self, base_url: str, api_key: str, timeout: float, max_retries: int | None) -> None:
        self.base_url = base_url
        self._client_settings: dict[str, Any] = {"base_url": base_url, "api_key": api_key, "timeout": timeout}
        if max_retries is not None:
            self._client_settings["max_retries"] = max_retries
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._models: list[Any] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        """Schedule ``coroutine`` on the loop (started on first use)."""
        with self._lock:
            if self._closed:
                coroutine.close()
                raise EngineDeadError(f"the remote engine for {self.base_url} was closed")
            if self._loop is None:
                self._start()
            return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The client; only for coroutines running on the loop."""
        if self._client is None:
            self._client = openai.AsyncOpenAI(**self._client_settings)
        return self._client

    def models(self) -> list[Any]:
        """The server's ``/v1/models`` entries (fetched once)."""
        if self._models is None:
            if self.in_loop_thread():
                raise RuntimeError("RemoteEngine metadata cannot be fetched from its own event loop")
            future = self.run(self._list_models())
            try:
                self._models = future.result(METADATA_TIMEOUT + 1)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise RemoteConnectionError(f"{self.base_url}/models did not answer in {METADATA_TIMEOUT} s") from None
        return self._models

    async def _list_models(self) -> list[Any]:
        try:
            page = await self.client.with_options(timeout=METADATA_TIMEOUT, max_retries=0).models.list()
        except openai.OpenAIError as error:
            raise map_api_error(error) from error
        return list(page.data)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            _stop_loop(loop, thread, self)

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"diffgemma-remote:{self.base_url}", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        weakref.finalize(self, _stop_loop, loop, thread, None)


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread, transport: _Transport | None) -> None:
    """Cancel what runs on ``loop``, close the client, stop the loop and join its thread."""
    if not loop.is_running():
        return

    async def shut_down() -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if transport is not None and transport._client is not None:
            await transport._client.close()
        await loop.shutdown_asyncgens()

    if threading.current_thread() is not thread:
        try:
            asyncio.run_coroutine_threadsafe(shut_down(), loop).result(10)
        except Exception:  # closing is best effort; the loop is stopped regardless
            logger.debug("remote engine shutdown did not complete cleanly", exc_info=True)
    loop.call_soon_threadsafe(loop.stop)
    if threading.current_thread() is not thread:
        thread.join(10)
