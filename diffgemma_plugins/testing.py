"""Helpers for testing validators without a model: hand-built block views and a one-call validator runner.

Text is split by a toy tokenizer (words with their leading space, single punctuation marks, whitespace
runs); token ids are a stable hash of each piece, so the same text always gives the same ids.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from diffgemma_engine.api.validation import BlockView, RequestInfo, Violation

from .validator_registry import ValidationContext

TOY_TOKEN = re.compile(r" ?\w+| ?[^\w\s]|\s+")
DEFAULT_CANVAS = 256


def toy_tokenize(text: str) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Token ids and per-token character offsets of ``text``."""
    pieces = [match for match in TOY_TOKEN.finditer(text)]
    ids = tuple(zlib.crc32(m.group().encode()) % 1_000_000 + 1_000 for m in pieces)
    return ids, tuple(m.span() for m in pieces)


def make_block(
    text: str,
    *,
    committed: str = "",
    index: int | None = None,
    attempt: int = 0,
    eos: bool = False,
    is_final: bool | None = None,
    converged: bool = True,
    steps_used: int = 12,
    entropy: Sequence[float] | None = None,
    canvas_length: int | None = None,
    token_ids: Sequence[int] | None = None,
    request_id: str = "test",
) -> BlockView:
    """A :class:`BlockView` of ``text`` after ``committed``.

    ``eos=True`` puts an EOS right after the text (and makes the block final). ``token_ids`` replaces the
    toy ids (the offsets stay those of the toy tokenizer, so give one id per toy token).
    """
    ids, offsets = toy_tokenize(text)
    if token_ids is not None:
        if len(token_ids) != len(ids):
            raise ValueError(f"{len(token_ids)} token_ids for {len(ids)} toy tokens")
        ids = tuple(token_ids)
    committed_ids, _ = toy_tokenize(committed)
    canvas = canvas_length if canvas_length is not None else max(DEFAULT_CANVAS, len(ids) + 1)
    eos_position = len(ids) if eos else None
    return BlockView(
        request_id=request_id,
        index=index if index is not None else (1 if committed else 0),
        attempt=attempt,
        token_ids=ids,
        text=text,
        token_offsets=offsets,
        eos_position=eos_position,
        is_final=eos if is_final is None else is_final,
        converged=converged,
        steps_used=steps_used,
        entropy=tuple(entropy) if entropy is not None else (0.0,) * canvas,
        canvas_length=canvas,
        committed_text=committed,
        committed_token_ids=committed_ids,
    )


def make_request(
    validators: Sequence[str] = ("default",),
    validator_options: Mapping[str, Any] | None = None,
    *,
    canvas_length: int = DEFAULT_CANVAS,
    request_id: str = "test",
) -> RequestInfo:
    return RequestInfo(
        request_id=request_id,
        validators=tuple(validators),
        validator_options=dict(validator_options or {}),
        canvas_length=canvas_length,
        eos_token_ids=(1,),
    )


def run_validator(
    validator: Any,
    block: BlockView,
    options: Mapping[str, Any] | None = None,
    state: dict[str, Any] | None = None,
) -> list[Violation]:
    """Run one validator on one block the way the checker does (options parsed first)."""
    parser = getattr(validator, "parse_options", None)
    parsed = parser(dict(options or {})) if parser is not None else dict(options or {})
    ctx = ValidationContext(make_request((validator.name,)), parsed, state if state is not None else {})
    return list(validator.validate(block, ctx) or ())
