"""Request semantics: results, stop strings and tokens, exact length, streaming, drafts, usage."""

from __future__ import annotations

import asyncio

import pytest

from diffgemma_engine import BlockEvent, DraftEvent, FinalEvent, SamplingParams


def collect(engine, prompt, params):
    events = list(engine.stream(prompt, params))
    blocks = [e for e in events if isinstance(e, BlockEvent)]
    drafts = [e for e in events if isinstance(e, DraftEvent)]
    final = events[-1]
    assert isinstance(final, FinalEvent)
    return blocks, drafts, final.result


@pytest.mark.parametrize("max_new_tokens", [1, 5, 31, 32, 33, 70])
def test_max_new_tokens_is_exact_even_mid_canvas(tiny_engine, max_new_tokens):
    result = tiny_engine.generate("x", SamplingParams(max_new_tokens=max_new_tokens, seed=0, ignore_eos=True,
                                                      max_denoising_steps=4))
    assert len(result.token_ids) == max_new_tokens
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == max_new_tokens


def test_checkpoint_max_new_tokens_never_caps_the_caller(tiny_engine):
    assert tiny_engine.loaded.defaults.max_new_tokens == 256
    result = tiny_engine.generate("x", SamplingParams(max_new_tokens=300, seed=0, ignore_eos=True,
                                                      max_denoising_steps=2))
    assert len(result.token_ids) == 300


def test_concatenated_block_deltas_equal_the_final_text(tiny_engine):
    blocks, _, result = collect(tiny_engine, "stream me", SamplingParams(max_new_tokens=100, seed=3,
                                                                         ignore_eos=True, max_denoising_steps=4))
    assert len(blocks) == 4
    assert "".join(b.text for b in blocks) == result.text
    assert tuple(t for b in blocks for t in b.token_ids) == result.token_ids
    assert [b.index for b in blocks] == [0, 1, 2, 3]


def test_stop_string_inside_a_block_cuts_text_before_it(tiny_engine):
    params = SamplingParams(max_new_tokens=64, seed=7, ignore_eos=True, max_denoising_steps=4)
    full = tiny_engine.generate("stop test", params).text
    stop = full[10:13]
    expected = full[: full.index(stop)]
    blocks, _, result = collect(tiny_engine, "stop test",
                                SamplingParams(max_new_tokens=64, seed=7, ignore_eos=True, max_denoising_steps=4,
                                               stop=(stop,)))
    assert result.text == expected
    assert result.finish_reason == "stop"
    assert result.stop_reason == stop
    assert "".join(b.text for b in blocks) == expected
    assert tiny_engine.tokenizer.decode(list(result.token_ids), skip_special_tokens=True) == expected


def test_stop_string_across_a_block_boundary(tiny_engine):
    params = SamplingParams(max_new_tokens=96, seed=8, ignore_eos=True, max_denoising_steps=4)
    reference_blocks, _, reference = collect(tiny_engine, "boundary", params)
    first_block_text = reference_blocks[0].text
    boundary = len(first_block_text)
    stop = reference.text[boundary - 2 : boundary + 2]
    assert len(stop) == 4 and reference.text.index(stop) >= boundary - 2 - 0
    expected = reference.text[: reference.text.index(stop)]
    blocks, _, result = collect(tiny_engine, "boundary",
                                SamplingParams(max_new_tokens=96, seed=8, ignore_eos=True, max_denoising_steps=4,
                                               stop=(stop,)))
    assert result.text == expected
    assert "".join(b.text for b in blocks) == expected


def test_stop_token_ids_end_the_response(tiny_engine):
    params = SamplingParams(max_new_tokens=64, seed=9, ignore_eos=True, max_denoising_steps=4)
    full = tiny_engine.generate("tokens", params)
    token = full.token_ids[5]
    cut = full.token_ids.index(token)
    result = tiny_engine.generate("tokens", SamplingParams(max_new_tokens=64, seed=9, ignore_eos=True,
                                                           max_denoising_steps=4, stop_token_ids=(token,)))
    assert result.token_ids == full.token_ids[:cut]
    assert result.finish_reason == "stop"
    assert result.stop_reason == token


def test_draft_events_are_opt_in_and_one_per_step(tiny_engine):
    _, drafts, result = collect(tiny_engine, "drafts", SamplingParams(max_new_tokens=32, seed=1, draft_events=True,
                                                                      max_denoising_steps=5, ignore_eos=True))
    assert len(drafts) == result.stats.denoising_steps == 5
    assert [d.step for d in drafts] == [1, 2, 3, 4, 5]
    _, no_drafts, _ = collect(tiny_engine, "drafts", SamplingParams(max_new_tokens=32, seed=1, max_denoising_steps=5))
    assert no_drafts == []


def test_usage_and_stats(tiny_engine):
    result = tiny_engine.generate("count me", SamplingParams(max_new_tokens=40, seed=2, ignore_eos=True,
                                                             max_denoising_steps=3))
    prompt_ids = tiny_engine.tokenizer("count me", add_special_tokens=False)["input_ids"]
    assert result.usage.prompt_tokens == len(prompt_ids) + 1  # + <bos>
    assert result.usage.total_tokens == result.usage.prompt_tokens + 40
    assert result.stats.blocks == 2
    assert result.stats.denoising_steps == 6
    assert result.stats.encoder_passes == 2  # prefill + one commit (the last block is never committed)
    assert result.stats.tokens_per_forward == pytest.approx(40 / 6)


def test_chat_messages_use_the_chat_template(tiny_engine):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    result = tiny_engine.generate(messages=messages, params=SamplingParams(max_new_tokens=8, seed=0))
    rendered = tiny_engine.render_chat(messages)
    assert rendered.startswith("<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n")
    assert rendered.endswith("<|turn>model\n")
    assert result.usage.prompt_tokens == len(tiny_engine.tokenizer(rendered, add_special_tokens=False)["input_ids"])


def test_prompt_token_ids_are_used_verbatim(tiny_engine):
    by_ids = tiny_engine.generate(prompt_token_ids=[2, 200, 201], params=SamplingParams(max_new_tokens=8, seed=0))
    assert by_ids.usage.prompt_tokens == 3


async def test_astream_and_agenerate_match_sync(tiny_engine):
    params = SamplingParams(max_new_tokens=48, seed=4, ignore_eos=True, max_denoising_steps=3)
    sync_result = tiny_engine.generate("async", params)
    events = [event async for event in tiny_engine.astream("async", params)]
    assert isinstance(events[-1], FinalEvent)
    assert events[-1].result.token_ids == sync_result.token_ids
    assert (await tiny_engine.agenerate("async", params)).text == sync_result.text


async def test_async_generation_does_not_block_the_event_loop(tiny_engine):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await tiny_engine.agenerate("tick", SamplingParams(max_new_tokens=96, seed=0, ignore_eos=True,
                                                       max_denoising_steps=16))
    task.cancel()
    assert ticks > 10
