"""Smoke-run what a user runs on a fresh install: the README's quickstart command and every script in
``examples/``. Each runs in its own process; any non-zero exit fails the smoke.

Run:  python scripts/smoke_user_install.py [--user-install]
``--user-install`` (what ``.ci/run`` passes) also checks that this environment is a user's install: the
runtime extras are importable, including ``jsonschema`` (structured output and forced tool calls need it),
and the ``dev`` tools (pytest) are not.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ["diffgemma", "generate", "Make a JSON record for a person named Sven aged 36 who lives in Oslo.",
              "--show-denoising"]  # the README's "Set up and run" command, after its pip installs
RUNTIME_MODULES = ("jsonschema", "langchain_core", "llama_index.core", "fastapi", "openai")
DEV_MODULES = ("pytest",)


def check_user_install() -> None:
    missing = [name for name in RUNTIME_MODULES if importlib.util.find_spec(name) is None]
    present = [name for name in DEV_MODULES if importlib.util.find_spec(name) is not None]
    if missing or present:
        raise SystemExit(f"not a user install of .[all]: missing {missing}, dev tools present {present}")
    print("user install: runtime modules present, dev tools absent", flush=True)


def run(command: list[str]) -> None:
    start = time.monotonic()
    print(f"$ {' '.join(command)}", flush=True)
    completed = subprocess.run(command, cwd=ROOT)
    print(f"  exit {completed.returncode} after {time.monotonic() - start:.0f} s", flush=True)
    if completed.returncode:
        raise SystemExit(f"smoke failed: {' '.join(command)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--user-install", action="store_true")
    args = parser.parse_args()
    if args.user_install:
        check_user_install()
    run(QUICKSTART)
    for example in sorted((ROOT / "examples").glob("*.py")):
        run([sys.executable, str(example.relative_to(ROOT))])
    print("smoke passed", flush=True)


if __name__ == "__main__":
    main()
