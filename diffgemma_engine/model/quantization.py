"""Weight-only int8 / int4 quantization of a loaded DiffusionGemma model, fused MoE experts included.

Why our own: about 90% of DiffusionGemma's weights are the fused 3-D expert tensors
(``experts.gate_up_proj [E, 2I, H]`` and ``experts.down_proj [E, H, I]``), which are ``nn.Parameter``s,
not ``nn.Linear``s. bitsandbytes' transformers integration only swaps ``nn.Linear`` modules, so it
misses them; torchao 0.18 can target them by name but then unties the encoder/decoder copies (every
expert tensor is held twice), only runs with the eager experts path, and its int4 formats need CUDA
kernels. So this module implements weight-only quantization in plain PyTorch, on every device:

* ``"int8"``: symmetric, one scale per output channel (per row of every ``[out, in]`` matrix);
* ``"int4"``: asymmetric (scale + offset per group of ``group_size`` input channels, 128 where the
  input width allows, else 64, 32, ...), two 4-bit codes packed per byte.

Scales and offsets are stored in the weight's own floating dtype (bf16 on a GPU, fp32 on a CPU).

What is quantized: every fused expert tensor and every ``nn.Linear`` (attention, shared MLP, the
decoder's self-conditioning MLP, the vision tower) except the MoE router projections (tiny and
routing-critical) and any linear tied to the token embedding (``lm_head``). The embedding table, norms
and scales stay in floating point. Encoder and decoder share their weights; the quantized codes are
shared the same way, so every tensor is held once.

Forward passes dequantize on the fly: a :class:`QuantizedLinear` rebuilds its weight per call, and
:class:`QuantizedExperts` rebuilds only the experts a batch routes to, one at a time, so no
full-precision copy of the model is ever held.

Why one module of ~500 lines: it is one storage format. The size arithmetic the planner uses
(:func:`quantized_nbytes`), the modules that read the codes (:class:`QuantizedTensor` and its users), the
in-place quantizer, the shard-by-shard streaming targets the loader fills and the row kernels that write
the codes must agree bit for bit; split across files, a change to the layout would have to be made in
several places at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffgemma_engine.api.errors import InvalidRequestError, ModelLoadError
from diffgemma_engine.config import validate_mode

INT4_GROUP_SIZES = (128, 64, 32, 16, 8, 4, 2)  # preferred first; the first that divides the input width
INT8_MAX = 127
INT4_LEVELS = 15  # codes 0..15
_CHUNK_ELEMENTS = 1 << 22  # quantize at most this many weights at a time (temporaries: ~3 fp32 copies, 48 MiB)


class QuantizationUnavailableError(ModelLoadError):
    """The requested quantization cannot be applied to this model or device (e.g. no weights yet)."""


def int4_group_size(in_features: int) -> int | None:
    """The int4 group width for an input width: the largest of 128, 64, ... 2 dividing it (``None`` if odd)."""
    for size in INT4_GROUP_SIZES:
        if in_features % size == 0:
            return size
    return None


def quantized_nbytes(shape: tuple[int, ...], mode: str, scale_bytes: int) -> int:
    """Bytes held by one weight of ``shape`` (``[..., out, in]``) quantized with ``mode``.

    ``scale_bytes``: the size of one scale/offset value (2 for bf16, 4 for fp32). This is the storage
    layout :func:`quantize_model` produces, so planners can size a model without quantizing it.
    """
    validate_mode(mode)
    numel = math.prod(shape)
    in_features = shape[-1]
    rows = numel // in_features
    if mode == "int8":
        return numel + rows * scale_bytes
    group = int4_group_size(in_features)
    if group is None:
        raise InvalidRequestError("shape", f"int4 needs an even input width, got {in_features}")
    return numel // 2 + 2 * (numel // group) * scale_bytes


@dataclass(frozen=True)
class QuantizationTarget:
    """One weight :func:`quantize_model` would quantize (shared weights are listed once)."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "experts" (a fused 3-D expert tensor) or "linear"


def quantization_targets(model: nn.Module, mode: str = "int4") -> tuple[QuantizationTarget, ...]:
    """The weights ``mode`` would quantize, without touching them (works on meta-device models)."""
    validate_mode(mode)
    targets = []
    for name, module, kind in _target_modules(model):
        for attribute in _WEIGHT_ATTRIBUTES[kind]:
            weight = getattr(module, attribute)
            if _quantizable_shape(tuple(weight.shape), mode):
                targets.append(QuantizationTarget(f"{name}.{attribute}", tuple(weight.shape), kind))
    return tuple(_unique_targets(model, targets))


@dataclass(frozen=True)
class QuantizationReport:
    """What :func:`quantize_model` did.

    Attributes:
        mode: ``"int8"`` or ``"int4"``.
        expert_tensors: fused 3-D expert tensors quantized (each shared tensor counted once).
        linear_weights: ``nn.Linear`` weights quantized (each shared weight counted once).
        quantized_elements: weights (scalars) now held as integer codes.
        skipped: ``"name: reason"`` for every linear or expert tensor left in floating point.
        target_bytes_before / target_bytes_after: bytes of the quantized weights, before and after.
        held_bytes_before / held_bytes_after: all parameter and buffer bytes the model holds.
    """

    mode: str
    expert_tensors: int
    linear_weights: int
    quantized_elements: int
    skipped: tuple[str, ...]
    target_bytes_before: int
    target_bytes_after: int
    held_bytes_before: int
    held_bytes_after: int

    @property
    def target_ratio(self) -> float:
        """How many times smaller the quantized weights became."""
        return self.target_bytes_before / self.target_bytes_after if self.target_bytes_after else 0.0

    @property
    def held_ratio(self) -> float:
        """How many times smaller the whole model became."""
        return self.held_bytes_before / self.held_bytes_after if self.held_bytes_after else 0.0


class QuantizedTensor(nn.Module):
    """A weight ``[..., out, in]`` held as integer codes plus floating scales (and int4 offsets).

    The codes and scales are ``nn.Parameter``s (``requires_grad=False``) so that a tensor shared by
    the encoder and the decoder stays shared through ``model.to(device)``.
    """

    def __init__(self, mode: str, shape: tuple[int, ...], group_size: int | None,
                 codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None) -> None:
        super().__init__()
        self.mode = mode
        self.shape = tuple(shape)
        self.group_size = group_size
        self.codes = nn.Parameter(codes, requires_grad=False)
        self.scale = nn.Parameter(scale, requires_grad=False)
        self.offset = nn.Parameter(offset, requires_grad=False) if offset is not None else None

    @classmethod
    def quantize(cls, weight: torch.Tensor, mode: str) -> QuantizedTensor:
        """Quantize ``weight`` (any floating dtype, any device; computed in fp32 chunk by chunk)."""
        shape = tuple(weight.shape)
        in_features = shape[-1]
        rows = weight.reshape(-1, in_features)
        chunk = max(1, _CHUNK_ELEMENTS // in_features)
        if mode == "int8":
            codes = torch.empty(rows.shape, dtype=torch.int8, device=weight.device)
            scale = torch.empty((rows.shape[0], 1), dtype=weight.dtype, device=weight.device)
            for start in range(0, rows.shape[0], chunk):
                part = slice(start, start + chunk)
                codes[part], scale[part] = _quantize_int8_rows(rows[part])
            return cls(mode, shape, None, codes.view(shape), scale.view(*shape[:-1], 1), None)
        group = int4_group_size(in_features)
        if group is None:
            raise QuantizationUnavailableError(f"int4 needs an even input width, got a weight of shape {shape}")
        codes = torch.empty((rows.shape[0], in_features // 2), dtype=torch.uint8, device=weight.device)
        scale = torch.empty((rows.shape[0], in_features // group), dtype=weight.dtype, device=weight.device)
        offset = torch.empty_like(scale)
        for start in range(0, rows.shape[0], chunk):
            part = slice(start, start + chunk)
            codes[part], scale[part], offset[part] = _quantize_int4_rows(rows[part], group)
        return cls(mode, shape, group, codes.view(*shape[:-1], in_features // 2),
                   scale.view(*shape[:-1], -1), offset.view(*shape[:-1], -1))

    def dequantize(self, index: int | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The floating weight (``[out, in]``), or one slice ``[index]`` of a 3-D expert tensor."""
        codes, scale = self.codes, self.scale
        offset = self.offset
        if index is not None:
            codes, scale = codes[index], scale[index]
            offset = offset[index] if offset is not None else None
        dtype = dtype or scale.dtype
        if self.mode == "int8":
            return (codes.to(scale.dtype) * scale).to(dtype)
        weight = torch.empty((*codes.shape[:-1], codes.shape[-1], 2), dtype=scale.dtype, device=codes.device)
        weight[..., 0] = codes & 0xF  # even input channels sit in the low nibble
        weight[..., 1] = codes >> 4
        grouped = weight.view(*codes.shape[:-1], -1, self.group_size)
        torch.addcmul(offset.unsqueeze(-1), grouped, scale.unsqueeze(-1), out=grouped)
        return weight.view(*codes.shape[:-1], -1).to(dtype)

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.group_size else ""
        return f"{self.mode}, shape={self.shape}{group}"


class QuantizedLinear(nn.Module):
    """A bias-optional linear layer whose weight is a :class:`QuantizedTensor`, dequantized per call."""

    def __init__(self, weight: QuantizedTensor, bias: nn.Parameter | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.qweight = weight
        self.bias = bias

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_states, self.qweight.dequantize(dtype=hidden_states.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class QuantizedExperts(nn.Module):
    """Drop-in for ``DiffusionGemmaTextExperts`` with quantized ``gate_up_proj`` / ``down_proj``.

    Same call signature and arithmetic as the eager transformers forward; each routed expert's two
    matrices are dequantized just before use, so only one expert is ever held in full precision.
    """

    def __init__(self, original: nn.Module, gate_up_proj: QuantizedTensor, down_proj: QuantizedTensor) -> None:
        super().__init__()
        self.num_experts = int(original.num_experts)
        self.hidden_dim = int(original.hidden_dim)
        self.intermediate_dim = int(original.intermediate_dim)
        self.act_fn = original.act_fn
        self.gate_up_proj = gate_up_proj
        self.down_proj = down_proj

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        final_hidden_states = torch.zeros_like(hidden_states)
        top_k = top_k_index.shape[-1]
        flat_experts = top_k_index.reshape(-1)
        order = torch.argsort(flat_experts, stable=True)
        tokens_in_order = order // top_k
        weights_in_order = top_k_weights.reshape(-1)[order]
        counts = torch.bincount(flat_experts, minlength=self.num_experts).tolist()  # one sync per call
        start = 0
        for expert, count in enumerate(counts):
            if count == 0 or expert >= self.num_experts:
                start += count
                continue
            token_idx = tokens_in_order[start:start + count]
            weights = weights_in_order[start:start + count]
            start += count
            current_state = hidden_states[token_idx]
            gate_up = self.gate_up_proj.dequantize(expert, current_state.dtype)
            gate, up = F.linear(current_state, gate_up).chunk(2, dim=-1)
            current = self.act_fn(gate) * up
            current = F.linear(current, self.down_proj.dequantize(expert, current_state.dtype))
            current = current * weights[:, None]
            final_hidden_states.index_add_(0, token_idx, current.to(final_hidden_states.dtype))
        return final_hidden_states


def quantize_model(model: nn.Module, mode: str | None, *, device: str | torch.device | None = None,
                   ) -> QuantizationReport | None:
    """Quantize ``model`` in place (weight-only); returns what was done, or ``None`` when ``mode`` is ``None``.

    ``device``: where the quantized codes should live. Each weight is moved there one at a time and
    quantized there, so a model larger than the device can be quantized from host memory; the caller
    moves the remaining (small, floating) parameters with ``model.to(device)`` afterwards.

    Raises ``InvalidRequestError("quantization", ...)`` for an unknown mode, ``QuantizationUnavailableError``
    for a model without real weights (meta device) or one that is already quantized, and
    ``ModelLoadError`` for a model with nothing to quantize.
    """
    mode = validate_mode(mode)
    if mode is None:
        return None
    if any(isinstance(module, QuantizedTensor) for module in model.modules()):
        raise QuantizationUnavailableError("this model is already quantized")
    if any(parameter.is_meta for parameter in model.parameters()):
        raise QuantizationUnavailableError("the model has no weights yet (meta device); load it first")
    # Modules sharing a weight (encoder and decoder) are replaced back to back, so each full-precision
    # weight is dropped as soon as its last user is replaced: peak memory stays near the model's size.
    groups: dict[int, list[tuple[str, str]]] = {}
    for name, module, kind in _target_modules(model):
        weight = module.gate_up_proj if kind == "experts" else module.weight
        groups.setdefault(id(weight), []).append((name, kind))
    if not groups:
        raise ModelLoadError(f"{type(model).__name__} has no linear layers or fused experts to quantize")

    held_before = held_parameter_bytes(model)
    skipped: list[str] = []
    counts = {"experts": 0, "linear": 0}
    elements = before = after = 0

    def convert(weight: torch.Tensor, name: str, kind: str) -> QuantizedTensor | None:
        nonlocal elements, before, after
        if not _quantizable_shape(tuple(weight.shape), mode):
            skipped.append(f"{name}: input width {weight.shape[-1]} cannot be split into int4 groups")
            return None
        with torch.no_grad():
            source = weight.detach().to(device) if device is not None else weight.detach()
            quantized = QuantizedTensor.quantize(source, mode)
        counts[kind] += 1
        elements += weight.numel()
        before += weight.numel() * weight.element_size()
        after += sum(p.numel() * p.element_size() for p in quantized.parameters())
        return quantized

    for users in groups.values():
        quantized: tuple[QuantizedTensor | None, ...] | None = None
        for name, kind in users:
            module = model.get_submodule(name)
            if kind == "experts":
                if quantized is None and not _quantizable_shape(tuple(module.down_proj.shape), mode):
                    skipped.append(f"{name}: input width {module.down_proj.shape[-1]} of down_proj "
                                   "cannot be split into int4 groups")
                    quantized = (None, None)
                if quantized is None:
                    quantized = (convert(module.gate_up_proj, f"{name}.gate_up_proj", kind),
                                 convert(module.down_proj, f"{name}.down_proj", kind))
                gate_up, down = quantized
                if gate_up is not None and down is not None:
                    _replace_module(model, name, QuantizedExperts(module, gate_up, down))
            else:
                if quantized is None:
                    quantized = (convert(module.weight, f"{name}.weight", kind),)
                if quantized[0] is not None:
                    bias = module.bias
                    if bias is not None and device is not None:
                        bias.data = bias.data.to(device)
                    _replace_module(model, name, QuantizedLinear(quantized[0], bias))
            del module

    return QuantizationReport(
        mode=mode,
        expert_tensors=counts["experts"],
        linear_weights=counts["linear"],
        quantized_elements=elements,
        skipped=tuple(dict.fromkeys(skipped)),
        target_bytes_before=before,
        target_bytes_after=after,
        held_bytes_before=held_before,
        held_bytes_after=held_parameter_bytes(model),
    )


class QuantizedStreamingTarget:
    """One group of modules sharing a weight (encoder and decoder copies), quantized as a loader reads the
    weight's tensors one at a time; :meth:`finish` swaps the modules once every tensor has arrived."""

    def __init__(self, model: nn.Module, module_names: list[str], kind: str, mode: str,
                 device: str | torch.device) -> None:  # fmt: skip
        self.model = model
        self.module_names = module_names
        self.kind = kind
        self.mode = mode
        self.device = device
        self.quantized: dict[str, QuantizedTensor | None] = dict.fromkeys(_WEIGHT_ATTRIBUTES[kind])

    def receive(self, attribute: str, value: torch.Tensor) -> None:
        """Quantize one full-precision tensor (``attribute`` of the module) on the target device."""
        with torch.no_grad():
            self.quantized[attribute] = QuantizedTensor.quantize(value.to(self.device), self.mode)

    def finish(self) -> None:
        missing = [attribute for attribute, value in self.quantized.items() if value is None]
        if missing:
            raise ModelLoadError(f"the checkpoint has no {', '.join(missing)} for {self.module_names[0]}")
        for name in self.module_names:
            module = self.model.get_submodule(name)
            if self.kind == "experts":
                replacement: nn.Module = QuantizedExperts(module, self.quantized["gate_up_proj"],
                                                          self.quantized["down_proj"])
            else:
                replacement = QuantizedLinear(self.quantized["weight"], module.bias)
            _replace_module(self.model, name, replacement)


def streaming_targets(model: nn.Module, mode: str, device: str | torch.device) -> dict[str, QuantizedStreamingTarget]:
    """``{tensor name: target}`` for every tensor :func:`quantize_model` would quantize in ``model`` (a
    meta-device model is fine), under each name a checkpoint may store it by (shared weights appear under
    every owner's name, all pointing at one target). Same selection as :func:`quantize_model`: a linear
    whose width int4 cannot group stays floating, and so do experts if either tensor cannot be grouped."""
    mode = validate_mode(mode)
    groups: dict[int, list[tuple[str, str]]] = {}
    for name, module, kind in _target_modules(model):
        weight = module.gate_up_proj if kind == "experts" else module.weight
        groups.setdefault(id(weight), []).append((name, kind))
    targets: dict[str, QuantizedStreamingTarget] = {}
    for users in groups.values():
        kind = users[0][1]
        first = model.get_submodule(users[0][0])
        attributes = _WEIGHT_ATTRIBUTES[kind]
        if not all(_quantizable_shape(tuple(getattr(first, attribute).shape), mode) for attribute in attributes):
            continue
        target = QuantizedStreamingTarget(model, [name for name, _ in users], kind, mode, device)
        for name, _ in users:
            for attribute in attributes:
                targets[f"{name}.{attribute}"] = target
    return targets


def held_parameter_bytes(model: nn.Module) -> int:
    """Bytes of parameter and buffer storage the model actually holds (shared storage counted once)."""
    seen: set[tuple] = set()
    total = 0
    tensors = [t for _, t in model.named_parameters(remove_duplicate=False)]
    tensors += [t for _, t in model.named_buffers(remove_duplicate=False)]
    for tensor in tensors:
        if tensor.is_meta:
            key: tuple = ("meta", id(tensor))
            size = tensor.numel() * tensor.element_size()
        else:
            storage = tensor.untyped_storage()
            key = (str(tensor.device), storage.data_ptr())
            size = storage.nbytes()
        if key not in seen:
            seen.add(key)
            total += size
    return total


def quantized_modules(model: nn.Module) -> dict[str, str]:
    """``{module name: "int8 experts" | "int4 linear" ...}`` for every quantized module (for inspection)."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantizedExperts):
            found[name] = f"{module.gate_up_proj.mode} experts"
        elif isinstance(module, QuantizedLinear):
            found[name] = f"{module.qweight.mode} linear"
    return found


# -- selection --------------------------------------------------------------------------------------

_WEIGHT_ATTRIBUTES = {"experts": ("gate_up_proj", "down_proj"), "linear": ("weight",)}


def is_fused_experts(module: nn.Module) -> bool:
    """Whether ``module`` holds fused 3-D ``gate_up_proj`` / ``down_proj`` expert parameters."""
    gate_up = getattr(module, "gate_up_proj", None)
    down = getattr(module, "down_proj", None)
    return (isinstance(gate_up, nn.Parameter) and isinstance(down, nn.Parameter)
            and gate_up.dim() == 3 and down.dim() == 3)


def _target_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """``(name, module, kind)`` for every module to quantize, in registration order (shared ones repeat)."""
    embedding = _input_embedding_weight(model)
    for name, module in model.named_modules(remove_duplicate=False):
        if is_fused_experts(module):
            yield name, module, "experts"
        elif type(module) is nn.Linear:
            if module.weight is embedding or name.endswith("router.proj"):
                continue
            yield name, module, "linear"


def _input_embedding_weight(model: nn.Module) -> torch.Tensor | None:
    getter: Callable | None = getattr(model, "get_input_embeddings", None)
    if getter is None:
        return None
    try:
        embeddings = getter()
    except (AttributeError, NotImplementedError):
        return None
    return getattr(embeddings, "weight", None)


def _quantizable_shape(shape: tuple[int, ...], mode: str) -> bool:
    return mode == "int8" or int4_group_size(shape[-1]) is not None


def _unique_targets(model: nn.Module, targets: list[QuantizationTarget]) -> Iterator[QuantizationTarget]:
    seen: set[int] = set()
    for target in targets:
        weight = model.get_parameter(target.name)
        if id(weight) not in seen:
            seen.add(id(weight))
            yield target


def _replace_module(model: nn.Module, name: str, replacement: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, replacement)


# -- kernels ----------------------------------------------------------------------------------------

def _quantize_int8_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values = rows.float()
    scale = (values.abs().amax(dim=-1, keepdim=True) / INT8_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    scale = scale.to(rows.dtype)  # quantize against the scale as it will be stored
    codes = torch.round(values / scale.float()).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return codes, scale


def _quantize_int4_rows(rows: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    values = rows.float().unflatten(-1, (-1, group))  # [rows, groups, group]
    low = values.amin(dim=-1)
    high = values.amax(dim=-1)
    scale = ((high - low) / INT4_LEVELS).clamp_min(torch.finfo(torch.float32).tiny).to(rows.dtype)
    offset = low.to(rows.dtype)
    codes = torch.round((values - offset.float().unsqueeze(-1)) / scale.float().unsqueeze(-1))
    codes = codes.clamp_(0, INT4_LEVELS).to(torch.uint8).flatten(-2)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return packed, scale, offset
