"""HTTP streaming overhead: the same requests in-process and through ``diffgemma serve`` + :class:`RemoteEngine`.

For each model the script starts our OpenAI-compatible server in a child process (its own engine on the
same checkpoint, loopback only) and makes the same requests (same prompts, sampling parameters and seeds)
two ways:

* ``in-process``: ``engine.submit(...)`` on the shared engine of this process, consuming its stream;
* ``HTTP``: ``RemoteEngine.submit(...)`` against the server: SSE streaming with the ``openai`` client, one
  delta per committed block.

Two workloads: one streamed request (wall time and time to the first block), and ``--concurrency``
requests submitted together (wall time until all have finished). It checks that both paths return the
same text, then times them in interleaved repetitions (the order alternates every repetition) and prints a
Markdown table of medians and of the median per-repetition ratio HTTP / in-process. Server and client are
separate processes, each with ``--threads`` torch threads, so the client's event loop does not compete with
the server's engine for the GIL.

Usage: ``python benchmarks/bench_http.py [--models tiny-random cpu-512] [--repeats 7]``
(needs the ``server`` extra and ``openai``).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import torch

from diffgemma_adapters.remote import RemoteEngine
from diffgemma_engine import BlockEvent, FinalEvent, SamplingParams, get_engine

try:
    from ._models import SIZES, checkpoint
except ImportError:  # run as a script
    from _models import SIZES, checkpoint

QUESTIONS = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short note about rivers.",
    "List three uses of copper.",
    "Describe a quiet morning.",
    "What makes bread rise?",
    "Summarise the water cycle.",
    "Give advice for a first hike.",
    "Why do cats purr?",
]
SERVER_START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Timing:
    """One path's measurement of one workload: wall seconds and seconds to the first block."""

    wall: float
    first_block: float


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["tiny-random", "cpu-512"],
                        help=f"model names, checkpoint paths or benchmark sizes ({', '.join(SIZES)})")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each process")
    parser.add_argument("--serve", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.serve:
        _serve(args.serve, args.port)
        return

    rows = []
    for name in args.models:
        model = checkpoint(name) if name in SIZES else name
        rows += _bench_model(name, model, args)
    print(f"\n{args.repeats} interleaved repetitions, {args.max_new_tokens} new tokens per request, "
          f"{args.threads} torch thread(s) per process, server and client in separate processes on loopback.\n")
    print("| model | workload | same text | in-process median (s) | HTTP median (s) | median ratio HTTP / in-process "
          "| median overhead per request (ms) | first block in-process / HTTP (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


def _bench_model(name: str, model: str, args: argparse.Namespace) -> list[str]:
    engine = get_engine(model)
    port = _free_port()
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", model, "--port", str(port),
                               "--threads", str(args.threads)])
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", server)
        with RemoteEngine(f"http://127.0.0.1:{port}/v1", model=engine.model_name,
                          canvas_length=engine.canvas_length) as remote:
            return [
                _workload(name, "1 streamed request", engine, remote, args, count=1),
                _workload(name, f"{args.concurrency} concurrent requests", engine, remote, args,
                          count=args.concurrency),
            ]
    finally:
        server.terminate()
        server.wait(30)


def _workload(name: str, label: str, engine, remote: RemoteEngine, args: argparse.Namespace, count: int) -> str:
    requests = [([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                 SamplingParams(max_new_tokens=args.max_new_tokens, seed=i)) for i in range(count)]
    local_texts, remote_texts = _texts(engine, requests), _texts(remote, requests)  # warm-up and the check
    same = local_texts == remote_texts
    paths: dict[str, Callable[[], Timing]] = {"local": lambda: _run(engine, requests),
                                              "http": lambda: _run(remote, requests)}
    timings: dict[str, list[Timing]] = {"local": [], "http": []}
    for repeat in range(args.repeats):
        for path in (("local", "http") if repeat % 2 == 0 else ("http", "local")):
            timings[path].append(paths[path]())
    local = [t.wall for t in timings["local"]]
    http = [t.wall for t in timings["http"]]
    ratio = statistics.median(h / lo for h, lo in zip(http, local))
    overhead_ms = 1000 * statistics.median((h - lo) / count for h, lo in zip(http, local))
    first = (f"{1000 * statistics.median(t.first_block for t in timings['local']):.1f} / "
             f"{1000 * statistics.median(t.first_block for t in timings['http']):.1f}")
    return (f"| {name} | {label} | {'yes' if same else 'NO'} | {statistics.median(local):.4f} | "
            f"{statistics.median(http):.4f} | {ratio:.3f} | {overhead_ms:+.2f} | {first} |")


def _texts(engine, requests) -> list[str]:
    return [engine.submit(messages=messages, params=params).result().text for messages, params in requests]


def _run(engine, requests) -> Timing:
    """Submit every request at once, consume every stream; wall time and the first block of the first stream."""
    start = time.perf_counter()
    streams = [engine.submit(messages=messages, params=params) for messages, params in requests]
    first_block = None
    for stream in streams:
        for event in stream:
            if isinstance(event, BlockEvent) and first_block is None:
                first_block = time.perf_counter() - start
            elif isinstance(event, FinalEvent):
                break
    wall = time.perf_counter() - start
    return Timing(wall, first_block if first_block is not None else wall)


def _serve(model: str, port: int) -> None:
    import uvicorn

    from diffgemma_adapters.server import create_app

    app = create_app(get_engine(model))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _wait_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the benchmark server exited with status {server.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the benchmark server did not become healthy in {SERVER_START_TIMEOUT} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
