"""The command line: user errors are one stderr line, exit status 2, and nothing is created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lobolib", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "parameters/nonexistent.yaml"], "parameters file not found: parameters/nonexistent.yaml"),
        (["run", str(ROOT / "parameters/default.yaml"), "--set", "sparsity.levels=[0, 1.5]"], "outside [0, 1)"),
        (["run", str(ROOT / "parameters/default.yaml"), "--set", "modles.0.dtype=float16"], "did you mean 'models'"),
        (["run", str(ROOT / "parameters/default.yaml"), "--set", "seed"], "expected key=value"),
        (["rescore", str(ROOT / "parameters/default.yaml"), "--set", "outputs=out"], "no records in"),
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["sweep", str(ROOT / "parameters/reference_logs.yaml"), "--set", f"logs_dir={ROOT}"], "has none"),
        (["bench", "nope"], "invalid choice: 'nope'"),
    ],
)
def test_user_error_is_one_line_exit_2_and_creates_nothing(tmp_path, args, fragment):
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/ (nor anything else) was created


def test_bench_commands_reach_their_functions(monkeypatch, tmp_path):
    from lobolib.perf import gpus, prune, sweep
    from lobolib.__main__ import main

    calls = []
    for module, name in ((sweep, "sweep"), (gpus, "data_parallel"), (gpus, "sharded")):
        monkeypatch.setattr(module, f"bench_{name}", lambda name=name, **kw: calls.append((name, kw)))
    monkeypatch.setattr(prune, "bench_prune", lambda **kw: calls.append(("prune", kw)) or {"ok": 1})
    out = tmp_path / "b.json"
    assert main(["bench", "--out", str(out), "--level", "0.25"]) == 0
    assert main(["bench", "prune", "--device", "cpu", "--out", str(out)]) == 0
    assert main(["bench", "data-parallel", "--data-dir", "d", "--tokenizer-dir", "t"]) == 0
    assert main(["bench", "sharded"]) == 0
    assert calls == [("sweep", {"out": str(out), "level": 0.25}), ("prune", {"device": "cpu"}),
                     ("data_parallel", {"data_dir": "d", "tokenizer_dir": "t"}), ("sharded", {})]
    assert out.read_text().strip() == '{\n  "ok": 1\n}'
    calls.clear()
    assert main(["bench", "data-parallel", "--level", "0.5"]) == 2  # its levels are one per process
    assert calls == []


def test_set_override_reaches_the_config(tmp_path):
    from lobolib.__main__ import _config

    config = _config(str(ROOT / "parameters/default.yaml"), ["models.0.dtype=float16", f"outputs={tmp_path}", "run=x"])
    assert config.models[0].dtype == "float16"
    assert config.output_dir == tmp_path.resolve() / "x"


@pytest.mark.skipif(__import__("torch").cuda.device_count() >= 2, reason="this machine has the GPUs the bench needs")
def test_gpu_only_benches_say_so_without_gpus(tmp_path):
    result = cli("bench", "sharded", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "needs 2 CUDA GPU(s)" in result.stderr
