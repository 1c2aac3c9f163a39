"""The server under abuse, on a real loopback uvicorn where the transport matters: abandoned requests,
oversized chunked uploads, slow headers, label floods, shutdown and a dead engine.

No absolute wall times: hangs are bounded by generous deadlines, and latencies are compared as ratios
with the same request's latency on the idle server (each the minimum of a few tries, which load on a
shared machine only ever raises).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402

from adapter_support import free_port  # noqa: E402
from diffgemma_adapters.server import create_app, resolve_api_key  # noqa: E402
from diffgemma_adapters.server.runner import default_allowed_hosts, uvicorn_server, warn_if_exposed  # noqa: E402
from diffgemma_engine import Engine  # noqa: E402

LONG = {"messages": [{"role": "user", "content": "go"}], "max_tokens": 900, "max_denoising_steps": 256,
        "adaptive_stopping": False, "seed": 1}
"""A request that runs for many thousands of denoising steps on tiny-random."""
SMALL = {"prompt": "ok", "max_tokens": 2, "max_denoising_steps": 1, "seed": 0}


@pytest.fixture(scope="module")
def shared_engine():
    """The live shared tiny-random engine, looked up for this module: the session-wide fixture of the same
    name goes stale when another module shuts the shared engines down (``tests/adapters/test_cli.py`` does)."""
    from diffgemma_engine import get_engine

    return get_engine("tiny-random")


@contextmanager
def running(app, **settings) -> Iterator[tuple[str, int, object]]:
    port = free_port()
    server = uvicorn_server(app, "127.0.0.1", port, log_level="warning", **settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", port, server
    finally:
        server.should_exit = True
        thread.join(30)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def fastest(call: Callable[[], object], tries: int = 5) -> float:
    times = []
    for _ in range(tries):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def small_completion(base: str) -> Callable[[], None]:
    def call() -> None:
        response = httpx.post(f"{base}/v1/completions", json=SMALL, timeout=60)
        assert response.status_code == 200, response.text

    return call


def raw_request(port: int, body: bytes, path: str = "/v1/chat/completions") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body)
    return sock


def test_abandoned_non_streamed_requests_are_cancelled_and_bystanders_keep_their_latency(shared_engine):
    app = create_app(shared_engine)
    metrics = app.state.metrics
    with running(app) as (base, port, _):
        idle = fastest(small_completion(base))
        before = metrics.value("diffgemma_cancelled_total")
        abandoned = [raw_request(port, json.dumps({**LONG, "seed": seed}).encode()) for seed in (1, 2)]
        assert wait_for(lambda: shared_engine.stats().running >= 2), "the long requests never started"
        busy = fastest(small_completion(base), tries=1)  # shares every step with two long requests
        for sock in abandoned:
            sock.close()
        assert wait_for(lambda: shared_engine.stats().running == shared_engine.stats().waiting == 0), "abandoned requests kept running"
        assert metrics.value("diffgemma_cancelled_total") - before == 2
        after = fastest(small_completion(base))
    print(f"abandoned: bystander busy/idle {busy / idle:.2f}, after/idle {after / idle:.2f}")
    assert after / idle < 2, (idle, busy, after)


def _chunked_upload(port: int, total: int, chunk: int = 1 << 16) -> tuple[int, BaseException | None]:
    """Send up to ``total`` bytes as a chunked body; returns what was sent before the server cut it off."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sent = 0
    try:
        sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        framed = f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n"
        while sent < total:
            sock.sendall(framed)
            sent += chunk
    except OSError as error:  # reset / broken pipe: the server refused and closed the connection
        return sent, error
    finally:
        sock.close()
    return sent, None


def test_a_300_mb_chunked_upload_is_cut_off_at_the_limit_without_buffering(shared_engine):
    limit = 1_000_000
    app = create_app(shared_engine, max_request_bytes=limit)
    metrics = app.state.metrics
    with running(app) as (base, port, _):
        health = lambda: httpx.get(f"{base}/health", timeout=30)  # noqa: E731
        idle = fastest(health, tries=10)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        result: list[tuple[int, BaseException | None]] = []
        uploader = threading.Thread(target=lambda: result.append(_chunked_upload(port, 300_000_000)))
        uploader.start()
        during = fastest(health, tries=10)
        uploader.join(120)
        assert not uploader.is_alive(), "the upload was never cut off"
        rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        assert wait_for(lambda: metrics.value("diffgemma_requests_total", {"route": "/v1/completions",
                                                                             "method": "POST", "status": "413"}) == 1)
    sent, error = result[0]
    assert error is not None, "300 MB went through"
    assert sent < 300_000_000 / 10  # the server stopped reading near the limit (plus the sockets' buffers)
    assert rss_growth < 100 * 1024  # KiB: nothing like the upload was buffered
    print(f"chunked upload: sent {sent / 1e6:.1f} MB of 300, rss +{rss_growth / 1024:.0f} MiB, "
          f"health during/idle {during / idle:.2f}")
    assert during / idle < 2, (idle, during)


def test_a_connection_that_never_finishes_its_headers_is_closed(shared_engine):
    app = create_app(shared_engine)
    with running(app, header_timeout=0.5) as (base, port, _):
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)
        trickle = socket.create_connection(("127.0.0.1", port), timeout=30)
        trickle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(10):  # a byte at a time does not reset the deadline
            time.sleep(0.1)
            try:
                trickle.sendall(b"X")
            except OSError:
                break
        assert idle.recv(1) == b""  # closed by the server (recv would time out after 30 s otherwise)
        try:
            assert trickle.recv(1) == b""
        except ConnectionResetError:
            pass
        assert httpx.get(f"{base}/health", timeout=30).status_code == 200  # a prompt client is served


def test_the_metrics_stay_the_same_size_under_a_label_flood(shared_engine):
    app = create_app(shared_engine)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for number in range(20):
            client.get(f"/warmup/{number}")
        client.get("/metrics")  # its own label set exists from here on
        small = client.get("/metrics").text
        render_small = fastest(lambda: client.get("/metrics"), tries=10)
        for number in range(2_000):
            client.get(f'/x%22%7D%201%0Afake_{number}%201/{number}')
        large = client.get("/metrics").text
        render_large = fastest(lambda: client.get("/metrics"), tries=10)
    assert len(large.splitlines()) == len(small.splitlines())
    assert "fake_" not in large and "warmup" not in large
    assert 'route="other",status="404"' in large
    print(f"label flood: {len(small)} -> {len(large)} bytes, render large/small {render_large / render_small:.2f}")
    assert render_large / render_small < 2


def test_the_first_sigterm_cancels_in_flight_work_and_the_server_exits(shared_engine):
    app = create_app(shared_engine)
    answers: dict[str, object] = {}
    with running(app, shutdown_grace=30) as (base, port, server):
        def plain() -> None:
            answers["plain"] = httpx.post(f"{base}/v1/chat/completions", json=LONG, timeout=120)

        def streamed() -> None:
            with httpx.stream("POST", f"{base}/v1/chat/completions", json={**LONG, "stream": True},
                              timeout=120) as response:
                answers["stream"] = [line for line in response.iter_lines() if line]

        clients = [threading.Thread(target=plain), threading.Thread(target=streamed)]
        for thread in clients:
            thread.start()
        assert wait_for(lambda: shared_engine.stats().running >= 2)
        server.handle_exit(signal.SIGTERM, None)
        for thread in clients:
            thread.join(60)
        assert wait_for(lambda: shared_engine.stats().running == 0)
    plain_answer = answers["plain"]
    assert plain_answer.status_code == 503
    assert plain_answer.json()["error"]["code"] == "server_shutting_down"
    assert plain_answer.headers["retry-after"]
    lines = answers["stream"]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][len("data: "):])["error"]["code"] == "server_shutting_down"


def test_a_streamed_request_that_times_out_ends_with_an_error_event_and_done(shared_engine):
    app = create_app(shared_engine)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        response = client.post("/v1/chat/completions", json={**LONG, "stream": True, "timeout": 0.3})
    lines = [line for line in response.text.splitlines() if line]
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][len("data: "):])["error"]
    assert error["code"] == "request_timeout" and error["type"] == "timeout_error"


class _WorkerKilled(BaseException):
    """Raised inside the engine's worker thread, as a fatal error would be."""


def test_a_dead_engine_stops_the_server_instead_of_answering_503_forever():
    engine = Engine(model="tiny-random")
    died: list[bool] = []
    app = create_app(engine, on_engine_dead=lambda: died.append(True))

    def crash() -> None:
        raise _WorkerKilled("fatal")

    engine.core.step = crash
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            for _ in range(20):  # the engine may restart its worker a few times before giving up
                response = client.post("/v1/completions", json=SMALL)
                assert response.status_code in (500, 503), response.text
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}
                if not engine.is_alive:
                    break
            assert not engine.is_alive
            assert wait_for(lambda: bool(died), timeout=30)  # the watchdog noticed, with no request needed
            refused = client.post("/v1/completions", json=SMALL)
            assert refused.status_code == 503 and refused.headers["retry-after"]
            assert client.get("/health").status_code == 503
        assert died == [True]  # once
    finally:
        engine.shutdown()


def test_prompts_are_tokenized_off_the_event_loop(shared_engine):
    app = create_app(shared_engine)
    prompt = {"prompt": "hello world, this is a test. " * 30_000, "max_tokens": 2}  # ~900 kB, too long to run
    with running(app) as (base, port, _):
        solo = fastest(lambda: httpx.post(f"{base}/v1/completions", json=prompt, timeout=120), tries=1)
        health: list[float] = []
        senders = [threading.Thread(target=lambda: httpx.post(f"{base}/v1/completions", json=prompt, timeout=120))
                   for _ in range(4)]
        for sender in senders:
            sender.start()
        while any(sender.is_alive() for sender in senders):
            start = time.perf_counter()
            httpx.get(f"{base}/health", timeout=60)
            health.append(time.perf_counter() - start)
        for sender in senders:
            sender.join()
    print(f"tokenization: worst /health during 4 x 900 kB prompts / one prompt's time {max(health) / solo:.3f}")
    assert max(health) / solo < 1, (solo, max(health))


# -- keys, hosts and warnings ------------------------------------------------------------------------------


def test_the_api_key_comes_from_the_argument_a_file_or_the_environment(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert resolve_api_key("given", environ={"DIFFGEMMA_API_KEY": "env"}) == "given"
    assert resolve_api_key(None, key_file, environ={"DIFFGEMMA_API_KEY": "env"}) == "from-file"
    assert resolve_api_key(environ={"DIFFGEMMA_API_KEY": "env"}) == "env"
    assert resolve_api_key(environ={}) is None
    with pytest.raises(ValueError, match="api_key_file"):
        resolve_api_key("a", key_file, environ={})
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="empty"):
        resolve_api_key(None, tmp_path / "empty", environ={})
    with pytest.raises(ValueError, match="api_key_file"):
        resolve_api_key(None, tmp_path / "missing", environ={})


def test_allowed_hosts_default_to_loopback_on_a_loopback_bind():
    assert default_allowed_hosts("127.0.0.1", None) is None
    assert default_allowed_hosts("::1", None) is None
    assert default_allowed_hosts("0.0.0.0", None) == ["*"]
    assert default_allowed_hosts("0.0.0.0", ["api.example"]) == ["api.example"]


def test_a_public_bind_without_a_key_warns_loudly(caplog):
    with caplog.at_level(logging.WARNING, logger="diffgemma.server"):
        assert warn_if_exposed("0.0.0.0", None)
        assert not warn_if_exposed("0.0.0.0", "key")
        assert not warn_if_exposed("127.0.0.1", None)
    assert "WITHOUT an API key" in caplog.text


def test_observability_routes_can_require_the_key_and_never_show_paths_without_it(shared_engine, tmp_path):
    app = create_app(shared_engine, api_key="k", protect_observability=True)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/health").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 200
    open_app = create_app(shared_engine, api_key="k")
    with TestClient(open_app, base_url="http://127.0.0.1") as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert os.sep not in client.get("/metrics").text.replace("/v1/", "").replace("/health", "").replace(
            "/metrics", "")


def test_allowed_hosts_admit_the_named_host_and_its_origin(shared_engine):
    app = create_app(shared_engine, allowed_hosts=["api.example"])
    with TestClient(app, base_url="http://api.example") as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health", headers={"Origin": "https://api.example"}).status_code == 200
        assert client.get("/health", headers={"Origin": "https://evil.example"}).status_code == 403
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/health").status_code == 403


def test_serve_exits_with_status_3_when_its_engine_dies(monkeypatch):
    import diffgemma_engine
    from diffgemma_adapters.server import EXIT_ENGINE_DEAD, serve

    engine = Engine(model="tiny-random")
    monkeypatch.setattr(diffgemma_engine, "get_engine", lambda model=None, **settings: engine)
    port = free_port()
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(serve("tiny-random", port=port, shutdown_grace=5)),
                              daemon=True)
    thread.start()

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_for(healthy)

    def crash() -> None:
        raise _WorkerKilled("fatal")

    engine.core.step = crash
    for _ in range(20):
        if not engine.is_alive:
            break
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=SMALL, timeout=30)
        except httpx.HTTPError:
            break  # the server is already going down
    thread.join(60)
    assert not thread.is_alive()
    assert status == [EXIT_ENGINE_DEAD]


def test_the_serve_command_passes_its_flags(monkeypatch, tmp_path):
    import diffgemma_adapters.server as server_package
    from diffgemma_adapters.cli import main

    calls: list[dict] = []
    monkeypatch.setattr(server_package, "serve", lambda model, **kwargs: calls.append({"model": model, **kwargs}) or 3)
    monkeypatch.delenv("DIFFGEMMA_API_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text("secret\n")
    status = main(["serve", "--model", "tiny-random", "--api-key-file", str(key_file), "--allowed-host", "a.example",
                   "--allowed-host", "b.example", "--max-denoising-steps", "0", "--max-new-tokens", "512",
                   "--served-model-name", "house", "--protect-health-and-metrics", "--header-timeout", "3"])
    assert status == 3
    [call] = calls
    assert call["api_key"] == "secret" and call["allowed_hosts"] == ["a.example", "b.example"]
    assert call["max_denoising_steps"] is None and call["max_new_tokens"] == 512
    assert call["served_model_names"] == ["house"] and call["protect_observability"] is True
    assert call["header_timeout"] == 3.0
    monkeypatch.setenv("DIFFGEMMA_API_KEY", "from-env")
    main(["serve", "--model", "tiny-random"])
    assert calls[-1]["api_key"] == "from-env" and calls[-1]["max_denoising_steps"] == 256


class _Overloaded:
    """An engine whose wait queue is always full."""

    def __init__(self, engine: Engine) -> None:
        self.inner = engine

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def submit(self, *args, **kwargs):
        from diffgemma_engine import EngineOverloadedError

        raise EngineOverloadedError("16 requests in flight")


def test_a_full_queue_is_a_429_with_retry_after(shared_engine):
    app = create_app(_Overloaded(shared_engine))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        response = client.post("/v1/completions", json=SMALL)
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_the_app_serves_again_after_its_lifespan_restarts(shared_engine):
    app = create_app(shared_engine)
    for _ in range(2):
        with TestClient(app, base_url="http://127.0.0.1") as client:
            assert client.post("/v1/completions", json=SMALL).status_code == 200


def test_prompt_tokens_are_counted_by_source(shared_engine):
    app = create_app(shared_engine)
    metrics = app.state.metrics
    with TestClient(app, base_url="http://127.0.0.1") as client:
        body = client.post("/v1/completions", json=SMALL).json()
    usage = body["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert metrics.value("diffgemma_prompt_tokens_total", {"source": "cached"}) == cached
    assert metrics.value("diffgemma_prompt_tokens_total", {"source": "computed"}) == usage["prompt_tokens"] - cached


def test_a_connection_over_the_limit_gets_an_openai_shaped_503(shared_engine):
    app = create_app(shared_engine)
    with running(app, max_connections=2) as (base, port, _):
        held = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        time.sleep(0.2)  # let the server register both
        try:
            response = httpx.get(f"{base}/health", timeout=30)
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "too_many_connections"
        finally:
            for sock in held:
                sock.close()
        assert wait_for(lambda: httpx.get(f"{base}/health", timeout=30).status_code == 200, timeout=30)


def test_malformed_http_gets_an_openai_shaped_400(shared_engine):
    app = create_app(shared_engine)
    with running(app) as (base, port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400")
        assert json.loads(body)["error"]["code"] == "malformed_http"
        assert httpx.get(f"{base}/health", timeout=30).status_code == 200


def test_a_body_that_does_not_arrive_in_time_is_a_408(shared_engine):
    app = create_app(shared_engine, body_timeout=0.5)
    with running(app) as (base, port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\"".encode())
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert json.loads(body)["error"]["code"] == "body_timeout"


def test_a_token_cap_applies_when_the_request_leaves_max_tokens_to_a_larger_checkpoint_default(shared_engine):
    assert shared_engine.sampler_defaults.max_new_tokens > 3  # the checkpoint's own default is over the cap
    app = create_app(shared_engine, max_new_tokens=3)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        capped = client.post("/v1/completions", json={"model": "tiny-random", "prompt": "hello", "seed": 0})
        over = client.post("/v1/completions", json={"model": "tiny-random", "prompt": "hello", "max_tokens": 4})
    assert capped.status_code == 200 and capped.json()["usage"]["completion_tokens"] <= 3
    assert over.status_code == 400 and over.json()["error"]["code"] == "over_server_limit"
