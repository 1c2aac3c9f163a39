"""Loading a model and its tokenizer: built-ins, local checkpoint directories and hub ids."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from .errors import ModelLoadError
from .offload import OffloadPlan, dispatch_experts
from .params import SamplerDefaults
from .registry import BUILTIN_MODELS, DEMO, DEMO_DIRECTORY, TINY_RANDOM, ModelRef, ModelSource, resolve_model_ref

ARCHITECTURE = "DiffusionGemmaForBlockDiffusion"
MODEL_TYPE = "diffusion_gemma"


@dataclass
class LoadedModel:
    """A model ready to run, with its tokenizer and the sampler defaults of its checkpoint."""

    name: str
    model: Any  # DiffusionGemmaForBlockDiffusion
    tokenizer: Any  # a transformers tokenizer
    defaults: SamplerDefaults
    canvas_length: int
    vocab_size: int
    context_length: int


def load_model(model: str, device: str, dtype: torch.dtype, quantization: str | None = None,
               offload: OffloadPlan | None = None) -> LoadedModel:  # fmt: skip
    """Load ``model`` (a built-in name, a checkpoint directory or a hub id) onto ``device``, optionally with
    weight-only quantization (see :mod:`diffgemma_engine.quantization`) and with the fused experts kept in
    host memory by an ``offload`` plan (see :mod:`diffgemma_engine.offload`)."""
    ref = resolve_model_ref(model)
    if ref is None:
        raise ModelLoadError(
            f"model {model!r} is not a built-in model ({', '.join(BUILTIN_MODELS)}), "
            "an existing checkpoint directory, or a hub id"
        )
    if ref.source is ModelSource.BUILTIN:
        hf_model, tokenizer = _load_builtin(ref, dtype)
    else:
        hf_model, tokenizer = _load_pretrained(ref, dtype)
    if offload is not None:
        hf_model = hf_model.to(dtype=dtype).eval()  # everything in host memory first
        if quantization is not None:
            from .quantization import quantize_model

            quantize_model(hf_model, quantization, device="cpu")  # the experts' codes stay in host memory
        dispatch_experts(hf_model, offload.as_device_map(), device)
    elif quantization is None:
        hf_model = hf_model.to(device=device, dtype=dtype).eval()
    else:
        from .quantization import quantize_model

        hf_model = hf_model.to(dtype=dtype).eval()  # still on the host
        quantize_model(hf_model, quantization, device=device)  # one weight at a time, quantized on the device
        hf_model = hf_model.to(device=device)  # the floating-point rest
    text_config = hf_model.config.text_config
    return LoadedModel(
        name=model,
        model=hf_model,
        tokenizer=tokenizer,
        defaults=sampler_defaults(hf_model.generation_config),
        canvas_length=int(hf_model.config.canvas_length),
        vocab_size=int(text_config.vocab_size),
        context_length=int(text_config.max_position_embeddings),
    )


def sampler_defaults(generation_config: Any) -> SamplerDefaults:
    """Read a DiffusionGemma generation config, falling back to transformers' built-in defaults."""
    fallback = SamplerDefaults()
    sampler_config = getattr(generation_config, "sampler_config", None)
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        eos_ids = fallback.eos_token_ids
    else:
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)

    def pick(name: str, value: Any) -> Any:
        return getattr(fallback, name) if value is None else value

    return SamplerDefaults(
        max_new_tokens=pick("max_new_tokens", getattr(generation_config, "max_new_tokens", None)),
        max_denoising_steps=pick("max_denoising_steps", getattr(generation_config, "max_denoising_steps", None)),
        entropy_bound=pick("entropy_bound", getattr(sampler_config, "entropy_bound", None)),
        t_min=pick("t_min", getattr(generation_config, "t_min", None)),
        t_max=pick("t_max", getattr(generation_config, "t_max", None)),
        stability_threshold=pick("stability_threshold", getattr(generation_config, "stability_threshold", None)),
        confidence_threshold=pick("confidence_threshold", getattr(generation_config, "confidence_threshold", None)),
        eos_token_ids=eos_ids,
        pad_token_id=pick("pad_token_id", getattr(generation_config, "pad_token_id", None)),
    )


def _load_builtin(ref: ModelRef, dtype: torch.dtype) -> tuple[Any, Any]:
    from . import tiny_random

    if ref.location == TINY_RANDOM:
        return tiny_random.build_model(), tiny_random.build_tokenizer()
    if ref.location == DEMO:
        if not (DEMO_DIRECTORY / "model.safetensors").is_file():
            raise ModelLoadError(
                f"the demo checkpoint is missing from {DEMO_DIRECTORY} (a broken install?); "
                "use model='tiny-random' or a checkpoint directory"
            )
        return _load_pretrained(ModelRef(ModelSource.DIRECTORY, str(DEMO_DIRECTORY)), dtype)
    raise ModelLoadError(f"no loader for built-in model {ref.location!r}")  # registry and loader disagree


def _load_pretrained(ref: ModelRef, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion

    if ref.source is ModelSource.DIRECTORY:
        check_architecture(_read_config(ref.location), ref.location)
    try:
        hf_model = DiffusionGemmaForBlockDiffusion.from_pretrained(
            ref.location, dtype=dtype, use_safetensors=True, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(ref.location, trust_remote_code=False)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"could not load {ref.location!r}: {error}") from error
    check_architecture(hf_model.config.to_dict(), ref.location)
    return hf_model, tokenizer


def _read_config(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{directory!r} has no config.json; it is not a Hugging Face checkpoint")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{path!r} is not readable JSON: {error}") from error


def check_architecture(config: dict[str, Any], where: str) -> None:
    """Raise :class:`ModelLoadError` naming what was found unless ``config`` is a DiffusionGemma config."""
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type == MODEL_TYPE or ARCHITECTURE in architectures:
        return
    found = ", ".join(architectures) or f"model_type={model_type!r}"
    raise ModelLoadError(f"{where!r} holds a {found} checkpoint, not a {ARCHITECTURE} ({MODEL_TYPE}) one")
