"""The OpenAI-compatible server, started for real on a loopback port and driven by the official client."""

from __future__ import annotations

import asyncio
import time

import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from adapter_support import serving  # noqa: E402
from diffgemma_adapters.server import create_app  # noqa: E402
from diffgemma_adapters.server.metrics import ServerMetrics  # noqa: E402
from diffgemma_engine import Engine, SamplingParams  # noqa: E402
from diffgemma_engine.api.stats import EngineStats  # noqa: E402

KEY = "test-key"


@pytest.fixture(scope="module")
def server():
    engine = Engine(model="tiny-random")
    app = create_app(engine, api_key=KEY, max_request_bytes=20_000)
    with serving(app) as base:
        yield base, engine, app
    engine.shutdown()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key=KEY, max_retries=0, timeout=60)


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny-random"]
    assert httpx.get(f"{server[0]}/health").json() == {"status": "ok"}  # no model id without the key
    assert httpx.get(f"{server[0]}/health", headers={"Authorization": f"Bearer {KEY}"}).json() == {
        "status": "ok", "model": "tiny-random"}


def test_chat_completion_matches_the_engine(server, client):
    engine = server[1]
    response = client.chat.completions.create(
        model="tiny-random", messages=[{"role": "user", "content": "hello"}], max_tokens=24, seed=3,
        extra_body={"max_denoising_steps": 6})
    direct = engine.generate(messages=[{"role": "user", "content": "hello"}],
                             params=SamplingParams(max_new_tokens=24, seed=3, max_denoising_steps=6))
    assert response.choices[0].message.content == direct.text
    assert response.usage.completion_tokens == direct.usage.completion_tokens
    assert response.usage.prompt_tokens == direct.usage.prompt_tokens
    assert response.choices[0].finish_reason == direct.finish_reason


def test_streaming_deltas_concatenate_to_the_full_response(client):
    kwargs = dict(model="tiny-random", messages=[{"role": "user", "content": "stream"}], max_tokens=70, seed=4,
                  extra_body={"max_denoising_steps": 4})
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_text_completion_and_stop(client):
    full = client.completions.create(model="tiny-random", prompt="abc", max_tokens=60, seed=5,
                                     extra_body={"max_denoising_steps": 3}).choices[0].text
    stop = full[5:8]
    cut = client.completions.create(model="tiny-random", prompt="abc", max_tokens=60, seed=5, stop=[stop],
                                    extra_body={"max_denoising_steps": 3}).choices[0]
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


def test_concurrent_requests(client):
    async def run():
        aclient = openai.AsyncOpenAI(base_url=client.base_url, api_key=KEY, max_retries=0, timeout=60)
        calls = [aclient.chat.completions.create(model="tiny-random", messages=[{"role": "user", "content": f"c{i}"}],
                                                 max_tokens=16, seed=i, extra_body={"max_denoising_steps": 4})
                 for i in range(8)]
        return await asyncio.gather(*calls)

    responses = asyncio.run(run())
    assert len({r.id for r in responses}) == 8
    assert all(r.usage.completion_tokens <= 16 for r in responses)


def test_auth_is_required(server):
    bad = openai.OpenAI(base_url=f"{server[0]}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert httpx.get(f"{server[0]}/v1/models").status_code == 401


@pytest.mark.parametrize(
    ("body", "param"),
    [({"messages": []}, "messages"),
     ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
     ({"messages": [{"role": "user", "content": "x"}], "t_min": 0.9, "t_max": 0.5}, "t_max"),
     ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
     ({"messages": [{"role": "user", "content": "x"}], "bogus": 1}, "bogus"),
     ({"messages": [{"role": "user", "content": "x"}], "validators": ["nope.missing"]}, "validators")],
)
def test_malformed_requests_get_openai_shaped_400s_and_the_server_keeps_serving(server, client, body, param):
    response = httpx.post(f"{server[0]}/v1/chat/completions", json={"model": "tiny-random", **body},
                          headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert client.chat.completions.create(model="tiny-random", messages=[{"role": "user", "content": "ok"}],
                                          max_tokens=4, seed=0, extra_body={"max_denoising_steps": 2},
                                          ).usage.completion_tokens <= 4


def test_oversized_and_non_json_bodies(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    big = httpx.post(f"{server[0]}/v1/completions", headers=headers,
                     json={"model": "tiny-random", "prompt": "x" * 50_000})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    garbage = httpx.post(f"{server[0]}/v1/completions", headers=headers, content=b"{not json")
    assert garbage.status_code == 400 and garbage.json()["error"]["type"] == "invalid_request_error"


def test_a_disconnecting_client_cancels_its_generation(server):
    base, engine, app = server
    metrics = app.state.metrics
    before = metrics.value("diffgemma_cancelled_total")
    with httpx.stream("POST", f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "tiny-random", "messages": [{"role": "user", "content": "long"}],
                            "max_tokens": 600, "max_denoising_steps": 200, "adaptive_stopping": False,
                            "stream": True, "seed": 0}, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content"' in line and '"content": ""' not in line:
                break
    deadline = time.monotonic() + 20
    while ((metrics.value("diffgemma_cancelled_total") == before or engine.stats().running)
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert metrics.value("diffgemma_cancelled_total") > before
    assert not engine.stats().running


def test_metrics_move(server, client):
    text = httpx.get(f"{server[0]}/metrics").text
    before = _metric(text, "diffgemma_completion_tokens_total")
    client.chat.completions.create(model="tiny-random", messages=[{"role": "user", "content": "m"}], max_tokens=8,
                                   seed=0, extra_body={"max_denoising_steps": 2})
    after_text = httpx.get(f"{server[0]}/metrics").text
    assert _metric(after_text, "diffgemma_completion_tokens_total") > before
    assert _metric(after_text, "diffgemma_denoising_steps_total") > 0
    assert 'diffgemma_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in after_text
    assert "diffgemma_queue_depth" in after_text



def test_load_gauges_read_the_engines_public_stats():
    class StubEngine:  # the two EngineClient members the gauges read
        is_alive = False

        def stats(self) -> EngineStats:
            return EngineStats(running=3, waiting=2, max_running=4)

    metrics = ServerMetrics(StubEngine())
    assert (metrics.value("diffgemma_running"), metrics.value("diffgemma_queue_depth")) == (3, 2)
    assert metrics.value("diffgemma_engine_alive") == 0

def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")


def test_a_stream_is_counted_once(server, client):
    metrics = server[2].state.metrics
    labels = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    before = metrics.value("diffgemma_requests_total", labels)
    chunks = list(client.chat.completions.create(model="tiny-random", messages=[{"role": "user", "content": "s"}],
                                                 max_tokens=40, seed=1, stream=True,
                                                 extra_body={"max_denoising_steps": 2}))
    assert len(chunks) > 2
    deadline = time.monotonic() + 10  # the count lands when the response is complete
    while metrics.value("diffgemma_requests_total", labels) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert metrics.value("diffgemma_requests_total", labels) - before == 1
