"""The pruning sweep: one model load, ascending sparsity levels, cumulative in-place pruning, and
evaluation of only the (model, benchmark, level) cells missing from the record store.

Per-matrix (and global) magnitude masks are nested — the weights zeroed at 40% are a subset of
those zeroed at 45% — so pruning a model in place from one level to the next gives exactly the
one-shot result at the next level. A sweep therefore loads a model once and walks the levels
upward; no reload, no copy of the weights. Levels whose cells are all in the store are skipped
without any pruning work: the model is pruned directly to the next level that has a missing cell
(one-shot there == cumulative from 0).

Several GPUs: under `accelerate launch` the processes take one level each, N levels at a time
(and share the items of levels left over), see `run_sweep`.

Interrupt safety: each cell's records are written atomically (`RecordStore.write`) as soon as the
cell is evaluated, so killing a sweep at any moment loses at most the cell in progress; a rerun
evaluates only what is missing.

Achieved sparsity: after pruning to a level, `prune.sparsity_report` is merged into
``<store.root>/sparsity/<model slug>.json`` (written atomically) under the level's key ("0.4500"):
``{"model", "levels": {key: {"requested", "scope", "include_lm_head", "pruned", "overall",
"per_matrix"}}}``. The summary DataFrame also carries it per row.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from lobolib.compress import prune
from lobolib.benchmarks import Item
from lobolib.experiment.distributed import Shard, barrier, current_shard, gather_in_order, gather_object, shard_items
from lobolib.errors import LoboError
from lobolib.evaluation.evaluate import evaluate
from lobolib.experiment.store import RecordStore, atomic_write_text, model_slug, sparsity_key

PRUNED_TOLERANCE = 0.005  # zeros a dense model may hold beyond the level before it counts as pruned
EVAL_OPTION_KEYS = ("max_new_tokens", "batch_size", "template", "shots")
SUMMARY_COLUMNS = (
    "model", "sparsity", "benchmark", "status", "n_items", "accuracy", "invalid_rate",
    "loglik_accuracy", "achieved_sparsity", "seconds",
)


def validate_levels(levels: Sequence[float]) -> list[float]:
    """The levels as cell keys (rounded to 4 decimals), checked: non-empty, each in [0, 1),
    strictly ascending. LoboError otherwise."""
    try:
        values = [] if isinstance(levels, (str, bytes)) else list(levels)
    except TypeError:
        values = []
    if not values:
        raise LoboError(f"levels must be a non-empty list of sparsities in [0, 1), got {levels!r}")
    keys = [sparsity_key(level) for level in values]
    for low, high in zip(keys, keys[1:]):
        if not low < high:
            raise LoboError(
                f"levels must be strictly ascending (pruning is cumulative), but {low} is followed by {high}; "
                "sort them and drop duplicates"
            )
    return keys


def missing_cells(store: RecordStore, model_name: str, levels: Sequence[float], benchmarks: Sequence[str]) -> list[tuple[float, str]]:
    """The (level, benchmark) cells of `model_name` not yet complete in `store`, ascending by
    level. Empty means a runner need not even load the model."""
    return [
        (level, benchmark)
        for level in validate_levels(levels)
        for benchmark in benchmarks
        if not store.has(model_name, benchmark, level)
    ]


def sparsity_path(store: RecordStore, model_name: str) -> Path:
    """Where the achieved-sparsity reports of a model live: ``<root>/sparsity/<slug>.json``."""
    return Path(store.root) / "sparsity" / f"{model_slug(model_name)}.json"


def read_sparsity(store: RecordStore, model_name: str) -> dict:
    """The achieved-sparsity reports recorded for a model ({} when none)."""
    path = sparsity_path(store, model_name)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise LoboError(f"{path} is not valid JSON; delete it (the next sweep rewrites it)") from None


def record_sparsity(store: RecordStore, model_name: str, level: float, report: Mapping, *, scope: str, include_lm_head: bool) -> None:
    """Merge one level's `prune.sparsity_report` into the model's sparsity JSON (atomically)."""
    data = read_sparsity(store, model_name)
    data["model"] = model_name
    entry = {"requested": level, "scope": scope, "include_lm_head": include_lm_head}
    entry.update({k: report[k] for k in ("pruned", "overall", "per_matrix") if k in report})
    data.setdefault("levels", {})[f"{level:.4f}"] = entry
    atomic_write_text(sparsity_path(store, model_name), json.dumps(data, indent=1, sort_keys=True) + "\n")


def _check_not_pruned_beyond(model, level: float, include_lm_head: bool) -> None:
    """Refuse a model that already holds more zeros than `level` allows (e.g. one left pruned by
    an earlier sweep in the same notebook): its records at `level` would describe a sparser model."""
    pruned = prune.sparsity_report(model, include_lm_head=include_lm_head)["pruned"]
    if pruned > level + PRUNED_TOLERANCE:
        raise LoboError(
            f"the model is already {pruned:.1%} sparse, beyond the first level to evaluate ({level:.1%}); "
            "pruning cannot be undone in place: load the model afresh (models.load_model) and rerun"
        )


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


def _cell_summary(frame: pd.DataFrame) -> dict:
    """Accuracy, invalid rate and log-likelihood accuracy of one cell's records."""
    n = len(frame)
    scored = frame[frame["loglik_answer"].notna()]
    return {
        "n_items": n,
        "accuracy": float(frame["correct"].mean()) if n else math.nan,
        "invalid_rate": float(1 - frame["valid"].mean()) if n else math.nan,
        "loglik_accuracy": float((scored["loglik_answer"] == scored["gold"]).mean()) if len(scored) else math.nan,
    }


def _records_frame(records) -> pd.DataFrame:
    rows = [{"gold": r.gold, "answer": r.answer, "loglik_answer": r.loglik_answer} for r in records]
    frame = pd.DataFrame(rows, columns=["gold", "answer", "loglik_answer"])
    frame["correct"] = [a is not None and a == g for a, g in zip(frame["answer"], frame["gold"])]
    frame["valid"] = frame["answer"].notna()
    return frame


class _CellRunner:
    """Prunes `model` to a level and evaluates that level's missing cells — for `run_sweep`, in
    one of its two data-parallel modes. `seconds` and `summaries` collect each evaluated cell's
    wall time and `_cell_summary` (on every process: the records are gathered to all)."""

    def __init__(self, model, tokenizer, model_name, item_sets, store, missing, options, scope, include_lm_head,
                 shard, progress):
        self.model, self.tokenizer, self.model_name, self.progress = model, tokenizer, model_name, progress
        self.item_sets, self.store, self.missing, self.options = item_sets, store, missing, options
        self.scope, self.include_lm_head, self.shard = scope, include_lm_head, shard
        self.seconds: dict[tuple[float, str], float] = {}
        self.summaries: dict[tuple[float, str], dict] = {}

    def _prune(self, level: float) -> dict:
        if level > 0:
            prune.magnitude_prune(self.model, level, scope=self.scope, include_lm_head=self.include_lm_head)
        return prune.sparsity_report(self.model, include_lm_head=self.include_lm_head)

    def _evaluate(self, level: float, items: Sequence[Item]):
        return evaluate(self.model, self.tokenizer, items, model_name=self.model_name, sparsity=level,
                        progress=self.progress, **self.options)

    def _todo(self, level: float) -> list[str]:
        return [b for b in self.item_sets if (level, b) in self.missing]

    def _keep(self, level: float, benchmark: str, records) -> None:
        """Summarise a complete cell; the main process writes it to the store."""
        self.summaries[(level, benchmark)] = _cell_summary(_records_frame(records))
        if self.shard.is_main:
            self.store.write(self.model_name, benchmark, level, records)

    def level_per_process(self, levels: Sequence[float]) -> None:
        """Process r prunes its own copy to `levels[r]` and evaluates that level's cells on every
        item; the records and sparsity reports are gathered and the main process writes them all
        (so hosts need no shared disk). Each GPU runs full batches, so throughput scales with the
        GPUs; a process's levels ascend, so in-place pruning stays exact."""
        level = levels[self.shard.rank]
        report = self._prune(level)
        cells, seconds = {}, {}
        for benchmark in self._todo(level):
            started = time.perf_counter()
            cells[benchmark] = self._evaluate(level, self.item_sets[benchmark])
            seconds[(level, benchmark)] = time.perf_counter() - started
        for done_level, done_report, done_cells, done_seconds in gather_object(
                [(level, report, cells, seconds)], self.shard):
            self.seconds.update(done_seconds)
            if self.shard.is_main:
                record_sparsity(self.store, self.model_name, done_level, done_report, scope=self.scope,
                                include_lm_head=self.include_lm_head)
            for benchmark, records in done_cells.items():
                self._keep(done_level, benchmark, records)
        barrier(self.shard)

    def items_per_process(self, level: float) -> None:
        """Every process prunes to `level` and evaluates its shard of each missing cell's items; the
        main process writes the merged cell (and the sparsity report)."""
        report = self._prune(level)
        if self.shard.is_main:
            record_sparsity(self.store, self.model_name, level, report, scope=self.scope,
                            include_lm_head=self.include_lm_head)
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
    levels: Sequence[float],
    item_sets: Mapping[str, Sequence[Item]],
    store: RecordStore,
    scope: str = "layer",
    include_lm_head: bool = False,
    eval_options: Mapping | None = None,
    progress: bool = True,
    shard: Shard | None = None,
) -> pd.DataFrame:
    """Prune `model` in place through ascending `levels` and evaluate every missing cell.

    `model` must be freshly loaded (unpruned, or pruned no further than the first level this call
    prunes to): pruning only ever adds zeros, so a model already sparser than the first missing
    level is refused with a LoboError. For each level with a cell missing from `store`, the
    model is pruned to that level with `prune.magnitude_prune(model, level, scope=...,
    include_lm_head=...)` (levels with every cell stored are skipped without pruning — one-shot to
    the next missing level equals cumulative pruning), its achieved sparsity is recorded (see the
    module docstring), and each missing benchmark of `item_sets` ({benchmark: Items}) is evaluated
    with `evaluate(..., **eval_options)` (keys: max_new_tokens, batch_size, template, shots) and
    written to `store` at once. On return the model is pruned to the highest level that had a
    missing cell (unchanged when nothing was missing).

    Data parallel (`shard`, default: `distributed.current_shard()`): under a launcher with N
    processes, every process must call run_sweep with the same arguments. The missing levels go
    out N at a time, one level per process: each prunes its own copy to its level and evaluates
    every item of that level's cells (full batches on every GPU). Levels left over (fewer than N)
    are shared item-wise: each process evaluates a size-balanced shard of the items (see
    lobolib.distributed). Either way the records are gathered and the main process alone writes
    each cell, once, complete, in item order. A process's model ends pruned to the last
    level it evaluated.

    Returns one summary row per (level, benchmark): model, sparsity, benchmark, status ("evaluated"
    or "stored"), n_items, accuracy (invalid counts as wrong), invalid_rate, loglik_accuracy,
    achieved_sparsity (`pruned` of the sparsity report: the fraction of zeros in the pruned matrices;
    from the sparsity JSON for stored levels, NaN where never recorded), seconds (evaluation time, 0
    for stored cells).
    """
    keys = validate_levels(levels)
    if scope not in prune.SCOPES:
        raise LoboError(f"scope must be one of {list(prune.SCOPES)}, got {scope!r}")
    _check_item_sets(item_sets)
    options = _check_eval_options(eval_options)
    shard = shard or current_shard()
    progress = progress and shard.is_main
    barrier(shard)  # every process sees the same store before deciding what is missing
    missing = set(missing_cells(store, model_name, keys, list(item_sets)))
    if missing:
        _check_not_pruned_beyond(model, min(level for level, _ in missing), include_lm_head)
    todo_levels = [level for level in keys if any((level, b) in missing for b in item_sets)]
    whole = len(todo_levels) - len(todo_levels) % shard.world if shard.world > 1 else 0
    cell = _CellRunner(model, tokenizer, model_name, item_sets, store, missing, options, scope, include_lm_head, shard,
                       progress)

    from tqdm.auto import tqdm

    with tqdm(total=len(todo_levels), desc=f"sweep {model_name}", unit="level", disable=not progress) as bar:
        for first in range(0, whole, shard.world):  # a level per process, whole items
            cell.level_per_process(todo_levels[first:first + shard.world])
            bar.update(shard.world)
        for level in todo_levels[whole:]:  # the rest: every process on a shard of the items
            cell.items_per_process(level)
            bar.update(1)
    barrier(shard)
    achieved = read_sparsity(store, model_name).get("levels", {})
    rows = []
    for level in keys:
        for benchmark in item_sets:
            evaluated = (level, benchmark) in missing
            summary = cell.summaries[(level, benchmark)] if evaluated else _cell_summary(
                store.read(models=[model_name], benchmarks=[benchmark], sparsities=[level]))
            rows.append({"model": model_name, "sparsity": level, "benchmark": benchmark,
                         "status": "evaluated" if evaluated else "stored", **summary,
                         "achieved_sparsity": achieved.get(f"{level:.4f}", {}).get("pruned", math.nan),
                         "seconds": cell.seconds.get((level, benchmark), 0.0)})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
