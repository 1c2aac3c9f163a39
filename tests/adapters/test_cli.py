"""The `diffgemma` command."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from diffgemma_adapters.cli import main
from diffgemma_engine import DEFAULT_MODEL, __version__

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"diffgemma {__version__}"


def test_generate_prints_the_response(capsys):
    assert main(["generate", "Why is the sky blue?", "--max-new-tokens", "12", "--seed", "0", "--stats"]) == 0
    captured = capsys.readouterr()
    assert captured.out.endswith("\n") and len(captured.out) > 1
    assert "completion 12 tokens" in captured.err or "[stop]" in captured.err
    assert "seed 0" in captured.err


def test_generate_is_reproducible_with_a_seed(capsys):
    main(["generate", "again", "--max-new-tokens", "16", "--seed", "5"])
    first = capsys.readouterr().out
    main(["generate", "again", "--max-new-tokens", "16", "--seed", "5"])
    assert capsys.readouterr().out == first


def test_stream_and_show_denoising(capsys):
    assert main(["generate", "hi", "--model", "tiny-random", "--max-new-tokens", "40", "--seed", "1",
                 "--max-denoising-steps", "3", "--show-denoising"]) == 0
    out = capsys.readouterr().out
    assert out.count("[block 0 step") == 3
    assert "[block 0 committed after 3 steps]" in out
    assert "[block 1 committed" in out or "[block 0 committed" in out


def test_bad_input_is_a_clean_error(capsys):
    assert main(["generate", "hi", "--max-new-tokens", "0"]) == 1
    assert "max_new_tokens" in capsys.readouterr().err
    assert main(["generate", "hi", "--model", "/no/such/dir"]) == 1
    assert "error" in capsys.readouterr().err


def test_engine_options_reach_the_engine(capsys):
    from diffgemma_engine import get_engine, shutdown_engines

    shutdown_engines()  # the shared tiny-random engine is made here, with this test's settings
    assert main(["generate", "hi", "--model", "tiny-random", "--device", "cpu", "--offload", "experts"]) == 1
    assert "offload" in capsys.readouterr().err  # experts are in host memory already on a CPU
    assert main(["generate", "hi", "--model", "tiny-random", "--device", "cpu", "--max-running", "0"]) == 1
    assert "max_running" in capsys.readouterr().err
    assert main(["generate", "hi", "--model", "tiny-random", "--device", "cpu", "--max-running", "3",
                 "--max-new-tokens", "4", "--seed", "0"]) == 0  # fmt: skip
    assert get_engine("tiny-random", device="cpu").max_running == 3
    shutdown_engines()


def test_plugins_lists_the_builtin_validators(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "builtin.json" in out and "builtin.stutter" in out
    assert "diffgemma_register_validators" in out


def test_readme_first_command_runs_the_default_model():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    install_and_run, test_command = commands[0], commands[1]
    assert "pip install torch==2.13.0" in install_and_run
    generate = shlex.split(install_and_run.split("&&")[-1])
    assert generate[:2] == ["diffgemma", "generate"] and "--model" not in generate
    assert test_command.strip() == "python -m pytest"
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert ci.rstrip().endswith(test_command.strip())
    executable = shutil.which("diffgemma") or os.path.join(os.path.dirname(sys.executable), "diffgemma")
    completed = subprocess.run([executable, *generate[1:], "--stats"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "[stop]" in completed.stderr  # the trained demo model ends its answer
    assert '"age": 36' in completed.stdout
    from diffgemma_adapters.cli import _parser

    assert _parser().parse_args(["generate", "x"]).model == DEFAULT_MODEL


def test_bench_writes_a_table_section_and_a_plot(tmp_path, capsys):
    markdown = tmp_path / "benchmarks.md"
    markdown.write_text("# Benchmarks\n\nkept text\n")
    plot = tmp_path / "img" / "throughput.png"
    assert main(["bench", "--model", "tiny-random", "--concurrency", "1,2", "--max-new-tokens", "8",
                 "--markdown", str(markdown), "--plot", str(plot)]) == 0
    text = markdown.read_text()
    assert text.startswith("# Benchmarks\n\nkept text\n")
    assert text.count("<!-- bench:throughput:start -->") == 1
    for system in ("sequential model.generate()", "static-batched model.generate()", "diffgemma engine"):
        assert f"| 2 | {system} |" in text
    assert "](img/throughput.png)" in text and plot.stat().st_size > 1000
    # running again replaces the section instead of appending a second one
    assert main(["bench", "--model", "tiny-random", "--concurrency", "1", "--max-new-tokens", "8",
                 "--markdown", str(markdown), "--plot", ""]) == 0
    text = markdown.read_text()
    assert text.count("<!-- bench:throughput:start -->") == 1 and "| 2 |" not in text


def test_bench_prints_its_table_and_writes_no_file_unless_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # not the repository root: no docs/ folder here
    assert main(["bench", "--model", "tiny-random", "--concurrency", "1", "--max-new-tokens", "8"]) == 0
    assert "| 1 | diffgemma engine |" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_plan_for_the_real_checkpoint_dimensions_answers_the_24gb_question(capsys):
    assert main(["plan", "--quantization", "int4", "--max-batch", "2", "--context", "8192"]) == 0
    out = capsys.readouterr().out
    assert "24" in out and "GB" in out
    assert "int4" in out
