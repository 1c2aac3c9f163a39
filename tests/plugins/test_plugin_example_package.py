"""The example plugin package: its validator, and a real pip install that the plugin manager discovers.

The package is installed with pip into a temporary ``--target`` directory rather than into the
project's virtual environment: installed there, it would be auto-loaded by every other test and by the
engine for the rest of the environment's life. A fresh interpreter with that directory on its path then
sees exactly what an installed plugin looks like (a dist-info with its ``diffgemma`` entry point).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffgemma_plugins.testing import make_block, run_validator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "diffgemma-example-validator"


def load_example_module():
    spec = importlib.util.spec_from_file_location(
        "example_no_shouting_under_test", EXAMPLE / "diffgemma_example_validator" / "__init__.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_validator_flags_shouting_but_not_acronyms_or_code():
    validator = load_example_module().NoShouting()
    block = make_block("Well, PLEASE STOP SHOUTING at me.")
    [violation] = run_validator(validator, block)
    start, end = violation.spans[0]
    assert block.text[block.token_offsets[start][0] : block.token_offsets[end - 1][1]].strip() == "PLEASE STOP SHOUTING"
    assert not run_validator(validator, make_block("NASA uses the HTTP API. Run `SELECT NAME FROM USERS`."))
    assert not run_validator(validator, make_block("PLEASE STOP SHOUTING"), {"min_words": 4})
    with pytest.raises(ValueError):
        validator.parse_options({"min_words": 1})


@pytest.mark.skipif(importlib.util.find_spec("pip") is None, reason="pip is not available in this environment")
def test_pip_installing_the_example_makes_it_a_discovered_plugin(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(EXAMPLE, source)  # building writes build/ and *.egg-info next to the sources
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    probe = textwrap.dedent(
        """
        import json
        from diffgemma_plugins import list_plugins, make_checker_factory, make_plugin_manager
        from diffgemma_plugins.testing import make_block, make_request

        pm = make_plugin_manager(environ={})
        [info] = [p for p in list_plugins(pm) if p.name == "example_no_shouting"]
        checker = make_checker_factory(pm)(make_request(["default", "+example.no_shouting"]))
        report = checker.check(make_block("Fine. BUT THEN EVERYONE YELLED."))
        blocked = make_plugin_manager(environ={"DIFFGEMMA_DISABLE_PLUGINS": "example_no_shouting"})
        print(json.dumps({
            "distribution": info.distribution, "version": info.version, "hooks": info.hooks,
            "validators": info.validators, "codes": [v.code for v in report.failing],
            "blocked_has_it": "example.no_shouting" in blocked.validator_registry(),
        }))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]))
    for knob in ("DIFFGEMMA_LOAD_PLUGINS", "DIFFGEMMA_DISABLE_PLUGINS", "DIFFGEMMA_DISABLE_PLUGIN_AUTOLOAD"):
        env.pop(knob, None)
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found == {
        "distribution": "diffgemma-example-validator",
        "version": "0.1.0",
        "hooks": ["diffgemma_register_validators"],
        "validators": ["example.no_shouting"],
        "codes": ["shouting"],
        "blocked_has_it": False,
    }
