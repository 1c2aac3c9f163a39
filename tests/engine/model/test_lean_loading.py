"""Loading as transformers does, without the vision tower, and int8/int4 one shard at a time.

Every check compares against transformers' own ``from_pretrained`` on a checkpoint saved with
``save_pretrained``: the real layer layout, a small vision tower, and (for the shard-by-shard path)
the weights split over many shards.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import DiffusionGemmaForBlockDiffusion

from diffgemma_engine import Engine, ModelLoadError, SamplingParams
from diffgemma_engine.model import tiny_random
from diffgemma_engine.model.checkpoint import VISION_MODULES
from diffgemma_engine.model.loader import load_model, text_only_class
from diffgemma_engine.model.planner import plan_memory
from diffgemma_engine.model.quantization import held_parameter_bytes, quantize_model, quantized_modules


@pytest.fixture(scope="module")
def sharded_checkpoint(tmp_path_factory) -> str:
    """The real layout with a tiny vision tower, saved in ten shards."""
    directory = tmp_path_factory.mktemp("sharded_real_layout")
    model = tiny_random.build_model(tiny_random.build_real_layout_config(canvas_length=16), seed=3)
    model.save_pretrained(directory, max_shard_size="200KB")
    tiny_random.build_tokenizer().save_pretrained(directory)
    return str(directory)


def tensors(model) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, persistent or not, by name."""
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return dict(named)


def assert_same_tensors(ours, reference) -> None:
    mine, theirs = tensors(ours), tensors(reference)
    assert mine.keys() == theirs.keys()
    for name, tensor in mine.items():
        assert tensor.dtype == theirs[name].dtype, name
        assert torch.equal(tensor, theirs[name]), name


def without_vision(model):
    return {name: tensor for name, tensor in tensors(model).items()
            if not any(f".{module}." in name for module in VISION_MODULES)}


def test_the_checkpoint_really_has_many_shards_and_a_vision_tower(sharded_checkpoint):
    index = json.loads(open(os.path.join(sharded_checkpoint, "model.safetensors.index.json")).read())
    assert len(set(index["weight_map"].values())) >= 5
    assert any(".vision_tower." in key for key in index["weight_map"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_unquantized_load_holds_exactly_what_from_pretrained_holds_minus_the_vision_tower(sharded_checkpoint, dtype):
    ours = load_model(sharded_checkpoint, "cpu", dtype).model
    reference = DiffusionGemmaForBlockDiffusion.from_pretrained(sharded_checkpoint, dtype=dtype)
    mine, theirs = tensors(ours), without_vision(reference)
    assert mine.keys() == theirs.keys()
    for name, tensor in mine.items():
        assert tensor.dtype == theirs[name].dtype, name
        assert torch.equal(tensor, theirs[name]), name


def test_rotary_tables_stay_fp32_in_a_bf16_load(sharded_checkpoint):
    """The bug this guards: ``model.to(bf16)`` rounded the rotary frequencies (1.4 rad off at position 1,000)."""
    for model in (load_model(sharded_checkpoint, "cpu", torch.bfloat16).model,
                  load_model("tiny-random", "cpu", torch.bfloat16).model):
        tables = {name: buffer for name, buffer in model.named_buffers() if name.endswith("inv_freq")}
        assert tables and all(buffer.dtype == torch.float32 for buffer in tables.values())
        assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_builtin_bf16_model_equals_its_saved_copy_loaded_by_transformers(tmp_path):
    tiny_random.build_model().save_pretrained(tmp_path)
    reference = text_only_class().from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert_same_tensors(load_model("tiny-random", "cpu", torch.bfloat16).model, reference)


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_shard_by_shard_quantization_equals_loading_whole_then_quantizing(sharded_checkpoint, mode, dtype):
    ours = load_model(sharded_checkpoint, "cpu", dtype, mode).model
    reference = text_only_class().from_pretrained(sharded_checkpoint, dtype=dtype)
    quantize_model(reference, mode, device="cpu")
    assert quantized_modules(ours) == quantized_modules(reference) != {}
    assert_same_tensors(ours, reference)
    shared = ours.model.encoder.language_model.layers[0].mlp.down_proj
    assert shared.qweight is ours.model.decoder.layers[0].mlp.down_proj.qweight  # encoder and decoder share codes


def test_a_checkpoint_missing_a_weight_is_a_load_error(tmp_path, sharded_checkpoint):
    import shutil

    from safetensors.torch import load_file, save_file

    directory = tmp_path / "broken"
    shutil.copytree(sharded_checkpoint, directory)
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    key = next(name for name in index["weight_map"] if name.endswith("self_attn.q_proj.weight"))
    shard = directory / index["weight_map"][key]
    kept = {name: tensor for name, tensor in load_file(shard).items() if name != key}
    save_file(kept, shard, metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="q_proj"):
        load_model(str(directory), "cpu", torch.float32, "int8")


def test_text_only_engine_places_no_vision_weights_and_the_planner_counts_what_is_placed(sharded_checkpoint):
    with Engine(model=sharded_checkpoint, device="cpu", dtype="float32") as engine:
        model = engine.loaded.model
        assert not any(any(f".{module}." in name for module in VISION_MODULES) for name, _ in model.named_parameters())
        assert all(getattr(model.model.encoder, module) is None for module in VISION_MODULES)
        result = engine.generate(prompt_token_ids=[2, 130, 131, 132], params=SamplingParams(max_new_tokens=16, seed=0))
        held = held_parameter_bytes(model) - sum(buffer.nbytes for buffer in model.buffers())
    assert result.usage.completion_tokens >= 1 or result.finish_reason == "stop"
    plan = plan_memory(sharded_checkpoint, dtype="float32")
    assert plan.weight_bytes == held
    assert plan.parameters.vision > 0
    assert plan.parameters.placed * 4 == held
    reference = DiffusionGemmaForBlockDiffusion.from_pretrained(sharded_checkpoint, dtype=torch.float32)
    assert plan.parameters.total == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_planned_quantized_bytes_equal_a_shard_by_shard_load(sharded_checkpoint, mode):
    model = load_model(sharded_checkpoint, "cpu", torch.bfloat16, mode).model
    held = held_parameter_bytes(model) - sum(buffer.nbytes for buffer in model.buffers())
    assert plan_memory(sharded_checkpoint, quantization=mode, dtype="bfloat16").weight_bytes == held
