"""Expert offload and placement: the engine's memory decisions before loading, and accelerate placing the
experts off the execution device while the model still computes the same thing.

A CPU-only machine cannot keep experts in host memory *apart from* the device (they are the same memory),
so the placement tests use accelerate's disk offload: the same hooks that stream host-memory experts to a
GPU stream disk-held experts to the CPU here.
"""

from __future__ import annotations

import copy

import pytest
import torch

from diffgemma_engine import Engine, InvalidRequestError, ModelLoadError
from diffgemma_engine.model import tiny_random
from diffgemma_engine.model.checkpoint import REAL_CHECKPOINT, drop_vision
from diffgemma_engine.model.loader import LoadedModel, load_model, sampler_defaults
from diffgemma_engine.loop.model_runner import DenoiseRow, ModelRunner
from diffgemma_engine.model.offload import (
    OffloadImpossibleError,
    dispatch_experts,
    expert_offload_plan,
    offloaded_modules,
)
from diffgemma_engine.model.placement import (
    DEFAULT_MAX_RUNNING,
    MAX_AUTO_RUNNING,
    DeviceMemoryError,
    plan_placement,
)
from diffgemma_engine.model.memory import GIB
from diffgemma_engine.model.planner import plan_memory, safe_max_running
from diffgemma_engine.model.quantization import is_fused_experts, quantize_model

pytest.importorskip("accelerate")

# -- placement decisions ----------------------------------------------------------------------------


def test_host_devices_default_to_a_fixed_batch_and_honour_the_caller():
    assert plan_placement("tiny-random", "cpu", torch.float32).max_running == DEFAULT_MAX_RUNNING
    assert plan_placement("tiny-random", "cpu", torch.float32, max_running=3).max_running == 3


def test_offload_on_a_host_device_is_a_typed_error():
    with pytest.raises(InvalidRequestError) as raised:
        plan_placement("tiny-random", "cpu", torch.float32, offload="experts")
    assert raised.value.field == "offload"
    with pytest.raises(InvalidRequestError) as raised:
        Engine(model="tiny-random", device="cpu", offload="experts")
    assert raised.value.field == "offload"
    with pytest.raises(InvalidRequestError) as raised:
        Engine(model="tiny-random", offload="layers")
    assert raised.value.field == "offload" and "experts" in str(raised.value)


def test_gpu_max_running_is_what_the_planner_says_fits():
    memory = 24 * GIB
    placement = plan_placement(REAL_CHECKPOINT, "cuda:0", torch.bfloat16, quantization="int4",
                               device_memory_bytes=memory)
    plan = plan_memory(REAL_CHECKPOINT, quantization="int4", card_sizes_gb=())
    assert placement.offload is None
    assert placement.max_running == min(safe_max_running(plan, memory), MAX_AUTO_RUNNING) >= 1
    # a small model on a big card is capped
    assert plan_placement("tiny-random", "cuda:0", torch.bfloat16, device_memory_bytes=80 * GIB).max_running == MAX_AUTO_RUNNING
    # the caller's number wins
    assert plan_placement(REAL_CHECKPOINT, "cuda:0", torch.bfloat16, quantization="int4", max_running=2,
                          device_memory_bytes=memory).max_running == 2


def test_weights_that_do_not_fit_fail_before_loading_and_name_the_ways_out():
    with pytest.raises(DeviceMemoryError) as raised:
        plan_placement(REAL_CHECKPOINT, "cuda:0", torch.bfloat16, device_memory_bytes=24 * GIB)
    message = str(raised.value)
    assert "bf16" in message and "int4" in message and "offload='experts'" in message
    assert isinstance(raised.value, ModelLoadError)


def test_expert_offload_places_the_real_model_on_a_24_gb_card_in_bf16():
    placement = plan_placement(REAL_CHECKPOINT, "cuda:0", torch.bfloat16, offload="experts",
                               device_memory_bytes=24 * GIB)
    assert placement.offload is not None and placement.max_running >= 1
    device_map = placement.offload.as_device_map()
    experts = [name for name, where in device_map.items() if where == "cpu"]
    assert experts and all(name.endswith("experts") for name in experts)
    assert placement.offload.gpu_weight_bytes < 24 * GIB < placement.offload.cpu_weight_bytes
    with pytest.raises(OffloadImpossibleError):
        plan_placement(REAL_CHECKPOINT, "cuda:0", torch.bfloat16, offload="experts", device_memory_bytes=4 * GIB)


# -- placing a loaded model -------------------------------------------------------------------------


def _runner(model: torch.nn.Module) -> ModelRunner:
    config = model.config
    text = config.text_config
    loaded = LoadedModel(name="offload-test", model=model, tokenizer=None,
                         defaults=sampler_defaults(model.generation_config), canvas_length=int(config.canvas_length),
                         vocab_size=int(text.vocab_size), context_length=int(text.max_position_embeddings))  # fmt: skip
    return ModelRunner(loaded)


@pytest.mark.parametrize("quantization", [None, "int4"])
def test_offloaded_experts_leave_the_device_and_the_outputs_unchanged(tmp_path, quantization):
    model = drop_vision(tiny_random.build_model()).eval()  # what the engine loads: text only
    if quantization:
        quantize_model(model, quantization)
    reference = copy.deepcopy(model)
    plan = expert_offload_plan("tiny-random", 8 * GIB, quantization=quantization, dtype="float32")
    dispatch_experts(model, plan.as_device_map(), "cpu", expert_location="disk", offload_dir=str(tmp_path))

    expert_names = [name for name, module in reference.named_modules() if is_fused_experts(module)
                    or type(module).__name__ == "QuantizedExperts"]  # fmt: skip
    assert expert_names and sorted(offloaded_modules(model)) == sorted(expert_names)
    for name in expert_names:  # not resident: accelerate loads them for each forward
        assert all(tensor.is_meta for tensor in model.get_submodule(name).parameters())
    assert not any(tensor.is_meta for name, tensor in model.named_parameters()
                   if not any(name.startswith(f"{expert}.") for expert in expert_names))  # fmt: skip

    generator = torch.Generator().manual_seed(0)
    prompt = [2, *torch.randint(5, 200, (11,), generator=generator).tolist()]
    canvas = torch.randint(0, int(model.config.text_config.vocab_size), (int(model.config.canvas_length),),
                           generator=generator)  # fmt: skip
    outputs = []
    for runner in (_runner(reference), _runner(model)):
        prefix = runner.prefill(prompt)
        outputs.append(runner.denoise([DenoiseRow(prefix, canvas, None)])[0])
    assert torch.equal(outputs[0], outputs[1])

    ids = torch.tensor([prompt])
    torch.manual_seed(0)
    expected = reference.generate(ids, max_new_tokens=16).sequences
    torch.manual_seed(0)
    assert torch.equal(model.generate(ids, max_new_tokens=16).sequences, expected)


def test_the_loader_places_a_model_by_an_offload_plan():
    plan = expert_offload_plan("tiny-random", 8 * GIB, quantization="int8", dtype="float32")
    loaded = load_model("tiny-random", "cpu", torch.float32, "int8", offload=plan)
    runner = ModelRunner(loaded)
    prefix = runner.prefill([2, 10, 11, 12])
    canvas = torch.zeros(loaded.canvas_length, dtype=torch.long)
    logits = runner.denoise([DenoiseRow(prefix, canvas, None)])[0]
    assert logits.shape == (loaded.canvas_length, loaded.vocab_size) and torch.isfinite(logits).all()


def test_dispatch_rejects_an_unknown_expert_location():
    model = tiny_random.build_model().eval()
    plan = expert_offload_plan("tiny-random", 8 * GIB, dtype="float32")
    with pytest.raises(InvalidRequestError) as raised:
        dispatch_experts(model, plan.as_device_map(), "cpu", expert_location="gpu")
    assert raised.value.field == "expert_location"


def test_an_engine_reports_the_batch_it_chose():
    engine = Engine(model="tiny-random", device="cpu")
    try:
        assert engine.max_running == DEFAULT_MAX_RUNNING and engine.config.max_running is None
        assert engine.placement.reason == "host default"
    finally:
        engine.shutdown()
