"""Training batches of the demo model: examples rendered and tokenized as the engine sees them, one canvas of
each response picked and padded, made by number (batch ``i`` from the seed and ``i`` alone) in this process
or ahead in forked workers."""

from __future__ import annotations

import collections
import math
import multiprocessing
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch

import demo_data

if TYPE_CHECKING:
    from train_demo_model import TrainSettings

PAD_ID, END_OF_TURN_ID = 0, 106  # Gemma's ids (the demo tokenizer keeps them)


@dataclass(frozen=True)
class Encoded:
    """An example as token ids: the rendered chat prompt, and the response ending with ``<turn|>``."""

    prompt: tuple[int, ...]
    response: tuple[int, ...]


def encode_example(tokenizer: Any, example: demo_data.Example) -> Encoded:
    """The prompt as the adapters and the server render it (system turn, tool declarations, tool turns)."""
    text = tokenizer.apply_chat_template(demo_data.chat_messages(example), tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer = tokenizer(example.answer, add_special_tokens=False)["input_ids"]
    return Encoded(tuple(prompt), tuple(answer) + (END_OF_TURN_ID,))


@dataclass
class Batch:
    """A right-padded training batch.

    ``prefix``/``prefix_mask``: ``[B, P]`` (prompt plus the response before the chosen canvas);
    ``prefix_lengths``: ``[B]``; ``canvas``: ``[B, C]`` clean targets (``<pad>`` after the end of turn);
    ``content``: ``[B, C]`` true where the target is a response token (up to and including ``<turn|>``).
    """

    prefix: torch.Tensor
    prefix_mask: torch.Tensor
    prefix_lengths: torch.Tensor
    canvas: torch.Tensor
    content: torch.Tensor

    @property
    def tokens(self) -> int:
        """Tokens the network processes: real prefix tokens plus every canvas position."""
        return int(self.prefix_lengths.sum()) + self.canvas.numel()

    def map(self, function: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """The batch with ``function`` applied to each of its tensors."""
        return Batch(*(function(getattr(self, field.name)) for field in fields(self)))

    def to(self, device: torch.device) -> Batch:
        return self if device.type == "cpu" else self.map(lambda tensor: tensor.to(device))


def make_batch(examples: Sequence[Encoded], canvas_length: int, rng: random.Random, shift: float = 0.0) -> Batch:
    """Pick one canvas of each example's response (uniformly among its canvases) and pad the batch.

    With probability ``shift`` the canvas starts at a random response token instead of a block boundary:
    the engine's canvases start wherever a prefill (a forced tool call's opening) ends."""
    prefixes, canvases, contents = [], [], []
    for example in examples:
        if shift and rng.random() < shift:
            start = rng.randrange(len(example.response))
        else:
            blocks = max(1, math.ceil(len(example.response) / canvas_length))
            start = rng.randrange(blocks) * canvas_length
        target = list(example.response[start : start + canvas_length])
        contents.append([True] * len(target) + [False] * (canvas_length - len(target)))
        canvases.append(target + [PAD_ID] * (canvas_length - len(target)))
        prefixes.append(list(example.prompt) + list(example.response[:start]))
    width = max(len(p) for p in prefixes)
    prefix = torch.full((len(examples), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, ids in enumerate(prefixes):
        prefix[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = True
    return Batch(prefix, mask, mask.sum(dim=1), torch.tensor(canvases), torch.tensor(contents))


class BatchMaker:
    """Training batch ``index`` (its examples, their token ids, the canvas picked from each) from the seed
    and ``index`` alone, so it is the same whichever process makes it and however many do."""

    def __init__(self, tokenizer: Any, settings: TrainSettings, canvas_length: int) -> None:
        self.tokenizer = tokenizer
        self.stream = demo_data.TrainingStream(settings.seed, demo_data.family_weights(settings.family_weights))
        self.scale = settings.batch_size / 48
        self.seed = settings.seed
        self.canvas_length = canvas_length
        self.shift = settings.canvas_shift

    def encoded(self, index: int) -> list[Encoded]:
        return [encode_example(self.tokenizer, e) for e in self.stream.batch(index, self.scale)]

    def assemble(self, index: int, examples: Sequence[Encoded]) -> Batch:
        return make_batch(examples, self.canvas_length, random.Random(f"{self.seed}:canvas:{index}"), self.shift)

    def batch(self, index: int) -> Batch:
        return self.assemble(index, self.encoded(index))


_worker_maker: BatchMaker | None = None


def _set_worker_maker(maker: BatchMaker) -> None:
    global _worker_maker
    _worker_maker = maker


def _encode_in_worker(index: int) -> list[Encoded]:
    assert _worker_maker is not None
    return _worker_maker.encoded(index)


class BatchSource:
    """Batches in step order, generated ahead by ``workers`` forked processes (0: in this process).

    Generating and tokenizing a batch takes ~40 ms of one core per 48 examples: next to a GPU step that
    is the bottleneck, so the workers keep ``4 * workers`` batches in flight. The pool is forked when the
    source is made, which must be before CUDA starts in this process."""

    def __init__(self, maker: BatchMaker, workers: int = 0) -> None:
        self.maker = maker
        self._pool = None
        self._pending: collections.deque[tuple[int, Any]] = collections.deque()
        self._next = 0
        self._depth = 4 * workers
        if workers:
            context = multiprocessing.get_context("fork")
            self._pool = context.Pool(workers, initializer=_set_worker_maker, initargs=(maker,))

    def batch(self, index: int) -> Batch:
        if self._pool is None:
            return self.maker.batch(index)
        if not self._pending or self._pending[0][0] != index:  # first call, or a jump (resume)
            self._pending.clear()
            self._next = index
        while len(self._pending) < self._depth:
            self._pending.append((self._next, self._pool.apply_async(_encode_in_worker, (self._next,))))
            self._next += 1
        _, result = self._pending.popleft()
        return self.maker.assemble(index, result.get())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


def fixed_batches(tokenizer: Any, examples: Sequence[demo_data.Example], canvas_length: int, device: torch.device,
                  batch_size: int = 32) -> list[Batch]:  # fmt: skip
    """Evaluation batches that are the same every time (block choice seeded per batch)."""
    encoded = [encode_example(tokenizer, e) for e in examples]
    return [
        make_batch(encoded[i : i + batch_size], canvas_length, random.Random(i)).to(device)
        for i in range(0, len(encoded), batch_size)
    ]
