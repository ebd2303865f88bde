"""Command line: ``lobotomy run|rescore|sweep|bench`` (or ``python -m lobolib ...``, the same).

    lobotomy run [PARAMETERS] [--set key=value ...] [--out DIR] [--wait [SECONDS]] [--quiet]
        Run the experiment: notebooks 01-04 into DIR/<run>/ (DIR: --out, else outputs/ in the
        current directory), then DIR/<run>/report.html. PARAMETERS is a YAML file, or the name of
        a shipped one (default, biomistral_vs_mistral, kaggle_dual_t4, reference_logs); without
        it, the shipped default (embedded models, offline, CPU, minutes). Works from any directory.
        A rerun (or a run after a crash or Ctrl-C) reuses every record already on disk.
    lobotomy rescore [PARAMETERS | RUN_FOLDER] [--set key=value ...] [--out DIR]
        Re-run notebooks 02-04 on the records already in the run folder, evaluating nothing.
    lobotomy sweep [PARAMETERS] [--set key=value ...] [--out DIR]
        Only evaluate the missing records (no notebooks). Data parallel over N GPUs:
        accelerate launch --num_processes N -m lobolib sweep parameters/X.yaml
    lobotomy bench prune [--device cpu|cuda]
        Time the pruning kernel (lobolib.perf.prune.bench_prune).
    lobotomy bench [--out FILE.json] [--device cpu|cuda] [--data-dir D --tokenizer-dir T] [--level 0.5]
        Measure sweep throughput (lobolib.perf.sweep.bench_sweep).
    lobotomy bench compress [--out F.json] [--device cpu|cuda] [--batch N] [--only int4,sparse24_cusparselt]
        What each weight format buys against dense (lobolib.perf.compress.bench_compress).
    lobotomy bench methods [--out F.json] [--device cpu|cuda] [--only wanda,gptq4]
                           [--sweep-json SWEEP.json | --eval-seconds S]
        Time one level of each compression method (lobolib.perf.methods.bench_methods).

run, rescore and sweep say where they write at their start (``run default -> /abs/outputs/default``
on stdout). A run folder is used by one command at a time: another one working in it is named
and the command refused (exit 2), or, with --wait, waited for (forever, or SECONDS).

Every user error (bad parameters, a missing file or model, a folder that cannot be written, a
folder in use) prints one line "error: ..." on stderr and exits 2 before any work, with nothing
written; a notebook that fails otherwise prints one line naming the notebook and cell and exits 1;
Ctrl-C prints one line and exits 130, every record written so far kept.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

from lobolib.errors import LoboError

INTERRUPTED = "interrupted: the records written so far are kept; rerun the same command to resume"


@contextmanager
def _starting():
    """While a command starts (imports, parameters, preflight), Ctrl-C prints the one line and exits
    130 at once: nothing has been written yet, and a KeyboardInterrupt raised inside an import can
    be swallowed by a library that catches it (the run would go on) or leave a half-imported module
    (a traceback later), so the process does not unwind. Outside the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _exit_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _exit_interrupted(signum, frame) -> None:
    sys.stderr.write(INTERRUPTED + "\n")
    sys.stderr.flush()
    os._exit(130)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every other user error."""

    def error(self, message: str):
        raise LoboError(f"{message} (see: {self.prog} --help)")


def _prog() -> str:
    return "lobotomy" if Path(sys.argv[0]).name == "lobotomy" else "python -m lobolib"


def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--wait takes seconds, got {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"--wait takes a number of seconds >= 0, got {text!r}")
    return value


def _run_options(command: argparse.ArgumentParser, target: str, target_help: str) -> None:
    command.add_argument(target, nargs="?", default=None, help=target_help)
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a parameter, e.g. --set sparsity.step=0.1 or --set models.0.dtype=float16")
    command.add_argument("--out", default=None, metavar="DIR",
                         help="the folder that holds the runs (default: outputs/ in the current directory)")
    command.add_argument("--wait", nargs="?", type=_wait_seconds, const=math.inf, default=0.0, metavar="SECONDS",
                         help="when another command is working in the run folder, wait for it (forever, or "
                              "SECONDS) instead of refusing")  # fmt: skip
    command.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=_prog(), description="Compress language models level by level and measure what they still know.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    parameters_help = "a parameters file (YAML) or a shipped one's name; default: the shipped default"
    _run_options(commands.add_parser("run", help="run an experiment (notebooks 01-04, report.html)"),
                 "parameters", parameters_help)
    _run_options(commands.add_parser("sweep", help="only evaluate the missing records (data parallel under "
                                                   "accelerate launch)"), "parameters", parameters_help)
    _run_options(commands.add_parser("rescore", help="re-analyse existing records (notebooks 02-04, no evaluation)"),
                 "target", "a parameters file or a run folder (outputs/<run>)")

    export = commands.add_parser("export", help="write one model compressed by one setting at one level, with "
                                                "save_pretrained (loads with no lobolib code)")
    export.add_argument("parameters", help=parameters_help)
    export.add_argument("directory", help="a new (or empty) folder to write the model into")
    export.add_argument("--model", required=True, help="the model's name in the parameters")
    export.add_argument("--setting", required=True, help="the compression setting's name (or canonical description)")
    export.add_argument("--level", required=True, type=float, help="its level: a sparsity, or a bit width")
    export.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, as for run")

    bench = commands.add_parser("bench", help="benchmarks of the toolkit itself (pruning kernel, sweep throughput, "
                                              "compressed formats, compression methods)")
    bench.add_argument("what", nargs="?", choices=["sweep", "prune", "data-parallel", "sharded", "compress", "methods"],
                       default="sweep",
                       help="sweep: throughput vs the reference loop; prune: the pruning kernel; data-parallel: "
                            "N GPUs vs one (under accelerate launch); sharded: 7B over two GPUs on a dual-T4 budget; "
                            "compress: each weight format (int8, int4, 2:4, 50%% unstructured) against dense; "
                            "methods: one level of each pruning/quantization method")
    bench.add_argument("--device", default=None, help="cpu or cuda (bench prune, sweep, compress, methods)")
    bench.add_argument("--out", default=None, help="write the results as JSON to this file")
    bench.add_argument("--data-dir", default=None, help="bench sweep: real items from this folder (with --tokenizer-dir)")
    bench.add_argument("--tokenizer-dir", default=None, help="bench sweep: tokenizer for the real items")
    bench.add_argument("--level", type=float, default=None, help="bench sweep: the sparsity level pruned (default 0.5)")
    bench.add_argument("--only", default=None, metavar="NAMES",
                       help="bench compress/methods: only these comma-separated formats or methods")
    bench.add_argument("--batch", type=int, default=None,
                       help="bench compress: prompts per batch (default: the sweep's batching on CUDA)")
    bench.add_argument("--sweep-json", default=None,
                       help="bench methods: a `bench sweep` result whose evaluation time the projection uses")
    bench.add_argument("--eval-seconds", type=float, default=None,
                       help="bench methods: seconds one level's evaluation takes, for the projection")
    return parser


def parameters_file(target: str | None) -> Path:
    """The parameters file a command names: an existing file, else a shipped one of that name
    (`default`, `parameters/default.yaml`), else the path as given (load_config says it is missing).
    No name: the shipped default."""
    from lobolib.experiment import runner

    if target is None:
        return runner.shipped("parameters") / "default.yaml"
    path = Path(target)
    if path.is_file():
        return path
    return runner.shipped_parameters(target) or path


@_starting()
def _config(target: str | None, overrides: list[str], out: str | None = None):
    """The parameters of a file or a run folder (with --out), checked against everything they name
    (preflight) before any work; Ctrl-C meanwhile exits at once (`_starting`)."""
    import dataclasses

    from lobolib.experiment import config, preflight, runner

    path = Path(target) if target is not None else None
    if path is not None and path.is_dir():
        if out is not None:
            raise LoboError(f"{target} is a run folder, which says where the run is; drop --out (or give parameters)")
        data = runner.config_of_run(path).to_dict()
        data["outputs"], data["run"] = str(path.resolve().parent), path.resolve().name  # where the folder is now
        loaded = config.from_dict(config.apply_overrides(data, overrides))
    else:
        loaded = config.load_config(parameters_file(target), overrides)
    if out is not None:
        loaded = dataclasses.replace(loaded, outputs=os.path.abspath(os.path.expanduser(out)))
    return preflight.check(loaded)


def _run(args) -> int:
    from lobolib.experiment import runner

    config = _config(args.parameters, args.overrides, args.out)
    report = runner.run(config, progress=not args.quiet, wait=args.wait, announce="run")
    print(f"report: {report}")
    return 0


def _sweep(args) -> int:
    from lobolib.experiment import runner

    config = _config(args.parameters, args.overrides, args.out)
    runner.sweep(config, progress=not args.quiet, wait=args.wait, announce="sweep")
    return 0


def _rescore(args) -> int:
    from lobolib.experiment import runner
    from lobolib.experiment.store import RecordStore

    config = _config(args.target, args.overrides, args.out)
    store = RecordStore(config.output_dir)
    if not store.legacy_files() and not store.cells():
        raise LoboError(f"no records in {config.output_dir}: run `{_prog()} run` first")
    report = runner.run(config, notebooks=runner.RESCORE_NOTEBOOKS, evaluate=False, progress=not args.quiet,
                        wait=args.wait, announce="rescore")  # fmt: skip
    print(f"report: {report}")
    return 0


def _export(args) -> int:
    with _starting():
        from lobolib.experiment import config, preflight
        from lobolib.experiment.export import check_level, export, find_setting

        loaded = config.load_config(parameters_file(args.parameters), args.overrides)
        check_level(find_setting(loaded, args.setting), args.level)  # before loading anything
        checked = preflight.check(loaded, items=False)
    folder = export(checked, args.model, args.setting, args.level, args.directory)
    print(f"exported: {folder}")
    return 0


_BENCH_OPTIONS = {"only": ("compress", "methods"), "batch": ("compress",), "sweep_json": ("methods",),
                  "eval_seconds": ("methods",)}


def _bench(args) -> int:
    import importlib

    for option, benches in _BENCH_OPTIONS.items():
        if getattr(args, option) is not None and args.what not in benches:
            flag = "--" + option.replace("_", "-")
            raise LoboError(f"{flag} is for bench {' and '.join(benches)}, not bench {args.what}; drop {flag}")
    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    module = {"data-parallel": "gpus", "sharded": "gpus"}.get(args.what, args.what)
    with _starting():
        bench = importlib.import_module(f"lobolib.perf.{module}")  # only the bench asked for
    if args.what == "prune":
        from lobolib.perf.shapes import write_json

        write_json(bench.bench_prune(device=args.device), args.out)  # bench_prune prints its table
    elif args.what == "compress":
        bench.bench_compress(device=args.device, batch=args.batch, formats=only, out=args.out)
    elif args.what == "methods":
        bench.bench_methods(device=args.device, methods=only, sweep_json=args.sweep_json,
                            eval_seconds=args.eval_seconds, out=args.out)
    else:
        given = {"out": args.out, "data_dir": args.data_dir, "tokenizer_dir": args.tokenizer_dir, "level": args.level}
        given = {key: value for key, value in given.items() if value is not None}
        if args.what == "data-parallel":
            if args.level is not None:
                raise LoboError("bench data-parallel takes no --level: it sweeps one fixed level per process; drop --level")
            bench.bench_data_parallel(**given)
        elif args.what == "sharded":
            bench.bench_sharded(**given)
        else:
            bench.bench_sweep(**given, **({"device": args.device} if args.device else {}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warning
    with _starting():
        from lobolib.experiment.runner import NotebookFailed
    try:
        with _starting():
            args = build_parser().parse_args(argv)
        commands = {"run": _run, "sweep": _sweep, "rescore": _rescore, "export": _export, "bench": _bench}
        return commands[args.command](args)
    except LoboError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except NotebookFailed as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr, ``warning: ...`` (lobolib's own) or ``warning: Category:
    ...`` (another library's)."""
    ours = f"{os.sep}lobolib{os.sep}" in str(filename)
    text = _one_line(str(message)) if ours else f"{category.__name__}: {_one_line(str(message))}"
    print(f"warning: {text}", file=file or sys.stderr)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def entry_point() -> None:
    """The `lobotomy` command (pyproject's console script): `python -m lobolib` by another name."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
