"""Installable like a Python tool: `pip install .` (and `-e .`) into a fresh virtual environment
gives a `lobotomy` command that works from any directory, with the notebooks and parameters
inside the package; pyproject's dependencies never replace the pinned torch."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_subpackage_is_in_the_wheel():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lobolib").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert {"lobolib.notebooks", "lobolib.parameters"} <= listed


def test_dependencies_leave_the_pinned_torch_alone():
    from packaging.requirements import Requirement

    pinned = next(line.split("==")[1].split()[0] for line in (ROOT / "requirements.txt").read_text().splitlines()
                  if line.startswith("torch=="))  # fmt: skip
    torch = next(Requirement(d) for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch"))
    assert torch.specifier.contains(pinned)
    assert PYPROJECT["project"]["scripts"]["lobotomy"] == "lobolib.__main__:entry_point"


def _source_copy(target: Path) -> Path:
    """The project's files as a fresh clone has them (so the build leaves the checkout clean)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def _venv(path: Path) -> Path:
    """A fresh virtual environment that sees this interpreter's packages (torch, transformers, pip,
    setuptools, ...) through a .pth file, so installing lobotomy needs neither the network nor a
    rebuild of them (without pip of its own: ensurepip's old setuptools would shadow ours)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(purelib, "parent-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def _pip_install(python: Path, *args: str) -> None:
    done = subprocess.run([python, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index",
                           *args], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr


def _from_elsewhere(command: list, where: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(command, cwd=where, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["pip install .", "pip install -e ."])
def test_pip_install_gives_a_lobotomy_command_that_works_from_any_directory(tmp_path, editable):
    source = _source_copy(tmp_path / "source")
    python = _venv(tmp_path / "venv")
    _pip_install(python, *(["-e"] if editable else []), str(source))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lobotomy = tmp_path / "venv" / "bin" / "lobotomy"

    shown = _from_elsewhere([lobotomy, "--help"], elsewhere)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: lobotomy ")
    assert all(command in shown.stdout for command in ("run", "rescore", "sweep", "bench"))

    where = _from_elsewhere([python, "-c", "import lobolib.experiment.runner as r; print(r.__file__); "
                             "print(r.NOTEBOOK_DIR); print(r.shipped('parameters'))"], elsewhere).stdout.split()
    installed = Path(where[0]).resolve()
    assert installed.is_relative_to(source if editable else (tmp_path / "venv").resolve()), where
    notebooks, parameters = Path(where[1]), Path(where[2])
    assert sorted(p.name for p in notebooks.glob("*.ipynb")) == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert (parameters / "default.yaml").is_file()

    # `lobotomy run` with no argument reads the shipped default from here (refused on a bad --set)
    refused = _from_elsewhere([lobotomy, "run", "--set", "sparsity.step=.nan"], elsewhere)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == ["error: sparsity.step: nan is not a usable number; give a finite value"]
    assert list(elsewhere.iterdir()) == []
