"""The opt-in torch.compile of the decoder forward gives the same tokens (slow: compilation takes ~30 s).

It runs in a subprocess: inductor's C++ build step trips over setuptools' distutils shim once pytest has
imported setuptools, so the child uses the standard library's distutils."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CHILD = """
import json
from diffgemma_engine import Engine, SamplingParams
params = SamplingParams(max_new_tokens=40, seed=0, max_denoising_steps=6)
tokens = {}
for compiled in (False, True):
    with Engine(model="tiny-random", compile=compiled) as engine:
        tokens[str(compiled)] = list(engine.generate("compile me", params).token_ids)
print(json.dumps(tokens))
"""


@pytest.mark.slow
def test_compiled_decoder_gives_the_same_tokens():
    env = {**os.environ, "SETUPTOOLS_USE_DISTUTILS": "stdlib"}
    completed = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    tokens = json.loads(completed.stdout.strip().splitlines()[-1])
    assert tokens["True"] == tokens["False"] and len(tokens["True"]) > 0
