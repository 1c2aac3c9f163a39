"""Parity in the dtypes users run: the engine in bf16 (and fp16, fp32) reproduces transformers' own
``DiffusionGemmaForBlockDiffusion.from_pretrained(path, dtype=...).generate()`` token for token, on a
checkpoint with the published layer layout (sliding-window layers plus full-attention layers whose keys
and values share one projection), for short prompts and for prompts far longer than the sliding window.
"""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import DiffusionGemmaForBlockDiffusion

from diffgemma_engine import Engine, SamplingParams
from diffgemma_engine.model import tiny_random
from diffgemma_engine.model.tiny_random import EOS_TOKEN_IDS

CANVAS = 16
WINDOW = 64  # tiny_random.build_real_layout_config's sliding window

CASES = [
    # dtype, prompt tokens, max_new_tokens, seed
    pytest.param("bfloat16", 40, 64, 0, id="bf16-short"),
    pytest.param("bfloat16", 1500, 64, 0, id="bf16-1500-tokens"),
    pytest.param("bfloat16", 300, 64, 5, id="bf16-300-tokens"),
    pytest.param("float16", 40, 48, 1, id="fp16-short"),
    pytest.param("float32", 1500, 48, 2, id="fp32-1500-tokens"),
]


@pytest.fixture(scope="module")
def real_layout_checkpoint(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("real_layout")
    config = tiny_random.build_real_layout_config(canvas_length=CANVAS)
    tiny_random.build_model(config, seed=3).save_pretrained(directory)
    tiny_random.build_tokenizer().save_pretrained(directory)
    return str(directory)


def prompt_of(length: int) -> list[int]:
    generator = torch.Generator().manual_seed(length)
    return [2] + torch.randint(tiny_random.BYTE_OFFSET, tiny_random.VOCAB_SIZE, (length - 1,),
                               generator=generator).tolist()


def reference_tokens(directory: str, dtype: str, prompt: list[int], max_new_tokens: int, seed: int) -> list[int]:
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(directory, dtype=getattr(torch, dtype))
    torch.manual_seed(seed)
    sequence = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens).sequences[0, len(prompt):]
    tokens = []
    for token in sequence.tolist()[:max_new_tokens]:
        if token in EOS_TOKEN_IDS:
            break
        tokens.append(token)
    return tokens


@functools.cache
def engine_result(directory: str, dtype: str, prompt_length: int, max_new_tokens: int, seed: int):
    with Engine(model=directory, device="cpu", dtype=dtype) as engine:
        return engine.generate(prompt_token_ids=prompt_of(prompt_length),
                               params=SamplingParams(max_new_tokens=max_new_tokens, seed=seed))


@pytest.mark.parametrize(("dtype", "prompt_length", "max_new_tokens", "seed"), CASES)
def test_engine_tokens_equal_transformers_generate_in_the_same_dtype(real_layout_checkpoint, dtype, prompt_length,
                                                                     max_new_tokens, seed):  # fmt: skip
    expected = reference_tokens(real_layout_checkpoint, dtype, prompt_of(prompt_length), max_new_tokens, seed)
    result = engine_result(real_layout_checkpoint, dtype, prompt_length, max_new_tokens, seed)
    assert list(result.token_ids) == expected
    assert result.finish_reason == ("length" if len(expected) == max_new_tokens else "stop")


def test_the_cases_cover_long_prompts_several_canvases_and_eos_inside_a_canvas(real_layout_checkpoint):
    """Guards the suite above: what it claims to cover, it covers."""
    results = {case.id: (case.values, engine_result(real_layout_checkpoint, *case.values)) for case in CASES}
    bf16 = [(values, result) for values, result in results.values() if values[0] == "bfloat16"]
    assert any(values[1] >= 1500 > WINDOW for values, _ in bf16)
    assert any(result.stats.blocks >= 3 for _, result in bf16)  # several canvases, committed and re-encoded
    assert any(result.finish_reason == "stop" and len(result.token_ids) % CANVAS != 0 and result.token_ids
               for _, result in bf16)  # an EOS inside a canvas, after some tokens


def test_the_engine_runs_in_the_dtype_it_was_asked_for(real_layout_checkpoint):
    with Engine(model=real_layout_checkpoint, device="cpu", dtype="bfloat16") as engine:
        model = engine.loaded.model
        assert model.model.decoder.embed_tokens.weight.dtype == torch.bfloat16
        assert model.model.decoder.rotary_emb.full_attention_inv_freq.dtype == torch.float32
