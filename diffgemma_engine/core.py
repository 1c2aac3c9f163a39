"""EngineCore.step(): one scheduling + denoising step over every running sequence.

All model work happens here, on the engine's worker thread. A step:
  1. drops cancelled and timed-out sequences;
  2. admits waiting sequences and prefills their prompts (encoder);
  3. runs one batched decoder forward over every sequence in its denoise phase;
  4. samples each row with its own generator and parameters (accept, renoise, adaptive stop);
  5. settles every block that finished denoising: validation window, then commit or finish.
A failure while handling one sequence fails that sequence only.
"""

from __future__ import annotations

import time

import torch

from .errors import RequestTimeoutError
from .loader import LoadedModel
from .model_runner import DenoiseRow, ModelRunner
from .outputs import DraftEvent
from .sampler import apply_temperature_, confident, denoise_row
from .scheduler import Scheduler
from .sequence import Block, Sequence
from .window import BlockSettler


class EngineCore:
    """Owns the scheduler, the model runner and the sequences; not thread-safe (one worker thread)."""

    def __init__(self, loaded: LoadedModel, runner: ModelRunner, max_running: int,
                 max_running_tokens: int | None = None) -> None:  # fmt: skip
        self.loaded = loaded
        self.runner = runner
        self.scheduler = Scheduler(max_running, max_running_tokens)
        self.settler = BlockSettler(self)
        self.steps = 0

    # -- requests ----------------------------------------------------------------------------------

    def add(self, sequence: Sequence) -> None:
        self.scheduler.add(sequence)

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def fail(self, sequence: Sequence, error: BaseException) -> None:
        """End one sequence with an error; the others carry on."""
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
        # 2. admit and prefill
        for sequence in self.scheduler.admit():
            self._guarded(sequence, self._prefill)
        # 3. one batched decoder forward
        rows = self.scheduler.denoising()
        if not rows:
            return
        try:
            logits = self.runner.denoise(
                [DenoiseRow(s.prefix, s.block.canvas, s.block.self_conditioning) for s in rows]
            )
            apply_temperature_(logits, [s.block.schedule for s in rows])
        except Exception as error:  # a bad batch fails its rows, not the engine
            for sequence in rows:
                self.fail(sequence, error)
            return
        # 4. sample each row (tensor work only), then one host sync for every row's stop decision
        pending = [(sequence, self._guarded(sequence, self._sample, logits[row])) for row, sequence in enumerate(rows)]
        pending = [(sequence, flag) for sequence, flag in pending if flag is not None]
        if pending:
            decisions = torch.stack([flag for _, flag in pending]).tolist()
            for (sequence, _), converged in zip(pending, decisions):
                self._guarded(sequence, self._after_step, converged)
        del logits
        # 5. settle finished blocks
        for sequence in rows:
            if sequence.block is not None and sequence.block.done:
                self._guarded(sequence, self.settler.settle)

    def _guarded(self, sequence: Sequence, action, *args):
        """``action(sequence, *args)``; if it raises, that sequence fails (``None`` is returned) and the rest carry on."""
        try:
            return action(sequence, *args)
        except Exception as error:
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
