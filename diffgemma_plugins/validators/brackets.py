"""``builtin.bracket_balance``: brackets and code fences that do not pair up, across blocks."""

from __future__ import annotations

from diffgemma_engine.api.validation import BlockView, Violation

from ..validator_registry import ValidationContext
from ._structure import BracketState, scan_brackets
from ._text import token_span
from .eos import EMOTICON_EYES

STATE_KEY = "brackets"


class BracketBalance:
    """Tracks ``()[]{}`` and triple-backtick fences over the whole response (strings skipped).

    ERROR for a closer that does not match the innermost opener, or (inside a code fence) closes nothing;
    at the final block, ERROR for brackets or a fence left open. The bracket stack is kept in the
    validator's transactional state, so each block is scanned once.
    """

    name = "builtin.bracket_balance"
    stage = 1
    cost = 0.5
    default_enabled = False
    scope = "block"

    def validate(self, block: BlockView, ctx: ValidationContext) -> list[Violation]:
        state = ctx.state.get(STATE_KEY)
        if not isinstance(state, BracketState) or state.consumed != len(block.committed_text):
            state, _ = scan_brackets(BracketState(), block.committed_text)
        start = state.consumed
        state, problems = scan_brackets(state, block.text)
        ctx.state[STATE_KEY] = state
        violations = [
            Violation(self.name, p.code, p.message, spans=(token_span(block, p.offset - start, p.offset - start + 1),))
            for p in problems
        ]
        if block.is_final:
            violations += self._unclosed(block, state, start)
        return violations

    def _unclosed(self, block: BlockView, state: BracketState, start: int) -> list[Violation]:
        text = block.committed_text + block.text
        still_open = [(opener, at) for opener, at in state.stack if text[at - 1 : at] not in EMOTICON_EYES]
        if not still_open and not state.in_fence:
            return []
        what = "".join(opener for opener, _ in still_open) + ("```" if state.in_fence else "")
        if block.eos_position is not None:
            spans, repairable = ((block.eos_position, block.canvas_length),), True
        else:
            spans, repairable = (), False
        opened_here = [token_span(block, at - start, at - start + 1) for _, at in still_open if at >= start]
        return [
            Violation(
                self.name, "unclosed_bracket", f"the response ends with {what!r} still open",
                spans=spans + tuple(opened_here), repairable=repairable,
            )
        ]  # fmt: skip
