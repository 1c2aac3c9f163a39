"""Train the small DiffusionGemma demo checkpoint on a CPU or a GPU, within a wall-clock budget.

The model is ``transformers.DiffusionGemmaForBlockDiffusion`` — the real model's class, layout
(sliding + full attention, MoE, self-conditioning) and checkpoint format — at ~4.8 M parameters.
The objective is uniform-state block diffusion, matching how the real model samples (uniform noise, no
mask token, self-conditioning on temperature-scaled logits):

1. an example is a chat prompt plus its response (the answer, then ``<turn|>``); the response is cut
   into canvases of ``canvas_length`` tokens and one canvas is picked (its *prefix* is the prompt plus
   the response before it; after the end of turn the canvas is ``<pad>``, as the engine commits it);
2. the canvas is corrupted: each position is replaced by a token drawn uniformly from the whole
   vocabulary with probability ``t`` (``t = u ** rate_power``, ``u ~ U(0, 1)``; no mask token);
3. the prefix goes through the causal encoder (writing the KV cache) and the corrupted canvas through
   the bidirectional decoder; the loss is the cross-entropy of the clean canvas at every canvas position;
4. self-conditioning is trained the way the sampler uses it: for a random half of the examples
   (``self_conditioning_mask``) a first, no-grad decoder pass on the same canvas gives logits that are
   divided by a temperature drawn from the sampler's range [0.4, 0.8] and fed to the second pass as
   ``self_conditioning_logits``; the other examples get a zero signal, like the first denoising step.

The tokenizer is a byte-level BPE trained with ``tokenizers`` on the training split, with Gemma's
special tokens at Gemma's ids (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<|tool_response>`` 50,
``<|turn>`` 105, ``<turn|>`` 106; ids below 128 are reserved, as in ``tiny-random``), so the EOS list
[1, 106, 50] and the chat template hold.

Everything is seeded (model init, data order, corruption, self-conditioning choices). The learning rate
warms up, holds, and decays over the last ``--decay-fraction`` of the run (warm-up/stable/decay). With
``--max-steps N`` the schedule is fixed in advance and ``--minutes`` is only a safety cap; with
``--max-steps auto`` (the default) the decay starts when 80 % of the ``--minutes`` budget has passed and
its length is fitted to the time left, and the script prints the ``--max-steps``/``--decay-steps`` pair
that repeats the run exactly (same thread count and torch build; give the repeat a generous
``--minutes`` so the clock does not cut it). Training state is checkpointed every
``--checkpoint-minutes`` to ``--work-dir``; ``--resume`` continues from it (the budget counts the time
trained before). The finished checkpoint (config, generation config, safetensors, tokenizer, model card)
is written to ``--out``.

Batch ``i`` depends on the seed and ``i`` alone (:meth:`demo_data.TrainingStream.batch`), so on a GPU
``--data-workers N`` forked processes make batches ahead (a GPU step is faster than one core makes a
batch) and the data are the same for any N.

    python scripts/train_demo_model.py --minutes 55          # a CPU run (see docs/demo-model.md)
    python scripts/train_demo_model.py --device cuda --data-workers 12 --batch-size 256 --init-from DIR
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# On a shared CPU, OpenMP threads that spin while waiting for a core make every step several times slower;
# passive waiting must be chosen before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The data workers are forked after the tokenizer has run; its own thread pool would not survive the fork.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_data  # noqa: E402  (a sibling script, imported as a module)
from demo_batches import Batch, BatchMaker, BatchSource, fixed_batches  # noqa: E402
from demo_card import STAGES_HEADER, model_card  # noqa: E402, F401  (STAGES_HEADER: read by the tests)

from diffgemma_engine.model import tiny_random  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "diffgemma_engine" / "model" / "demo"
DEFAULT_WORK_DIR = REPO_ROOT / "build" / "demo-model-train"

# Gemma's special tokens at Gemma's ids (shared with tiny-random); every other id below RESERVED is unused.
SPECIAL_TOKENS = tiny_random.SPECIAL_TOKENS
RESERVED = tiny_random.BYTE_OFFSET
EOS_TOKEN_IDS = tuple(tiny_random.EOS_TOKEN_IDS)
CHAT_TEMPLATE = tiny_random.CHAT_TEMPLATE

RESERVE_SECONDS = 60.0  # of the --minutes budget, kept for the final held-out evaluation and the export


@dataclass(frozen=True)
class ModelSize:
    """The architecture knobs; the defaults give ~4.8 M parameters (~19.2 MB of fp32 safetensors).

    ``vocab_size`` is the BPE target and the embedding size: the corpus is small, so the BPE stops near
    1.8 k tokens and the remaining ids stay unused (the sampler still draws noise from all of them)."""

    vocab_size: int = 2048
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    global_head_dim: int = 64
    intermediate_size: int = 512
    num_experts: int = 4
    top_k_experts: int = 2
    moe_intermediate_size: int = 128
    canvas_length: int = 32
    sliding_window: int = 512
    max_position_embeddings: int = 4096


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation and objective settings (recorded in the model card; a resumed run must use the same)."""

    seed: int = 0
    batch_size: int = 48
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    decay_fraction: float = 0.2  # the last fifth of the run (in steps, or in time with --max-steps auto) decays
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    self_conditioning_prob: float = 0.5
    sc_temperature: tuple[float, float] = (0.4, 0.8)
    rate_power: float = 1.0
    tokenizer_examples: int = 20_000
    canvas_repeats: int = 4  # noisy copies of each canvas decoded against one encoder pass of its prefix
    canvas_shift: float = 0.5  # of examples whose canvas starts at a random response token, not a block boundary
    init_from: str = ""  # a checkpoint directory to start from (its weights and tokenizer), or "" for scratch
    family_weights: str = ""  # batch weights replacing demo_data.FAMILY_WEIGHTS' ("tool_answer=0.2,long=0"), or ""


# -- tokenizer and model ----------------------------------------------------------------------------


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE over ``texts`` with Gemma's special tokens at Gemma's ids, as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    reserved = [SPECIAL_TOKENS.get(i, f"<unused{i}>") for i in range(RESERVED)]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    # Every space is a token of its own, so a word is split the same way after a space (in a prompt:
    # "named Joanna") and after a quote (in the JSON answer: "Joanna"): copying a name from the prompt is
    # then copying its tokens, not translating "ĠJo" into "Jo".
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern=" ", behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=reserved,  # ids 0..RESERVED-1, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no <unk> ever
        min_frequency=2,
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    for token_id, token in SPECIAL_TOKENS.items():
        if backend.token_to_id(token) != token_id:
            raise RuntimeError(f"tokenizer training put {token} at {backend.token_to_id(token)}, not {token_id}")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        additional_special_tokens=[t for i, t in enumerate(reserved) if i > 4],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tokenizer_corpus(settings: TrainSettings) -> list[str]:
    """Training texts for the BPE: prompts and answers of the first training examples, plus every
    fact phrasing of the training split (so rare words still get merges)."""
    texts = []
    for example in demo_data.TrainingStream(settings.seed).take(settings.tokenizer_examples):
        texts.extend((example.prompt, example.answer))
    texts.extend(prompt for _, prompt in demo_data.short_prompts("train"))
    return texts


def build_config(size: ModelSize) -> Any:
    """The DiffusionGemma config (the real layout, alternating sliding and full attention layers)."""
    from diffgemma_engine.model import tiny_random

    layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(size.num_hidden_layers)]
    overrides = {k: v for k, v in asdict(size).items() if k != "canvas_length"}
    return tiny_random.build_config(canvas_length=size.canvas_length, layer_types=layer_types, **overrides)


def build_generation_config() -> Any:
    """The real checkpoint's generation config: 48 steps, entropy bound 0.1, EOS [1, 106, 50]."""
    return tiny_random.build_generation_config()


def build_model(size: ModelSize, seed: int) -> Any:
    from transformers import DiffusionGemmaForBlockDiffusion

    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(build_config(size))
    model.generation_config = build_generation_config()
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied encoder/decoder/lm_head weights counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in model.state_dict().values():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel()
    return total


# -- data: batches come from demo_batches ----------------------------------------------------------


def corrupt(canvas: torch.Tensor, rates: torch.Tensor, vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform-state corruption: each position becomes a uniformly random token with its row's rate."""
    replace = torch.rand(canvas.shape, generator=generator) < rates.cpu()[:, None]
    noise = torch.randint(0, vocab_size, canvas.shape, generator=generator)
    return torch.where(replace.to(canvas.device), noise.to(canvas.device), canvas)


def sample_rates(batch_size: int, power: float, generator: torch.Generator) -> torch.Tensor:
    """Corruption rates ``u ** power`` (power < 1 leans towards the heavy noise that sampling starts from)."""
    return torch.rand(batch_size, generator=generator).clamp_min(1e-3) ** power


# -- the objective ----------------------------------------------------------------------------------


def encode_prefix(model: Any, batch: Batch) -> Any:
    """Run the causal encoder over the right-padded prefixes; returns the KV cache the decoder reads."""
    positions = torch.arange(batch.prefix.shape[1], device=batch.prefix.device)[None, :].expand_as(batch.prefix)
    outputs = model.model.encoder(input_ids=batch.prefix, attention_mask=batch.prefix_mask, position_ids=positions)
    return outputs.cache


def decode_canvas(
    model: Any,
    cache: Any,
    batch: Batch,
    canvas: torch.Tensor,
    self_conditioning_logits: torch.Tensor | None = None,
    self_conditioning_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One decoder pass over ``canvas`` (positions continue each row's prefix); returns soft-capped fp32 logits."""
    canvas_length = canvas.shape[1]
    positions = batch.prefix_lengths[:, None] + torch.arange(canvas_length, device=canvas.device)[None, :]
    attention_mask = torch.cat([batch.prefix_mask, torch.ones_like(canvas, dtype=torch.bool)], dim=1)
    outputs = model(
        cache=cache,
        decoder_input_ids=canvas,
        self_conditioning_logits=self_conditioning_logits,
        self_conditioning_mask=self_conditioning_mask,
        decoder_attention_mask=attention_mask,
        decoder_position_ids=positions,
    )
    return outputs.logits


@dataclass
class LossParts:
    loss: torch.Tensor  # mean cross-entropy over every canvas position (what is optimised)
    content_loss: float  # over response positions only (up to and including <turn|>)
    self_conditioned: int  # examples that got a self-conditioning signal


def diffusion_loss(
    model: Any,
    batch: Batch,
    generator: torch.Generator,
    *,
    rates: torch.Tensor | None = None,
    self_conditioning_prob: float = 0.5,
    sc_temperature: tuple[float, float] = (0.4, 0.8),
    rate_power: float = 0.5,
    repeats: int = 1,
) -> LossParts:
    """The block-diffusion loss of one batch, with self-conditioning as the sampler feeds it.

    ``rates`` fixes the corruption rate of each row (evaluation); otherwise they are drawn. ``repeats``
    decodes that many independently corrupted copies of each canvas against one encoder pass of its prefix
    (the prefix is most of the compute, the canvas all of the signal). All randomness comes from ``generator``."""
    vocab_size = model.config.text_config.vocab_size
    cache = encode_prefix(model, batch)
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
        batch = repeat_rows(batch, repeats)
    size = batch.canvas.shape[0]
    if rates is None:
        rates = sample_rates(size, rate_power, generator)
    noisy = corrupt(batch.canvas, rates, vocab_size, generator)
    device = batch.canvas.device
    use_sc = (torch.rand(size, generator=generator) < self_conditioning_prob).to(device)
    low, high = sc_temperature
    temperature = (low + (high - low) * torch.rand(size, generator=generator)).to(device)
    sc_logits = None
    if bool(use_sc.any()):
        with torch.no_grad():
            first = decode_canvas(model, cache, batch, noisy)
        sc_logits = first / temperature[:, None, None]
    logits = decode_canvas(model, cache, batch, noisy, sc_logits, use_sc if sc_logits is not None else None)
    per_position = F.cross_entropy(logits.reshape(-1, vocab_size), batch.canvas.reshape(-1), reduction="none")
    per_position = per_position.view_as(batch.canvas)
    content = batch.content
    content_loss = float(per_position.detach()[content].mean()) if bool(content.any()) else float("nan")
    return LossParts(per_position.mean(), content_loss, int(use_sc.sum()) if sc_logits is not None else 0)


def repeat_rows(batch: Batch, repeats: int) -> Batch:
    """Every row of ``batch`` ``repeats`` times in a row (as ``DynamicCache.batch_repeat_interleave`` does)."""
    return batch.map(lambda tensor: tensor.repeat_interleave(repeats, dim=0))


def heldout_loss(model: Any, batches: Sequence[Batch], seed: int, levels: int = 8) -> tuple[float, float]:
    """Mean denoising loss (all canvas positions, content positions) on fixed held-out batches, at
    ``levels`` evenly spaced corruption rates in (0, 1], without self-conditioning; deterministic."""
    generator = torch.Generator().manual_seed(seed)
    totals, content_totals = [], []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for level in range(1, levels + 1):
            for batch in batches:
                rates = torch.full((batch.canvas.shape[0],), level / levels)
                parts = diffusion_loss(model, batch, generator, rates=rates, self_conditioning_prob=0.0)
                totals.append(float(parts.loss))
                content_totals.append(parts.content_loss)
    model.train(was_training)
    return sum(totals) / len(totals), sum(content_totals) / len(content_totals)


# -- training ---------------------------------------------------------------------------------------


def learning_rate(step: int, total: int | None, decay_steps: int, settings: TrainSettings) -> float:
    """Warm-up, stable, decay: linear warm-up over ``warmup_steps``, the peak rate until ``total - decay_steps``,
    then a cosine down to ``min_lr_ratio`` of the peak at ``total``. ``total=None`` (not decided yet) is the
    stable phase. The schedule depends on nothing but these numbers, so a run is repeatable from them."""
    warm = min(1.0, (step + 1) / settings.warmup_steps)
    if total is None or step < total - decay_steps:
        return settings.lr * warm
    progress = min(1.0, (step - (total - decay_steps)) / max(1, decay_steps))
    decay = settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return settings.lr * min(warm, decay)


@dataclass
class RunState:
    """Everything a resumed run needs besides the weights and the optimizer."""

    step: int = 0
    total_steps: int | None = None  # decided at the start with --max-steps N, else when the decay starts
    decay_steps: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training so far, across resumes
    log: list[dict[str, float]] = field(default_factory=list)
    best_step: int | None = None  # the step whose weights gave the lowest validation loss (kept in best.pt)
    best_validation: float | None = None


def make_optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    seen: set[int] = set()
    for name, parameter in model.named_parameters():
        if id(parameter) in seen or not parameter.requires_grad:
            continue
        seen.add(id(parameter))
        (no_decay if parameter.ndim < 2 or "norm" in name or "scale" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.98), eps=1e-8)


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    generator: torch.Generator,
    settings: TrainSettings,
    lr: float,
) -> LossParts:
    for group in optimizer.param_groups:
        group["lr"] = lr
    parts = diffusion_loss(
        model, batch, generator,
        self_conditioning_prob=settings.self_conditioning_prob,
        sc_temperature=settings.sc_temperature,
        rate_power=settings.rate_power,
        repeats=settings.canvas_repeats,
    )  # fmt: skip
    optimizer.zero_grad(set_to_none=True)
    parts.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    optimizer.step()
    return parts


def save_state(path: Path, model: Any, optimizer: torch.optim.Optimizer, run: RunState, generator: torch.Generator,
               recipe: dict[str, Any]) -> None:  # fmt: skip
    """Atomically write the training state (weights, optimizer, corruption RNG, progress, recipe); the data
    position is the step (batch ``i`` depends on the seed and ``i`` alone)."""
    payload = {
        "recipe": recipe,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "run": asdict(run),
        "generator": generator.get_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_state(path: Path, model: Any, optimizer: torch.optim.Optimizer, generator: torch.Generator,
               recipe: dict[str, Any]) -> RunState:  # fmt: skip
    payload = torch.load(path, weights_only=False)
    if payload.get("recipe") != recipe:
        raise SystemExit(f"{path} was written with other settings; resume with the same flags "
                         f"(saved: {payload.get('recipe')})")  # fmt: skip
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    generator.set_state(payload["generator"])
    return RunState(**payload["run"])


def export_checkpoint(out: Path, model: Any, tokenizer: Any, card: str) -> None:
    """Write the loadable checkpoint: config, generation config, safetensors, tokenizer, model card."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                  "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):  # fmt: skip
        (out / stale).unlink(missing_ok=True)
    model.eval()
    model.generation_config = build_generation_config()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _drop_load_options(out / "tokenizer_config.json")
    (out / "README.md").write_text(card, encoding="utf-8")


LOAD_OPTIONS = ("is_local", "local_files_only")
"""Keys transformers writes into ``tokenizer_config.json`` when the tokenizer was loaded from a directory
(a warm start): how it was loaded, not what it is, so the export leaves them out."""


def _drop_load_options(path: Path) -> None:
    config = json.loads(path.read_text(encoding="utf-8"))
    if any(key in config for key in LOAD_OPTIONS):
        kept = {key: value for key, value in config.items() if key not in LOAD_OPTIONS}
        path.write_text(json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _family_weights(text: str) -> str:
    try:
        demo_data.family_weights(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the small DiffusionGemma demo checkpoint.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the finished checkpoint goes")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="training state (checkpoints)")
    parser.add_argument("--minutes", type=float, default=55.0, help="wall-clock budget for the whole run")
    parser.add_argument("--max-steps", default="auto",
                        help="optimizer steps; 'auto' fits them into --minutes from a timing of the first steps")
    parser.add_argument("--decay-steps", type=int, default=None,
                        help="steps of the final learning-rate decay (default: --decay-fraction of --max-steps)")
    parser.add_argument("--resume", action="store_true", help="continue from --work-dir/state.pt")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--eval-every", type=int, default=200, help="steps between held-out loss reports")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (TF32 matrix products)")
    parser.add_argument("--data-workers", type=int, default=0,
                        help="processes that generate batches ahead (0: the training process; a GPU needs several)")
    for name, value in asdict(ModelSize()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value, dest=f"size_{name}", metavar="N")
    for name in ("seed", "batch_size", "warmup_steps", "tokenizer_examples", "canvas_repeats"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(TrainSettings, name))
    parser.add_argument("--init-from", default="", help="start from this checkpoint directory (weights and tokenizer)")
    parser.add_argument("--family-weights", default="", type=_family_weights,
                        help="batch weights of some families instead of demo_data.FAMILY_WEIGHTS', e.g. 'tool_answer=0.2,long=0'")
    for name in ("lr", "weight_decay", "self_conditioning_prob", "rate_power", "canvas_shift", "decay_fraction"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(TrainSettings, name))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wall_start = time.monotonic()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = ModelSize(**{k[len("size_"):]: v for k, v in vars(args).items() if k.startswith("size_")})
    settings = TrainSettings(
        seed=args.seed, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, self_conditioning_prob=args.self_conditioning_prob,
        rate_power=args.rate_power, tokenizer_examples=args.tokenizer_examples, decay_fraction=args.decay_fraction,
        canvas_shift=args.canvas_shift, init_from=str(args.init_from), canvas_repeats=args.canvas_repeats,
        family_weights=args.family_weights,
    )  # fmt: skip
    budget = args.minutes * 60.0
    device = torch.device(args.device)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    state_path = args.work_dir / "state.pt"

    # Tokenizer: trained once per run and kept in the work dir, so a resumed run uses the same one.
    tokenizer_dir = args.work_dir / "tokenizer"
    if args.resume and tokenizer_dir.is_dir() or settings.init_from:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir if args.resume and tokenizer_dir.is_dir() else settings.init_from)
        tokenizer.save_pretrained(tokenizer_dir)
    else:
        tokenizer = train_tokenizer(tokenizer_corpus(settings), size.vocab_size)
        tokenizer.save_pretrained(tokenizer_dir)
    if len(tokenizer) > size.vocab_size:
        raise SystemExit(f"tokenizer has {len(tokenizer)} tokens, more than --vocab-size {size.vocab_size}")

    batches = BatchSource(BatchMaker(tokenizer, settings, size.canvas_length), args.data_workers)  # before CUDA starts
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(size, settings.seed)
    if settings.init_from:
        from transformers import DiffusionGemmaForBlockDiffusion

        start = DiffusionGemmaForBlockDiffusion.from_pretrained(settings.init_from, dtype=torch.float32)
        model.load_state_dict(start.state_dict())  # raises if the architecture differs (the prompt room may)
        del start
        print(f"initialised from {settings.init_from}", flush=True)
    model = model.to(device)
    model.train()
    optimizer = make_optimizer(model, settings)
    generator = torch.Generator().manual_seed(settings.seed + 2)
    run = RunState()
    recipe = {"size": asdict(size), "settings": asdict(settings)}
    if args.resume and state_path.is_file():
        run = load_state(state_path, model, optimizer, generator, recipe)
        print(f"resumed at step {run.step} ({run.elapsed / 60:.1f} min trained)", flush=True)
    if args.max_steps != "auto":
        run.total_steps = int(args.max_steps)
        run.decay_steps = args.decay_steps if args.decay_steps is not None else round(settings.decay_fraction * run.total_steps)

    heldout = [e for task in demo_data.TASK_FORMATS for e in demo_data.heldout_examples(task, 32)]
    heldout_batches = fixed_batches(tokenizer, heldout, size.canvas_length, device)
    validation_batches = fixed_batches(tokenizer, demo_data.validation_examples(64), size.canvas_length, device)
    best_path = args.work_dir / "best.pt"
    parameters = count_parameters(model)
    print(f"model: {parameters:,} parameters (~{parameters * 4 / 1e6:.1f} MB fp32); tokenizer: {len(tokenizer)} tokens; "
          f"threads: {torch.get_num_threads()}; budget {args.minutes:g} min", flush=True)  # fmt: skip

    # The budget covers training time across resumed sessions; RESERVE is kept for the final eval and export.
    session_start, session_first_step = time.monotonic(), run.step
    trained_before = run.elapsed
    deadline = wall_start + budget - trained_before - RESERVE_SECONDS
    decay_at = wall_start + (budget - RESERVE_SECONDS) * (1 - settings.decay_fraction) - trained_before
    last_checkpoint = time.monotonic()
    window_start, window_tokens, window_steps = time.monotonic(), 0, 0
    ema: float | None = None
    stopped_by_clock = False
    while True:
        now = time.monotonic()
        run.elapsed = trained_before + (now - session_start)
        if run.total_steps is not None and run.step >= run.total_steps:
            break
        if now >= deadline:
            stopped_by_clock = True
            print(f"wall-clock budget reached at step {run.step}", flush=True)
            break
        if run.total_steps is None and now >= decay_at and run.step > session_first_step:
            pace = (now - session_start) / (run.step - session_first_step)
            run.decay_steps = max(1, int((deadline - now) / pace * 0.95))
            run.total_steps = run.step + run.decay_steps
            print(f"decay starts: {run.decay_steps} steps to go, {run.total_steps} in all (at {pace:.2f} s/step); "
                  f"repeat this run with --max-steps {run.total_steps} --decay-steps {run.decay_steps}", flush=True)  # fmt: skip
        batch = batches.batch(run.step).to(device)
        lr = learning_rate(run.step, run.total_steps, run.decay_steps, settings)
        parts = train_step(model, optimizer, batch, generator, settings, lr)
        loss = parts.loss.item()
        if not math.isfinite(loss):
            raise SystemExit(f"loss became {loss} at step {run.step}")
        ema = loss if ema is None else 0.98 * ema + 0.02 * loss
        run.step += 1
        run.tokens += batch.tokens
        window_tokens += batch.tokens
        window_steps += 1
        if run.step % args.log_every == 0:
            seconds = time.monotonic() - window_start
            print(f"step {run.step:6d}  loss {loss:.3f} (ema {ema:.3f}, response {parts.content_loss:.3f})  lr {lr:.2e}  "
                  f"{window_tokens / seconds:,.0f} tok/s  {60 * window_steps / seconds:.1f} steps/min  "
                  f"elapsed {(time.monotonic() - wall_start) / 60:.1f} min", flush=True)  # fmt: skip
            window_start, window_tokens, window_steps = time.monotonic(), 0, 0
        if run.step % args.eval_every == 0:
            held, held_content = heldout_loss(model, heldout_batches, seed=settings.seed)
            validation = keep_if_best(model, run, validation_batches, best_path, settings.seed)
            run.log.append({"step": run.step, "train_loss_ema": ema, "heldout_loss": held, "heldout_content_loss": held_content,
                            "validation_content_loss": validation})  # fmt: skip
            print(f"step {run.step:6d}  held-out denoising loss {held:.3f} (response positions {held_content:.3f}); "
                  f"validation names {validation:.3f} (best {run.best_validation:.3f} at step {run.best_step})", flush=True)  # fmt: skip
        if time.monotonic() - last_checkpoint > args.checkpoint_minutes * 60:
            run.elapsed = trained_before + (time.monotonic() - session_start)
            save_state(state_path, model, optimizer, run, generator, recipe)
            last_checkpoint = time.monotonic()
            print(f"checkpointed training state at step {run.step} to {state_path}", flush=True)

    batches.close()
    save_state(state_path, model, optimizer, run, generator, recipe)
    keep_if_best(model, run, validation_batches, best_path, settings.seed)
    if run.best_step is not None and run.best_step != run.step:
        model.load_state_dict(torch.load(best_path, weights_only=True))
        print(f"exporting the weights of step {run.best_step} (validation loss {run.best_validation:.3f}), "
              f"not the last step's", flush=True)  # fmt: skip
    held = heldout_loss(model, heldout_batches, seed=settings.seed)
    print(f"final held-out denoising loss {held[0]:.3f} (response positions {held[1]:.3f}) after {run.step} steps, "
          f"{run.tokens:,} tokens, {run.elapsed / 60:.1f} min", flush=True)  # fmt: skip
    on_device = f" --device {device.type} --data-workers {args.data_workers}" if device.type != "cpu" else ""
    command = (f"python scripts/train_demo_model.py --minutes {args.minutes:g} --max-steps {run.total_steps or run.step} "
               f"--decay-steps {run.decay_steps} --seed {settings.seed}{on_device}")  # fmt: skip
    if stopped_by_clock:
        command += f"  # stopped by the clock after {run.step} steps"
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, TF32, {args.data_workers} data workers"
    else:
        machine = f"{device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    card = model_card(size, settings, run, parameters, held, command, machine)
    export_checkpoint(args.out, model.to("cpu"), tokenizer, card)
    (args.work_dir / "train_log.json").write_text(json.dumps(run.log, indent=1) + "\n", encoding="utf-8")
    weights = args.out / "model.safetensors"
    print(f"wrote {args.out} (model.safetensors {weights.stat().st_size / 1e6:.1f} MB)", flush=True)
    return 0


def keep_if_best(model: Any, run: RunState, validation_batches: Sequence[Batch], best_path: Path, seed: int) -> float:
    """The validation loss (response positions, generated names never trained on) of the current weights;
    if it is the lowest so far, the weights go to ``best_path`` and ``run`` records the step."""
    _, validation = heldout_loss(model, validation_batches, seed=seed)
    if run.best_validation is None or validation < run.best_validation:
        run.best_step, run.best_validation = run.step, validation
        tmp = best_path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, best_path)
    return validation


if __name__ == "__main__":
    raise SystemExit(main())
