"""The sweep: one model load, one compression setting's levels, and evaluation of only the
(model, method, level, benchmark) cells missing from the record store.

A setting whose levels nest (magnitude: the weights zeroed at 40% are a subset of those zeroed
at 45%) is applied cumulatively, in place, level after level upward: pruning from one level to
the next gives exactly the one-shot result at the next level, so a sweep loads a model once and
never copies its weights. Levels whose cells are all stored are skipped without any work: the
model is compressed directly to the next level with a missing cell. A setting whose levels do
not nest (Wanda, SparseGPT, heads, quantization) restores the dense weights in place before each
level (`lobolib.compress.snapshot`). The level-0 (dense) cells are shared by every setting.

Several GPUs: under `accelerate launch` the processes take one level each, N levels at a time
(and share the items of levels left over), see `run_sweep`.

Interrupt safety: each cell's records are written atomically (`RecordStore.write`) as soon as the
cell is evaluated, so killing a sweep at any moment loses at most the cell in progress; a rerun
evaluates only what is missing.

What the compression did at each level (achieved sparsity per matrix and overall, the method's
own report, the calibration data's fingerprint) is merged into the store's report of the
(model, method) pair.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from lobolib.errors import LoboError
from lobolib.experiment.distributed import Shard, barrier, current_shard, gather_in_order, gather_object, shard_items
from lobolib.experiment.setting import Setting
from lobolib.experiment.store import RecordStore, level_key
from lobolib.records import Item

EVAL_OPTION_KEYS = ("max_new_tokens", "batch_size", "template", "shots", "benchmarks")
SUMMARY_COLUMNS = (
    "model", "setting", "method", "level", "benchmark", "status", "n_items", "accuracy", "invalid_rate",
    "loglik_accuracy", "achieved_sparsity", "seconds",
)  # fmt: skip


def missing_cells(store: RecordStore, model_name: str, setting: Setting, benchmarks: Sequence[str]) -> list[tuple[float, str]]:
    """The (level, benchmark) cells of `model_name` under `setting` not yet complete in `store`,
    in level order. Empty means a runner need not even load the model."""
    return [
        (level, benchmark)
        for level in setting.levels
        for benchmark in benchmarks
        if not store.has(model_name, setting.method_at(level), setting.cell_level(level), benchmark)
    ]


def _check_item_sets(item_sets: Mapping[str, Sequence[Item]]) -> None:
    if not isinstance(item_sets, Mapping) or not item_sets:
        raise LoboError("item_sets must be a non-empty dict {benchmark: list of Items}")
    for benchmark, items in item_sets.items():
        if not items:
            raise LoboError(f"item_sets[{benchmark!r}] is empty; drop the benchmark or load its items")
        wrong = [it.id for it in items if it.benchmark != benchmark]
        if wrong:
            raise LoboError(f"item_sets[{benchmark!r}] holds items of another benchmark (first: {wrong[0]!r})")


def _check_eval_options(eval_options: Mapping | None) -> dict:
    options = dict(eval_options or {})
    unknown = sorted(set(options) - set(EVAL_OPTION_KEYS))
    if unknown:
        raise LoboError(f"unknown eval_options {unknown}; allowed: {list(EVAL_OPTION_KEYS)}")
    return options


def _cell_summary(records) -> dict:
    """Accuracy, invalid rate and log-likelihood accuracy of one cell's Records."""
    n = len(records)
    scored = [r for r in records if r.loglik_answer is not None]
    return {
        "n_items": n,
        "accuracy": sum(r.answer is not None and r.answer == r.gold for r in records) / n if n else math.nan,
        "invalid_rate": sum(r.answer is None for r in records) / n if n else math.nan,
        "loglik_accuracy": sum(r.loglik_answer == r.gold for r in scored) / len(scored) if scored else math.nan,
    }


def _frame_summary(frame: pd.DataFrame) -> dict:
    scored = frame[frame["loglik_answer"].notna()]
    n = len(frame)
    return {
        "n_items": n,
        "accuracy": float(frame["correct"].mean()) if n else math.nan,
        "invalid_rate": float(1 - frame["valid"].mean()) if n else math.nan,
        "loglik_accuracy": float((scored["loglik_answer"] == scored["gold"]).mean()) if len(scored) else math.nan,
    }


class _CellRunner:
    """Compresses `model` to a level and evaluates that level's missing cells — for `run_sweep`,
    in one of its two data-parallel modes. `seconds` and `summaries` collect each evaluated cell's
    wall time and summary (on every process: the records are gathered to all)."""

    def __init__(self, model, tokenizer, model_name, setting, item_sets, store, missing, options, shard,
                 progress, compress):
        self.model, self.tokenizer, self.model_name, self.progress = model, tokenizer, model_name, progress
        self.setting, self.item_sets, self.store, self.missing = setting, item_sets, store, missing
        self.options, self.shard, self.compress = options, shard, compress
        self.seconds: dict[tuple[float, str], float] = {}
        self.summaries: dict[tuple[float, str], dict] = {}

    def _compress(self, level: float) -> dict:
        return self.compress(self.model, self.setting, level)

    def _evaluate(self, level: float, items: Sequence[Item]):
        from lobolib.evaluation.evaluate import evaluate

        return evaluate(self.model, self.tokenizer, items, model_name=self.model_name,
                        method=self.setting.method_at(level), level=self.setting.cell_level(level),
                        sparsity=self.setting.sparsity_at(level), progress=self.progress, **self.options)  # fmt: skip

    def _todo(self, level: float) -> list[str]:
        return [b for b in self.item_sets if (level, b) in self.missing]

    def _keep(self, level: float, benchmark: str, records) -> None:
        """Summarise a complete cell; the main process writes it to the store."""
        self.summaries[(level, benchmark)] = _cell_summary(records)
        if self.shard.is_main:
            self.store.write(self.model_name, self.setting.method_at(level), self.setting.cell_level(level), benchmark,
                             records)

    def _report(self, level: float, report: Mapping) -> None:
        if self.shard.is_main:
            self.store.write_report(self.model_name, self.setting.method_at(level), self.setting.cell_level(level),
                                    report)

    def level_per_process(self, levels: Sequence[float]) -> None:
        """Process r compresses its own copy to `levels[r]` and evaluates that level's cells on
        every item; the records and reports are gathered and the main process writes them all
        (so hosts need no shared disk). Each GPU runs full batches, so throughput scales with the
        GPUs; a process's levels ascend, so in-place nested pruning stays exact."""
        level = levels[self.shard.rank]
        report = self._compress(level)
        cells, seconds = {}, {}
        for benchmark in self._todo(level):
            started = time.perf_counter()
            cells[benchmark] = self._evaluate(level, self.item_sets[benchmark])
            seconds[(level, benchmark)] = time.perf_counter() - started
        for done_level, done_report, done_cells, done_seconds in gather_object(
                [(level, report, cells, seconds)], self.shard):
            self.seconds.update(done_seconds)
            self._report(done_level, done_report)
            for benchmark, records in done_cells.items():
                self._keep(done_level, benchmark, records)
        barrier(self.shard)

    def items_per_process(self, level: float) -> None:
        """Every process compresses to `level` and evaluates its shard of each missing cell's
        items; the main process writes the merged cell (and the report)."""
        self._report(level, self._compress(level))
        for benchmark in self._todo(level):
            started = time.perf_counter()
            items = self.item_sets[benchmark]
            positions, mine = shard_items(items, self.shard)
            records = gather_in_order(self._evaluate(level, mine), positions, self.shard, len(items))
            self._keep(level, benchmark, records)
            self.seconds[(level, benchmark)] = time.perf_counter() - started
            barrier(self.shard)


def run_sweep(
    model,
    tokenizer,
    *,
    model_name: str,
    setting: Setting,
    item_sets: Mapping[str, Sequence[Item]],
    store: RecordStore,
    eval_options: Mapping | None = None,
    compress: Callable | None = None,
    progress: bool = True,
    shard: Shard | None = None,
) -> pd.DataFrame:
    """Compress `model` through `setting`'s levels and evaluate every missing cell.

    `compress(model, setting, level) -> report` applies the setting at a level
    (default: a `lobolib.experiment.compression.Compressor` of this model, which keeps no dense
    copy: `model` must be freshly loaded, or compressed no further than the first level this call
    reaches — a model already sparser is refused with a LoboError). Each missing
    benchmark of `item_sets` ({benchmark: Items}) is evaluated with `evaluate(...,
    **eval_options)` (keys: max_new_tokens, batch_size, template, shots, benchmarks) and written
    to `store` at once.

    Data parallel (`shard`, default: `distributed.current_shard()`): under a launcher with N
    processes, every process must call run_sweep with the same arguments. The missing levels go
    out N at a time, one level per process: each compresses its own copy to its level and
    evaluates every item of that level's cells (full batches on every GPU). Levels left over
    (fewer than N) are shared item-wise: each process evaluates a size-balanced shard of the items
    (see lobolib.experiment.distributed). Either way the records are gathered and the main process
    alone writes each cell, once, complete, in item order.

    Returns one summary row per (level, benchmark): model, setting (its name), method, level,
    benchmark, status ("evaluated" or "stored"), n_items, accuracy (invalid counts as wrong),
    invalid_rate, loglik_accuracy, achieved_sparsity (zeros in the compressed matrices, from the
    store's reports; NaN where never recorded), seconds (evaluation time, 0 for stored cells).
    """
    if compress is None:
        from lobolib.experiment.compression import Compressor

        compress = Compressor(tokenizer=tokenizer)
    _check_item_sets(item_sets)
    options = _check_eval_options(eval_options)
    shard = shard or current_shard()
    progress = progress and shard.is_main
    barrier(shard)  # every process sees the same store before deciding what is missing
    missing = set(missing_cells(store, model_name, setting, list(item_sets)))
    todo_levels = [level for level in setting.levels if any((level, b) in missing for b in item_sets)]
    whole = len(todo_levels) - len(todo_levels) % shard.world if shard.world > 1 else 0
    cell = _CellRunner(model, tokenizer, model_name, setting, item_sets, store, missing, options, shard,
                       progress, compress)

    from tqdm.auto import tqdm

    with tqdm(total=len(todo_levels), desc=f"sweep {model_name} · {setting.name}", unit="level",
              disable=not progress) as bar:
        for first in range(0, whole, shard.world):  # a level per process, whole items
            cell.level_per_process(todo_levels[first:first + shard.world])
            bar.update(shard.world)
        for level in todo_levels[whole:]:  # the rest: every process on a shard of the items
            cell.items_per_process(level)
            bar.update(1)
    barrier(shard)
    return _summary(store, model_name, setting, item_sets, missing, cell)


def _summary(store, model_name, setting, item_sets, missing, cell) -> pd.DataFrame:
    rows = []
    for level in setting.levels:
        method, stored_at = setting.method_at(level), setting.cell_level(level)
        reports = store.read_reports(model_name, method)
        for benchmark in item_sets:
            evaluated = (level, benchmark) in missing
            summary = cell.summaries[(level, benchmark)] if evaluated else _frame_summary(
                store.read(models=[model_name], methods=[method], levels=[stored_at], benchmarks=[benchmark]))
            achieved = reports.get(f"{level_key(stored_at):.4f}", {}).get("pruned", math.nan)
            rows.append({"model": model_name, "setting": setting.name, "method": method, "level": level,
                         "benchmark": benchmark, "status": "evaluated" if evaluated else "stored", **summary,
                         "achieved_sparsity": achieved, "seconds": cell.seconds.get((level, benchmark), 0.0)})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
