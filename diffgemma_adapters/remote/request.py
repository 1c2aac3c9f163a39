"""One remote request on the client: its blocks, their validation, continuations and its result.

The validation window's rules (judge a block, record tries, give up per ``on_exhausted``, the exhausted
error, derived seeds) are the engine's own, from :mod:`diffgemma_engine.api.window_rules`; this module
only applies them to text arriving over HTTP.

**Blocks from any chunking.** A block for validation is assembled from the stream, not taken to be one
chunk: when the server reports a running completion-token count on every chunk (vLLM with
``stream_options.continuous_usage_stats``), a block closes when a canvas' worth of tokens
(``canvas_length``) has arrived since the last one, whatever number of chunks carried it. So a server that
splits a canvas over several chunks, or vLLM holding back the last ``len(longest stop) - 1`` characters of
each delta when ``stop`` is set (they arrive with the next chunk), still yields one checked block per
canvas. A server that reports no count is taken at its word that each chunk with text is one committed
block (``diffgemma serve`` streams exactly that). The response's end closes whatever is pending.
"""

from __future__ import annotations

import concurrent.futures
import enum
import secrets
import time
from typing import TYPE_CHECKING, Any

from diffgemma_engine.api.window_rules import (
    VALIDATION_FAILED,
    GiveUp,
    Verdict,
    block_record,
    derived_seed,
    exhausted_error,
    give_up,
    judge,
    next_attempt,
)
from diffgemma_engine.api.outputs import BlockEvent, FinalEvent, GenerationResult, GenerationStats, Usage
from diffgemma_engine.api.params import SamplerDefaults, SamplingParams
from diffgemma_engine.api.stream import RequestStream
from diffgemma_engine.api.validation import (
    BlockChecker,
    BlockValidation,
    BlockView,
    RepairAction,
    RepairAttempt,
    ValidationReport,
    ValidationSummary,
)
from diffgemma_plugins.options import RepairBudget

from .server import ServerRules, body_fields
from .wire import RemoteConnectionError, RemoteGenerationError, _pieces_with_offsets, text_pieces

if TYPE_CHECKING:
    from .engine import RemoteEngine

DEFAULT_DENOISING_STEPS = SamplerDefaults.max_denoising_steps
"""The checkpoint's per-canvas step cap; what a remote block is charged when the request sets none."""

FINISH_REASONS = {"stop": "stop", "length": "length", "validation_failed": "validation_failed",
                  "content_filter": "validation_failed", "tool_calls": "stop"}
"""Server finish reasons as ours (``diffgemma serve`` reports a flagged response as ``content_filter``)."""

ABNORMAL_FINISHES = {"abort": "the server aborted it", "error": "the server failed while generating it"}
"""vLLM finish reasons that end a response early: they raise :class:`RemoteGenerationError`."""


class Next(enum.Enum):
    """What the driver does after a chunk."""

    CONTINUE = "continue"  # keep reading this stream
    RESTART = "restart"  # close it and continue the response from the accepted text
    DONE = "done"  # the response is settled (finished or failed); close the stream


class RemoteRequest:
    """The client-side state of one remote request: accepted text, block validation, continuations."""

    def __init__(
        self,
        engine: RemoteEngine,
        request_id: str,
        params: SamplingParams,
        prompt: str | None,
        messages: list[dict[str, str]] | None,
        checker: BlockChecker | None,
        model: str,
        rules: ServerRules,
    ) -> None:
        self.engine = engine
        self.request_id = request_id
        self.params = params
        self.prompt = prompt
        self.messages = [dict(message) for message in messages] if messages is not None else None
        self.checker = checker
        self.model = model
        self.rules = rules
        self.seed = params.seed if params.seed is not None else secrets.randbits(63)
        self.budget = RepairBudget.from_options(params.validator_options) if checker is not None else RepairBudget()
        self.steps_per_canvas = params.max_denoising_steps or DEFAULT_DENOISING_STEPS
        self.stream = RequestStream(request_id, self._cancel)
        self._future: concurrent.futures.Future | None = None
        self.submitted_at = time.perf_counter()
        self.first_block_at: float | None = None
        self.text = ""
        self.last_block_text = ""
        self.token_ids: tuple[int, ...] = ()
        self.blocks = 0  # committed blocks with text
        self.full_blocks = 0  # of which non-final
        self.accepted_tokens = 0  # completion tokens of the committed non-final blocks
        self.attempts: list[RepairAttempt] = []  # tries of the current block
        self.validations: list[BlockValidation] = []
        self.retries = 0
        self.segments = 0
        self.chat_segment = messages is not None
        self.overrides: dict[str, float] = {}
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.final_checked = False
        self.segment_start_tokens = 0  # accepted_tokens when the current segment started
        self.pending = ""  # text of the block being assembled
        self.block_start_count = 0  # the server's running token count when that block started
        self.usage: tuple[int, int] | None = None
        self._prompt_ids: tuple[int, ...] | None = None

    # -- plumbing ----------------------------------------------------------------------------------

    def attach(self, future: concurrent.futures.Future) -> None:
        self._future = future

    def _cancel(self, request_id: str, error: BaseException) -> None:
        self.stream.push(error)  # consumers stop waiting now; the HTTP stream closes on the loop
        if self._future is not None:
            self._future.cancel()

    def fail(self, error: BaseException) -> None:
        self.stream.push(error)

    # -- requests ----------------------------------------------------------------------------------

    def next_request(self) -> tuple[Any, dict[str, Any]] | None:
        """The endpoint and arguments of the next streamed request, or ``None`` if no tokens are left."""
        client = self.engine._transport.client
        max_tokens = self.params.max_new_tokens
        if max_tokens is not None:
            max_tokens -= self.accepted_tokens
            if max_tokens <= 0:
                return None
        first = self.segments == 0
        self.segments += 1
        self.segment_start_tokens = self.accepted_tokens
        self.usage = None
        self.final_checked = False
        self.pending, self.block_start_count = "", 0
        seed = None  # a plain OpenAI server gets one only when the caller chose it: it may be a vLLM behind a proxy
        if self.rules.takes_seed and (self.params.seed is not None or self.rules.seeds_every_request):
            seed = self.seed if first else derived_seed(self.seed, self.blocks, len(self.attempts))
        top, extra = body_fields(self.params, self.rules, seed=seed, overrides=self.overrides)
        kwargs: dict[str, Any] = {"model": self.model, **top}
        if extra:
            kwargs["extra_body"] = extra
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if self.params.stop:
            kwargs["stop"] = list(self.params.stop)
        if first and self.messages is not None:
            self.chat_segment = True
            return client.chat.completions, {**kwargs, "messages": self.messages}
        self.chat_segment = False
        return client.completions, {**kwargs, "prompt": self.prompt_text() + self.text}

    def prompt_text(self) -> str:
        return self.prompt if self.prompt is not None else self.engine.render_chat(self.messages)

    # -- chunks ------------------------------------------------------------------------------------

    def on_chunk(self, text: str, finish: str | None, stop_reason: Any, running_count: int | None) -> Next:
        """One streamed chunk: its text, finish reason, stop reason and the server's running token count."""
        self.pending += text
        if finish is None:
            if running_count is not None and running_count - self.block_start_count < self.engine.canvas_length:
                return Next.CONTINUE  # the canvas is not complete yet
            if not self.pending:
                return Next.CONTINUE  # nothing visible yet (a role chunk, or text held back)
            block, self.pending = self.pending, ""
            tokens = running_count - self.block_start_count if running_count is not None else None
            if running_count is not None:
                self.block_start_count = running_count
            return self._settle(block, final=False, tokens=tokens)
        self.finish_reason = finish
        self.stop_reason = stop_reason if isinstance(stop_reason, (str, int)) else None
        if finish in ABNORMAL_FINISHES:
            self.fail(RemoteGenerationError(
                f"request {self.request_id} ended with finish_reason {finish!r}: {ABNORMAL_FINISHES[finish]}",
                finish_reason=finish, partial=self.result("stop")))
            return Next.DONE
        block, self.pending = self.pending, ""
        if block or (self.checker is not None and not self.final_checked):
            return self._settle(block, final=True, tokens=None)  # an empty block: the end, checked on its own
        return Next.CONTINUE

    def note_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.usage = (prompt_tokens, completion_tokens)

    def _settle(self, text: str, *, final: bool, tokens: int | None) -> Next:
        if self.checker is None:
            self._commit(text, None, final=final, tokens=tokens)
            return Next.CONTINUE
        view = self._view(text, final)
        self.final_checked = final
        judgement = judge(self.checker, view, self.attempts)
        report = judgement.report
        if judgement.verdict is Verdict.COMMIT:
            self.checker.on_commit(view, report)
            self._commit(text, self._record(view, report, passed=report.passed), final=final, tokens=tokens)
            return Next.CONTINUE
        if judgement.verdict in (Verdict.REPAIR, Verdict.REGENERATE) and self._may_retry():
            self.attempts.append(next_attempt(self.attempts, RepairAction.REGENERATE, (), view.steps_used, report))
            self.retries += 1
            self.overrides.update(judgement.decision.sampler_overrides)
            return Next.RESTART
        self.checker.on_exhausted(view, report)
        return self._give_up(view, report, text, tokens)

    def _may_retry(self) -> bool:
        """Continuations are the remote stand-in for both repairs and regenerations: ``max_regenerations`` each."""
        return len(self.attempts) < self.budget.max_regenerations and self.segments <= self.engine.max_continuations

    def _give_up(self, view: BlockView, report: ValidationReport, text: str, tokens: int | None) -> Next:
        mode = give_up(self.params.on_exhausted)
        record = self._record(view, report, passed=False)
        if mode is GiveUp.COMMIT_FLAGGED:
            self.checker.on_commit(view, report)
            self._commit(text, record, final=True, tokens=tokens)
            self.finish(VALIDATION_FAILED)
            return Next.DONE
        self.validations.append(record)
        if mode is GiveUp.TRUNCATE:
            self.finish(VALIDATION_FAILED)
        else:
            self.fail(exhausted_error(self.request_id, view, report, partial=self.result(VALIDATION_FAILED),
                                      attempts=self.attempts))
        return Next.DONE

    def _commit(self, text: str, record: BlockValidation | None, *, final: bool, tokens: int | None) -> None:
        if record is not None and (text or record.attempts or not record.passed):
            self.validations.append(record)
        self.attempts = []
        if not text:
            return
        ids, _ = _pieces_with_offsets(text)
        index = self.blocks
        self.text += text
        self.last_block_text = text
        self.token_ids += ids
        self.blocks += 1
        if not final:
            self.full_blocks += 1
            self.accepted_tokens += tokens if tokens is not None else self.engine.canvas_length
        if self.first_block_at is None:
            self.first_block_at = time.perf_counter()
        self.stream.push(BlockEvent(self.request_id, index, text, ids, steps=0, validation=record))

    def _view(self, text: str, final: bool) -> BlockView:
        ids, offsets = _pieces_with_offsets(text)
        ended_by_eos = final and self.finish_reason == "stop" and not isinstance(self.stop_reason, str)
        if self._prompt_ids is None:
            self._prompt_ids = _pieces_with_offsets(self.prompt_text())[0]
        return BlockView(
            request_id=self.request_id,
            index=self.blocks,
            attempt=len(self.attempts),
            token_ids=ids,
            text=text,
            token_offsets=offsets,
            eos_position=len(ids) if ended_by_eos else None,
            is_final=final,
            converged=True,
            steps_used=self.steps_per_canvas,
            entropy=(),
            canvas_length=len(ids),
            committed_text=self.text,
            committed_token_ids=self.token_ids,
            prompt_token_ids=self._prompt_ids,
        )

    def _record(self, view: BlockView, report: ValidationReport, passed: bool) -> BlockValidation:
        return block_record(view, report, passed=passed, attempts=self.attempts,
                            extra_steps=self.steps_per_canvas * len(self.attempts))

    # -- the end ------------------------------------------------------------------------------------

    def complete(self) -> None:
        """The stream ended: push the result, or a connection error if it ended without a finish reason."""
        if self.stream.done:
            return
        if self.finish_reason is None:
            self.fail(RemoteConnectionError(f"the stream of request {self.request_id} ended before the response finished"))
            return
        self.finish(self.finish_reason)

    def finish(self, finish_reason: str) -> None:
        self.stream.push(FinalEvent(self.result(finish_reason)))

    def result(self, finish_reason: str) -> GenerationResult:
        now = time.perf_counter()
        stats = GenerationStats(
            blocks=self.blocks,
            repairs=self.retries,
            first_block_time=(self.first_block_at or now) - self.submitted_at,
            total_time=now - self.submitted_at,
        )
        return GenerationResult(
            request_id=self.request_id,
            text=self.text,
            token_ids=self.token_ids,
            finish_reason=FINISH_REASONS.get(finish_reason, "stop"),
            usage=self._usage(),
            stats=stats,
            seed=self.seed,
            validation=ValidationSummary(tuple(self.validations)),
            stop_reason=self.stop_reason,
        )

    def _usage(self) -> Usage:
        """The server's counts when it reported them, less the continued text it saw as prompt; else estimates."""
        continued = self.segment_start_tokens
        if self.usage is not None:
            prompt, completion = self.usage
            return Usage(prompt_tokens=max(prompt - continued, 0), completion_tokens=continued + completion)
        final_text = self.last_block_text if self.blocks > self.full_blocks else ""
        completion = self.accepted_tokens + len(text_pieces(final_text))
        return Usage(prompt_tokens=len(text_pieces(self.prompt_text())), completion_tokens=completion)
