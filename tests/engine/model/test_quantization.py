"""Weight-only int8 / int4 quantization: what gets quantized (fused experts included), memory, correctness
of the dequantize-on-the-fly forwards, generation after quantization (directly and through the engine),
and typed errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffgemma_engine import DiffGemmaError, Engine, InvalidRequestError, ModelLoadError, SamplingParams
from diffgemma_engine.model import tiny_random
from diffgemma_engine.tools.benchmark import SIZES
from diffgemma_engine.model.quantization import (
    QuantizationUnavailableError,
    QuantizedExperts,
    QuantizedLinear,
    QuantizedTensor,
    held_parameter_bytes,
    int4_group_size,
    quantization_targets,
    quantize_model,
    quantized_modules,
    validate_mode,
)
from diffgemma_engine.model.tiny_random import EOS_TOKEN_IDS

MODES = ("int8", "int4")
PROMPT = [2, 105, 245, 243, 229, 242, 138, 232, 233, 106, 138, 105, 237, 239, 228, 229, 236, 138]


def mid_config():
    """hidden 512, 4 layers (3 sliding + 1 full), 8 experts top-2: the CPU benchmark size."""
    settings = dict(SIZES["cpu-512"])
    canvas = settings.pop("canvas_length")
    return tiny_random.build_config(canvas_length=canvas, **settings)


CONFIGS = {"tiny": tiny_random.build_config, "mid": mid_config}


def unique_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def generate_tokens(model, seed: int, max_new_tokens: int, steps: int = 4) -> list[int]:
    torch.manual_seed(seed)
    out = model.generate(torch.tensor([PROMPT]), max_new_tokens=max_new_tokens, max_denoising_steps=steps)
    return out.sequences[0, len(PROMPT):len(PROMPT) + max_new_tokens].tolist()  # it finishes whole canvases


# -- what gets quantized ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", sorted(CONFIGS))
def test_every_expert_tensor_and_linear_is_quantized_and_generation_runs(size, mode):
    config = CONFIGS[size]()
    model = tiny_random.build_model(config, seed=1)
    text = config.text_config
    report = quantize_model(model, mode)

    # the fused 3-D expert tensors: two per layer, shared by encoder and decoder, so counted once
    assert report.expert_tensors == 2 * text.num_hidden_layers
    assert not [name for name, _ in model.named_parameters() if name.endswith(("gate_up_proj", "down_proj"))]
    # the largest floating tensor left is the (tied) embedding; scales are far smaller than any weight
    floating = [p for p in model.parameters() if p.is_floating_point()]
    assert max(floating, key=lambda p: p.numel()) is model.get_input_embeddings().weight
    # no plain nn.Linear is left but the routers and the lm_head tied to the embedding
    left = sorted(name for name, module in model.named_modules() if type(module) is nn.Linear)
    assert all(name.endswith("router.proj") or name == "lm_head" for name in left), left
    assert model.lm_head.weight is model.get_input_embeddings().weight
    # encoder and decoder still share one copy of every quantized tensor
    encoder = model.model.encoder.language_model.layers
    decoder = model.model.decoder.layers
    for enc, dec in zip(encoder, decoder):
        assert isinstance(dec.experts, QuantizedExperts)
        assert enc.experts.gate_up_proj is dec.experts.gate_up_proj
        assert enc.self_attn.q_proj.qweight is dec.self_attn.q_proj.qweight
    assert report.skipped == ()
    # almost every weight is now an integer code: experts dominate the model, as in the real one
    assert report.quantized_elements / unique_parameters(tiny_random.build_model(config)) > 0.6

    tokens = generate_tokens(model, seed=0, max_new_tokens=config.canvas_length, steps=3)
    assert len(tokens) == config.canvas_length  # one whole canvas denoised and committed
    assert all(0 <= token < text.vocab_size for token in tokens)


def test_targets_listed_without_quantizing_match_what_quantize_model_does():
    config = mid_config()
    listed = quantization_targets(tiny_random.build_model(config), "int4")
    model = tiny_random.build_model(config)
    report = quantize_model(model, "int4")
    assert sum(1 for t in listed if t.kind == "experts") == report.expert_tensors
    assert sum(1 for t in listed if t.kind == "linear") == report.linear_weights
    total = 0
    for target in listed:
        count = 1
        for size in target.shape:
            count *= size
        total += count
    assert total == report.quantized_elements
    assert set(quantized_modules(model).values()) == {"int4 experts", "int4 linear"}


# -- memory -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", sorted(CONFIGS))
def test_memory_ratios_on_expert_and_linear_weights(size):
    ratios = {}
    for base in (torch.float32, torch.bfloat16):
        for mode in MODES:
            model = tiny_random.build_model(CONFIGS[size](), seed=2).to(base)
            before = held_parameter_bytes(model)
            report = quantize_model(model, mode)
            assert report.held_bytes_before == before
            assert report.held_bytes_after == held_parameter_bytes(model) < before
            # the model really dropped the floating weights: what it holds shrank by what the targets shrank
            assert before - report.held_bytes_after == report.target_bytes_before - report.target_bytes_after
            ratios[base, mode] = report.target_ratio
    assert ratios[torch.bfloat16, "int4"] >= 3.5
    assert ratios[torch.float32, "int4"] >= 6.0
    assert ratios[torch.bfloat16, "int8"] >= 1.9
    assert ratios[torch.float32, "int8"] >= 3.7


def test_the_full_precision_weights_are_released():
    import gc
    import weakref

    model = tiny_random.build_model()
    originals = [weakref.ref(model.model.decoder.layers[0].experts.gate_up_proj),
                 weakref.ref(model.model.decoder.layers[1].self_attn.q_proj.weight),
                 weakref.ref(model.model.decoder.self_conditioning.up_proj.weight)]
    report = quantize_model(model, "int4")
    gc.collect()
    assert report is not None and all(ref() is None for ref in originals)


def test_held_bytes_count_shared_storage_once():
    model = tiny_random.build_model()
    dense = sum(p.numel() * p.element_size() for p in model.parameters())
    dense += sum(b.numel() * b.element_size() for b in model.buffers())
    assert held_parameter_bytes(model) == dense  # parameters() already deduplicates the tied weights
    naive = sum(p.numel() * p.element_size() for _, p in model.named_parameters(remove_duplicate=False))
    assert naive > dense  # encoder and decoder names point at the same tensors


# -- numerics ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_error_is_at_most_half_a_step_per_row(dtype):
    weight = (torch.randn(3, 40, 96, generator=torch.Generator().manual_seed(0)) * 0.05).to(dtype)
    q = QuantizedTensor.quantize(weight, "int8")
    assert q.codes.dtype == torch.int8 and q.codes.shape == weight.shape and q.scale.shape == (3, 40, 1)
    error = (q.dequantize(dtype=torch.float32) - weight.float()).abs()
    step = q.scale.float()
    rounding = weight.float().abs() * 2**-8 if dtype == torch.bfloat16 else step * 1e-3  # code x scale in bf16
    assert torch.all(error <= step / 2 + rounding)
    assert int(q.codes.abs().max()) == 127  # the largest weight of each row maps to the end of the range


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_error_is_at_most_half_a_step_per_group(dtype):
    weight = (torch.randn(2, 24, 192, generator=torch.Generator().manual_seed(1)) * 0.05).to(dtype)
    q = QuantizedTensor.quantize(weight, "int4")
    assert q.group_size == 64  # 192 is not a multiple of 128
    assert q.codes.dtype == torch.uint8 and q.codes.shape == (2, 24, 96)  # two codes per byte
    assert q.scale.shape == (2, 24, 3) and q.offset.shape == (2, 24, 3)
    restored = q.dequantize(dtype=torch.float32)
    error = (restored - weight.float()).abs().unflatten(-1, (3, 64))
    step = q.scale.float().unsqueeze(-1)
    # half a step, plus the offset's own rounding when it is stored in bf16
    slack = 1e-3 * step if dtype == torch.float32 else step * 0.02 + weight.float().abs().max() * 2**-8
    assert torch.all(error <= step / 2 + slack)
    # every group uses both ends of the 16 levels
    codes = torch.stack((q.codes & 0xF, q.codes >> 4), dim=-1).reshape(2, 24, 192).unflatten(-1, (3, 64))
    assert codes.min() == 0 and codes.max() == 15


def test_int4_group_sizes_follow_the_input_width():
    assert int4_group_size(2816) == 128  # the real hidden size
    assert int4_group_size(704) == 64  # the real expert width
    assert int4_group_size(2112) == 64  # the real shared-MLP width
    assert int4_group_size(48) == 16
    assert int4_group_size(7) is None


@pytest.mark.parametrize("mode", MODES)
def test_quantized_experts_forward_equals_the_eager_forward_on_the_dequantized_weights(mode):
    config = mid_config()
    model = tiny_random.build_model(config, seed=3)
    model.config._experts_implementation = "eager"
    original = model.model.decoder.layers[1].experts
    gate_up = QuantizedTensor.quantize(original.gate_up_proj.detach(), mode)
    down = QuantizedTensor.quantize(original.down_proj.detach(), mode)
    quantized = QuantizedExperts(original, gate_up, down)
    with torch.no_grad():
        original.gate_up_proj.copy_(gate_up.dequantize())
        original.down_proj.copy_(down.dequantize())

    generator = torch.Generator().manual_seed(4)
    tokens, experts, top_k = 37, config.text_config.num_experts, config.text_config.top_k_experts
    hidden = torch.randn(tokens, config.text_config.hidden_size, generator=generator)
    scores = torch.rand(tokens, experts, generator=generator)
    weights, index = torch.topk(scores, top_k, dim=-1)
    with torch.no_grad():
        expected = original(hidden, index, weights)
        actual = quantized(hidden, index, weights)
    assert torch.allclose(actual, expected, atol=1e-5, rtol=1e-4)
    assert expected.abs().max() > 0


@pytest.mark.parametrize("mode", MODES)
def test_quantized_linear_equals_a_linear_with_the_dequantized_weight(mode):
    linear = nn.Linear(256, 48, bias=True)
    quantized = QuantizedLinear(QuantizedTensor.quantize(linear.weight.detach(), mode), linear.bias)
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(5))
    expected = nn.functional.linear(x, quantized.qweight.dequantize(), linear.bias)
    assert torch.allclose(quantized(x), expected, atol=1e-6)


def test_int4_costs_more_output_fidelity_than_int8_on_the_mid_size_model():
    config = mid_config()
    generator = torch.Generator().manual_seed(6)
    prompt = torch.randint(5, config.text_config.vocab_size, (1, 24), generator=generator)
    canvas = torch.randint(0, config.text_config.vocab_size, (1, config.canvas_length), generator=generator)
    logits = {}
    for mode in (None,) + MODES:
        model = tiny_random.build_model(config, seed=0)
        quantize_model(model, mode)
        with torch.inference_mode():
            logits[mode] = model(input_ids=prompt, decoder_input_ids=canvas).logits.log_softmax(-1)

    def kl(mode):
        return float((logits[None].exp() * (logits[None] - logits[mode])).sum(-1).mean())

    assert 0 < kl("int8") < kl("int4")


# -- through the engine -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_engine_on_a_quantized_model_matches_model_generate_on_it(mode):
    engine = Engine(model="tiny-random")
    try:
        report = quantize_model(engine.loaded.model, mode)
        assert report.expert_tensors > 0
        result = engine.generate(prompt_token_ids=PROMPT,
                                 params=SamplingParams(max_new_tokens=40, seed=7, max_denoising_steps=5))
        expected = []
        for token in generate_tokens(engine.loaded.model, seed=7, max_new_tokens=40, steps=5):
            if token in EOS_TOKEN_IDS:
                break
            expected.append(token)
        assert list(result.token_ids) == expected
        assert result.finish_reason in ("stop", "length")
    finally:
        engine.shutdown()


def test_quantized_model_survives_a_dtype_move_and_stays_tied():
    model = tiny_random.build_model(seed=8)
    quantize_model(model, "int4", device="cpu")
    model = model.to(torch.bfloat16)
    layer = model.model.decoder.layers[0]
    assert layer.experts.gate_up_proj.codes.dtype == torch.uint8
    assert layer.experts.gate_up_proj.scale.dtype == torch.bfloat16
    assert layer.experts.gate_up_proj is model.model.encoder.language_model.layers[0].experts.gate_up_proj
    tokens = generate_tokens(model, seed=0, max_new_tokens=16, steps=2)
    assert len(tokens) == 16


# -- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["int3", "INT8", "", 4, "fp8"])
def test_unknown_mode_names_the_quantization_field(mode):
    model = tiny_random.build_model()
    with pytest.raises(InvalidRequestError) as info:
        quantize_model(model, mode)
    assert info.value.field == "quantization"
    assert isinstance(info.value, ValueError)
    assert type(model.model.decoder.layers[0].experts) is not QuantizedExperts  # nothing was touched


def test_no_mode_leaves_the_model_alone():
    model = tiny_random.build_model()
    before = held_parameter_bytes(model)
    assert quantize_model(model, None) is None
    assert validate_mode(None) is None
    assert held_parameter_bytes(model) == before and not quantized_modules(model)


def test_quantizing_twice_is_refused():
    model = tiny_random.build_model()
    quantize_model(model, "int8")
    with pytest.raises(QuantizationUnavailableError, match="already quantized") as info:
        quantize_model(model, "int4")
    assert isinstance(info.value, ModelLoadError) and isinstance(info.value, DiffGemmaError)


def test_a_model_without_weights_cannot_be_quantized():
    from transformers import DiffusionGemmaForBlockDiffusion

    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion(tiny_random.build_config())
    with pytest.raises(QuantizationUnavailableError, match="meta"):
        quantize_model(model, "int4")
    assert len(quantization_targets(model, "int4")) > 0  # though its targets can be listed


def test_a_model_with_nothing_to_quantize_is_a_load_error():
    with pytest.raises(ModelLoadError, match="nothing|no linear"):
        quantize_model(nn.Sequential(nn.LayerNorm(8)), "int8")


def test_int4_skips_a_linear_with_an_odd_input_width_and_says_so():
    model = nn.Sequential(nn.Linear(7, 4), nn.Linear(4, 6))
    report = quantize_model(model, "int4")
    assert report.linear_weights == 1
    assert report.skipped == ("0.weight: input width 7 cannot be split into int4 groups",)
    assert type(model[0]) is nn.Linear and isinstance(model[1], QuantizedLinear)
    assert model(torch.randn(2, 7)).shape == (2, 6)


def test_int4_leaves_experts_whole_when_one_of_their_tensors_cannot_be_grouped():
    model = tiny_random.build_model(tiny_random.build_config(moe_intermediate_size=33), seed=9)
    report = quantize_model(model, "int4")
    assert report.expert_tensors == 0 and report.linear_weights > 0
    assert len(report.skipped) == 2  # one line per layer; encoder and decoder share the experts
    assert all("width 33 of down_proj cannot be split" in line for line in report.skipped)
    assert not isinstance(model.model.decoder.layers[0].experts, QuantizedExperts)
    model.config._experts_implementation = "eager"  # transformers' grouped_mm needs 16-byte aligned widths
    assert len(generate_tokens(model, seed=0, max_new_tokens=8, steps=2)) == 8
