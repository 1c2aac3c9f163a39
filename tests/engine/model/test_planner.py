"""The memory planner: exact parameter counts from the meta device, per-layer KV and sampler sizes checked
against a real instantiated model, quantized sizes checked against real quantization, the real
checkpoint's dimensions against an analytic count and its published size, card verdicts, and errors."""

from __future__ import annotations

import json

import pytest
import torch

from diffgemma_engine import InvalidRequestError, ModelLoadError
from diffgemma_engine.model import tiny_random
from diffgemma_engine.tools.benchmark import SIZES
from diffgemma_engine.model.loader import load_model
from diffgemma_engine.loop.model_runner import DenoiseRow, ModelRunner
from diffgemma_engine.model.checkpoint import REAL_CHECKPOINT, REAL_CHECKPOINT_CONFIG, load_plan_config
from diffgemma_engine.model.memory import (
    GIB,
    HEADROOM_FIXED_BYTES,
    HEADROOM_FRACTION,
    KV_COPIES_WHEN_BATCHED,
    SAMPLER_EXTRA_LOGITS_BUFFERS,
)
from diffgemma_engine.model.planner import plan_memory, safe_max_running, usable_bytes
from diffgemma_engine.model.sizes import count_parameters, kv_cache_size, meta_model, weight_memory
from diffgemma_engine.model.offload import OffloadImpossibleError, expert_offload_plan
from diffgemma_adapters.cli import main as diffgemma
from diffgemma_engine.tools.plan_report import render_plan
from diffgemma_engine.model.quantization import held_parameter_bytes, quantize_model

PUBLISHED_BF16_CHECKPOINT_BYTES = 51_647_701_024  # the published safetensors' total size


def scaled_down_config():
    """The real layout scaled down: 6 layers in the 5 sliding : 1 full pattern, a distinct head width and
    fewer KV heads on the full layer (``per_layer_config``), experts plus the shared MLP."""
    return tiny_random.build_config(
        canvas_length=16, hidden_size=96, intermediate_size=80, num_hidden_layers=6, num_attention_heads=4,
        num_key_value_heads=2, num_global_key_value_heads=1, head_dim=16, global_head_dim=32,
        sliding_window=24, num_experts=6, top_k_experts=2, moe_intermediate_size=40,
        layer_types=["sliding_attention"] * 5 + ["full_attention"],
    )


def mid_config():
    settings = dict(SIZES["cpu-512"])
    return tiny_random.build_config(canvas_length=settings.pop("canvas_length"), **settings)


def analytic_text_counts(text: dict) -> dict[str, int]:
    """Parameter counts of the text model from the config alone, by the architecture's formulas."""
    hidden, layers = text["hidden_size"], text["num_hidden_layers"]
    heads, kv, head = text["num_attention_heads"], text["num_key_value_heads"], text["head_dim"]
    global_kv, global_head = text["num_global_key_value_heads"], text["global_head_dim"]
    experts, expert_width, mlp = text["num_experts"], text["moe_intermediate_size"], text["intermediate_size"]
    full_layers = layers // 6  # the 5 sliding : 1 full pattern
    sliding_layers = layers - full_layers
    sliding_attention = hidden * heads * head * 2 + 2 * hidden * kv * head  # q, o + k, v
    full_attention = hidden * heads * global_head * 2 + hidden * global_kv * global_head  # q, o + k (= v)
    per_layer_linear = 3 * hidden * mlp + hidden * experts  # shared MLP + router projection
    return {
        "experts": layers * experts * 3 * expert_width * hidden,
        "linear": sliding_layers * sliding_attention + full_layers * full_attention + layers * per_layer_linear
        + 3 * hidden * mlp,  # the decoder's self-conditioning MLP
        "embeddings": text["vocab_size"] * hidden,
    }


# -- counts -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_config", [tiny_random.build_config, scaled_down_config, mid_config])
def test_meta_device_counts_equal_a_really_instantiated_model(make_config):
    config = make_config()
    real = tiny_random.build_model(config, seed=0)
    on_meta = meta_model(config)
    assert all(p.is_meta for p in on_meta.parameters())
    counts = count_parameters(on_meta)
    assert counts == count_parameters(real)
    assert counts.total == sum(p.numel() for p in real.parameters())
    assert counts.experts > 0 and counts.linear > 0 and counts.embeddings > 0 and counts.vision > 0


def test_scaled_down_text_counts_equal_the_analytic_formulas():
    config = scaled_down_config()
    counts = count_parameters(tiny_random.build_model(config))
    text = dict(config.text_config.to_dict(), num_global_key_value_heads=1, global_head_dim=32)
    expected = analytic_text_counts(text)
    assert counts.experts == expected["experts"]
    assert counts.linear == expected["linear"]
    assert counts.embeddings == expected["embeddings"]


def test_real_checkpoint_counts_agree_with_the_analytic_count_and_the_published_size():
    counts = count_parameters(meta_model(load_plan_config(REAL_CHECKPOINT)[0]))
    expected = analytic_text_counts(REAL_CHECKPOINT_CONFIG["text_config"])
    for group in ("experts", "linear", "embeddings"):
        assert getattr(counts, group) == pytest.approx(expected[group], rel=0.05), group
    assert counts.experts == 30 * 128 * 3 * 704 * 2816  # 22.8 B: the bulk of the model
    # the whole model in bf16 is the published checkpoint's size (its vision tower included)
    assert counts.total * 2 == pytest.approx(PUBLISHED_BF16_CHECKPOINT_BYTES, rel=0.001)
    assert counts.experts / counts.total > 0.85


# -- KV cache and sampler, against a real model -----------------------------------------------------

@pytest.mark.parametrize("prompt_length", [10, 100])
def test_kv_bytes_agree_with_a_real_cache(prompt_length):
    loaded = load_model("tiny-random", "cpu", torch.float32)  # sliding window 64: 100 tokens are capped
    runner = ModelRunner(loaded)
    prefix = runner.prefill([2] + [130 + i % 200 for i in range(prompt_length - 1)])
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in prefix.cache.layers)
    planned = kv_cache_size(loaded.model.config.text_config, prompt_length, element_bytes=4).bytes_per_request
    assert planned == pytest.approx(held, rel=0.05)
    assert planned >= held  # the plan rounds up (a sliding layer keeps window - 1 tokens)


def test_full_layers_use_their_own_head_width_and_kv_heads():
    config = load_plan_config(REAL_CHECKPOINT)[0]
    kv = kv_cache_size(config.text_config, 8192)
    sliding_per_token = 2 * 8 * 256 * 2
    full_per_token = 2 * 2 * 512 * 2
    assert (kv.sliding_layers, kv.full_layers, kv.sliding_window) == (25, 5, 1024)
    assert kv.bytes_per_token == 25 * sliding_per_token + 5 * full_per_token
    assert kv.bytes_per_request == 25 * sliding_per_token * 1024 + 5 * full_per_token * 8192
    short = kv_cache_size(config.text_config, 512)  # below the window nothing is capped
    assert short.bytes_per_request == short.bytes_per_token * 512


def test_sampler_logits_size_is_a_real_decoder_step():
    loaded = load_model("tiny-random", "cpu", torch.float32)
    runner = ModelRunner(loaded)
    prefix = runner.prefill([2, 130, 131])
    logits = runner.denoise([DenoiseRow(prefix, runner.new_canvas(torch.Generator().manual_seed(0)), None)])
    plan = plan_memory("tiny-random", context=64)
    assert logits[0].dtype == torch.float32
    assert plan.sampler.logits_bytes == logits[0].nbytes
    assert plan.sampler.buffers_per_row == pytest.approx(2 + SAMPLER_EXTRA_LOGITS_BUFFERS)
    real = plan_memory(REAL_CHECKPOINT)
    assert real.sampler.logits_bytes == 256 * 262_144 * 4  # 268 MB


# -- quantized sizes, against real quantization ----------------------------------------------------

@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_quantized_weight_sizes_equal_what_quantization_really_holds(mode, dtype):
    config = mid_config()
    model = tiny_random.build_model(config, seed=0).to(getattr(torch, dtype))
    quantize_model(model, mode)
    held = held_parameter_bytes(model) - sum(b.numel() * b.element_size() for b in model.buffers())
    planned = weight_memory(meta_model(config), mode, dtype)
    assert planned.total_bytes == held


def test_weight_modes_shrink_in_order_and_int4_is_at_least_3_5x_smaller_on_the_real_model():
    plan = plan_memory(REAL_CHECKPOINT)
    by_mode = {option.mode: option.total_bytes for option in plan.weight_options}
    assert by_mode["fp32"] == 2 * by_mode["bf16"]
    assert by_mode["bf16"] > by_mode["int8"] > by_mode["int4"]
    int4 = next(option for option in plan.weight_options if option.mode == "int4")
    int4_targets = int4.quantized_bytes
    floating_elements = int4.floating_bytes // 2
    assert (plan.parameters.total - floating_elements) * 2 / int4_targets >= 3.5


# -- verdicts ---------------------------------------------------------------------------------------

def test_a_24_gb_card_fits_the_real_model_in_int4_but_not_in_bf16():
    int4 = plan_memory(REAL_CHECKPOINT, quantization="int4", context=8192, max_batch=1)
    bf16 = plan_memory(REAL_CHECKPOINT, context=8192, max_batch=1)
    card = {v.name: v for v in int4.verdicts}
    assert card["24 GB"].fits and card["24 GB"].max_concurrent >= 1
    assert not card["12 GB"].fits and card["12 GB"].max_concurrent == 0  # 12.9 B weights at 4 bits
    assert 12 * GIB < int4.weight_bytes < 16 * GIB
    assert not {v.name: v for v in bf16.verdicts}["24 GB"].fits
    assert {v.name: v for v in bf16.verdicts}["80 GB"].fits
    # the engine places everything but the vision tower (1.07 GiB of the published checkpoint)
    assert bf16.weight_bytes == bf16.parameters.placed * 2
    assert bf16.parameters.total * 2 == pytest.approx(PUBLISHED_BF16_CHECKPOINT_BYTES, rel=0.001)


def test_totals_add_up():
    plan = plan_memory(REAL_CHECKPOINT, quantization="int8", max_batch=3, context=4096)
    per_request = plan.kv.bytes_per_request * KV_COPIES_WHEN_BATCHED + plan.sampler.bytes_per_row
    assert plan.kv_copies == KV_COPIES_WHEN_BATCHED and plan.per_request_bytes == per_request
    assert plan.total_bytes == plan.weight_bytes + 3 * per_request
    assert usable_bytes(plan.required_bytes) >= plan.total_bytes
    assert usable_bytes(plan.required_bytes - 2 * GIB) < plan.total_bytes
    alone = plan_memory(REAL_CHECKPOINT, quantization="int8", max_batch=1, context=4096)
    assert alone.kv_copies == 1  # a lone request reads its own cache


def test_safe_max_running_inverts_the_budget():
    plan = plan_memory(REAL_CHECKPOINT, quantization="int4", context=8192)
    batched = plan.kv.bytes_per_request * KV_COPIES_WHEN_BATCHED + plan.sampler.bytes_per_row
    for rows in (2, 5, 9):
        needed = plan.weight_bytes + rows * batched
        memory = int((needed + HEADROOM_FIXED_BYTES) / (1 - HEADROOM_FRACTION)) + 16
        assert safe_max_running(plan, memory) == rows
        assert safe_max_running(plan, memory - int(batched)) == rows - 1
    assert safe_max_running(plan, 8 * GIB) == 0  # the weights alone do not fit
    sizes = [safe_max_running(plan, gb * GIB) for gb in (16, 24, 32, 48, 80)]
    assert sizes == sorted(sizes)


# -- sources, rendering, command line ---------------------------------------------------------------

def test_a_directory_a_config_path_and_a_dict_give_the_same_plan(tmp_path):
    config = scaled_down_config()
    config.save_pretrained(tmp_path)
    as_dict = json.loads((tmp_path / "config.json").read_text())
    plans = [plan_memory(source, quantization="int4", context=100, max_batch=2)
             for source in (str(tmp_path), str(tmp_path / "config.json"), as_dict, config)]
    assert len({(p.parameters, p.weight_bytes, p.kv, p.total_bytes) for p in plans}) == 1


def test_render_plan_shows_the_groups_modes_and_verdicts():
    text = render_plan(plan_memory(REAL_CHECKPOINT, quantization="int4", max_batch=4, context=8192))
    for needle in ("experts (fused 3-D)", "22.84 B", "int4 (+bf16 scales)", "KV cache", "sampler buffers",
                   "--max-batch 4", "24 GB", "80 GB", "window 1024"):
        assert needle in text, needle


def test_command_line_prints_the_plan_and_json(capsys):
    assert diffgemma(["plan", "--model", REAL_CHECKPOINT, "--quantization", "int4", "--max-batch", "4", "--context", "8192"]) == 0
    assert "24 GB" in capsys.readouterr().out
    assert diffgemma(["plan", "--model", "tiny-random", "--json", "--cards", "8,24"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in data["verdicts"]] == ["8 GB", "24 GB"]
    assert diffgemma(["plan", "--model", "tiny-random", "--context", "0"]) == 1
    assert "context" in capsys.readouterr().err


# -- errors -----------------------------------------------------------------------------------------

def test_a_non_diffusiongemma_config_is_a_load_error_naming_it(tmp_path):
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}
    with pytest.raises(ModelLoadError, match="LlamaForCausalLM"):
        plan_memory(llama)
    (tmp_path / "config.json").write_text(json.dumps(llama))
    with pytest.raises(ModelLoadError, match="LlamaForCausalLM"):
        plan_memory(str(tmp_path))
    with pytest.raises(ModelLoadError, match="model_type='gemma4_text'"):
        plan_memory({"model_type": "gemma4_text"})


def test_missing_or_unreadable_sources_are_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        plan_memory(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not readable JSON"):
        plan_memory(str(tmp_path / "config.json"))
    with pytest.raises(ModelLoadError, match="neither"):
        plan_memory("./no/such/thing.json")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"context": 0}, "context"),
        ({"context": 10**9}, "context"),
        ({"context": 12.5}, "context"),
        ({"max_batch": 0}, "max_batch"),
        ({"max_batch": True}, "max_batch"),
        ({"dtype": "int3"}, "dtype"),
        ({"quantization": "int3"}, "quantization"),
        ({"card_sizes_gb": (24, -1)}, "card_sizes_gb"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(InvalidRequestError) as info:
        plan_memory("tiny-random", **kwargs)
    assert info.value.field == field and isinstance(info.value, ValueError)


@pytest.mark.parametrize("memory", [0, -5, 2.5, True, "24GB"])
def test_safe_max_running_rejects_bad_memory(memory):
    plan = plan_memory("tiny-random")
    with pytest.raises(InvalidRequestError) as info:
        safe_max_running(plan, memory)
    assert info.value.field == "device_memory_bytes"


# -- expert offload ---------------------------------------------------------------------------------

def test_offload_map_puts_every_expert_on_the_cpu_and_covers_every_tensor_once():
    config = scaled_down_config()
    offload = expert_offload_plan(config, 8 * GIB, quantization="int4", context=100, device=1)
    device_map = offload.as_device_map()
    model = meta_model(config, text_only=True)  # the engine never places the vision tower
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    names += [n for n, _ in model.named_buffers(remove_duplicate=False)]
    for name in names:
        owners = [key for key in device_map if name == key or name.startswith(key + ".")]
        assert len(owners) == 1, (name, owners)
        expected = "cpu" if name.endswith(("experts.gate_up_proj", "experts.down_proj")) else 1
        assert device_map[owners[0]] == expected, name
    # the encoder's and the decoder's copies of the tied experts are both in host memory
    assert device_map["model.encoder.language_model.layers.0.experts"] == "cpu"
    assert device_map["model.decoder.layers.0.experts"] == "cpu"
    assert device_map["lm_head"] == 1 and device_map["model.decoder.self_conditioning"] == 1
    assert not any("vision" in key for key in device_map)


def test_offload_bytes_partition_the_plan_and_fit_an_8_gb_card_for_the_real_model():
    offload = expert_offload_plan(REAL_CHECKPOINT, 8 * GIB, quantization="int4", context=4096)
    plan = plan_memory(REAL_CHECKPOINT, quantization="int4", context=4096)
    assert offload.gpu_weight_bytes + offload.cpu_weight_bytes == plan.weight_bytes
    assert offload.cpu_weight_bytes / plan.weight_bytes > 0.75  # the experts are most of the bytes
    assert offload.gpu_weight_bytes + offload.gpu_request_bytes <= offload.gpu_usable_bytes
    assert offload.as_max_memory()[0] == offload.gpu_usable_bytes - offload.gpu_request_bytes
    assert not {v.name: v for v in plan.verdicts}["8 GB"].fits  # without offload it does not


def test_offload_that_cannot_fit_says_why():
    with pytest.raises(OffloadImpossibleError, match="even with the experts in host memory") as info:
        expert_offload_plan(REAL_CHECKPOINT, 4 * GIB, context=8192, max_batch=4)
    assert isinstance(info.value, ModelLoadError)
    with pytest.raises(OffloadImpossibleError, match="host memory"):
        expert_offload_plan(REAL_CHECKPOINT, 24 * GIB, quantization="int4", host_memory_bytes=8 * GIB)
    with pytest.raises(InvalidRequestError) as bad:
        expert_offload_plan(REAL_CHECKPOINT, -1)
    assert bad.value.field == "device_memory_bytes"


def test_the_built_in_names_plan_their_own_configs():
    from diffgemma_engine.model.registry import DEMO_DIRECTORY

    demo = json.loads((DEMO_DIRECTORY / "config.json").read_text())["text_config"]
    config = load_plan_config("demo")[0].text_config
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (
        demo["hidden_size"], demo["num_hidden_layers"], demo["vocab_size"])
    assert load_plan_config("tiny-random")[0].text_config.hidden_size == tiny_random.build_config().text_config.hidden_size
