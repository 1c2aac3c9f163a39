"""Loading a model and its tokenizer: built-ins, local checkpoint directories and hub ids."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from diffgemma_engine.api.errors import ModelLoadError
from diffgemma_engine.model.checkpoint import VISION_MODULES, check_architecture, drop_vision, read_config
from diffgemma_engine.model.offload import OffloadPlan, dispatch_experts
from diffgemma_engine.api.params import SamplerDefaults
from diffgemma_engine.model.registry import BUILTIN_MODELS, DEMO, DEMO_DIRECTORY, TINY_RANDOM, ModelRef, ModelSource, resolve_model_ref

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
    """Load ``model`` (a built-in name, a checkpoint directory or a hub id) onto ``device`` for text-only
    serving, optionally with weight-only quantization (see :mod:`diffgemma_engine.model.quantization`) and with
    the fused experts kept in host memory by an ``offload`` plan (see :mod:`diffgemma_engine.model.offload`).

    Every path gives the weights and buffers the dtypes ``from_pretrained(path, dtype=dtype)`` gives them
    (the rotary ``inv_freq`` tables stay fp32), and none loads the vision tower (:func:`drop_vision`):
    * unquantized: ``from_pretrained`` straight onto the device (``device_map`` when accelerate is
      installed; otherwise into host memory, then moved with ``.to(device)``, which keeps dtypes);
    * int8 / int4 without offload: :func:`load_quantized_by_shard` reads one checkpoint shard at a
      time and quantizes each weight on the device as it is read, so the host never holds the model;
    * with ``offload``: into host memory, quantized there if asked, then placed by the offload map.
    """
    ref = resolve_model_ref(model)
    if ref is None:
        raise ModelLoadError(
            f"model {model!r} is not a built-in model ({', '.join(BUILTIN_MODELS)}), "
            "an existing checkpoint directory, or a hub id"
        )
    if ref.source is ModelSource.BUILTIN and ref.location == DEMO:
        ref = _demo_ref()
    if ref.source is ModelSource.BUILTIN:
        hf_model, tokenizer = _load_builtin(ref, dtype)
        if quantization is not None and offload is None:
            from diffgemma_engine.model.quantization import quantize_model

            quantize_model(hf_model, quantization, device=device)
        if offload is None:
            hf_model = hf_model.to(device=device)
    elif quantization is not None and offload is None:
        hf_model, tokenizer = _load_pretrained(ref, dtype, quantization=quantization, device=device)
    else:
        hf_model, tokenizer = _load_pretrained(ref, dtype, device=device if offload is None else "cpu")
    if offload is not None:
        if quantization is not None:
            from diffgemma_engine.model.quantization import quantize_model

            quantize_model(hf_model, quantization, device="cpu")  # the experts' codes stay in host memory
        dispatch_experts(hf_model, offload.as_device_map(), device)
    hf_model = hf_model.eval()
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


SAMPLER_CONFIG_FIELDS = ("entropy_bound",)
"""The :class:`SamplerDefaults` a DiffusionGemma generation config keeps in its nested ``sampler_config``
(the others sit at its top level under their own names; the EOS ids under ``eos_token_id``)."""


def sampler_defaults(generation_config: Any) -> SamplerDefaults:
    """Read a DiffusionGemma generation config, falling back to transformers' built-in defaults."""
    fallback = SamplerDefaults()
    sampler_config = getattr(generation_config, "sampler_config", None)
    values: dict[str, Any] = {}
    for field in fields(SamplerDefaults):
        if field.name == "eos_token_ids":
            eos = getattr(generation_config, "eos_token_id", None)
            if eos is not None:
                values[field.name] = tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)
            continue
        source = sampler_config if field.name in SAMPLER_CONFIG_FIELDS else generation_config
        value = getattr(source, field.name, None)
        if value is not None:
            values[field.name] = value
    return replace(fallback, **values)


def _demo_ref() -> ModelRef:
    if not (DEMO_DIRECTORY / "model.safetensors").is_file():
        raise ModelLoadError(
            f"the demo checkpoint is missing from {DEMO_DIRECTORY} (a broken install?); "
            "use model='tiny-random' or a checkpoint directory"
        )
    return ModelRef(ModelSource.DIRECTORY, str(DEMO_DIRECTORY))


def _load_builtin(ref: ModelRef, dtype: torch.dtype) -> tuple[Any, Any]:
    from diffgemma_engine.model import tiny_random

    if ref.location == TINY_RANDOM:
        model = drop_vision(tiny_random.build_model())
        return cast_like_pretrained(model, dtype), tiny_random.build_tokenizer()
    raise ModelLoadError(f"no loader for built-in model {ref.location!r}")  # registry and loader disagree


_TEXT_ONLY_CLASS: type | None = None


def text_only_class() -> type:
    """``DiffusionGemmaForBlockDiffusion`` without its vision modules: built on the meta device by
    ``from_pretrained`` like the original, then :func:`drop_vision`, so the checkpoint's vision weights
    are skipped as unexpected keys and never read. Forward passes are the original class's."""
    global _TEXT_ONLY_CLASS
    if _TEXT_ONLY_CLASS is None:
        from transformers import DiffusionGemmaForBlockDiffusion

        class TextOnlyDiffusionGemma(DiffusionGemmaForBlockDiffusion):
            _keys_to_ignore_on_load_unexpected = [r"\.vision_tower\.", r"\.embed_vision\."]

            def __init__(self, config: Any) -> None:
                super().__init__(config)
                drop_vision(self)

            # transformers decides whether a class may pick its attention and experts kernels by reading the
            # source of the module that defines it; this subclass lives here, so it answers for the original
            # class (otherwise it falls back to eager experts, or refuses a config that asks for grouped_mm)
            @classmethod
            def _can_set_attn_implementation(cls) -> bool:
                return DiffusionGemmaForBlockDiffusion._can_set_attn_implementation()

            @classmethod
            def _can_set_experts_implementation(cls) -> bool:
                return DiffusionGemmaForBlockDiffusion._can_set_experts_implementation()

        _TEXT_ONLY_CLASS = TextOnlyDiffusionGemma
    return _TEXT_ONLY_CLASS


def pretrained_dtypes(config: Any, dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``{parameter or buffer name: dtype}`` as ``from_pretrained(..., dtype=dtype)`` builds the model:
    floating weights in ``dtype``, the buffers transformers computes in fp32 (rotary ``inv_freq``) in fp32."""
    with torch.device("meta"):
        reference = text_only_class()._from_config(config, dtype=dtype)
    named = [*reference.named_parameters(remove_duplicate=False), *reference.named_buffers(remove_duplicate=False)]
    return {name: tensor.dtype for name, tensor in named}


def cast_like_pretrained(model: Any, dtype: torch.dtype) -> Any:
    """Cast ``model`` (built in fp32) to the dtypes ``from_pretrained(dtype=dtype)`` would give it, instead of
    ``model.to(dtype)``, which would also round the fp32 rotary tables; returns ``model``."""
    dtypes = pretrained_dtypes(model.config, dtype)
    with torch.no_grad():
        for module_name, module in model.named_modules(remove_duplicate=False):
            prefix = f"{module_name}." if module_name else ""
            for name, parameter in module._parameters.items():
                wanted = dtypes.get(prefix + name)
                if parameter is not None and wanted is not None and parameter.dtype != wanted:
                    parameter.data = parameter.data.to(wanted)
            for name, buffer in module._buffers.items():
                wanted = dtypes.get(prefix + name)
                if buffer is not None and wanted is not None and buffer.dtype != wanted:
                    module._buffers[name] = buffer.to(wanted)
    return model


def _load_pretrained(ref: ModelRef, dtype: torch.dtype, *, device: str = "cpu",
                     quantization: str | None = None) -> tuple[Any, Any]:  # fmt: skip
    from transformers import AutoTokenizer

    if ref.source is ModelSource.DIRECTORY:
        check_architecture(read_config(ref.location), ref.location)
    try:
        if quantization is not None:
            hf_model = load_quantized_by_shard(_local_directory(ref), dtype, quantization, device)
        else:
            hf_model = text_only_class().from_pretrained(
                ref.location, dtype=dtype, use_safetensors=True, trust_remote_code=False, **_device_map(device)
            )
            hf_model = hf_model.to(device=device)  # a no-op when device_map already placed it
        tokenizer = AutoTokenizer.from_pretrained(ref.location, trust_remote_code=False)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"could not load {ref.location!r}: {error}") from error
    check_architecture(hf_model.config.to_dict(), ref.location)
    return hf_model, tokenizer


def _device_map(device: str) -> dict[str, Any]:
    """``from_pretrained`` keywords that load straight onto ``device``: a ``device_map`` for accelerators
    when accelerate is installed (transformers needs it for any ``device_map``); nothing for the host."""
    import importlib.util

    if torch.device(device).type == "cpu" or importlib.util.find_spec("accelerate") is None:
        return {}
    return {"device_map": {"": torch.device(device)}}


def _local_directory(ref: ModelRef) -> str:
    if ref.source is ModelSource.DIRECTORY:
        return ref.location
    from huggingface_hub import snapshot_download

    return snapshot_download(ref.location, allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja"])


# -- int8 / int4, one shard at a time ---------------------------------------------------------------

def load_quantized_by_shard(directory: str, dtype: torch.dtype, mode: str, device: str | torch.device) -> Any:
    """Load a safetensors checkpoint quantized with ``mode``, reading one shard at a time.

    The model is built on the meta device (text-only, with ``from_pretrained``'s dtypes). Each tensor
    of a shard is read, cast to its dtype and either quantized on ``device`` (the targets
    :func:`~diffgemma_engine.model.quantization.quantize_model` would quantize) or moved there; the shard is
    closed before the next is opened. Host memory thus holds at most one shard plus whatever lives on
    ``device``. Buffers the checkpoint does not hold (rotary tables, embedding scales) are computed by
    transformers' own initialisation, as ``from_pretrained`` does. The result equals
    ``from_pretrained`` + ``quantize_model`` tensor for tensor.
    """
    from safetensors import safe_open
    from transformers import DiffusionGemmaConfig

    from diffgemma_engine.model.quantization import QuantizedStreamingTarget, streaming_targets

    config = DiffusionGemmaConfig.from_pretrained(directory)
    with torch.device("meta"):
        model = text_only_class()._from_config(config, dtype=dtype)
    model.generation_config = _generation_config(directory, model.generation_config)
    owners: dict[str, list[tuple[torch.nn.Module, str]]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        prefix = f"{module_name}." if module_name else ""
        for name in [*module._parameters, *module._buffers]:
            owners.setdefault(prefix + name, []).append((module, name))
    targets: dict[str, QuantizedStreamingTarget] = streaming_targets(model, mode, device)
    device = torch.device(device)
    loaded: set[str] = set()
    for shard in _shard_files(directory):
        with _open_shard(safe_open, shard) as handle:
            for key in handle.keys():
                if key not in owners:
                    if any(f".{name}." in f".{key}" for name in VISION_MODULES):
                        continue  # never placed
                    raise ModelLoadError(f"{directory!r}: checkpoint tensor {key!r} matches nothing in the model")
                module, name = owners[key][0]
                current = module._parameters.get(name) if name in module._parameters else module._buffers[name]
                with torch.no_grad():
                    value = handle.get_tensor(key).to(current.dtype)
                    if key in targets:
                        targets[key].receive(name, value)
                    else:  # an owned copy: a view would keep the whole shard's mapped pages resident
                        _install(owners, current, value.to(device, copy=True))
                    del value
                _return_freed_host_memory()
                loaded.add(key)
    for target in targets.values():
        target.finish()
    _initialise_missing_buffers(model, device)
    return model


def _generation_config(directory: str, fallback: Any) -> Any:
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import DiffusionGemmaGenerationConfig

    if not os.path.isfile(os.path.join(directory, "generation_config.json")):
        return fallback
    return DiffusionGemmaGenerationConfig.from_pretrained(directory)


def _shard_files(directory: str) -> list[str]:
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as handle:
            files = sorted(set(json.load(handle)["weight_map"].values()))
        return [os.path.join(directory, name) for name in files]
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    raise ModelLoadError(f"{directory!r} holds no safetensors weights (model.safetensors or an index)")


def _open_shard(safe_open: Any, path: str) -> Any:
    """Read a shard with positioned reads where safetensors offers them: a memory-mapped shard's pages
    would count in the resident set on top of the tensors read from it."""
    try:
        return safe_open(path, framework="pt", device="cpu", backend="pread")
    except TypeError:  # an older safetensors without the backend argument
        return safe_open(path, framework="pt", device="cpu")


def _return_freed_host_memory() -> None:
    """Ask glibc to give freed heap pages back to the OS (a shard's freed full-precision tensors would
    otherwise stay in the process's resident set); a no-op where glibc is not the C library."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        trim = None
    if trim is not None:
        trim(0)


def _install(owners: dict, current: torch.Tensor, value: torch.Tensor) -> None:
    """Put ``value`` in place of ``current`` in every module that holds it (tied weights stay tied)."""
    for module_name_owners in owners.values():
        for module, name in module_name_owners:
            if module._parameters.get(name) is current:
                module._parameters[name] = torch.nn.Parameter(value, requires_grad=False)
            elif name in module._buffers and module._buffers[name] is current:
                module._buffers[name] = value


def _initialise_missing_buffers(model: Any, device: torch.device) -> None:
    """Give every tensor still on the meta device storage and let transformers' initialisation fill it;
    loaded tensors are flagged so that the initialisation leaves them alone. A parameter still on the
    meta device means the checkpoint lacked a weight: a load error."""
    missing = [name for name, parameter in model.named_parameters() if parameter.is_meta]
    if missing:
        raise ModelLoadError(f"the checkpoint has no weights for {', '.join(missing[:5])}"
                             f"{' ...' if len(missing) > 5 else ''}")
    for tensor in [*model.parameters(), *model.buffers()]:
        if not tensor.is_meta:
            tensor._is_hf_initialized = True
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.is_meta:
                module._buffers[name] = torch.empty(buffer.shape, dtype=buffer.dtype, device=device)
    with torch.no_grad():
        model.initialize_weights()
    if any(buffer.is_meta for buffer in model.buffers()):
        raise ModelLoadError("some model buffers could not be initialised")
