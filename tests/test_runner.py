"""The runner end to end, in real processes on the embedded models: Ctrl-C at several moments is
one line and exit 130 with the records kept, a second run on the same folder is refused while the
first works, a rerun resumes, corrupt cells are recomputed identical with one warning each, and
files respect the umask."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lobolib.__main__ import INTERRUPTED

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
SMALL = ["--set", "run=small", "--set", "sparsity.levels=[0,0.5,0.9]", "--set", "benchmarks.pubmedqa.max_items=12",
         "--set", "benchmarks.mmlu.subjects=[reference_medical,logic]", "--set",
         "benchmarks.mmlu.max_items_per_subject=3", "--set", "analysis.bootstrap=50",
         "--set", "compression=[{method: magnitude}]"]  # fmt: skip
CELLS = 2 * 3 * 2  # models x levels x benchmarks
# Ctrl-C while the command starts: inside Python's and the libraries' imports (an interrupt there
# once left a traceback, or was swallowed by a library and the run went on), then in preflight
EARLY = {"early_0.1s": 0.1, "early_0.3s": 0.3, "early_0.5s": 0.5, "early_0.8s": 0.8, "early_1.5s": 1.5}


def start(work: Path, *extra: str) -> subprocess.Popen:
    """`python -m lobolib run` of the small experiment from `work` (not the repository), in its own
    process group as a terminal would run it, with umask 002."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "lobolib", "run", *SMALL, *extra], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: os.umask(0o002))  # fmt: skip


def until(process: subprocess.Popen, ready, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the run ended early ({process.returncode}): {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the run never got there")
        time.sleep(0.05)


def ctrl_c(process: subprocess.Popen) -> tuple[int, str, str, float]:
    """SIGINT to the run's process group (what Ctrl-C in a terminal does); returns the exit
    status, stdout, stderr and the seconds it took to exit."""
    sent = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err, time.monotonic() - sent


def records(run_dir: Path) -> dict[Path, tuple[int, str]]:
    return {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted((run_dir / "records").glob("*/*/*.jsonl"))}  # fmt: skip


def header(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8").splitlines()[0])["_header"]


@pytest.fixture(scope="module")
def story(tmp_path_factory, embedded_cache):
    """Interrupt a run three times, try a second run beside it, finish it, corrupt two cells and
    rerun: what each step printed and left on disk."""
    work = tmp_path_factory.mktemp("runner")
    run_dir = work / "outputs" / "small"
    seen = {}

    for moment, delay in EARLY.items():  # importing, parsing, preflight: no notebook yet
        early = start(work, "--quiet")
        time.sleep(delay)
        seen[moment] = ctrl_c(early)

    during_01 = start(work, "--quiet")
    until(during_01, lambda: any((run_dir / "records").glob("*/dense/*.jsonl")))  # notebook 01's sweep
    seen["during_01"] = ctrl_c(during_01)
    seen["after_01"] = records(run_dir)

    during_sweep = start(work, "--quiet")
    until(during_sweep, lambda: any((run_dir / "records").glob("*/magnitude--layer/*.jsonl")))
    second = subprocess.run([sys.executable, "-m", "lobolib", "run", *SMALL], cwd=work, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)  # fmt: skip
    seen["second"] = (second.returncode, second.stdout, second.stderr, during_sweep.pid)
    seen["during_sweep"] = ctrl_c(during_sweep)
    seen["after_sweep"] = records(run_dir)

    finish = start(work)  # with progress bars, as a person runs it
    out, err = finish.communicate(timeout=600)
    seen["finish"] = (finish.returncode, out, err)
    seen["finished"] = records(run_dir)

    dense = run_dir / "records" / "base" / "dense" / "pubmedqa__0.0000.jsonl"
    pruned = run_dir / "records" / "specialist" / "magnitude--layer" / "mmlu__0.5000.jsonl"
    seen["damaged"] = {path: header(path)["sha256"] for path in (dense, pruned)}
    dense.write_bytes(dense.read_bytes()[:-40])  # cut off
    text = pruned.read_text(encoding="utf-8")
    row = json.loads(text.splitlines()[1])
    edited = {**row, "answer": "D" if row["answer"] != "D" else "C"}
    pruned.write_text(text.replace(json.dumps(row, ensure_ascii=False), json.dumps(edited, ensure_ascii=False)),
                      encoding="utf-8")  # an edit that leaves valid JSON
    rerun = start(work, "--quiet")
    out, err = rerun.communicate(timeout=600)
    seen["rerun"] = (rerun.returncode, out, err)
    seen["run_dir"] = run_dir
    return seen


@pytest.mark.parametrize("moment", [*EARLY, "during_01", "during_sweep"])
def test_ctrl_c_is_one_line_and_exit_130(story, moment):
    code, out, err, seconds = story[moment]
    print(f"Ctrl-C {moment}: exit {code} after {seconds:.1f} s")
    assert code == 130
    assert err.splitlines() == [INTERRUPTED]  # no ZMQ, DeadKernel or kernel-log lines
    assert seconds < 30


def test_the_records_of_an_interrupted_run_are_kept_and_a_rerun_resumes(story):
    assert story["after_01"], "notebook 01 had written no cell before Ctrl-C"
    kept = {path: stamp for path, stamp in story["after_sweep"].items()}
    assert any("magnitude--layer" in str(p) for p in kept)
    assert all(story["finished"][path] == stamp for path, stamp in kept.items())  # reused, not rewritten
    assert len(story["finished"]) == CELLS
    code, out, err = story["finish"]
    assert code == 0, err
    run_dir = story["run_dir"]
    assert out.splitlines() == [f"run small -> {run_dir}", f"report: {run_dir / 'report.html'}"]
    assert "Traceback" not in err and "IPKernelApp" not in err and "KeyboardInterrupt" not in err
    assert [line for line in err.replace("\r", "\n").splitlines() if line and "|" not in line] == []  # bars only


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_works(story):
    code, out, err, first = story["second"]
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith(f"error: {story['run_dir']} is in use by another run (pid {first} on ")
    assert out == ""


def test_corrupt_cells_are_recomputed_identical_with_one_warning_each(story):
    code, out, err = story["rerun"]
    assert code == 0, err
    warnings = err.splitlines()
    assert len(warnings) == 2 and all(line.startswith("warning: records file ") for line in warnings), err
    assert "does not end with a newline" in err and "checksum" in err
    for path, digest in story["damaged"].items():
        assert header(path)["sha256"] == digest  # recomputed: the same records as before the damage
        assert path.with_name(path.name + ".corrupt").is_file()  # the damaged file is kept aside
        assert any(path.name in line and "moved aside" in line for line in warnings)
    untouched = {p: s for p, s in story["finished"].items() if p not in story["damaged"]}
    assert all(records(story["run_dir"])[p] == s for p, s in untouched.items())


def test_outputs_respect_the_umask(story):
    run_dir = story["run_dir"]
    paths = [run_dir / "report.html", run_dir / "manifest.json", run_dir / "parameters.yaml",
             *list(story["finished"])[:3], run_dir / "notebooks" / "02_prune_sweep.ipynb"]  # fmt: skip
    for path in paths:
        assert path.stat().st_mode & 0o777 == 0o664, path
