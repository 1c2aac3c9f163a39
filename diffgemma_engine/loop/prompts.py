"""Turning a request's prompt (text, chat messages or token ids) into checked prompt token ids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diffgemma_engine.api.errors import InvalidRequestError, PromptTooLongError

ROLES = ("system", "user", "assistant", "model", "tool", "developer")


def prompt_token_ids(
    tokenizer: Any,
    *,
    prompt: object = None,
    messages: object = None,
    token_ids: object = None,
    vocab_size: int,
    context_length: int,
    canvas_length: int,
) -> tuple[int, ...]:
    """Exactly one of ``prompt``, ``messages`` and ``token_ids``; returns the ids the encoder will see."""
    given = [name for name, value in (("prompt", prompt), ("messages", messages), ("prompt_token_ids", token_ids))
             if value is not None]
    if len(given) != 1:
        raise InvalidRequestError("prompt", f"give exactly one of prompt, messages, prompt_token_ids (got {given or 'none'})")
    if prompt is not None:
        ids = _encode_text(tokenizer, prompt)
    elif messages is not None:
        ids = _encode_messages(tokenizer, messages)
    else:
        ids = _check_ids(token_ids, vocab_size)
    if len(ids) + canvas_length > context_length:
        raise PromptTooLongError(len(ids), context_length - canvas_length)
    return ids


def render_messages(tokenizer: Any, messages: object, tools: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The chat template applied to checked messages, ending with the model's turn opener.

    ``tools`` (OpenAI-format function tools) are passed to the template, which declares them where the
    checkpoint was trained to see them; a template that does not use ``tools`` ignores them."""
    return tokenizer.apply_chat_template(
        list(check_messages(messages)), tools=list(tools) if tools else None, tokenize=False, add_generation_prompt=True
    )


def _encode_text(tokenizer: Any, prompt: object) -> tuple[int, ...]:
    if not isinstance(prompt, str):
        raise InvalidRequestError("prompt", f"must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise InvalidRequestError("prompt", "must not be empty")
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return tuple(ids)


def _encode_messages(tokenizer: Any, messages: object) -> tuple[int, ...]:
    text = render_messages(tokenizer, messages)
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_messages(messages: object) -> Sequence[Mapping[str, str]]:
    """Chat messages as the chat template takes them, or :class:`InvalidRequestError` naming the bad part."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise InvalidRequestError("messages", "must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(f"messages[{index}]", "must be a dict with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise InvalidRequestError(f"messages[{index}].role", f"must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise InvalidRequestError(f"messages[{index}].content", f"must be a string, got {type(content).__name__}")
    return messages


def _check_ids(token_ids: object, vocab_size: int) -> tuple[int, ...]:
    if not isinstance(token_ids, Sequence) or isinstance(token_ids, (str, bytes)) or not token_ids:
        raise InvalidRequestError("prompt_token_ids", "must be a non-empty sequence of ints")
    for token in token_ids:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab_size:
            raise InvalidRequestError("prompt_token_ids", f"every id must be an int in [0, {vocab_size}), got {token!r}")
    return tuple(token_ids)
