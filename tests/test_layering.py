"""The layering contract: adapters -> plugins -> engine; torch and transformers only behind the engine.

Statically (import-linter, contracts in pyproject.toml, none with ``allow_indirect_imports``): the layers;
adapters reach torch only through the in-process engine; the plugins, the remote client and
``diffgemma_engine.api`` never reach it, even indirectly. At run time (a fresh interpreter): importing the
plugins and the remote client loads no torch, because ``diffgemma_engine`` loads its torch-backed
``Engine`` / ``get_engine`` only on first use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TORCH_FREE_IMPORT = (
    "import sys, diffgemma_plugins, diffgemma_adapters.remote, diffgemma_engine.api.window_rules; "
    "loaded = sorted(name for name in ('torch', 'transformers') if name in sys.modules); "
    "print(','.join(loaded) or 'none')"
)


def test_import_linter_contracts_hold():
    executable = shutil.which("lint-imports") or os.path.join(os.path.dirname(sys.executable), "lint-imports")
    if not os.path.exists(executable):
        pytest.fail("import-linter is not installed (it is in the dev extra)")
    completed = subprocess.run([executable, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "3 kept, 0 broken" in completed.stdout


def test_no_contract_allows_indirect_imports():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        contracts = tomllib.load(file)["tool"]["importlinter"]["contracts"]
    assert contracts and not any(contract.get("allow_indirect_imports") for contract in contracts)


def test_plugins_and_the_remote_client_import_without_torch():
    completed = subprocess.run([sys.executable, "-c", TORCH_FREE_IMPORT], cwd=ROOT, capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "none"


@pytest.mark.parametrize("argv", [["--help"], ["plugins"], ["plan", "--help"]])
def test_the_command_line_answers_help_and_plugins_without_torch(argv):
    code = (
        "import sys\n"
        "from diffgemma_adapters.cli import main\n"
        "try:\n"
        f"    status = main({argv!r})\n"
        "except SystemExit as exit:\n"
        "    status = exit.code\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules, status, file=sys.stderr)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.stdout.strip(), completed.stderr  # the help text or the plugin list
    assert completed.stderr.strip().splitlines()[-1] == "False False 0"


def test_the_engine_still_loads_on_first_use():
    code = "import sys, diffgemma_engine; assert 'torch' not in sys.modules; diffgemma_engine.Engine; print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "True"
