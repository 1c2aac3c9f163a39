"""The reference sampler, as pure tensor functions over per-request rows.

Semantics follow transformers' ``DiffusionGemmaGenerationMixin`` exactly (same arithmetic, same order
of random draws per request), so one request with one seed reproduces ``model.generate()`` in the
model's dtype: the decoder returns fp32 logits (after the soft-cap) in every dtype, and the temperature,
entropy, sampling and acceptance all work on them in fp32, as the reference does. Each row draws from
its own ``torch.Generator``, so a request's random draws do not depend on its batch; the logits they
are drawn from can (see docs/architecture.md, "Batch invariance").

Memory: the work on ``[canvas, vocab]`` logits is done one row at a time and, for the entropy, in
chunks of positions, so one step holds at most about two extra logits-sized buffers for one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

ENTROPY_CHUNK = 64  # canvas positions per entropy chunk


@dataclass(frozen=True)
class RowSchedule:
    """The per-row knobs one step needs."""

    remaining_steps: int  # n in the schedule, counting down from max_denoising_steps to 1
    max_denoising_steps: int
    t_min: float
    t_max: float
    entropy_bound: float


def temperature(schedule: RowSchedule) -> torch.Tensor:
    """The linear schedule ``t_min + (t_max - t_min) * n / N``, computed in float32 like the reference."""
    remaining = torch.tensor(schedule.remaining_steps, dtype=torch.int32)
    return schedule.t_min + ((schedule.t_max - schedule.t_min) * (remaining / schedule.max_denoising_steps))


def apply_temperature_(logits: torch.Tensor, schedules: Sequence[RowSchedule]) -> torch.Tensor:
    """Divide each row's logits by its temperature, in place. ``logits``: ``[rows, canvas, vocab]``.

    The temperatures are computed on the host and moved in one copy (no device sync)."""
    temperatures = torch.stack([temperature(schedule) for schedule in schedules]).to(logits.device)
    return logits.div_(temperatures.view(-1, 1, 1))


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of ``softmax(logits)`` for ``[canvas, vocab]`` logits, chunked over positions.

    Same arithmetic as ``torch.distributions.Categorical(logits=...).entropy()``.
    """
    out = torch.empty(logits.shape[:-1], dtype=logits.dtype, device=logits.device)
    min_real = torch.finfo(logits.dtype).min
    for start in range(0, logits.shape[0], ENTROPY_CHUNK):
        chunk = logits[start : start + ENTROPY_CHUNK]
        normalized = chunk - chunk.logsumexp(dim=-1, keepdim=True)
        probs = torch.softmax(normalized, dim=-1)
        normalized.clamp_(min=min_real)
        out[start : start + ENTROPY_CHUNK] = -(normalized.mul_(probs)).sum(-1)
        del normalized, probs
    return out


def sample_candidates(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One multinomial draw per position from ``softmax(logits)``; ``[canvas, vocab]`` -> ``[canvas]``."""
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def entropy_bound_acceptance(
    token_entropy: torch.Tensor, entropy_bound: float, free: torch.Tensor | None = None
) -> torch.Tensor:
    """Accept the lowest-entropy positions while ``sum(H) - max(H) <= entropy_bound``.

    ``token_entropy``: ``[canvas]``. ``free`` (bool ``[canvas]``) restricts acceptance to those positions
    (repairs); frozen positions are never accepted. Returns a bool ``[canvas]`` mask.
    """
    if free is not None:
        token_entropy = torch.where(free, token_entropy, torch.full_like(token_entropy, float("inf")))
    sorted_entropy, order = torch.sort(token_entropy[None, :], dim=-1, descending=False)
    cumulative = torch.cumsum(sorted_entropy, dim=-1)
    selected = cumulative - sorted_entropy <= entropy_bound
    return torch.scatter(torch.zeros_like(selected), dim=-1, index=order, src=selected)[0]


def random_tokens(length: int, vocab_size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform random tokens: the initial canvas, and the noise that renoises rejected positions."""
    return torch.randint(0, vocab_size, (1, length), generator=generator, device=device)[0]


@dataclass
class StepResult:
    """What one denoising step produced for one row."""

    canvas: torch.Tensor  # next canvas (accepted tokens + renoised rest)
    argmax: torch.Tensor  # argmax canvas of the processed logits
    entropy: torch.Tensor  # per-position entropy of the processed logits


def denoise_row(
    processed_logits: torch.Tensor,
    canvas: torch.Tensor,
    schedule: RowSchedule,
    generator: torch.Generator,
    vocab_size: int,
    frozen: torch.Tensor | None = None,
) -> StepResult:
    """One sampler step for one row, given its temperature-scaled ``[canvas, vocab]`` logits.

    Order of random draws (as in the reference): candidates, then renoise. With ``frozen`` (a bool
    ``[canvas]`` mask), frozen positions keep their token in the canvas and in the argmax.
    """
    token_entropy = entropy(processed_logits)
    argmax = torch.argmax(processed_logits, dim=-1)
    candidates = sample_candidates(processed_logits, generator)
    free = None if frozen is None else ~frozen
    accepted_mask = entropy_bound_acceptance(token_entropy, schedule.entropy_bound, free)
    accepted = torch.where(accepted_mask, candidates, canvas)
    noise = random_tokens(canvas.shape[0], vocab_size, generator, canvas.device)
    renoise = ~accepted_mask if frozen is None else (~accepted_mask & ~frozen)
    next_canvas = torch.where(renoise, noise, accepted)
    if frozen is not None:
        argmax = torch.where(frozen, canvas, argmax)
    return StepResult(canvas=next_canvas, argmax=argmax, entropy=token_entropy)


def confident(token_entropy: torch.Tensor, confidence_threshold: float, free: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy (over the free positions, when repairing) below the threshold, as a 0-dim bool tensor."""
    if free is not None:
        count = free.sum()
        mean = torch.where(free, token_entropy, torch.zeros_like(token_entropy)).sum() / count.clamp(min=1)
        return (mean < confidence_threshold) | (count == 0)
    return torch.mean(token_entropy[None, :], dim=-1)[0] < confidence_threshold
