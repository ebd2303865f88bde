"""Run an experiment: execute the four notebooks with papermill, then render one report page.

`run(config)` executes notebooks/01_baseline, 02_prune_sweep, 03_bias_analysis and
04_error_cases in order into ``<outputs>/<run>/notebooks/``, each with the resolved parameters
injected into its tagged ``parameters`` cell, and renders ``<outputs>/<run>/report.html``: the
executed notebooks on one page with a table of contents, plotly figures interactive and plotly.js
embedded once (the page works offline). The run folder is never wiped: records already on disk
are reused, so a killed run resumes where it stopped.

A notebook that fails raises `NotebookFailed` naming the notebook and the cell; the CLI prints it
on one line (exit 2 when the cause is a LoboError, a user error; 1 otherwise).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from lobolib.errors import LoboError
from lobolib.experiment.config import RunConfig, from_dict
from lobolib.experiment.files import atomic_write_text
from lobolib.experiment.manifest import record_manifest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = ("01_baseline", "02_prune_sweep", "03_bias_analysis", "04_error_cases", "05_compression")
RESCORE_NOTEBOOKS = NOTEBOOKS[1:]
PARAMETERS_FILE = "parameters.yaml"  # the resolved parameters, written into the run folder


@dataclass(eq=False)
class NotebookFailed(Exception):
    """A notebook stopped with an error in one of its cells."""

    notebook: str
    cell: int | None  # index in the executed notebook (the injected-parameters cell counts)
    execution_count: int | None
    ename: str
    evalue: str
    path: Path

    @property
    def user_error(self) -> bool:
        """True when the cell raised a LoboError: something in the parameters or data to fix."""
        return self.ename == "LoboError"

    @property
    def exit_code(self) -> int:
        return 2 if self.user_error else 1

    def __str__(self) -> str:
        where = f"cell {self.cell}" if self.cell is not None else "an unknown cell"
        if self.execution_count is not None:
            where += f" [{self.execution_count}]"
        evalue = " ".join(self.evalue.split())
        cause = evalue if self.user_error else f"{self.ename}: {evalue}"
        return f"{cause} (notebook {self.notebook}, {where}; see {self.path})"


def run(
    config: RunConfig,
    *,
    notebooks: Sequence[str] | None = None,
    evaluate: bool = True,
    progress: bool = True,
    notebook_dir: str | os.PathLike | None = None,
) -> Path:
    """Execute `notebooks` (default: all four, from `notebook_dir`, default notebooks/) for
    `config` and render the report; returns the report's path.

    `evaluate=False` (rescore) tells notebook 02 not to run models or import logs but to analyse
    the records already in the run folder.
    """
    from tqdm.auto import tqdm

    notebooks = list(NOTEBOOKS if notebooks is None else notebooks)
    notebook_dir = Path(NOTEBOOK_DIR if notebook_dir is None else notebook_dir)
    run_dir = config.output_dir
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    write_parameters(config, run_dir)
    record_manifest(run_dir, {"parameters": config.to_dict(), "notebooks": list(notebooks)})
    parameters = {"config": config.to_dict(), "interactive": False, "evaluate": evaluate}
    executed = []
    with tqdm(list(notebooks), desc="notebooks", unit="notebook", disable=not progress, file=sys.stderr) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            executed.append(execute(notebook_dir / f"{name}.ipynb", run_dir, parameters, progress=progress))
    earlier = [run_dir / "notebooks" / f"{name}.ipynb" for name in NOTEBOOKS if name not in notebooks]
    shown = sorted([*executed, *(path for path in earlier if path.is_file())], key=lambda path: path.name)
    from lobolib.experiment.report import render_report

    return render_report(run_dir, shown, config)


def sweep(config: RunConfig, *, progress: bool = True):
    """Evaluate every missing cell of the parameters' sweep, without the notebooks: the entry point
    for data-parallel evaluation (`accelerate launch --num_processes N -m lobolib sweep X.yaml`,
    see lobolib.experiment.distributed). A later `python -m lobolib run X.yaml` finds the records
    on disk and only analyses them."""
    from lobolib.experiment.distributed import current_shard
    from lobolib.experiment.notebook import Experiment

    if config.mode != "evaluate":
        raise LoboError(f"`sweep` evaluates models; {config.mode!r} mode has none: use `python -m lobolib run`")
    if current_shard().is_main:
        write_parameters(config, config.output_dir)
        record_manifest(config.output_dir, {"parameters": config.to_dict()})
    return Experiment(config).sweep(progress=progress)


def execute(notebook: Path, run_dir: Path, parameters: dict, *, progress: bool = True) -> Path:
    """Run one notebook with papermill into <run_dir>/notebooks/; raise NotebookFailed on an error."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    if not notebook.is_file():
        raise LoboError(f"notebook not found: {notebook}")
    output = run_dir / "notebooks" / notebook.name
    env_before = os.environ.get("TQDM_MININTERVAL")
    os.environ["TQDM_MININTERVAL"] = env_before or "2"  # bars in saved notebooks: few redraws
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters,
            cwd=str(PROJECT_ROOT),
            kernel_name="python3",
            progress_bar=False,
            stderr_file=_ProgressOnly(sys.stderr) if progress else None,
            coalesce_streams=True,
            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no kernel start-up chatter in the terminal
        )
    except PapermillExecutionError as exc:
        raise NotebookFailed(
            notebook=notebook.stem, cell=exc.cell_index, execution_count=exc.exec_count,
            ename=exc.ename, evalue=str(exc.evalue), path=output,
        ) from None
    except (KeyboardInterrupt, LoboError):
        raise
    except Exception as exc:  # the kernel died (out of memory?) or could not start
        raise NotebookFailed(
            notebook=notebook.stem, cell=None, execution_count=None, ename=type(exc).__name__,
            evalue=str(exc) or repr(exc), path=output,
        ) from None
    finally:
        if env_before is None:
            os.environ.pop("TQDM_MININTERVAL", None)
    return output


class _ProgressOnly:
    """A file-like sink that passes only progress-bar redraws of the kernel's stderr to the
    terminal (the sweep's bars), not its warnings (those stay in the executed notebook)."""

    _BAR = re.compile(r"\d+%\||\d+it \[|it/s\]|s/it\]")

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        pieces = [p for p in re.split(r"(?<=[\r\n])", text) if self._BAR.search(p)]
        if pieces:
            self.stream.write("\r" + pieces[-1].strip("\r\n"))
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


# ----------------------------------------------------------------------------- parameters and manifest


def write_parameters(config: RunConfig, run_dir: str | os.PathLike) -> Path:
    """Write the resolved parameters as <run_dir>/parameters.yaml (what `rescore <run_dir>` reads)."""
    path = Path(run_dir) / PARAMETERS_FILE
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path


def config_of_run(run_dir: str | os.PathLike) -> RunConfig:
    """The parameters a run folder was made with (its parameters.yaml)."""
    path = Path(run_dir) / PARAMETERS_FILE
    if not path.is_file():
        raise LoboError(f"{run_dir} holds no {PARAMETERS_FILE}; is it a run folder under outputs/?")
    from lobolib.experiment.config import parse_yaml

    return from_dict(parse_yaml(path.read_text(encoding="utf-8"), str(path)) or {})
