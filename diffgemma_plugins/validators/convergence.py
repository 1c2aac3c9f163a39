"""``builtin.unconverged_block``: the denoiser ran out of steps, or left positions it is unsure about."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffgemma_engine.api.validation import BlockView, Severity, Violation

from ..validator_registry import ValidationContext
from ._text import merge_spans


@dataclass(frozen=True)
class ConvergenceOptions:
    entropy_threshold: float = 2.5  # nats; uniform over 12 tokens is 2.48
    strict: bool = False  # ERROR instead of WARN


class UnconvergedBlock:
    """WARN (ERROR with ``strict``) when adaptive stopping did not fire (``unconverged``) or when a committed
    position's final entropy exceeds ``entropy_threshold`` nats (``high_entropy``). Spans: those positions."""

    name = "builtin.unconverged_block"
    stage = 0
    cost = 0.1
    default_enabled = True
    scope = "block"

    def parse_options(self, options: Mapping[str, Any]) -> ConvergenceOptions:
        unknown = set(options) - {"entropy_threshold", "strict"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; accepted: ['entropy_threshold', 'strict']")
        defaults = ConvergenceOptions()
        threshold = options.get("entropy_threshold", defaults.entropy_threshold)
        strict = options.get("strict", defaults.strict)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold <= 0:
            raise ValueError(f"entropy_threshold must be a number > 0, got {threshold!r}")
        if not isinstance(strict, bool):
            raise ValueError(f"strict must be a bool, got {strict!r}")
        return ConvergenceOptions(float(threshold), strict)

    def validate(self, block: BlockView, ctx: ValidationContext) -> list[Violation]:
        options: ConvergenceOptions = ctx.options
        length = min(len(block.token_ids), len(block.entropy))
        uncertain = [p for p in range(length) if block.entropy[p] > options.entropy_threshold]
        if block.converged and not uncertain:
            return []
        severity = Severity.ERROR if options.strict else Severity.WARN
        spans = merge_spans((p, p + 1) for p in uncertain)
        if not block.converged:
            message = f"no convergence after {block.steps_used} steps; {len(uncertain)} uncertain positions"
            return [Violation(self.name, "unconverged", message, spans=spans, severity=severity)]
        message = f"{len(uncertain)} positions above {options.entropy_threshold} nats of entropy"
        return [Violation(self.name, "high_entropy", message, spans=spans, severity=severity)]
