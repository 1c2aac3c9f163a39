"""EngineCore.step(): one scheduling + denoising step over every running sequence.

All model work happens here, on the engine's worker thread. A step:
  1. drops cancelled and timed-out sequences;
  2. admits waiting sequences and prefills their prompts (encoder);
  3. runs one batched decoder forward over every sequence in its denoise phase;
  4. samples each row with its own generator and parameters (accept, renoise, adaptive stop);
  5. settles every block that finished denoising: the settler (:mod:`~diffgemma_engine.loop.settle`)
     returns a :data:`Settlement` (check it first, start the next canvas, finish or fail) and the core
     applies it.
A failure while handling one sequence fails that sequence only, with a typed error
(:class:`RequestFailedError`); a batch forward that raises is retried row by row, so only the rows that
fail alone fail. Block checks run on a :class:`ValidationPool` (off this thread): a sequence whose block
is being checked skips steps until its judgement arrives, and its timeouts are enforced meanwhile.
"""

from __future__ import annotations

import time

import torch

from diffgemma_engine.api.errors import DiffGemmaError, RequestFailedError, RequestTimeoutError, ValidatorTimeoutError
from diffgemma_engine.model.loader import LoadedModel
from diffgemma_engine.loop.model_runner import DenoiseRow, ModelRunner
from diffgemma_engine.api.outputs import DraftEvent, FinalEvent
from diffgemma_engine.loop.sampler import apply_temperature_, confident, denoise_row
from diffgemma_engine.loop.scheduler import Scheduler
from diffgemma_engine.loop.sequence import Block, Sequence
from diffgemma_engine.loop.validation_pool import INLINE_WAIT_S, ValidationJob, ValidationPool
from diffgemma_engine.loop.settle import BlockSettler, CheckBlock, Fail, Finish, NextBlock, Settlement


class EngineCore:
    """Owns the scheduler, the model runner and the sequences; not thread-safe (one worker thread)."""

    def __init__(self, loaded: LoadedModel, runner: ModelRunner, max_running: int,
                 max_running_tokens: int | None = None) -> None:  # fmt: skip
        self.loaded = loaded
        self.runner = runner
        self.scheduler = Scheduler(max_running, max_running_tokens)
        self.settler = BlockSettler()
        self.validations = ValidationPool()  # the service installs one configured from EngineConfig
        self.steps = 0

    # -- requests ----------------------------------------------------------------------------------

    def add(self, sequence: Sequence) -> None:
        self.scheduler.add(sequence)

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    @property
    def ready(self) -> bool:
        """Whether a step has something to do now, rather than only sequences waiting for their block checks."""
        scheduler = self.scheduler
        return bool(
            self.validations.has_finished
            or (scheduler.waiting and len(scheduler.running) < scheduler.max_running)
            or any(not self.validations.is_validating(sequence) for sequence in scheduler.running)
            or self.seconds_until_due() == 0.0
        )

    def seconds_until_due(self) -> float | None:
        """Seconds until a sequence's timeout or a block check's limit runs out (``None``: none set)."""
        dues = [sequence.deadline for sequence in self.scheduler.all() if sequence.deadline is not None]
        if (check_due := self.validations.next_due()) is not None:
            dues.append(check_due)
        return max(0.0, min(dues) - time.perf_counter()) if dues else None

    def fail(self, sequence: Sequence, error: BaseException) -> None:
        """End one sequence with an error; the others carry on."""
        self.validations.forget(sequence)
        self.scheduler.remove(sequence)
        sequence.emit(error)

    def fail_all(self, error: BaseException) -> None:
        for sequence in self.scheduler.all():
            self.fail(sequence, error)

    # -- the step ----------------------------------------------------------------------------------

    def step(self) -> None:
        self.steps += 1
        # 1. drop cancelled and timed-out sequences
        now = time.perf_counter()
        for sequence in self.scheduler.all():
            if sequence.cancel_error is not None:
                self.fail(sequence, sequence.cancel_error)
            elif sequence.deadline is not None and now > sequence.deadline:
                self.fail(sequence, RequestTimeoutError(f"request {sequence.request_id} timed out"))
        for job in self.validations.overdue(now):
            self.fail(job.sequence, ValidatorTimeoutError(job.sequence.request_id, self.validations.timeout,
                                                          job.running_validator))  # fmt: skip
        self._settle_checked_blocks()
        # 2. admit and prefill
        for sequence in self.scheduler.admit():
            self._guarded(sequence, self._prefill)
        # 3. one batched decoder forward
        rows, logits = self._forward(self.scheduler.denoising())
        if not rows:
            return
        # 4. sample each row (tensor work only), then one host sync for every row's stop decision
        pending = [(sequence, self._guarded(sequence, self._sample, logits[row])) for row, sequence in enumerate(rows)]
        pending = [(sequence, flag) for sequence, flag in pending if flag is not None]
        if pending:
            decisions = torch.stack([flag for _, flag in pending]).tolist()
            for (sequence, _), converged in zip(pending, decisions):
                self._guarded(sequence, self._after_step, converged)
        del logits
        # 5. settle finished blocks (checked blocks: once their check returns, in this step if it is quick)
        for sequence in rows:
            if sequence.block is not None and sequence.block.done:
                self._guarded(sequence, self._settle)
        checks = [self.validations.pending.get(id(sequence)) for sequence in rows]
        self.validations.wait([job for job in checks if job is not None], INLINE_WAIT_S)
        self._settle_checked_blocks()

    def _forward(self, rows: list[Sequence]) -> tuple[list[Sequence], torch.Tensor | None]:
        """The temperature-scaled logits of ``rows`` in one batched forward. If the batch raises, each row
        is retried alone: the rows that fail alone fail (typed), the others carry on."""
        if not rows:
            return [], None
        try:
            return rows, self._logits(rows)
        except Exception as batch_error:
            if len(rows) == 1:
                self.fail(rows[0], RequestFailedError(rows[0].request_id, "the denoising forward", batch_error))
                return [], None
        survivors, row_logits = [], []
        for sequence in rows:
            try:
                row_logits.append(self._logits([sequence])[0])
            except Exception as error:
                self.fail(sequence, RequestFailedError(sequence.request_id, "the denoising forward", error))
            else:
                survivors.append(sequence)
        return survivors, (torch.stack(row_logits) if row_logits else None)

    def _logits(self, rows: list[Sequence]) -> torch.Tensor:
        logits = self.runner.denoise(
            [DenoiseRow(s.prefix, s.block.canvas, s.block.self_conditioning) for s in rows]
        )
        apply_temperature_(logits, [s.block.schedule for s in rows])
        return logits

    def _settle_checked_blocks(self) -> None:
        """Apply the judgements of the block checks that returned."""
        for job in self.validations.collect():
            if job.error is None:
                self._guarded(job.sequence, self._apply_judgement, job)
            elif isinstance(job.error, DiffGemmaError):
                self.fail(job.sequence, job.error)
            else:
                self.fail(job.sequence, RequestFailedError(job.sequence.request_id, "validation", job.error))

    def _apply_judgement(self, sequence: Sequence, job: ValidationJob) -> None:
        job.apply(job.outcome)

    def _settle(self, sequence: Sequence) -> None:
        self.apply(sequence, self.settler.settle(sequence))

    def apply(self, sequence: Sequence, settlement: Settlement) -> None:
        """Carry out what the settler decided for ``sequence``'s finished block."""
        if isinstance(settlement, CheckBlock):
            self.validations.submit(sequence, settlement.check,
                                    lambda judgement: self.apply(sequence, settlement.judged(judgement)),
                                    settlement.checker)  # fmt: skip
        elif isinstance(settlement, NextBlock):
            if settlement.commit is not None:
                self.runner.commit(sequence.prefix, settlement.commit)
                sequence.encoder_passes += 1
            canvas = None
            if settlement.frozen is not None:
                noise = self.runner.new_canvas(settlement.generator)
                canvas = torch.where(settlement.frozen, settlement.kept, noise)
            self.start_block(sequence, settlement.index, settlement.attempt, settlement.params, settlement.generator,
                             canvas, settlement.frozen, settlement.max_steps)  # fmt: skip
        elif isinstance(settlement, Finish):
            self.scheduler.remove(sequence)
            sequence.emit(FinalEvent(settlement.result))
        elif isinstance(settlement, Fail):
            self.fail(sequence, settlement.error)
        else:
            raise TypeError(f"not a Settlement: {settlement!r}")

    def _guarded(self, sequence: Sequence, action, *args):
        """``action(sequence, *args)``; if it raises, that sequence fails (``None`` is returned) with the error,
        typed as :class:`RequestFailedError` unless it already is a ``DiffGemmaError``, and the rest carry on."""
        try:
            return action(sequence, *args)
        except Exception as error:
            if not isinstance(error, DiffGemmaError):
                stage = getattr(action, "__name__", "a step").strip("_").replace("_", " ")
                error = RequestFailedError(sequence.request_id, stage, error)
            self.fail(sequence, error)
            return None

    def _prefill(self, sequence: Sequence) -> None:
        sequence.started_at = time.perf_counter()
        sequence.prefix = self.runner.prefill(sequence.prompt_ids)
        sequence.encoder_passes += 1
        self.start_block(sequence, index=0)

    def start_block(
        self,
        sequence: Sequence,
        index: int,
        attempt: int = 0,
        params=None,
        generator: torch.Generator | None = None,
        canvas: torch.Tensor | None = None,
        frozen: torch.Tensor | None = None,
        max_steps: int | None = None,
    ) -> None:
        """Begin denoising a canvas: a fresh one, or a repair of ``canvas`` with ``frozen`` positions kept."""
        params = params or sequence.params
        generator = generator or sequence.generator
        if canvas is None:
            canvas = self.runner.new_canvas(generator)
        sequence.block = Block(
            index=index,
            attempt=attempt,
            params=params,
            generator=generator,
            canvas=canvas,
            frozen=frozen,
            max_steps=max_steps or params.max_denoising_steps,
        )

    def _sample(self, sequence: Sequence, processed_logits: torch.Tensor) -> torch.Tensor:
        """Advance one row by one step; returns its adaptive-stopping flag as a 0-dim bool tensor."""
        block = sequence.block
        result = denoise_row(
            processed_logits, block.canvas, block.schedule, block.generator, self.runner.vocab_size, block.frozen
        )
        block.steps += 1
        sequence.denoising_steps += 1
        block.canvas, block.argmax, block.entropy = result.canvas, result.argmax, result.entropy
        block.self_conditioning = processed_logits
        params = block.params
        if not params.adaptive_stopping:
            return torch.zeros((), dtype=torch.bool, device=processed_logits.device)
        free = None if block.frozen is None else ~block.frozen
        return _stable(block, result.argmax, params.stability_threshold) & confident(
            result.entropy, params.confidence_threshold, free
        )

    def _after_step(self, sequence: Sequence, converged: bool) -> None:
        block = sequence.block
        if converged:
            block.done = block.converged = True
        if block.steps >= block.max_steps:
            block.done = True
        if block.params.draft_events:
            ids = tuple(block.argmax.tolist())
            text = sequence.detokenizer.decode(ids)
            sequence.emit(DraftEvent(sequence.request_id, block.index, block.steps, text, ids))
        if block.done:
            block.self_conditioning = None


def _stable(block: Block, argmax: torch.Tensor, threshold: int) -> torch.Tensor:
    """The reference's stability rule: the argmax equals each of the last ``threshold`` argmax canvases."""
    if threshold == 0:
        stable = torch.ones((), dtype=torch.bool, device=argmax.device)
    elif len(block.history) < threshold:
        stable = torch.zeros((), dtype=torch.bool, device=argmax.device)
    else:
        stable = torch.stack([(argmax == past).all() for past in block.history]).all()
    block.history.append(argmax)
    if len(block.history) > threshold:
        block.history.popleft()
    return stable
