"""The validation window and the end of a block: validate, repair or regenerate, then commit or finish.

A denoised block is turned into its response tokens (cut at EOS, a stop token, a stop string or
``max_new_tokens``). If the request has a checker, the block is checked before anything is committed
or streamed; a failing block is repaired in place (only the decided positions are renoised, the rest is
frozen), regenerated with a derived seed, accepted flagged, or given up per ``on_exhausted``. Only a
settled block is streamed, so nothing ever has to be retracted.

The settler decides and the core acts: :meth:`BlockSettler.settle` returns a :data:`Settlement` (check the
block first, start the next canvas, finish, or fail) and :class:`~diffgemma_engine.loop.core.EngineCore`
applies it. The settler holds no reference to the core, the scheduler or the model runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import torch

from diffgemma_engine.api.window_rules import (
    GiveUp,
    Judgement,
    Verdict,
    block_record,
    derived_seed,
    exhausted_error,
    give_up,
    judge,
    next_attempt,
)
from diffgemma_engine.loop.detokenizer import Detokenized
from diffgemma_engine.api.outputs import BlockEvent, GenerationResult, GenerationStats, Usage
from diffgemma_engine.api.validation import BlockValidation, BlockView, RepairAction, ValidationReport, ValidationSummary

__all__ = ["BlockSettler", "CheckBlock", "Fail", "Finish", "NextBlock", "Settlement", "derived_seed"]
# derived_seed lives in api.window_rules; re-exported here

if TYPE_CHECKING:
    from diffgemma_engine.api.params import SamplingParams
    from diffgemma_engine.loop.sequence import Sequence


@dataclass(frozen=True)
class CheckBlock:
    """Check the block off the worker thread (``check``); apply ``judged(judgement)`` when it returns."""

    check: Callable[[], Judgement]
    judged: Callable[[Judgement], Settlement]
    checker: Any


@dataclass(frozen=True)
class NextBlock:
    """Start denoising a canvas of block ``index``.

    ``commit``: the settled block's tokens, encoded into the prefix first (a committed block). ``frozen``:
    a repair keeps ``kept`` at these positions and renoises the rest from ``generator``.
    """

    index: int
    attempt: int = 0
    params: SamplingParams | None = None
    generator: torch.Generator | None = None
    commit: torch.Tensor | None = None
    frozen: torch.Tensor | None = None
    kept: torch.Tensor | None = None
    max_steps: int | None = None


@dataclass(frozen=True)
class Finish:
    """The request is done: it leaves the scheduler and its result is streamed."""

    result: GenerationResult


@dataclass(frozen=True)
class Fail:
    """The request ends with ``error`` (the other requests carry on)."""

    error: BaseException


Settlement = Union[CheckBlock, NextBlock, Finish, Fail]
"""What to do with a block that finished denoising; the core applies it."""


class _Candidate:
    """A denoised block cut to what would enter the response."""

    def __init__(self, sequence: Sequence, canvas: list[int]) -> None:
        params = sequence.params
        self.canvas = canvas
        self.eos_position = None
        self.stop_token: int | None = None
        tokens = canvas
        if not params.ignore_eos or params.stop_token_ids:
            ends = set(params.stop_token_ids) if params.ignore_eos else sequence.eos_ids
            for position, token in enumerate(canvas[: sequence.remaining_tokens]):
                if token in ends:
                    self.eos_position, self.stop_token = position, token
                    tokens = canvas[:position]
                    break
        self.length_cut = len(tokens) >= sequence.remaining_tokens
        self.tokens = tokens[: sequence.remaining_tokens]
        self.final_before_stop = self.eos_position is not None or self.length_cut
        self.detokenized: Detokenized = sequence.detokenizer.preview(self.tokens, final=self.final_before_stop)
        self.is_final = self.final_before_stop or self.detokenized.stop is not None


class BlockSettler:
    """Decides what happens to finished blocks; keeps no state (a sequence carries its own)."""

    def settle(self, sequence: Sequence) -> Settlement:
        block = sequence.block
        candidate = _Candidate(sequence, block.argmax.tolist())
        if sequence.checker is None:
            return self._commit(sequence, candidate, validation=None)
        view = self._view(sequence, candidate)
        attempts, checker = tuple(sequence.block_attempts), sequence.checker
        return CheckBlock(  # checked off the worker thread; judged below when the check returns
            check=lambda: judge(checker, view, attempts),
            judged=lambda judgement: self._settle_judged(sequence, candidate, view, judgement),
            checker=checker,
        )

    def _settle_judged(self, sequence: Sequence, candidate: _Candidate, view: BlockView,
                       judgement: Judgement) -> Settlement:  # fmt: skip
        report, decision = judgement.report, judgement.decision
        if judgement.verdict is Verdict.COMMIT:
            return self._commit_checked(sequence, candidate, view, report)
        if judgement.verdict is Verdict.REPAIR:
            return self._repair(sequence, report, decision.positions, decision.steps)
        if judgement.verdict is Verdict.REGENERATE:
            return self._regenerate(sequence, report, decision.sampler_overrides)
        sequence.checker.on_exhausted(view, report)
        return self._give_up(sequence, candidate, view, report)

    # -- repair and regeneration -------------------------------------------------------------------

    def _repair(self, sequence: Sequence, report: ValidationReport, positions, steps: int | None) -> NextBlock:
        block = sequence.block
        positions = sorted({p for p in positions if 0 <= p < block.canvas.shape[0]})
        if not positions:
            raise ValueError("a REPAIR decision must name at least one canvas position")
        self._note_attempt(sequence, RepairAction.REPAIR, tuple(positions), report)
        sequence.block_repaired.update(positions)
        generator = _derived_generator(sequence, block.index, block.attempt + 1, block.canvas.device)
        frozen = torch.ones_like(block.argmax, dtype=torch.bool)
        frozen[positions] = False
        return NextBlock(
            block.index, block.attempt + 1, block.params, generator, frozen=frozen, kept=block.argmax,
            max_steps=min(steps or max(1, block.params.max_denoising_steps // 3), block.params.max_denoising_steps),
        )

    def _regenerate(self, sequence: Sequence, report: ValidationReport, overrides) -> NextBlock:
        block = sequence.block
        self._note_attempt(sequence, RepairAction.REGENERATE, (), report)
        params = block.params.with_overrides(dict(overrides))
        generator = _derived_generator(sequence, block.index, block.attempt + 1, block.canvas.device)
        return NextBlock(block.index, block.attempt + 1, params, generator)

    def _note_attempt(self, sequence: Sequence, action: RepairAction, positions, report: ValidationReport) -> None:
        steps = sequence.block.steps
        if sequence.block.attempt > 0:
            sequence.block_extra_steps += steps
        sequence.repairs += 1
        sequence.block_attempts.append(next_attempt(sequence.block_attempts, action, positions, steps, report))

    def _give_up(self, sequence: Sequence, candidate: _Candidate, view: BlockView,
                 report: ValidationReport) -> Settlement:  # fmt: skip
        mode = give_up(sequence.params.on_exhausted)
        if mode is GiveUp.COMMIT_FLAGGED:
            return self._commit_checked(sequence, candidate, view, report, finish_reason="validation_failed")
        sequence.validations.append(self._record(sequence, view, report, passed=False))
        if mode is GiveUp.TRUNCATE:
            return Finish(self._result(sequence, "validation_failed", None))
        partial = self._result(sequence, "validation_failed", None)
        return Fail(exhausted_error(sequence.request_id, view, report, partial=partial,
                                    attempts=sequence.block_attempts))

    # -- commit and finish -------------------------------------------------------------------------

    def _commit_checked(self, sequence: Sequence, candidate: _Candidate, view: BlockView, report: ValidationReport,
                        finish_reason: str | None = None) -> Settlement:
        """Commit a checked block: the checker keeps its state, the block's validation is recorded."""
        sequence.checker.on_commit(view, report)
        return self._commit(sequence, candidate, self._record(sequence, view, report, passed=report.passed), finish_reason)

    def _commit(self, sequence: Sequence, candidate: _Candidate, validation: BlockValidation | None,
                finish_reason: str | None = None) -> Settlement:
        block = sequence.block
        sequence.detokenizer.apply(candidate.detokenized)
        if validation is not None:
            sequence.validations.append(validation)
        sequence.blocks_committed += 1
        if sequence.first_block_at is None:
            sequence.first_block_at = time.perf_counter()
        sequence.emit(BlockEvent(sequence.request_id, block.index, candidate.detokenized.delta,
                                 candidate.detokenized.token_ids, block.steps, validation))
        if finish_reason is not None or candidate.is_final:
            if finish_reason is None:
                finish_reason = "length" if candidate.length_cut and candidate.eos_position is None else "stop"
                if candidate.detokenized.stop is not None:
                    finish_reason = "stop"
            stop_reason = candidate.detokenized.stop if candidate.detokenized.stop is not None else candidate.stop_token
            return Finish(self._result(sequence, finish_reason, stop_reason))
        sequence.block_attempts, sequence.block_extra_steps, sequence.block_repaired = [], 0, set()
        return NextBlock(block.index + 1, commit=block.argmax)

    def _result(self, sequence: Sequence, finish_reason: str, stop_reason) -> GenerationResult:
        now = time.perf_counter()
        tokens = tuple(sequence.detokenizer.token_ids)
        stats = GenerationStats(
            blocks=sequence.blocks_committed,
            denoising_steps=sequence.denoising_steps,
            encoder_passes=sequence.encoder_passes,
            repairs=sequence.repairs,
            tokens_per_forward=len(tokens) / sequence.denoising_steps if sequence.denoising_steps else 0.0,
            queue_time=(sequence.started_at or now) - sequence.submitted_at,
            first_block_time=(sequence.first_block_at or now) - sequence.submitted_at,
            total_time=now - sequence.submitted_at,
        )
        return GenerationResult(
            request_id=sequence.request_id,
            text=sequence.detokenizer.text,
            token_ids=tokens,
            finish_reason=finish_reason,
            usage=Usage(prompt_tokens=len(sequence.prompt_ids), completion_tokens=len(tokens),
                        cached_tokens=sequence.cached_tokens),
            stats=stats,
            seed=sequence.seed,
            validation=ValidationSummary(tuple(sequence.validations)),
            stop_reason=stop_reason,
        )

    # -- views ---------------------------------------------------------------------------------------

    def _view(self, sequence: Sequence, candidate: _Candidate) -> BlockView:
        block = sequence.block
        text, offsets = sequence.detokenizer.offsets(candidate.detokenized.token_ids)
        return BlockView(
            request_id=sequence.request_id,
            index=block.index,
            attempt=len(sequence.block_attempts),
            token_ids=candidate.detokenized.token_ids,
            text=text,
            token_offsets=offsets,
            eos_position=candidate.eos_position,
            is_final=candidate.is_final,
            converged=block.converged,
            steps_used=block.steps,
            entropy=tuple(block.entropy.tolist()),
            canvas_length=block.canvas.shape[0],
            committed_text=sequence.detokenizer.text,
            committed_token_ids=tuple(sequence.detokenizer.token_ids),
            prompt_token_ids=sequence.prompt_ids,
        )

    def _record(self, sequence: Sequence, view: BlockView, report: ValidationReport, passed: bool) -> BlockValidation:
        extra = sequence.block_extra_steps + (sequence.block.steps if sequence.block.attempt > 0 else 0)
        return block_record(view, report, passed=passed, attempts=sequence.block_attempts, extra_steps=extra,
                            repaired_positions=tuple(sorted(sequence.block_repaired)))


def _derived_generator(sequence: Sequence, block_index: int, attempt: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(derived_seed(sequence.seed, block_index, attempt))
    return generator
