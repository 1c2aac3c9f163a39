"""What crosses the wire to a remote DiffusionGemma server: HTTP errors and streamed error events mapped to
diffgemma's errors, pseudo-tokens for text without the model's tokenizer, and the fallback turn format for
client-side prompts. See :mod:`diffgemma_adapters.remote` for how they are used."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import openai

from diffgemma_engine.api.errors import (
    DiffGemmaError,
    EngineDeadError,
    EngineOverloadedError,
    InvalidRequestError,
    RequestTimeoutError,
)
from diffgemma_engine.api.outputs import GenerationResult

# -- errors -------------------------------------------------------------------------------------------------


class RemoteEngineError(DiffGemmaError):
    """A remote server failed in a way no other diffgemma error describes. ``status`` is its HTTP status
    (``None`` when there was no response)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class RemoteConnectionError(RemoteEngineError):
    """The server could not be reached, timed out, or broke off a stream before the response finished."""


class RemoteAuthenticationError(RemoteEngineError):
    """The server refused the API key (HTTP 401 or 403)."""


class RemoteGenerationError(RemoteEngineError):
    """The server ended a response abnormally: vLLM's ``finish_reason`` ``"abort"`` (the engine aborted the
    request: shutdown, a scale-down pause, an abort call) or ``"error"`` (an internal error during
    generation). ``finish_reason`` is the server's; ``partial`` is the result up to the last accepted block,
    so truncated output never reads as a complete answer."""

    def __init__(self, message: str, *, finish_reason: str, partial: GenerationResult | None) -> None:
        self.finish_reason = finish_reason
        self.partial = partial
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite the keyword-only arguments
        return _rebuild_generation_error, (str(self), self.finish_reason, self.partial)


def _rebuild_generation_error(message: str, finish_reason: str, partial: GenerationResult | None) -> RemoteGenerationError:
    return RemoteGenerationError(message, finish_reason=finish_reason, partial=partial)


def map_api_error(error: BaseException) -> DiffGemmaError:
    """The diffgemma error for an ``openai`` client error.

    400/413/422 -> :class:`InvalidRequestError` naming the server's ``param``; 404 -> ``InvalidRequestError``
    on ``model``; 401/403 -> :class:`RemoteAuthenticationError`; 408 -> :class:`RequestTimeoutError`;
    429 -> :class:`EngineOverloadedError`; 503 -> :class:`EngineDeadError`; no response ->
    :class:`RemoteConnectionError`. An ``{"error": {...}}`` event inside a stream is mapped by its integer
    ``code`` (vLLM sends the HTTP status there: ``{"type": "BadRequestError", "code": 400}``), else by its
    ``type`` (OpenAI's names and vLLM's exception names), else ``"engine_dead"`` (``diffgemma serve``).
    """
    if isinstance(error, DiffGemmaError):
        return error
    if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
        return RemoteConnectionError(f"cannot reach the DiffusionGemma server: {error.message}")
    if isinstance(error, openai.APIStatusError):
        return _by_status(error.status_code, _message(error), error.param)
    if isinstance(error, openai.APIError):  # an {"error": ...} event in an SSE stream
        return _by_status(_event_status(error), _message(error), error.param)
    return RemoteEngineError(f"{type(error).__name__}: {error}")


_EVENT_TYPES = {"invalid_request_error": 400, "authentication_error": 401, "timeout_error": 408,
                "rate_limit_error": 429, "BadRequestError": 400, "NotFoundError": 404,
                "UnprocessableEntityError": 422, "InternalServerError": 500, "ServiceUnavailableError": 503}
"""Error-event ``type`` names as HTTP statuses: OpenAI's, and the exception names vLLM sends."""


def _event_status(error: openai.APIError) -> int | None:
    code = str(error.code) if error.code is not None else ""  # the openai client turns an integer code into a str
    if code.isdigit():
        return int(code)
    if code == "engine_dead":
        return 503
    return _EVENT_TYPES.get(error.type or "")


def _by_status(status: int | None, message: str, param: str | None) -> DiffGemmaError:
    if status in (400, 413, 422):
        field = param or "request"
        prefix = f"{field}: "
        return InvalidRequestError(field, message[len(prefix):] if message.startswith(prefix) else message)
    if status == 404:
        return InvalidRequestError("model", message)
    if status in (401, 403):
        return RemoteAuthenticationError(f"the server refused the API key: {message}", status)
    if status == 408:
        return RequestTimeoutError(message)
    if status == 429:
        return EngineOverloadedError(message)
    if status == 503:
        return EngineDeadError(message)
    return RemoteEngineError(f"server error {status}: {message}" if status else message, status)


def _message(error: openai.APIError) -> str:
    body = error.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return body["message"]
    return error.message


# -- pseudo-tokens and the prompt format -------------------------------------------------------------------

PIECE = re.compile(r"\s{0,32}(?:\w{1,32}|[^\w\s])|\s{1,32}")
"""One pseudo-token: a word (or a 32-character slice of a longer one) or one punctuation mark, with the
whitespace before it; whitespace at the end of a text (or over 32 characters of it) is a piece of its own."""


def text_pieces(text: str) -> list[str]:
    """``text`` cut into pseudo-tokens; ``"".join(text_pieces(text)) == text``."""
    return PIECE.findall(text)


def piece_id(piece: str) -> int:
    """The pseudo-token id of ``piece``: a 0x01 byte and its UTF-8 bytes, read as a big-endian integer."""
    return int.from_bytes(b"\x01" + piece.encode("utf-8"), "big")


def piece_text(token_id: int) -> str:
    """The piece a pseudo-token id stands for (the inverse of :func:`piece_id`)."""
    if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 256:
        raise ValueError(f"{token_id!r} is not a pseudo-token id")
    raw = token_id.to_bytes((token_id.bit_length() + 7) // 8, "big")
    if raw[0] != 1:
        raise ValueError(f"{token_id!r} is not a pseudo-token id")
    return raw[1:].decode("utf-8")


def _pieces_with_offsets(text: str) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    ids, offsets, start = [], [], 0
    for piece in text_pieces(text):
        ids.append(piece_id(piece))
        offsets.append((start, start + len(piece)))
        start += len(piece)
    return tuple(ids), tuple(offsets)


class PieceTokenizer:
    """A tokenizer stand-in over pseudo-tokens, for when the model's tokenizer is not at hand.

    Has what the adapters call on a tokenizer: ``tokenizer(text, add_special_tokens=False)["input_ids"]``,
    ``encode``, ``decode``, ``convert_tokens_to_ids``, ``all_special_ids`` and ``unk_token_id``. It knows no
    special tokens: every text, control-token text included, is plain pieces.
    """

    all_special_ids: tuple[int, ...] = ()
    unk_token_id: int | None = None

    def __call__(self, text: str, add_special_tokens: bool = False, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text)}

    def encode(self, text: str, add_special_tokens: bool = False, **_: Any) -> list[int]:
        return [piece_id(piece) for piece in text_pieces(text)]

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False, **_: Any) -> str:
        return "".join(piece_text(token_id) for token_id in token_ids)

    def convert_tokens_to_ids(self, token: str) -> int:
        return piece_id(token)


def gemma_turns(messages: Sequence[Mapping[str, str]]) -> str:
    """Chat messages in a plain Gemma turn format, ending with the model's turn opener: the **fallback**
    used when no chat template is at hand (see :class:`~diffgemma_adapters.remote.ChatTemplate`).

    ``<|turn>ROLE\\nCONTENT<turn|>\\n`` per message (``assistant`` is written ``model``; content stripped),
    then ``<|turn>model\\n``, without the leading ``<bos>``, which servers add to a completion prompt
    themselves. This is what the shipped demo and tiny-random checkpoints' templates make of plain-text
    turns; a real checkpoint's template may differ (Gemma 4's adds an empty thought block when thinking is
    off), so give ``RemoteEngine(chat_template=...)`` the checkpoint's tokenizer files when you have them.
    """
    turns = []
    for message in messages:
        role = "model" if message["role"] == "assistant" else message["role"]
        turns.append(f"<|turn>{role}\n{message['content'].strip()}<turn|>\n")
    return "".join(turns) + "<|turn>model\n"
