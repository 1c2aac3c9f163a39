"""GenerationResult.summary(): the one plain-data view of a result."""

from __future__ import annotations

import json

from diffgemma_engine import Engine, SamplingParams


def test_summary_is_json_ready_and_reports_the_result_it_came_from():
    with Engine(model="tiny-random") as engine:
        result = engine.generate("hello", SamplingParams(max_new_tokens=6, seed=3, validators=("default",)))
    summary = result.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert (summary["request_id"], summary["finish_reason"], summary["seed"]) == (
        result.request_id, result.finish_reason, result.seed)
    usage = summary["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] == result.usage.total_tokens
    assert usage["completion_tokens"] == len(result.token_ids)
    assert summary["validation"]["blocks"] == len(result.validation.blocks) >= 1
    assert summary["validation"]["passed"] is result.validation.passed
    assert summary["stats"]["denoising_steps"] == result.stats.denoising_steps > 0
    assert "text" not in summary
