"""One request's state inside the engine core."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from diffgemma_engine.loop.detokenizer import Detokenizer
from diffgemma_engine.loop.model_runner import Prefix
from diffgemma_engine.api.outputs import Event
from diffgemma_engine.api.params import SamplingParams
from diffgemma_engine.loop.sampler import RowSchedule
from diffgemma_engine.api.validation import BlockChecker, BlockValidation, RepairAttempt


@dataclass
class Block:
    """The canvas being denoised for one attempt at one block."""

    index: int
    attempt: int
    params: SamplingParams  # the request's params, with any regeneration overrides
    generator: torch.Generator
    canvas: torch.Tensor
    max_steps: int
    frozen: torch.Tensor | None = None  # repairs: positions that must not change
    self_conditioning: torch.Tensor | None = None
    argmax: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    history: deque = field(default_factory=deque)
    steps: int = 0
    done: bool = False
    converged: bool = False

    @property
    def schedule(self) -> RowSchedule:
        """The temperature schedule position. A fresh canvas walks the whole schedule (``max_steps`` is
        ``max_denoising_steps``); a repair, starting from a mostly clean canvas, walks its last
        ``max_steps`` steps — the low-temperature end that matches a low-noise state."""
        return RowSchedule(
            remaining_steps=self.max_steps - self.steps,
            max_denoising_steps=self.params.max_denoising_steps,
            t_min=self.params.t_min,
            t_max=self.params.t_max,
            entropy_bound=self.params.entropy_bound,
        )


@dataclass
class Sequence:
    """Everything the core knows about one request."""

    request_id: str
    prompt_ids: tuple[int, ...]
    params: SamplingParams  # resolved: every sampler field is set
    seed: int
    generator: torch.Generator
    detokenizer: Detokenizer
    emit: Callable[[Event | BaseException], None]
    checker: BlockChecker | None = None
    eos_ids: frozenset[int] = frozenset()
    prefix: Prefix | None = None
    block: Block | None = None
    block_attempts: list[RepairAttempt] = field(default_factory=list)
    block_extra_steps: int = 0
    block_repaired: set[int] = field(default_factory=set)
    validations: list[BlockValidation] = field(default_factory=list)
    blocks_committed: int = 0
    denoising_steps: int = 0
    encoder_passes: int = 0
    repairs: int = 0
    submitted_at: float = field(default_factory=time.perf_counter)
    started_at: float | None = None
    first_block_at: float | None = None
    deadline: float | None = None
    cancel_error: BaseException | None = None

    @property
    def generated(self) -> int:
        return len(self.detokenizer.token_ids)

    @property
    def remaining_tokens(self) -> int:
        return self.params.max_new_tokens - self.generated

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens restored from the prefix cache instead of encoded."""
        return self.prefix.cached_tokens if self.prefix is not None else 0

    @property
    def budget_tokens(self) -> int:
        """The tokens this request may hold at most (prompt + ``max_new_tokens``): its admission cost."""
        return len(self.prompt_ids) + self.params.max_new_tokens

    def release(self) -> None:
        """Give back what the sequence pinned in shared caches (idempotent)."""
        if self.prefix is not None:
            self.prefix.release()
