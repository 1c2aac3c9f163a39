"""The ``diffgemma`` command: generate, chat and inspect plugins from the shell."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import diffgemma_engine
from diffgemma_engine import BlockEvent, DiffGemmaError, DraftEvent, FinalEvent, SamplingParams, __version__
from diffgemma_engine.api.errors import InvalidRequestError
from diffgemma_engine.config import OFFLOAD_MODES, QUANTIZATION_MODES
from diffgemma_engine.model.checkpoint import REAL_CHECKPOINT
from diffgemma_engine.model.memory import CARD_SIZES_GB, DEFAULT_CONTEXT, DTYPE_BYTES
from diffgemma_engine.model.registry import BUILTIN_MODELS, DEFAULT_MODEL

# Nothing torch-backed is imported at module level: `diffgemma --help`, `diffgemma plugins` and argument errors
# run without torch. The engine (diffgemma_engine.get_engine, loaded on first use), the planner and the
# benchmark are imported by the commands that run them.


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except DiffGemmaError as error:
        print(f"diffgemma: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffgemma", description="Run DiffusionGemma block diffusion locally.")
    parser.add_argument("--version", action="version", version=f"diffgemma {__version__}")
    commands = parser.add_subparsers(dest="command")

    generate = commands.add_parser("generate", help="generate a response to one prompt")
    generate.add_argument("prompt")
    _add_request_options(generate)
    generate.add_argument("--stream", action="store_true", help="print each block as soon as it is committed")
    generate.add_argument("--show-denoising", action="store_true",
                          help="redraw the canvas draft after every denoising step")
    generate.add_argument("--raw", action="store_true", help="send the prompt as plain text, without the chat template")
    generate.add_argument("--stats", action="store_true", help="print usage and timing to stderr")
    generate.set_defaults(handler=_generate)

    chat = commands.add_parser("chat", help="an interactive chat in the terminal")
    _add_request_options(chat)
    chat.add_argument("--system", default=None, help="a system prompt")
    chat.set_defaults(handler=_chat)

    plugins = commands.add_parser("plugins", help="list installed plugins, their hooks and validators")
    plugins.set_defaults(handler=_plugins)

    plan = commands.add_parser("plan", help="will a checkpoint fit a GPU? weights, KV cache and sampler memory")
    _add_plan_options(plan)
    plan.set_defaults(handler=_plan)

    serve = commands.add_parser("serve", help="an OpenAI-compatible HTTP server over the shared engine")
    _add_engine_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    _add_serve_options(serve)
    serve.set_defaults(handler=_serve)

    bench = commands.add_parser("bench", help="throughput: our engine vs model.generate() at several concurrencies")
    bench.add_argument("--model", default=None,
                       help="a checkpoint directory (default: a random-weight model of --size, built locally)")
    bench.add_argument("--size", default="cpu-512", help="random-weight benchmark size when no --model is given")
    bench.add_argument("--device", default="auto")
    bench.add_argument("--concurrency", default="1,4,8,16", help="comma-separated concurrencies")
    bench.add_argument("--max-new-tokens", type=int, default=128)
    bench.add_argument("--repeats", type=int, default=1, help="runs per system and concurrency (median)")
    bench.add_argument("--markdown", default=None,
                       help="also write the table into this Markdown file's bench section (e.g. docs/benchmarks.md)")
    bench.add_argument("--plot", default=None, help="also draw tokens/s vs concurrency into this PNG (needs matplotlib)")
    bench.set_defaults(handler=_bench)
    return parser


def _add_plan_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--model", default=REAL_CHECKPOINT,
                         help=f"checkpoint directory, config.json path, hub id or tiny-random "
                              f"(default: {REAL_CHECKPOINT}, whose dimensions ship with diffgemma)")
    command.add_argument("--quantization", default="none", choices=("none",) + QUANTIZATION_MODES,
                         help="weight-only quantization to plan for")
    command.add_argument("--dtype", default="bfloat16", choices=tuple(DTYPE_BYTES),
                         help="compute dtype (unquantized weights, scales, KV cache)")
    command.add_argument("--max-batch", type=int, default=1, help="requests denoised together")
    command.add_argument("--context", type=int, default=None,
                         help=f"tokens each request keeps in its KV cache, prompt + output (default: "
                              f"{DEFAULT_CONTEXT} or the model's window if shorter)")
    command.add_argument("--cards", default=",".join(str(size) for size in CARD_SIZES_GB),
                         help="comma-separated card sizes in GB")
    command.add_argument("--json", action="store_true", help="print the plan as JSON")


def _plan(args: argparse.Namespace) -> int:
    from diffgemma_engine.model.planner import plan_memory
    from diffgemma_engine.tools.plan_report import render_plan

    try:
        cards = tuple(float(size) for size in str(args.cards).split(",") if size.strip())
    except ValueError as error:
        raise InvalidRequestError("cards", f"must be comma-separated numbers: {error}") from error
    plan = plan_memory(
        args.model,
        quantization=None if args.quantization == "none" else args.quantization,
        dtype=args.dtype,
        context=args.context,
        max_batch=args.max_batch,
        card_sizes_gb=cards,
    )
    print(json.dumps(asdict(plan), indent=2) if args.json else render_plan(plan))
    return 0


def _add_engine_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--model", default=DEFAULT_MODEL,
                         help=f"built-in name ({', '.join(BUILTIN_MODELS)}), checkpoint directory or hub id "
                              f"(default: {DEFAULT_MODEL})")
    command.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    command.add_argument("--quantization", default=None, choices=QUANTIZATION_MODES,
                         help="weight-only quantization of the loaded model")
    command.add_argument("--offload", default=None, choices=OFFLOAD_MODES,
                         help="keep the MoE experts in host memory and stream them to the GPU (cuda only)")
    command.add_argument("--max-running", type=int, default=None,
                         help="sequences denoised together (default: what fits the device, see `diffgemma plan`)")


def _engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"device": args.device, "quantization": args.quantization, "offload": args.offload,
            "max_running": args.max_running}


def _add_request_options(command: argparse.ArgumentParser) -> None:
    _add_engine_options(command)
    command.add_argument("--max-new-tokens", type=int, default=None)
    command.add_argument("--max-denoising-steps", type=int, default=None)
    command.add_argument("--seed", type=int, default=None)
    command.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    command.add_argument("--validator", action="append", default=[], dest="validators",
                         help="select a validator: 'default', a name, '+name' or '-name' (repeatable)")


def _params(args: argparse.Namespace, draft_events: bool = False) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=args.max_new_tokens,
        max_denoising_steps=args.max_denoising_steps,
        seed=args.seed,
        stop=tuple(args.stop),
        validators=tuple(args.validators),
        draft_events=draft_events,
    )


def _generate(args: argparse.Namespace) -> int:
    engine = diffgemma_engine.get_engine(args.model, **_engine_settings(args))
    params = _params(args, draft_events=args.show_denoising)
    request = {"prompt": args.prompt} if args.raw else {"messages": [{"role": "user", "content": args.prompt}]}
    view = _DenoisingView(sys.stdout) if args.show_denoising else None
    result = None
    for event in engine.stream(params=params, **request):
        if isinstance(event, DraftEvent) and view is not None:
            view.draft(event)
        elif isinstance(event, BlockEvent):
            if view is not None:
                view.commit(event)
            elif args.stream:
                sys.stdout.write(event.text)
                sys.stdout.flush()
        elif isinstance(event, FinalEvent):
            result = event.result
    if view is None and not args.stream:
        sys.stdout.write(result.text)
    sys.stdout.write("\n")
    if args.stats:
        _print_stats(result)
    return 0


def _chat(args: argparse.Namespace) -> int:
    engine = diffgemma_engine.get_engine(args.model, **_engine_settings(args))
    params = _params(args)
    history: list[dict[str, str]] = []
    if args.system:
        history.append({"role": "system", "content": args.system})
    print(f"diffgemma chat with {engine.model_name} — an empty line or Ctrl-D ends it.", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        history.append({"role": "user", "content": line})
        reply = []
        for event in engine.stream(messages=history, params=params):
            if isinstance(event, BlockEvent):
                sys.stdout.write(event.text)
                sys.stdout.flush()
                reply.append(event.text)
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(reply)})
    return 0


def _plugins(args: argparse.Namespace) -> int:
    try:
        from diffgemma_plugins import list_plugins
    except ImportError as error:  # the plugins layer is part of this distribution; this means a broken install
        print(f"diffgemma: the plugin layer cannot be imported: {error}", file=sys.stderr)
        return 1
    for plugin in list_plugins():
        print(_format_plugin(plugin))
    return 0


def _format_plugin(plugin: object) -> str:
    fields = plugin if isinstance(plugin, dict) else getattr(plugin, "__dict__", {"plugin": plugin})
    name = fields.get("name", "?")
    lines = [f"{name}  ({fields.get('distribution') or 'built-in'})"]
    hooks = fields.get("hooks") or ()
    validators = fields.get("validators") or ()
    if hooks:
        lines.append("  hooks: " + ", ".join(hooks))
    if validators:
        lines.append("  validators: " + ", ".join(validators))
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    try:
        from .server import serve
    except ImportError as error:
        print(f"diffgemma: the server needs the 'server' extra (pip install 'diffgemma-plugins[server]'): {error}",
              file=sys.stderr)
        return 1
    from .server import resolve_api_key

    if args.api_key is not None:
        print("diffgemma: warning: --api-key is visible to every user in the process list; "
              "prefer --api-key-file or $DIFFGEMMA_API_KEY", file=sys.stderr)
    return serve(
        args.model, host=args.host, port=args.port, api_key=resolve_api_key(args.api_key, args.api_key_file),
        max_request_bytes=args.max_request_bytes, max_denoising_steps=args.max_denoising_steps or None,
        max_new_tokens=args.max_new_tokens, allowed_hosts=args.allowed_hosts,
        protect_observability=args.protect_health_and_metrics, served_model_names=args.served_model_names,
        header_timeout=args.header_timeout, idle_timeout=args.idle_timeout, body_timeout=args.body_timeout,
        shutdown_grace=args.shutdown_grace, max_connections=args.max_connections, **_engine_settings(args),
    )


def _add_serve_options(serve: argparse.ArgumentParser) -> None:
    key = serve.add_argument_group("access (see docs/serving.md, 'Threat model')")
    key.add_argument("--api-key-file", default=None,
                     help="require 'Authorization: Bearer KEY' on /v1/ routes, KEY being this file's first line "
                          "(also: $DIFFGEMMA_API_KEY)")
    key.add_argument("--api-key", default=None, help="the key on the command line (visible in `ps`; prefer the file)")
    key.add_argument("--allowed-host", action="append", default=None, dest="allowed_hosts", metavar="NAME",
                     help="a name the Host/Origin headers may carry (repeatable, '*' for any; default: loopback "
                          "names on a loopback bind, any name otherwise)")
    key.add_argument("--protect-health-and-metrics", action="store_true",
                     help="/health and /metrics need the key too")
    key.add_argument("--served-model-name", action="append", default=[], dest="served_model_names", metavar="NAME",
                     help="model id listed by /v1/models and accepted in requests (repeatable; default: the model)")
    limits = serve.add_argument_group("limits")
    limits.add_argument("--max-denoising-steps", type=int, default=256,
                        help="the most denoising steps per canvas a request may ask for (default: 256; 0: no cap)")
    limits.add_argument("--max-new-tokens", type=int, default=None,
                        help="the most tokens a request may ask for (default: the context window)")
    limits.add_argument("--max-request-bytes", type=int, default=1_000_000, help="request body limit (default: 1 MB)")
    limits.add_argument("--max-connections", type=int, default=None,
                        help="open connections at most; more get HTTP 503 (default: no cap)")
    limits.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds a connection may take to send a request's headers (default: 10)")
    limits.add_argument("--body-timeout", type=float, default=30.0,
                        help="seconds a request's body may take to arrive (default: 30)")
    limits.add_argument("--idle-timeout", type=int, default=5,
                        help="seconds an idle keep-alive connection stays open (default: 5)")
    limits.add_argument("--shutdown-grace", type=int, default=10,
                        help="seconds to wait for connections to close after SIGTERM (default: 10)")


def _bench(args: argparse.Namespace) -> int:
    import os
    import time

    from diffgemma_engine import Engine
    from diffgemma_engine.tools.benchmark import checkpoint, markdown_table, plot, run_throughput
    from diffgemma_engine.config import resolve_device, resolve_dtype

    concurrencies = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    device = resolve_device(args.device)
    model = args.model or checkpoint(args.size, device, resolve_dtype("auto", device))
    engine = Engine(model=model, device=args.device, max_running=max(concurrencies))
    started = time.perf_counter()
    total = 3 * len(concurrencies) * args.repeats
    done = 0

    def progress(label: str) -> None:
        nonlocal done
        done += 1
        bar = "#" * int(30 * done / total)
        print(f"\r[{bar:<30}] {done}/{total} {label:<60} {time.perf_counter() - started:6.0f} s",
              end="", file=sys.stderr, flush=True)

    rows = run_throughput(engine, concurrencies, args.max_new_tokens, progress, args.repeats)
    print(file=sys.stderr)
    engine.shutdown()
    table = markdown_table(rows)
    print(table)  # the results first: nothing below can lose them
    where = f"{args.model or args.size} on {engine.device} ({engine.dtype}), canvas {engine.canvas_length}, " \
            f"max_new_tokens {args.max_new_tokens}, median of {args.repeats} run(s)"
    section = f"Measured by `diffgemma bench`: {where}.\n\n{table}\n"
    if args.plot:
        os.makedirs(os.path.dirname(args.plot) or ".", exist_ok=True)
        if plot(rows, args.plot, f"throughput, {args.model or args.size}"):
            relative = os.path.relpath(args.plot, os.path.dirname(args.markdown or ".") or ".")
            section += f"\n![tokens/s vs concurrency]({relative})\n"
        else:
            print(f"diffgemma: no plot written to {args.plot}: it needs matplotlib (pip install matplotlib)",
                  file=sys.stderr)
    if args.markdown:
        _write_section(args.markdown, "throughput", section)
    return 0


def _write_section(path: str, name: str, body: str) -> None:
    """Replace (or append) the marked section ``name`` of a Markdown file."""
    import os

    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _print_stats(result) -> None:
    stats = result.stats
    print(
        f"[{result.finish_reason}] prompt {result.usage.prompt_tokens} + completion "
        f"{result.usage.completion_tokens} tokens, {stats.blocks} blocks, {stats.denoising_steps} steps "
        f"({stats.tokens_per_forward:.2f} tokens/forward), {stats.total_time:.2f} s, seed {result.seed}",
        file=sys.stderr,
    )


class _DenoisingView:
    """Redraws the current canvas draft in place; committed text stays above it."""

    def __init__(self, out) -> None:
        self.out = out
        self.tty = out.isatty()
        self.width = shutil.get_terminal_size((100, 20)).columns

    def draft(self, event: DraftEvent) -> None:
        text = event.text.replace("\n", "⏎")
        line = f"[block {event.block_index} step {event.step:>2}] {text}"
        if self.tty:
            self.out.write("\r\x1b[2K" + line[: self.width - 1])
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def commit(self, event: BlockEvent) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K")
        self.out.write(f"[block {event.index} committed after {event.steps} steps] {event.text}\n")
        self.out.flush()


if __name__ == "__main__":
    sys.exit(main())
