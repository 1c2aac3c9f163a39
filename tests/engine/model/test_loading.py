"""Loading real checkpoints from a directory, and reading their generation config."""

from __future__ import annotations

import json

from diffgemma_engine import Engine, SamplingParams
from diffgemma_engine.model.tiny_random import EOS_TOKEN_IDS


def test_saved_checkpoint_has_the_real_generation_config_format(checkpoint_factory):
    directory = checkpoint_factory(canvas_length=16)
    config = json.loads(open(f"{directory}/generation_config.json").read())
    assert config["sampler_config"] == {"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.1}
    assert config["eos_token_id"] == [1, 106, 50] == EOS_TOKEN_IDS
    assert config["max_denoising_steps"] == 48
    assert (config["t_min"], config["t_max"]) == (0.4, 0.8)


def test_directory_checkpoint_loads_and_generates(checkpoint_factory):
    directory = checkpoint_factory(canvas_length=16)
    with Engine(model=directory) as engine:
        assert engine.canvas_length == 16
        assert engine.loaded.defaults.eos_token_ids == (1, 106, 50)
        result = engine.generate(messages=[{"role": "user", "content": "hi"}],
                                 params=SamplingParams(max_new_tokens=20, seed=0))
    assert result.usage.completion_tokens <= 20
    assert result.finish_reason in ("stop", "length")


def test_generation_config_values_become_the_request_defaults(tmp_path, checkpoint_factory):
    import shutil

    directory = tmp_path / "custom"
    shutil.copytree(checkpoint_factory(canvas_length=16), directory)
    path = directory / "generation_config.json"
    config = json.loads(path.read_text())
    config.update(max_denoising_steps=3, t_min=0.1, t_max=0.5, sampler_config={
        "_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.25})
    path.write_text(json.dumps(config))
    with Engine(model=str(directory)) as engine:
        defaults = engine.loaded.defaults
        result = engine.generate("x", SamplingParams(max_new_tokens=16, seed=0, adaptive_stopping=False,
                                                     ignore_eos=True))
    assert (defaults.max_denoising_steps, defaults.t_min, defaults.t_max, defaults.entropy_bound) == (3, 0.1, 0.5, 0.25)
    assert result.stats.denoising_steps == 3


def test_only_safetensors_are_written_and_read(checkpoint_factory):
    import os

    files = os.listdir(checkpoint_factory(canvas_length=16))
    assert "model.safetensors" in files
    assert not any(name.endswith(".bin") for name in files)


def test_the_shipped_demo_checkpoint_loads_through_its_directory_and_generates():
    """The embedded default model: a trained checkpoint in the real format, loaded by its directory."""
    from diffgemma_engine.model.registry import DEFAULT_MODEL, DEMO, DEMO_DIRECTORY

    assert DEFAULT_MODEL == DEMO
    config = json.loads((DEMO_DIRECTORY / "generation_config.json").read_text())
    assert config["eos_token_id"] == [1, 106, 50] and "sampler_config" in config
    assert (DEMO_DIRECTORY / "model.safetensors").stat().st_size <= 30 * 1024 * 1024
    with Engine(model=str(DEMO_DIRECTORY)) as engine:
        result = engine.generate(
            messages=[{"role": "user", "content": "Make a JSON record for a person named Ada aged 36 who lives in Oslo."}],
            params=SamplingParams(max_new_tokens=64, seed=0),
        )
    # a trained model answers and ends its turn (random weights would run to the length cap)
    assert result.finish_reason == "stop"
    assert result.text.strip()


def test_a_checkpoint_then_tiny_random_load_in_one_process_with_transformers_kernel_choices(checkpoint_factory):
    # transformers decides which experts kernel a class may use from the source of the module defining it;
    # the text-only class must answer like DiffusionGemmaForBlockDiffusion, whichever model loads first
    import subprocess
    import sys
    import textwrap

    directory = checkpoint_factory()
    script = textwrap.dedent(f"""
        import torch
        from transformers import DiffusionGemmaForBlockDiffusion
        from diffgemma_engine import Engine, SamplingParams
        first = Engine(model={directory!r})
        second = Engine(model="tiny-random")
        reference = DiffusionGemmaForBlockDiffusion.from_pretrained({directory!r}, dtype=torch.float32)
        assert first.loaded.model.config._experts_implementation == reference.config._experts_implementation
        print(second.generate("hi", SamplingParams(max_new_tokens=4, seed=0)).usage.completion_tokens)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "4"
