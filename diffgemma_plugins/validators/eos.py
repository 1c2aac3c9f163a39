"""``builtin.premature_eos``: the model ended the answer too early."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffgemma_engine.api.validation import BlockView, Violation

from ..validator_registry import ValidationContext
from ._structure import BracketState, JsonPrefixScanner, JsonState, scan_brackets

JSON_OPENERS = ("{", "[", "```json")
EMOTICON_EYES = (":", ";")  # ":(" and ";(" are faces, not open brackets


@dataclass(frozen=True)
class EosOptions:
    min_new_tokens: int = 0


class PrematureEos:
    """Flags an EOS that ends an empty answer, comes before ``min_new_tokens``, or closes the answer while a
    code fence, a JSON document or a bracket is still open.

    The span is ``[eos_position, canvas_length)``, so a repair continues the text from the EOS on.
    """

    name = "builtin.premature_eos"
    stage = 1
    cost = 0.5
    default_enabled = True
    scope = "block"

    def parse_options(self, options: Mapping[str, Any]) -> EosOptions:
        unknown = set(options) - {"min_new_tokens"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; accepted: ['min_new_tokens']")
        minimum = options.get("min_new_tokens", 0)
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0:
            raise ValueError(f"min_new_tokens must be an int >= 0, got {minimum!r}")
        return EosOptions(minimum)

    def validate(self, block: BlockView, ctx: ValidationContext) -> list[Violation]:
        eos = block.eos_position
        if eos is None:
            return []
        options: EosOptions = ctx.options
        answer = block.committed_text + block.text[: self._eos_char(block)]
        span = ((eos, block.canvas_length),)
        produced = len(block.committed_token_ids) + eos
        problem = self._problem(answer, produced, options)
        if not problem:
            return []
        code, message = problem
        return [Violation(self.name, code, message, spans=span, metadata={"eos_position": eos})]

    @staticmethod
    def _eos_char(block: BlockView) -> int:
        eos = block.eos_position or 0
        return block.token_offsets[eos][0] if eos < len(block.token_offsets) else len(block.text)

    @staticmethod
    def _problem(answer: str, produced: int, options: EosOptions) -> tuple[str, str] | None:
        if not answer.strip():
            return "empty_response", "the answer ends before any text"
        if produced < options.min_new_tokens:
            return "eos_before_min_tokens", f"EOS after {produced} tokens (min_new_tokens={options.min_new_tokens})"
        brackets, _ = scan_brackets(BracketState(), answer)
        if brackets.in_fence:
            return "eos_in_code_fence", "EOS inside an open code fence"
        if answer.lstrip().startswith(JSON_OPENERS):
            json_state, error_at = JsonPrefixScanner().scan(JsonState(), answer)
            if error_at is None and not json_state.complete:
                return "eos_in_open_json", "EOS before the JSON document is complete"
        open_brackets = [opener for opener, at in brackets.stack if answer[at - 1 : at] not in EMOTICON_EYES]
        if open_brackets:
            opened = "".join(open_brackets)
            return "eos_with_open_brackets", f"EOS with {opened!r} still open"
        return None
