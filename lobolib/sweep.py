"""The pruning sweep: one model load, ascending sparsity levels, cumulative in-place pruning, and
evaluation of only the (model, benchmark, level) cells missing from the record store.

Per-matrix (and global) magnitude masks are nested — the weights zeroed at 40% are a subset of
those zeroed at 45% — so pruning a model in place from one level to the next gives exactly the
one-shot result at the next level. A sweep therefore loads a model once and walks the levels
upward; no reload, no copy of the weights. Levels whose cells are all in the store are skipped
without any pruning work: the model is pruned directly to the next level that has a missing cell
(one-shot there == cumulative from 0).

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

from lobolib import prune
from lobolib.benchmarks import Item
from lobolib.distributed import Shard, barrier, current_shard, gather_in_order, shard_items
from lobolib.errors import LoboError
from lobolib.evaluate import evaluate
from lobolib.store import RecordStore, atomic_write_text, model_slug, sparsity_key

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
    processes each evaluates its shard of every cell's items and the main process writes the merged
    cell (see lobolib.distributed); every process must call run_sweep with the same arguments.

    Returns one summary row per (level, benchmark): model, sparsity, benchmark, status ("evaluated"
    or "stored"), n_items, accuracy (invalid counts as wrong), invalid_rate, loglik_accuracy,
    achieved_sparsity (`pruned` of the sparsity report: the fraction of zeros in the pruned matrices;
    from the sparsity JSON for stored levels, NaN where never recorded), seconds (evaluation time, 0
    for stored cells).
    """
    from tqdm.auto import tqdm

    keys = validate_levels(levels)
    if scope not in prune.SCOPES:
        raise LoboError(f"scope must be one of {list(prune.SCOPES)}, got {scope!r}")
    _check_item_sets(item_sets)
    options = _check_eval_options(eval_options)
    benchmarks = list(item_sets)
    shard = shard or current_shard()
    progress = progress and shard.is_main
    barrier(shard)  # every process sees the same store before deciding what is missing
    missing = set(missing_cells(store, model_name, keys, benchmarks))
    if missing:
        _check_not_pruned_beyond(model, min(level for level, _ in missing), include_lm_head)

    rows = []
    for level in tqdm(keys, desc=f"sweep {model_name}", unit="level", disable=not progress):
        todo = [b for b in benchmarks if (level, b) in missing]
        if todo and level > 0:
            prune.magnitude_prune(model, level, scope=scope, include_lm_head=include_lm_head)
        if todo and shard.is_main:
            report = prune.sparsity_report(model, include_lm_head=include_lm_head)
            record_sparsity(store, model_name, level, report, scope=scope, include_lm_head=include_lm_head)
        barrier(shard)
        achieved = read_sparsity(store, model_name).get("levels", {}).get(f"{level:.4f}", {}).get("pruned", math.nan)
        for benchmark in benchmarks:
            if benchmark in todo:
                started = time.perf_counter()
                items = item_sets[benchmark]
                positions, mine = shard_items(items, shard)
                records = evaluate(model, tokenizer, mine, model_name=model_name,
                                   sparsity=level, progress=progress, **options)
                records = gather_in_order(records, positions, shard, len(items))
                seconds = time.perf_counter() - started
                if shard.is_main:
                    store.write(model_name, benchmark, level, records)
                barrier(shard)
                summary, status = _cell_summary(_records_frame(records)), "evaluated"
            else:
                frame = store.read(models=[model_name], benchmarks=[benchmark], sparsities=[level])
                summary, status, seconds = _cell_summary(frame), "stored", 0.0
            rows.append({"model": model_name, "sparsity": level, "benchmark": benchmark, "status": status,
                         **summary, "achieved_sparsity": achieved, "seconds": seconds})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
