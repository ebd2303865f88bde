"""Run an experiment: execute the four notebooks with papermill, then render one report page.

`run(config)` executes notebooks/01_baseline, 02_prune_sweep, 03_bias_analysis and
04_error_cases in order into ``<outputs>/<run>/notebooks/``, each with the resolved parameters
injected into its tagged ``parameters`` cell, and renders ``<outputs>/<run>/report.html``: the
executed notebooks on one page with a table of contents, plotly figures interactive and plotly.js
embedded once (the page works offline). The run folder is never wiped: records already on disk
are reused, so a killed run resumes where it stopped. While it works the run holds the folder's
lock (lobolib.experiment.lock): a second run on the same folder is refused, or waits.

The notebooks and the shipped parameters files are found beside the package: in a checkout (and
an editable install) at the repository root, ``notebooks/`` and ``parameters/``; in an installed
wheel inside the package, ``lobolib/notebooks`` and ``lobolib/parameters`` (pyproject.toml puts
them there). So `lobotomy run` works from any directory.

The kernel runs this Python (whatever the ``python3`` kernelspec names), imports this lobolib,
works in the current directory, and writes its own log (start-up chatter, the "KeyboardInterrupt
caught in kernel" of every shutdown) to ``<run>/notebooks/kernel.log``, not to the terminal; what
reaches the terminal from a notebook is the progress bars and lobolib's own warnings, one line
each. Ctrl-C interrupts the cell running in the kernel (the kernel is stopped if it does not stop
within a few seconds, at once on a second Ctrl-C) and raises KeyboardInterrupt here, so the CLI
prints one line and exits 130 with every record written so far kept.

A notebook that fails raises `NotebookFailed` naming the notebook and the cell; the CLI prints it
on one line (exit 2 when the cause is a user error: a LoboError, or a folder that cannot be
written; 1 otherwise).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

import lobolib
from lobolib.errors import LoboError
from lobolib.experiment.config import RunConfig, from_dict
from lobolib.experiment.files import WRITE_ERRNOS, atomic_write_text, cannot_write, make_dirs
from lobolib.experiment.lock import RunLock, launch_lock
from lobolib.experiment.manifest import record_manifest

PACKAGE_DIR = Path(lobolib.__file__).resolve().parent
NOTEBOOKS = ("01_baseline", "02_prune_sweep", "03_bias_analysis", "04_error_cases", "05_compression")
RESCORE_NOTEBOOKS = NOTEBOOKS[1:]
PARAMETERS_FILE = "parameters.yaml"  # the resolved parameters, written into the run folder
KERNEL_LOG = "kernel.log"
INTERRUPT_GRACE_SECONDS = 5.0  # after Ctrl-C, the kernel has this long to stop its cell before it is killed
_DISK_ERRNO = re.compile(r"\[Errno (%s)\]" % "|".join(str(n) for n in sorted(WRITE_ERRNOS)))


def shipped(folder: str) -> Path:
    """The folder of shipped files `folder` ("notebooks" or "parameters"): inside the installed
    package, or at the root of the checkout the package runs from."""
    inside = PACKAGE_DIR / folder
    return inside if inside.is_dir() else PACKAGE_DIR.parent / folder


NOTEBOOK_DIR = shipped("notebooks")


def shipped_parameters(name: str) -> Path | None:
    """A shipped parameters file by name ("default", "default.yaml" or "parameters/default.yaml"),
    or None when there is none of that name."""
    stem = Path(name).name.removesuffix(".yaml").removesuffix(".yml")
    if Path(name).parent not in (Path("."), Path("parameters")):
        return None
    path = shipped("parameters") / f"{stem}.yaml"
    return path if path.is_file() else None


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
        """True when the cell raised a LoboError, or could not write to a read-only or full
        folder: something in the parameters, data or disk to fix."""
        return self.ename == "LoboError" or (self.ename in ("OSError", "PermissionError")
                                             and bool(_DISK_ERRNO.search(self.evalue)))  # fmt: skip

    @property
    def exit_code(self) -> int:
        return 2 if self.user_error else 1

    def __str__(self) -> str:
        where = f"cell {self.cell}" if self.cell is not None else "an unknown cell"
        if self.execution_count is not None:
            where += f" [{self.execution_count}]"
        evalue = " ".join(self.evalue.split())
        cause = evalue if self.ename == "LoboError" else f"{self.ename}: {evalue}"
        return f"{cause} (notebook {self.notebook}, {where}; see {self.path})"


def run(
    config: RunConfig,
    *,
    notebooks: Sequence[str] | None = None,
    evaluate: bool = True,
    progress: bool = True,
    notebook_dir: str | os.PathLike | None = None,
    wait: float = 0.0,
    announce: str | None = None,
) -> Path:
    """Execute `notebooks` (default: all four, from `notebook_dir`, default the shipped ones) for
    `config` and render the report; returns the report's path.

    `evaluate=False` (rescore) tells notebook 02 not to run models or import logs but to analyse
    the records already in the run folder. The run holds the run folder's lock throughout;
    another run holding it is a LoboError, or is waited for up to `wait` seconds. With the lock
    taken, `announce` (a command name) prints "<announce> <run> -> <run folder>" on stdout.
    """
    from tqdm.auto import tqdm

    notebooks = list(NOTEBOOKS if notebooks is None else notebooks)
    notebook_dir = Path(NOTEBOOK_DIR if notebook_dir is None else notebook_dir)
    run_dir = config.output_dir
    with RunLock(run_dir, wait=wait):
        _announce(announce, config)
        make_dirs(run_dir / "notebooks")
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


def _announce(command: str | None, config: RunConfig) -> None:
    if command is not None:
        print(f"{command} {config.run} -> {config.output_dir}", flush=True)


def sweep(config: RunConfig, *, progress: bool = True, wait: float = 0.0, announce: str | None = None):
    """Evaluate every missing cell of the parameters' sweep, without the notebooks: the entry point
    for data-parallel evaluation (`accelerate launch --num_processes N -m lobolib sweep X.yaml`,
    see lobolib.experiment.distributed). A later `python -m lobolib run X.yaml` finds the records
    on disk and only analyses them. The launch's main process holds the run folder's lock."""
    from lobolib.experiment.distributed import current_shard
    from lobolib.experiment.notebook import Experiment

    if config.mode != "evaluate":
        raise LoboError(f"`sweep` evaluates models; {config.mode!r} mode has none: use `python -m lobolib run`")
    shard = current_shard()
    with launch_lock(config.output_dir, wait=wait, shard=shard):
        if shard.is_main:
            _announce(announce, config)
            write_parameters(config, config.output_dir)
            record_manifest(config.output_dir, {"parameters": config.to_dict()})
        return Experiment(config).sweep(progress=progress)


def execute(notebook: Path, run_dir: Path, parameters: dict, *, progress: bool = True) -> Path:
    """Run one notebook with papermill into <run_dir>/notebooks/; raise NotebookFailed on an error,
    KeyboardInterrupt on Ctrl-C (see the module docstring)."""
    if not notebook.is_file():
        raise LoboError(f"notebook not found: {notebook}")
    output = run_dir / "notebooks" / notebook.name
    env_before = os.environ.get("TQDM_MININTERVAL")
    os.environ["TQDM_MININTERVAL"] = env_before or "2"  # bars in saved notebooks: few redraws
    try:
        with open(run_dir / "notebooks" / KERNEL_LOG, "a", encoding="utf-8") as log, _Interrupt() as interrupt, \
                _LibraryLogs(log):
            import papermill  # under the Ctrl-C handler: an interrupted import could be swallowed
            from papermill.exceptions import PapermillExecutionError

            try:
                papermill.execute_notebook(
                    str(notebook),
                    str(output),
                    parameters=parameters,
                    kernel_name="python3",
                    kernel_manager_class=_kernel_manager(log, interrupt),
                    progress_bar=False,
                    stderr_file=_KernelStderr(sys.stderr, bars=progress),
                    coalesce_streams=True,
                    extra_arguments=["--IPKernelApp.log_level=WARN"],
                )
            except PapermillExecutionError as exc:
                if interrupt.requested or exc.ename == "KeyboardInterrupt":
                    raise KeyboardInterrupt from None
                raise NotebookFailed(
                    notebook=notebook.stem, cell=exc.cell_index, execution_count=exc.exec_count,
                    ename=exc.ename, evalue=str(exc.evalue), path=output,
                ) from None
            except (KeyboardInterrupt, LoboError, NotebookFailed):
                raise
            except Exception as exc:  # the kernel died (out of memory? Ctrl-C?), could not start, or a write failed
                if interrupt.requested:
                    raise KeyboardInterrupt from None
                if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
                    raise cannot_write(exc.filename or output, exc) from None
                raise NotebookFailed(
                    notebook=notebook.stem, cell=None, execution_count=None, ename=type(exc).__name__,
                    evalue=str(exc) or repr(exc), path=output,
                ) from None
            if interrupt.requested:  # Ctrl-C between two cells, or as the last one ended
                raise KeyboardInterrupt
    except OSError as err:  # the kernel log could not be opened
        if err.errno in WRITE_ERRNOS:
            raise cannot_write(err.filename or run_dir, err) from None
        raise
    finally:
        if env_before is None:
            os.environ.pop("TQDM_MININTERVAL", None)
    return output


# ----------------------------------------------------------------------------- the kernel


class _Interrupt:
    """Ctrl-C while a notebook runs. The kernel runs in a session of its own (jupyter_client
    starts it so), so the terminal's SIGINT reaches only this process; raising KeyboardInterrupt
    inside papermill's event loop would leave ZMQ and dead-kernel tracebacks. Instead the handler
    passes the interrupt to the kernel (its cell raises KeyboardInterrupt, papermill saves the
    notebook and returns), and kills the kernel if it has not stopped `INTERRUPT_GRACE_SECONDS`
    later or on a second Ctrl-C. `requested` tells `execute` to raise KeyboardInterrupt."""

    def __init__(self):
        self.requested = False
        self.kernel_group: int | None = None
        self._timer: threading.Timer | None = None
        self._previous = None

    def __enter__(self) -> "_Interrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def kernel_started(self, group: int | None) -> None:
        self.kernel_group = group
        if self.requested:
            self._signal(signal.SIGKILL)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self._signal(signal.SIGKILL)
            return
        self.requested = True
        self._signal(signal.SIGINT)
        self._timer = threading.Timer(INTERRUPT_GRACE_SECONDS, self._signal, args=(signal.SIGKILL,))
        self._timer.daemon = True
        self._timer.start()

    def _signal(self, signum: int) -> None:
        if self.kernel_group is None:
            return
        try:
            os.killpg(self.kernel_group, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _kernel_manager(log, interrupt: _Interrupt):
    """The kernel manager class papermill starts the kernel with (see the module docstring)."""
    from jupyter_client.manager import AsyncKernelManager

    class RunKernelManager(AsyncKernelManager):
        async def _async_pre_start_kernel(self, **kw):
            cmd, kw = await super()._async_pre_start_kernel(**kw)
            if "ipykernel_launcher" in cmd:
                cmd[0] = sys.executable  # this Python: the one whose packages (and lobolib) run here
            env = kw.setdefault("env", dict(os.environ))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_DIR.parent), env.get("PYTHONPATH")) if p)
            kw["stdout"] = kw["stderr"] = log
            return cmd, kw

        async def _async_post_start_kernel(self, **kw):
            await super()._async_post_start_kernel(**kw)
            provisioner = self.provisioner
            interrupt.kernel_started(getattr(provisioner, "pgid", None) or getattr(provisioner, "pid", None))

    return RunKernelManager


class _LibraryLogs:
    """Route the warnings and errors that papermill, nbclient, jupyter_client and asyncio log
    (a dead kernel, a shutdown) to the kernel log instead of the terminal."""

    NAMES = ("papermill", "traitlets", "nbclient", "jupyter_client", "asyncio")

    def __init__(self, stream):
        self.handler = logging.StreamHandler(stream)
        self.handler.setLevel(logging.WARNING)
        self.saved: list = []

    def __enter__(self):
        for name in self.NAMES:
            logger = logging.getLogger(name)
            self.saved.append((logger, logger.propagate))
            logger.addHandler(self.handler)
            logger.propagate = False
        return self

    def __exit__(self, *exc) -> None:
        for logger, propagate in self.saved:
            logger.removeHandler(self.handler)
            logger.propagate = propagate


class _KernelStderr:
    """A file-like sink for the kernel's stderr stream: progress-bar redraws (the sweep's bars,
    when `bars`) and lobolib's own warnings (one line each: ``warning: ...``) go to the terminal;
    everything else (other libraries' warnings) stays in the executed notebook."""

    _BAR = re.compile(r"\d+%\||\d+it \[|it/s\]|s/it\]")
    _WARNING = re.compile(r"^(?P<file>.+?):\d+: (?P<category>\w*Warning): (?P<message>.*)$")
    _OURS = f"{os.sep}lobolib{os.sep}"

    def __init__(self, stream, *, bars: bool = True):
        self.stream, self.bars = stream, bars
        self._partial = ""
        self._bar_shown = False

    def write(self, text: str) -> int:
        pieces = re.split(r"[\r\n]", self._partial + text)
        self._partial = pieces.pop()
        bar = None
        for piece in pieces:
            match = self._WARNING.match(piece)
            if match and self._OURS in match["file"]:
                self._line(f"warning: {match['message'].strip()}")
            elif self._BAR.search(piece):
                bar = piece
        if self._BAR.search(self._partial):
            bar, self._partial = self._partial, ""
        if bar is not None and self.bars:
            self.stream.write("\r" + bar)
            self._bar_shown = True
            self.stream.flush()
        return len(text)

    def _line(self, line: str) -> None:
        self.stream.write(("\n" if self._bar_shown else "") + line + "\n")
        self._bar_shown = False
        self.stream.flush()

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
