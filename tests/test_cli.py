"""The command line: user errors are one stderr line, exit status 2, and nothing is created, at
once; shipped parameters are found from any directory; --out says where runs go."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFUSAL_SECONDS = 5.0


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


# --- bad parameters: refused before any work ------------------------------------------------------


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _inputs(folder: Path) -> Path:
    """Hostile parameters files, a one-subject MMLU folder and a declared benchmark's file."""
    folder.mkdir()
    (folder / "latin1.yaml").write_bytes(b"run: caf\xe9\n")
    (folder / "recursive.yaml").write_text("a: &a [*a]\n")
    (folder / "duplicate.yaml").write_text("run: x\nseed: 0\nseed: 1\n")
    (folder / "a_file").write_text("not a folder")
    (folder / "empty-model").mkdir()
    for split in ("test", "dev"):
        (folder / "mmlu" / split).mkdir(parents=True)
        rows = [f'"Question {i}?",a,b,c,d,A' for i in range(4)]
        (folder / "mmlu" / split / f"anatomy_{split}.csv").write_text("\n".join(rows) + "\n")
    (folder / "exam.jsonl").write_text('{"q": "what?", "opa": "x", "opb": "y"}\n')
    return folder


def _set(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


IN = "{inputs}"
BAD = [  # (arguments after `run`, a fragment of the one error line)
    (_set("sparsity.step=.nan"), "sparsity.step: nan is not a usable number"),
    (_set("sparsity.step=-.inf"), "sparsity.step: -inf is not a usable number"),
    (_set("analysis.confidence=.nan"), "analysis.confidence: nan"),
    (_set("models.0.dtype=.nan"), "models.0.dtype: nan"),
    ([f"{IN}/latin1.yaml"], "not UTF-8"),
    ([f"{IN}/recursive.yaml"], "refers to itself"),
    ([f"{IN}/duplicate.yaml"], "duplicate key 'seed' at line 3"),
    (_set("sparsity.step=1e-12"), "more than 1,000"),
    (_set("sparsity.step=0"), "sparsity.step: 0.0 must be positive"),
    (_set("sparsity.step=-0.05"), "must be positive"),
    (_set("sparsity.levels=[0, 1.5]"), "outside [0, 1)"),
    (_set("sparsity.levels=[0.5, 0.2]"), "strictly ascending"),
    (_set("sparsity.stop=1.0"), "sparsity.stop: 1.0 is outside"),
    (_set("analysis.bootstrap=100001"), "analysis.bootstrap: 100001 must be between 0"),
    (_set("analysis.bootstrap=1e10"), "analysis.bootstrap: expected a whole number"),
    (_set("evaluation.batch_size=0"), "evaluation.batch_size: 0 must be at least 1"),
    (_set("evaluation.batch_size=-4"), "evaluation.batch_size: -4"),
    (_set("benchmarks.pubmedqa.max_new_tokens=100000"), "max_new_tokens: 100000 must be between 1 and 512"),
    (_set("benchmarks.mmlu.shots=1000"), "benchmarks.mmlu.shots: 1000 must be between 0 and 25"),
    (_set("benchmarks.pubmedqa.max_items=0"), "max_items: must be at least 1"),
    (_set("models.0.device_map=bogus"), "'bogus' is not valid"),
    (_set("models.0.device_map=auto", "models.0.max_memory={cpu: 100000GiB}"), "more than the"),
    (_set("models.0.device_map=auto", "models.0.max_memory={cpu: lots}"), "'lots' is not a size"),
    (_set("models.0.device_map={model.layers.0: 99}"), "asks for GPU 99"),
    (_set(f"benchmarks.mmlu.source={IN}/mmlu", "benchmarks.mmlu.subjects=[anatomy, virology]"), "virology"),
    (_set(f"benchmarks.exam={{kind: multiple_choice, source: {IN}/exam.jsonl, question: q, options: [opa, opb], "
          "answer: cop}"), "no field 'cop'"),
    (_set("models.0.model=someorg/not-cached-model"), "not in the local Hugging Face cache"),
    (_set(f"models.0.model={IN}/empty-model"), "models.0"),
    (_set("models.0.model=./no/such/model"), "models.0.model: path not found"),
    (_set("benchmarks.pubmedqa.source=/no/such/pubmedqa"), "benchmarks.pubmedqa.source: path not found"),
    (_set("modles.0.dtype=float16"), "did you mean 'models'"),
    (_set("models.0.dtype=float8"), "'float8' is not one of"),
    (_set("run=../escape"), "must be a folder name"),
    (_set("sparsity.step=abc"), "sparsity.step: expected a number"),
    (_set("models.0.revision=hf_abcdefghijklmnopqrstuvwxyz"), "looks like a Hugging Face token"),
    (["--out", f"{IN}/a_file"], "is a file, not a folder"),
    (["--wait", "-3"], "--wait takes a number of seconds >= 0"),
    (["no_such_parameters"], "parameters file not found: no_such_parameters"),
]
if _gpus() == 0:
    BAD += [(_set("models.0.device_map=cuda:3"), "no CUDA GPU"),
            (_set("models.0.device_map=auto", "models.0.max_memory={0: 14GiB}"), "asks for GPU 0")]
REFUSALS: dict[str, float] = {}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return _inputs(tmp_path_factory.mktemp("cli") / "inputs")


def _main(argv: list[str]) -> tuple[int, str, str]:
    from lobolib.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("args, fragment", BAD, ids=lambda v: " ".join(v)[-60:] if isinstance(v, list) else None)
def test_bad_parameters_are_one_line_exit_2_at_once_with_nothing_written(args, fragment, inputs, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = ["run", *[a.replace(IN, str(inputs)) for a in args]]
    started = time.perf_counter()
    code, out, err = _main(argv)
    seconds = time.perf_counter() - started
    REFUSALS[" ".join(args)] = seconds
    print(f"refused in {seconds:.3f} s: {' '.join(args)}")
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert "Traceback" not in err and out == ""
    assert list(work.iterdir()) == []  # no outputs/, no run folder, nothing
    assert seconds < REFUSAL_SECONDS


def test_a_refusal_in_a_real_process_is_one_line_at_once(tmp_path):
    started = time.perf_counter()
    result = cli("run", "--set", "sparsity.step=.nan", cwd=tmp_path)
    seconds = time.perf_counter() - started
    print(f"a real `python -m lobolib run --set sparsity.step=.nan` refused in {seconds:.2f} s (interpreter included)")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: sparsity.step: nan is not a usable number; give a finite value"]
    assert result.stdout == "" and list(tmp_path.iterdir()) == []
    assert seconds < 2 * REFUSAL_SECONDS


def test_set_reads_an_exponent_as_a_number_at_the_cli(tmp_path):
    from lobolib.__main__ import _config

    config = _config(None, ["sparsity.step=1e-3", "sparsity.stop=0.5"], str(tmp_path))
    assert len(config.levels) == 501 and config.levels[1] == 0.001


# --- where runs are and what they read -------------------------------------------------------------


def test_no_argument_is_the_shipped_default_from_any_directory(tmp_path, monkeypatch):
    from lobolib.__main__ import _config, parameters_file
    from lobolib.experiment import runner

    monkeypatch.chdir(tmp_path)
    shipped = runner.shipped("parameters") / "default.yaml"
    assert parameters_file(None) == shipped and shipped.is_file()
    assert parameters_file("default") == parameters_file("parameters/default.yaml") == shipped
    assert parameters_file("biomistral_vs_mistral") == shipped.with_name("biomistral_vs_mistral.yaml")
    config = _config(None, [])
    assert config.run == "default" and config.output_dir == tmp_path / "outputs" / "default"
    mine = tmp_path / "default.yaml"
    mine.write_text("run: mine\nmodels: [{name: a, model: 'embedded:base'}]\n")
    assert parameters_file("default.yaml") == Path("default.yaml")  # a file here comes first
    assert (runner.NOTEBOOK_DIR / "01_baseline.ipynb").is_file()


def test_out_says_where_runs_go_for_run_sweep_and_rescore(tmp_path, monkeypatch):
    from lobolib.__main__ import _config

    monkeypatch.chdir(tmp_path)
    assert _config(None, [], "elsewhere").output_dir == tmp_path / "elsewhere" / "default"
    code, out, err = _main(["rescore", "--out", str(tmp_path / "runs")])
    assert code == 2 and err == f"error: no records in {tmp_path / 'runs' / 'default'}: run `python -m lobolib run` first\n"
    code, out, err = _main(["sweep", "--out", str(tmp_path / "runs"), "--set", "sparsity.step=.nan"])
    assert code == 2 and "sparsity.step" in err
    assert list(tmp_path.iterdir()) == []


def test_rescore_takes_a_run_folder_where_it_is_now(tmp_path):
    from lobolib.__main__ import _config
    from lobolib.experiment import runner

    original = _config(None, [f"outputs={tmp_path / 'old'}", "run=r1"])
    runner.write_parameters(original, tmp_path / "moved" / "r2")
    config = _config(str(tmp_path / "moved" / "r2"), [])
    assert config.output_dir == tmp_path / "moved" / "r2" and config.levels == original.levels
    code, out, err = _main(["rescore", str(tmp_path / "moved" / "r2"), "--out", str(tmp_path)])
    assert code == 2 and "drop --out" in err


def test_lobotomy_prog_and_help_list_the_commands(monkeypatch, capsys):
    from lobolib.__main__ import main

    monkeypatch.setattr(sys, "argv", ["/somewhere/bin/lobotomy", "--help"])
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: lobotomy ") and all(c in text for c in ("run", "rescore", "sweep", "bench"))
