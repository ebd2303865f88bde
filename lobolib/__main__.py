"""Command line: ``python -m lobolib run|rescore|bench``.

    python -m lobolib run [parameters/X.yaml] [--set key=value ...]
        Run the experiment: notebooks 01-04 into outputs/<run>/, then outputs/<run>/report.html.
        Default parameters: parameters/default.yaml (embedded models, offline, CPU, minutes).
        A rerun (or a run after a crash) reuses every record already on disk.
    python -m lobolib rescore [parameters/X.yaml | outputs/<run>] [--set key=value ...]
        Re-run notebooks 02-04 on the records already in the run folder, evaluating nothing.
    python -m lobolib sweep [parameters/X.yaml] [--set key=value ...]
        Only evaluate the missing records (no notebooks). Data parallel over N GPUs:
        accelerate launch --num_processes N -m lobolib sweep parameters/X.yaml
    python -m lobolib bench prune [--device cpu|cuda]
        Time the pruning kernel (lobolib.perf.prune.bench_prune).
    python -m lobolib bench [--out FILE.json] [--device cpu|cuda] [--data-dir D --tokenizer-dir T] [--level 0.5]
        Measure sweep throughput (lobolib.perf.sweep.bench_sweep).
    python -m lobolib bench compress [--out F.json] [--device cpu|cuda] [--batch N] [--only int4,sparse24_cusparselt]
        What each weight format buys against dense (lobolib.perf.compress.bench_compress).
    python -m lobolib bench methods [--out F.json] [--device cpu|cuda] [--only wanda,gptq4]
                                    [--sweep-json SWEEP.json | --eval-seconds S]
        Time one level of each compression method (lobolib.perf.methods.bench_methods).

A user error (bad parameters, a missing file) prints one line "error: ..." and exits 2; a notebook
that fails otherwise prints one line naming the notebook and cell and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lobolib.errors import LoboError


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every other user error."""

    def error(self, message: str):
        raise LoboError(f"{message} (see: {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m lobolib", description="Prune language models level by level and measure what they still know.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run an experiment (notebooks 01-04, report.html)")
    run.add_argument("parameters", nargs="?", default="parameters/default.yaml", help="parameters/X.yaml")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a parameter, e.g. --set sparsity.step=0.1 or --set models.0.dtype=float16")
    run.add_argument("--quiet", action="store_true", help="no progress bars")

    sweep = commands.add_parser("sweep", help="only evaluate the missing records (data parallel under accelerate launch)")
    sweep.add_argument("parameters", nargs="?", default="parameters/default.yaml", help="parameters/X.yaml")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")

    rescore = commands.add_parser("rescore", help="re-analyse existing records (notebooks 02-04, no evaluation)")
    rescore.add_argument("target", nargs="?", default="parameters/default.yaml",
                         help="parameters/X.yaml or a run folder outputs/<run>")
    rescore.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    rescore.add_argument("--quiet", action="store_true", help="no progress bars")

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


def _config(target: str, overrides: list[str]):
    """The parameters of a file or a run folder, checked against everything they name (preflight)."""
    from lobolib.experiment import config, preflight, runner

    path = Path(target)
    if path.is_dir():
        loaded = runner.config_of_run(path)
        return preflight.check(config.from_dict(config.apply_overrides(loaded.to_dict(), overrides)))
    return preflight.check(config.load_config(path, overrides))


def _run(args) -> int:
    from lobolib.experiment import runner

    config = _config(args.parameters, args.overrides)
    report = runner.run(config, progress=not args.quiet)
    print(f"report: {report}")
    return 0


def _sweep(args) -> int:
    from lobolib.experiment import runner

    runner.sweep(_config(args.parameters, args.overrides), progress=not args.quiet)
    return 0


def _rescore(args) -> int:
    from lobolib.experiment import runner

    from lobolib.experiment.notebook import open_store, require_records

    config = _config(args.target, args.overrides)
    require_records(open_store(config))
    report = runner.run(config, notebooks=runner.RESCORE_NOTEBOOKS, evaluate=False, progress=not args.quiet)
    print(f"report: {report}")
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
    from lobolib.experiment.runner import NotebookFailed

    try:
        args = build_parser().parse_args(argv)
        return {"run": _run, "sweep": _sweep, "rescore": _rescore, "bench": _bench}[args.command](args)
    except LoboError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except NotebookFailed as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: the records written so far are kept; rerun the same command to resume", file=sys.stderr)
        return 130


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
