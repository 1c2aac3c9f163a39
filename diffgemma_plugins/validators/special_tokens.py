"""``builtin.special_token_leak``: control tokens of the model's vocabulary showing up in the answer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffgemma_engine.api.validation import BlockView, Severity, Violation

from ..validator_registry import ValidationContext
from ._text import CodeRegions, fence_open_after, merge_spans, token_span
from .gemma_syntax import CALL_CLOSE, CALL_OPEN

# Markers a response is meant to write: a tool call in Gemma 4's syntax (the chat template renders the
# model's calls in them, and the adapters read calls from them). Its tool-response markers are not: a
# model that writes them is making up a tool's result.
RESPONSE_SYNTAX = (CALL_OPEN, CALL_CLOSE)
# Gemma-family control tokens as they decode: <pad>, <start_of_turn>, <unused12>, and the
# pipe-delimited markers (<|turn>, <turn|>, <|channel|>, ...) other than RESPONSE_SYNTAX. HTML tags
# never contain a pipe.
SPECIAL_TOKEN_TEXT = re.compile(
    "(?!" + "|".join(map(re.escape, RESPONSE_SYNTAX)) + ")"
    r"(?:<(?:pad|bos|eos|unk|mask|start_of_turn|end_of_turn|start_of_image|end_of_image"
    r"|image_soft_token|audio_soft_token|unused\d+)>"
    r"|<\|[a-z][a-z_]*\|?>|<[a-z][a-z_]*\|>)"
)


@dataclass(frozen=True)
class SpecialTokenOptions:
    token_ids: frozenset[int] = frozenset()


class SpecialTokenLeak:
    """Flags decoded control-token text outside code, and (option ``token_ids``) banned token ids. The
    tool-call markers ``<|tool_call>`` and ``<tool_call|>`` are response syntax, not leaks.

    ERROR per leaked token; FATAL when the block is nothing but leaked tokens (a collapsed canvas).
    """

    name = "builtin.special_token_leak"
    stage = 0
    cost = 0.1
    default_enabled = True
    scope = "block"

    def parse_options(self, options: Mapping[str, Any]) -> SpecialTokenOptions:
        unknown = set(options) - {"token_ids"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; accepted: ['token_ids']")
        ids = options.get("token_ids", ())
        if isinstance(ids, (str, bytes)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ValueError(f"token_ids must be a list of ints, got {ids!r}")
        return SpecialTokenOptions(frozenset(ids))

    def validate(self, block: BlockView, ctx: ValidationContext) -> list[Violation]:
        options: SpecialTokenOptions = ctx.options
        code = CodeRegions(block.text, starts_in_fence=fence_open_after(block.committed_text))
        leaks = [m for m in SPECIAL_TOKEN_TEXT.finditer(block.text) if m.start() not in code]
        spans = [token_span(block, m.start(), m.end()) for m in leaks]
        spans += [(p, p + 1) for p, token in enumerate(block.token_ids) if token in options.token_ids]
        if not spans:
            return []
        leftover = SPECIAL_TOKEN_TEXT.sub("", block.text).strip()
        only_leaks = not leftover and all(
            token in options.token_ids or any(s <= p < e for s, e in spans) for p, token in enumerate(block.token_ids)
        )
        shown = ", ".join(sorted({m.group() for m in leaks})[:5]) or "banned token ids"
        return [
            Violation(
                self.name,
                "special_token_leak",
                f"control tokens in the text: {shown}",
                spans=merge_spans(spans),
                severity=Severity.FATAL if only_leaks else Severity.ERROR,
                repairable=not only_leaks,
                metadata={"count": len(spans)},
            )
        ]
