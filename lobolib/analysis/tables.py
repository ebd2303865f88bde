"""Score and robustness tables from per-item records, written as CSV and Markdown.

Records come in as curves (`curves.assign_settings`: columns `setting` and `x`): one curve per
(model, compression setting). Two scorings side by side:

- "lobolib": our parser's answers (`answer`, None = invalid) and metrics that never count an
  invalid answer as a class: accuracy, macro_f1 (valid classes), kappa (Cohen 1960),
  invalid_rate, yes_f1 (yes/no/maybe benchmarks), first_token_accuracy (the first-token
  log-likelihood answer, where the records carry it).
- "reference": where the reference study scored a benchmark (Borzello & Dalvi 2026,
  "BioMedical LLM Lobotomy"), its parser re-applied to `raw_response` (`parsing.parse_reference`)
  and its metrics: accuracy, reference_yes_f1 (PubMedQA: the F1 of the yes class) and
  reference_macro_f1 (MMLU: macro F1 over every label seen, its invalid "X" a fifth class).

`build_tables(records)` gives
- ``scores``: long format, one row per (model, setting, benchmark, group, level, scoring,
  metric): value, ci_low, ci_high (percentile bootstrap over items, Efron 1979);
- ``robustness``: one row per (model, setting, benchmark, group, scoring, metric) with auc_raw
  (the study's `numpy.trapezoid(score, x)`), auc_normalised (divided by the x range), their CIs
  and the cliff level; rows whose model is "A - B" hold the paired difference of two models under
  one setting, rows whose setting is "S - T" the paired difference of two settings for one model
  (same item resamples for both), each with its two-sided bootstrap p-value.

Groups: a benchmark whose items carry no subject (PubMedQA) is one group named after it; one with
subject groups (MMLU) gets "all" (every subject pooled) and each group whose subjects are all in
the records (or that the caller names); one with other subjects gets "all" and each subject. Every
level of a (benchmark, group) is scored on the items present at every level of every curve, so
curves, AUCs and differences keep their item pairing.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lobolib.analysis import metrics
from lobolib.analysis.curves import assign_settings, unit_of
from lobolib.benchmarks import PERPLEXITY, YES_NO_MAYBE, Benchmark
from lobolib.benchmarks import get as get_benchmark
from lobolib.errors import LoboError

SCORE_COLUMNS = ["model", "setting", "method", "benchmark", "group", "level", "scoring", "metric", "value",
                 "ci_low", "ci_high"]  # fmt: skip
ROBUSTNESS_COLUMNS = [
    "model", "setting", "method", "benchmark", "group", "scoring", "metric", "levels", "items",
    "auc_raw", "auc_raw_ci_low", "auc_raw_ci_high",
    "auc_normalised", "ci_low", "ci_high", "cliff", "p",
]  # fmt: skip
ROBUSTNESS_SKIP = ("invalid_rate",)  # a rate of failures has no "robustness"
CURVE_KEYS = ["model", "setting", "benchmark", "level"]


def _bench(name: str, benchmarks: Mapping[str, Benchmark] | None) -> Benchmark:
    return get_benchmark(name, benchmarks)


def curves_of(records: pd.DataFrame) -> pd.DataFrame:
    """`records` as curves: unchanged when they already carry `setting` and `x`, else one curve
    per compressed method (`curves.assign_settings`)."""
    return records if {"setting", "x"} <= set(records.columns) else assign_settings(records)


# ----------------------------------------------------------------------------- predictions


def reference_predictions(records: pd.DataFrame, options: Mapping[str, Sequence[str]] | None = None,
                          benchmarks: Mapping[str, Benchmark] | None = None) -> list[str | None]:
    """The reference study's answer for each record, re-parsed from `raw_response` (None for a
    benchmark the study did not score).

    Its MMLU rule needs each item's option texts: from `options` ({item_id: texts}), else an
    `options` column of the records; failing both, the `reference_parsed` column that imported
    logs carry (the study's own parse) is used.
    """
    from lobolib.evaluation.parsing import parse_reference

    lookup = dict(options or {})
    has_column = "options" in records.columns
    logged = records["reference_parsed"] if "reference_parsed" in records.columns else None
    answers = []
    for row, (benchmark, item_id, text) in enumerate(
        zip(records["benchmark"], records["item_id"], records["raw_response"])
    ):
        rule = _bench(benchmark, benchmarks).reference_parser
        text = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
        if rule is None:
            answers.append(None)
            continue
        if _bench(benchmark, benchmarks).kind == YES_NO_MAYBE:
            answers.append(parse_reference(rule, text, ()))
            continue
        item_options = lookup.get(item_id)
        if item_options is None and has_column:
            item_options = records["options"].iloc[row]
        if item_options is not None and not (isinstance(item_options, float) and math.isnan(item_options)):
            answers.append(parse_reference(rule, text, tuple(item_options)))
        elif logged is not None and isinstance(logged.iloc[row], str) and logged.iloc[row]:
            answers.append(logged.iloc[row].strip().upper())
        else:
            raise LoboError(
                f"reference scoring of {benchmark} item {item_id!r} needs its option texts: pass options="
                "{item_id: options} (e.g. from the loaded items) or records with a reference_parsed column"
            )
    return answers


def benchmark_groups(benchmark: Benchmark, subjects: Sequence[str], requested: Sequence[str] = ()) -> dict[str, list[str]]:
    """{group: subjects present} of one benchmark (see the module docstring)."""
    present = list(dict.fromkeys(subjects))
    if present == [benchmark.name]:
        return {benchmark.name: present}
    groups = {"all": present}
    if benchmark.groups:
        for name, members in benchmark.groups.items():
            inside = [s for s in members if s in present]
            if inside and (len(inside) == len(members) or name in requested):
                groups[name] = inside
    elif len(present) > 1:
        groups.update({subject: [subject] for subject in present})
    return groups


# ----------------------------------------------------------------------------- tables


def _labels(values) -> np.ndarray:
    """Labels as an object array, None/NaN (invalid) as the string "invalid" (never a class)."""
    return np.array([metrics.INVALID if metrics.is_invalid(v) else v for v in values], dtype=object)


def build_tables(
    records: pd.DataFrame,
    *,
    models: Sequence[str] | None = None,
    options: Mapping[str, Sequence[str]] | None = None,
    groups: Sequence[str] = (),
    benchmarks: Mapping[str, Benchmark] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    cliff_fraction: float = 0.5,
) -> dict[str, pd.DataFrame]:
    """{"scores": ..., "robustness": ...} from records (`RecordStore.read()`, or curves from
    `curves.assign_settings`).

    `models` orders the models (differences are models[i] - models[j], i < j); default: the order
    they first appear. `options` ({item_id: option texts}) serves reference scoring of MMLU (see
    `reference_predictions`). `groups` names subject groups to report even when only some of
    their subjects are present. `benchmarks` holds the records of declared benchmarks. `n_boot`
    0 gives no intervals.
    """
    if records.empty:
        raise LoboError("no records to score: run the sweep (notebook 02) or import logs first")
    records = curves_of(records).copy()
    records["pred_lobolib"] = list(records["answer"])
    records["pred_reference"] = reference_predictions(records, options, benchmarks)
    order = list(models) if models is not None else list(dict.fromkeys(records["model"]))
    order = [m for m in order if m in set(records["model"])]
    settings = list(dict.fromkeys(records["setting"]))
    scores, robustness = [], []
    present = set(records["benchmark"])
    for name in [*(n for n in (benchmarks or {}) if n in present), *dict.fromkeys(records["benchmark"])]:
        if name in set(row["benchmark"] for row in scores) or name not in present:
            continue
        benchmark = _bench(name, benchmarks)
        frame = records[records["benchmark"] == name]
        for group, subjects in benchmark_groups(benchmark, list(frame["subject"]), groups).items():
            part = frame[frame["subject"].isin(subjects)]
            s, r = _group_tables(part, benchmark, group, order, settings, n_boot, seed, ci, cliff_fraction)
            scores.extend(s)
            robustness.extend(r)
    return {
        "scores": pd.DataFrame(scores, columns=SCORE_COLUMNS),
        "robustness": pd.DataFrame(robustness, columns=ROBUSTNESS_COLUMNS),
    }


def _aligned(part: pd.DataFrame, curves: Sequence[tuple[str, str]]) -> tuple[list[float], list[str]]:
    """The x values every curve (model, setting) of one setting has, and the items present at all."""
    xs = None
    for model, setting in curves:
        mine = set(part.loc[(part["model"] == model) & (part["setting"] == setting), "x"])
        xs = mine if xs is None else xs & mine
    xs = sorted(xs or [])
    keep = part[part["x"].isin(xs)]
    wanted = set(curves)
    keep = keep[np.array([(m, s) in wanted for m, s in zip(keep["model"], keep["setting"])], dtype=bool)]
    cells = keep.drop_duplicates(["item_id", "model", "setting", "x"]).groupby("item_id").size()
    items = sorted(cells.index[cells == len(curves) * len(xs)])
    return xs, items


def _matrix(part: pd.DataFrame, model: str, setting: str, xs: list[float], items: list[str], column: str) -> np.ndarray:
    """(levels × items) of one column for one curve."""
    mine = part[(part["model"] == model) & (part["setting"] == setting)]
    table = pd.Series(list(mine[column]), index=pd.MultiIndex.from_arrays([mine["x"], mine["item_id"]]), dtype=object)
    table = table[~table.index.duplicated()].unstack("item_id")
    return table.loc[xs, items].to_numpy(dtype=object)


def _metric_specs(benchmark: Benchmark, has_first_token: bool) -> list[tuple[str, str, str, str]]:
    """(scoring, metric, prediction column, kind) — kind says how the score is computed."""
    specs = [("lobolib", metric, "pred_lobolib", metric) for metric in benchmark.scores]
    if has_first_token:
        specs.append(("lobolib", "first_token_accuracy", "loglik_answer", "accuracy"))
    if benchmark.reference_parser is not None:
        specs.append(("reference", "accuracy", "pred_reference", "accuracy"))
        kind = "yes_f1" if benchmark.reference_metric == "reference_yes_f1" else "reference_macro_f1"
        specs.append(("reference", benchmark.reference_metric, "pred_reference", kind))
    return specs


def _point(kind: str, gold, pred, labels) -> float:
    """The score on all items, by lobolib.metrics."""
    pred = [None if p == metrics.INVALID else p for p in pred]
    if kind == "accuracy":
        return metrics.accuracy(gold, pred)
    if kind == "macro_f1":
        return metrics.macro_f1(gold, pred, labels)
    if kind == "kappa":
        with warnings.catch_warnings():  # every answer invalid: kappa is undefined (NaN), not news
            warnings.simplefilter("ignore")
            return metrics.cohen_kappa(gold, pred, labels)
    if kind == "invalid_rate":
        return metrics.invalid_rate(pred)
    if kind == "yes_f1":
        return metrics.reference_yes_f1(gold, pred)
    if kind == "reference_macro_f1":
        return metrics.reference_macro_f1(gold, pred)
    raise ValueError(kind)


def _replicates(kind: str, gold: np.ndarray, pred: np.ndarray, counts: np.ndarray, labels) -> np.ndarray | None:
    """(resamples × levels) bootstrap replicates of a score."""
    n = len(gold)
    if kind == "accuracy":
        return counts @ (pred == gold[None, :]).astype(float).T / n
    if kind == "invalid_rate":
        return counts @ (pred == metrics.INVALID).astype(float).T / n
    if kind == "macro_f1":
        return metrics.f1_replicates(gold, pred, counts, labels)
    if kind == "yes_f1":
        return metrics.f1_replicates(gold, pred, counts, ["yes"])
    if kind == "reference_macro_f1":
        ref = np.where(pred == metrics.INVALID, metrics.REFERENCE_INVALID, pred)
        return metrics.f1_replicates(gold, ref, counts, None)
    if kind == "kappa":
        return metrics.kappa_replicates(gold, pred, counts, labels)
    return None


def _interval(replicates: np.ndarray | None, ci: float) -> tuple[np.ndarray, np.ndarray]:
    if replicates is None:
        return None, None
    with warnings.catch_warnings():  # an undefined kappa in every resample: NaN bounds
        warnings.simplefilter("ignore", RuntimeWarning)
        return metrics.percentile_interval(replicates, ci, skip_nan=True)


def _group_tables(part, benchmark, group, models, settings, n_boot, seed, ci, cliff_fraction):
    """Score rows and robustness rows of one (benchmark, group)."""
    score_rows, robust_rows = [], []
    present = [m for m in models if m in set(part["model"])]
    for setting in [s for s in settings if s in set(part["setting"])]:
        curves = [(m, setting) for m in present if ((part["model"] == m) & (part["setting"] == setting)).any()]
        s, r, _ = _setting_tables(part, benchmark, group, setting, curves, n_boot, seed, ci, cliff_fraction)
        score_rows.extend(s)
        robust_rows.extend(r)
    robust_rows.extend(_setting_differences(part, benchmark, group, present, settings, n_boot, seed, ci))
    return score_rows, robust_rows


def _setting_tables(part, benchmark, group, setting, curves, n_boot, seed, ci, cliff_fraction, xs_items=None):
    """Scores, robustness rows and the per-curve (point, replicates) of one setting's curves."""
    xs, items = xs_items or _aligned(part, curves)
    if not curves or not xs or not items:
        return [], [], {}
    if benchmark.kind == PERPLEXITY:
        return _perplexity_rows(part, benchmark, group, setting, curves, xs, items, n_boot, seed, ci), [], {}
    labels = list(benchmark.labels)
    gold_frame = part.drop_duplicates("item_id").set_index("item_id")["gold"]
    gold = np.array([gold_frame.loc[i] for i in items], dtype=object)
    counts = metrics.resample_counts(metrics.resample_indices(len(items), n_boot, seed)) if n_boot else None
    has_first_token = "loglik_answer" in part.columns and part["loglik_answer"].notna().all()
    level_of, method_of = _levels_and_methods(part, setting)
    described = next((m for m in method_of.values() if m != "dense"), "dense")
    score_rows, robust_rows, all_curves, matrices = [], [], {}, {}
    for scoring, metric, column, kind in _metric_specs(benchmark, has_first_token):
        found = {}
        for model, _ in curves:
            if (model, column) not in matrices:  # one column feeds several metrics
                matrix = _matrix(part, model, setting, xs, items, column)
                matrices[model, column] = _labels(matrix.ravel()).reshape(len(xs), len(items))
            pred = matrices[model, column]
            point = np.array([_point(kind, list(gold), list(row), labels) for row in pred])
            reps = _replicates(kind, gold, pred, counts, labels) if counts is not None else None
            found[model] = (point, reps)
            low, high = _interval(reps, ci)
            for i, x in enumerate(xs):
                score_rows.append({
                    "model": model, "setting": setting, "method": method_of.get(x, described),
                    "benchmark": benchmark.name, "group": group, "level": float(level_of.loc[x]),
                    "scoring": scoring, "metric": metric, "value": float(point[i]),
                    "ci_low": float(low[i]) if low is not None else math.nan,
                    "ci_high": float(high[i]) if high is not None else math.nan,
                })  # fmt: skip
        all_curves[(scoring, metric)] = found
        if metric in ROBUSTNESS_SKIP or len(xs) < 2:
            continue
        base = {"setting": setting, "method": described, "benchmark": benchmark.name, "group": group,
                "scoring": scoring, "metric": metric, "levels": len(xs), "items": len(items)}  # fmt: skip
        for model, (point, reps) in found.items():
            cliff_x = metrics.cliff(xs, point, cliff_fraction) if point[0] > 0 else None
            robust_rows.append({"model": model, **base, **_auc_row(xs, point, reps, ci),
                                "cliff": None if cliff_x is None else float(level_of.loc[cliff_x]),
                                "p": math.nan})  # fmt: skip
        for a, b in itertools.combinations(list(found), 2):
            robust_rows.append({"model": f"{a} - {b}", **base, **_difference(xs, found[a], found[b], ci)})
    return score_rows, robust_rows, all_curves


def _levels_and_methods(part: pd.DataFrame, setting: str) -> tuple[pd.Series, dict]:
    """The level (a Series) and the method ({x: method}) of each x on one setting's curves: x is
    shared across settings (a sparsity of 0.5 and 8 bits, 1 - 8/16, are both x = 0.5), the level
    and the method are not."""
    points = part[part["setting"] == setting].drop_duplicates("x").set_index("x")
    return points["level"], points["method"].to_dict()


def _perplexity_rows(part, benchmark, group, setting, curves, xs, windows, n_boot, seed, ci) -> list[dict]:
    """Token-weighted perplexity per curve and level, exp(sum nll / sum tokens), with a bootstrap
    interval over windows (the same resamples at every level and for every curve)."""
    counts = metrics.resample_counts(metrics.resample_indices(len(windows), n_boot, seed)) if n_boot else None
    level_of, method_of = _levels_and_methods(part, setting)
    rows = []
    for model, _ in curves:
        nll = _matrix(part, model, setting, xs, windows, "nll").astype(float)
        tokens = _matrix(part, model, setting, xs, windows, "tokens").astype(float)
        point = np.exp(nll.sum(axis=1) / tokens.sum(axis=1))
        low = high = None
        if counts is not None:
            low, high = _interval(np.exp((counts @ nll.T) / (counts @ tokens.T)), ci)
        for i, x in enumerate(xs):
            rows.append({"model": model, "setting": setting, "method": method_of.get(x), "benchmark": benchmark.name,
                         "group": group, "level": float(level_of.loc[x]), "scoring": "lobolib", "metric": "perplexity",
                         "value": float(point[i]), "ci_low": math.nan if low is None else float(low[i]),
                         "ci_high": math.nan if high is None else float(high[i])})  # fmt: skip
    return rows


def questions(records: pd.DataFrame, benchmarks: Mapping[str, Benchmark] | None = None) -> pd.DataFrame:
    """The records of question benchmarks only (perplexity windows left out; a declared benchmark
    is always a question benchmark)."""
    from lobolib.benchmarks import BUILT_IN

    known = {**BUILT_IN, **(benchmarks or {})}
    keep = [name for name in dict.fromkeys(records["benchmark"]) if name not in known or known[name].kind != PERPLEXITY]
    return records[records["benchmark"].isin(keep)]


def _difference(xs, a, b, ci) -> dict:
    """AUCs of the paired difference of two curves, with the bootstrap p-value."""
    (pa, ra), (pb, rb) = a, b
    diff_reps = None if ra is None or rb is None else ra - rb
    row = _auc_row(xs, pa - pb, diff_reps, ci)
    p = math.nan
    if diff_reps is not None:
        aucs = metrics.auc_raw(xs, diff_reps)
        aucs = np.where(np.abs(aucs) < 1e-12, 0.0, aucs)
        aucs = aucs[~np.isnan(aucs)]
        if aucs.size:
            p = float(min(1.0, 2 * min(np.mean(aucs <= 0), np.mean(aucs >= 0))))
    return {**row, "cliff": None, "p": p}


def _setting_differences(part, benchmark, group, models, settings, n_boot, seed, ci) -> list[dict]:
    """For each model, the paired difference between every two settings of the same unit, on
    the x values and items both share."""
    rows = []
    present = [s for s in settings if s in set(part["setting"])]
    if benchmark.kind == PERPLEXITY:
        return rows
    for model in models:
        for s, t in itertools.combinations(present, 2):
            if unit_of(part, s) != unit_of(part, t):
                continue
            curves = [(model, s), (model, t)]
            if not all(((part["model"] == m) & (part["setting"] == x)).any() for m, x in curves):
                continue
            xs_s, items_s = _aligned(part, curves[:1])
            xs_t, items_t = _aligned(part, curves[1:])
            xs, items = sorted(set(xs_s) & set(xs_t)), sorted(set(items_s) & set(items_t))
            if len(xs) < 2 or not items:
                continue
            _, _, found_s = _setting_tables(part, benchmark, group, s, curves[:1], n_boot, seed, ci, 0.5, (xs, items))
            _, _, found_t = _setting_tables(part, benchmark, group, t, curves[1:], n_boot, seed, ci, 0.5, (xs, items))
            for (scoring, metric), curve_s in found_s.items():
                if metric in ROBUSTNESS_SKIP:
                    continue
                base = {"model": model, "setting": f"{s} - {t}", "method": None, "benchmark": benchmark.name,
                        "group": group, "scoring": scoring, "metric": metric, "levels": len(xs), "items": len(items)}
                rows.append({**base, **_difference(xs, curve_s[model], found_t[(scoring, metric)][model], ci)})
    return rows


def _auc_row(xs, point, reps, ci) -> dict:
    row = {"auc_raw": metrics.auc_raw(xs, point), "auc_normalised": metrics.auc_normalised(xs, point)}
    if reps is None:
        return {**row, "auc_raw_ci_low": math.nan, "auc_raw_ci_high": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    raw_low, raw_high = _interval(metrics.auc_raw(xs, reps)[:, None], ci)
    norm_low, norm_high = _interval(metrics.auc_normalised(xs, reps)[:, None], ci)
    return {**row, "auc_raw_ci_low": float(raw_low[0]), "auc_raw_ci_high": float(raw_high[0]),
            "ci_low": float(norm_low[0]), "ci_high": float(norm_high[0])}  # fmt: skip


# ----------------------------------------------------------------------------- analysis tables


def label_distribution(records: pd.DataFrame, column: str = "answer",
                       benchmarks: Mapping[str, Benchmark] | None = None) -> pd.DataFrame:
    """Share of each predicted label (and "invalid") per curve and level, with the gold shares as
    model "gold": the answer-bias view (long format: model, setting, benchmark, level, label, share)."""
    records = questions(curves_of(records), benchmarks)
    rows = []
    for (model, setting, name, level), cell in records.groupby(CURVE_KEYS, sort=True):
        labels = list(_bench(name, benchmarks).labels)
        table = metrics.label_distribution(list(cell["gold"]), [None if metrics.is_invalid(a) else a for a in cell[column]], labels)
        rows.extend({"model": model, "setting": setting, "benchmark": name, "level": level, "label": label,
                     "share": share} for label, share in table["pred"].items())  # fmt: skip
        if not any(r["model"] == "gold" and r["benchmark"] == name for r in rows):
            rows.extend({"model": "gold", "setting": None, "benchmark": name, "level": math.nan, "label": label,
                         "share": share} for label, share in table["gold"].items())  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "setting", "benchmark", "level", "label", "share"])


def baselines(records: pd.DataFrame, benchmarks: Mapping[str, Benchmark] | None = None) -> pd.DataFrame:
    """Majority-class (and, for yes/no/maybe, always-"yes") accuracy and macro-F1 per benchmark."""
    rows = []
    for name, frame in questions(records, benchmarks).groupby("benchmark", sort=False):
        benchmark = _bench(name, benchmarks)
        gold = list(frame.drop_duplicates("item_id")["gold"])
        labels = list(benchmark.labels)
        rows.append({"benchmark": name, "baseline": "majority", **metrics.majority_baseline(gold, labels)})
        if benchmark.kind == YES_NO_MAYBE:
            rows.append({"benchmark": name, "baseline": "always yes", **metrics.always_yes_baseline(gold, labels)})
        rows.append({"benchmark": name, "baseline": "chance", "label": None, "accuracy": 1 / len(labels),
                     "macro_f1": math.nan})  # fmt: skip
    return pd.DataFrame(rows, columns=["benchmark", "baseline", "label", "accuracy", "macro_f1"])


def baseline_lines(records: pd.DataFrame, benchmarks: Mapping[str, Benchmark] | None = None) -> dict:
    """{benchmark: {baseline: accuracy}} of every question benchmark (`baselines`), for the
    dotted lines of the accuracy panels; a perplexity benchmark has none."""
    table = baselines(records, benchmarks)
    return {name: dict(zip(part["baseline"], part["accuracy"])) for name, part in table.groupby("benchmark", sort=False)}


def failure_modes(records: pd.DataFrame) -> pd.DataFrame:
    """Share of items per outcome (correct, wrong answer, invalid: <reason>) per curve and level
    (long format: model, setting, benchmark, level, outcome, share)."""
    records = questions(curves_of(records))
    outcome = np.where(
        records["answer"].isna(),
        "invalid: " + records["invalid_reason"].fillna("unknown").astype(str),
        np.where(records["answer"] == records["gold"], "correct", "wrong answer"),
    )
    frame = records.assign(outcome=outcome)
    shares = frame.groupby(CURVE_KEYS)["outcome"].value_counts(normalize=True).rename("share").reset_index()
    return shares[[*CURVE_KEYS, "outcome", "share"]]


def ranking(scores: pd.DataFrame, level: float | None = None) -> pd.DataFrame:
    """Integer rank of each model per (setting, benchmark, group, scoring, metric) at `level`
    (default: the dense level). Shows whether the ranking depends on the metric."""
    at = scores[np.isclose(scores["level"], nearest_level(scores["level"], 0.0 if level is None else level))]
    at = at[at["metric"] != "invalid_rate"]
    keys = ["setting", "benchmark", "group", "scoring", "metric"]
    ranked = at.assign(rank=at.groupby(keys)["value"].rank(ascending=False, method="min").astype("Int64"))
    return ranked.pivot_table(index=keys, columns="model", values="rank").reset_index().rename_axis(columns=None)


def divergent_items(records: pd.DataFrame, level: float, model_a: str, model_b: str, setting: str | None = None) -> pd.DataFrame:
    """Items at `level` that exactly one of two models answers correctly (one row per item), under
    one setting (default: the first)."""
    records = curves_of(records)
    setting = setting or next(iter(dict.fromkeys(records["setting"])), None)
    at = records[np.isclose(records["level"], level) & (records["setting"] == setting)]
    a = at[at["model"] == model_a].set_index(["benchmark", "item_id"])
    b = at[at["model"] == model_b].set_index(["benchmark", "item_id"])
    both = a.add_suffix(f" ({model_a})").join(b.add_suffix(f" ({model_b})"), how="inner")
    diverge = both[both[f"correct ({model_a})"] != both[f"correct ({model_b})"]]
    keep = [f"subject ({model_a})", f"gold ({model_a})"] + [
        f"{c} ({m})" for m in (model_a, model_b) for c in ("answer", "raw_response")
    ]
    out = diverge[keep].rename(columns={f"subject ({model_a})": "subject", f"gold ({model_a})": "gold"})
    return out.reset_index()


def item_options(items: Mapping[str, Sequence]) -> dict[str, tuple[str, ...]]:
    """{item_id: option texts} of loaded items ({benchmark: [Item]}), for reference scoring."""
    return {item.id: tuple(item.options) for batch in items.values() for item in batch}


def item_summary(items: Mapping[str, Sequence], benchmarks: Mapping[str, Benchmark] | None = None) -> pd.DataFrame:
    """Items per benchmark and subject with the share of each gold label."""
    rows = []
    for name, batch in items.items():
        frame = pd.DataFrame({"subject": [i.subject for i in batch], "gold": [i.answer for i in batch]})
        for subject, part in frame.groupby("subject", sort=False):
            shares = part["gold"].value_counts(normalize=True)
            rows.append({"benchmark": name, "subject": subject, "items": len(part),
                         **{f"gold {label}": float(shares.get(label, 0.0))
                            for label in _bench(name, benchmarks).labels}})  # fmt: skip
    return pd.DataFrame(rows)


def at_level(scores: pd.DataFrame, level: float, metrics_shown: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (setting, benchmark, group, scoring, metric), one column per model:
    "value [low, high]" at `level` (the nearest level present)."""
    level = nearest_level(scores["level"], level)
    part = scores[np.isclose(scores["level"], level)]
    if metrics_shown is not None:
        part = part[part["metric"].isin(metrics_shown)]

    def text(row) -> str:
        if math.isnan(row["ci_low"]):
            return f"{row['value']:.3f}"
        return f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"

    part = part.assign(cell=part.apply(text, axis=1))
    keys = ["setting", "benchmark", "group", "scoring", "metric"]
    table = part.pivot_table(index=keys, columns="model", values="cell", aggfunc="first", sort=False)
    return table.reset_index().rename_axis(columns=None)


def nearest_level(levels, level: float) -> float:
    """The level in `levels` closest to `level` (the grid may not hold it exactly)."""
    present = np.unique(np.asarray(list(levels), dtype=float))
    if present.size == 0:
        raise LoboError("no levels in the records")
    return float(present[np.argmin(np.abs(present - level))])


def robustness_view(robustness: pd.DataFrame, scoring: str = "lobolib", metric: str | Sequence[str] = "accuracy") -> pd.DataFrame:
    """The robustness rows of one scoring and metric (or several metrics), for reading: AUCs with
    intervals as text, the cliff level ("–" where there is none or it does not apply) and the
    p-value of differences ("< 0.001", "–" for single curves)."""
    wanted = [metric] if isinstance(metric, str) else list(metric)
    part = robustness[(robustness["scoring"] == scoring) & robustness["metric"].isin(wanted)]

    def interval(value, low, high) -> str:
        return f"{value:.4f}" if _missing(low) else f"{value:.4f} [{low:.4f}, {high:.4f}]"

    difference = part["model"].astype(str).str.contains(" - ", regex=False) | part["setting"].astype(str).str.contains(" - ", regex=False)
    return pd.DataFrame({
        "setting": part["setting"], "benchmark": part["benchmark"], "group": part["group"],
        "metric": part["metric"], "model": part["model"],
        "AUC (normalised)": [interval(*v) for v in zip(part["auc_normalised"], part["ci_low"], part["ci_high"])],
        "AUC (raw)": [interval(*v) for v in zip(part["auc_raw"], part["auc_raw_ci_low"], part["auc_raw_ci_high"])],
        "cliff": [NOT_APPLICABLE if d else "none" if _missing(c) else f"{float(c):g}"
                  for c, d in zip(part["cliff"], difference)],
        "p": [format_p(p) if d else NOT_APPLICABLE for p, d in zip(part["p"], difference)],
    }).reset_index(drop=True)  # fmt: skip


def auc_ranking(robustness: pd.DataFrame) -> pd.DataFrame:
    """Integer rank of each model by normalised AUC per (setting, benchmark, group, scoring,
    metric); a row whose ranks differ from another metric's shows the conclusion depends on it."""
    single = robustness[~robustness["model"].str.contains(" - ", regex=False)
                        & ~robustness["setting"].str.contains(" - ", regex=False)]  # fmt: skip
    keys = ["setting", "benchmark", "group", "scoring", "metric"]
    ranked = single.assign(rank=single.groupby(keys)["auc_normalised"].rank(ascending=False, method="min").astype("Int64"))
    table = ranked.pivot_table(index=keys, columns="model", values="rank", aggfunc="first", sort=False)
    return table.astype("Int64").reset_index().rename_axis(columns=None)


def achieved_sparsity(reports: Mapping[tuple[str, str], Mapping]) -> pd.DataFrame:
    """Requested against achieved sparsity per model, method and level, from the compression
    reports ({(model, method): {level key: report}}): model, method, level, pruned (zeros in the
    compressed matrices), overall (zeros among all parameters)."""
    rows = [{"model": model, "method": method, "level": float(key), "pruned": entry.get("pruned"),
             "overall": entry.get("overall")}
            for (model, method), levels in reports.items() for key, entry in levels.items()]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["model", "method", "level", "pruned", "overall"])
    return frame.sort_values(["model", "method", "level"], kind="stable").reset_index(drop=True)


def achieved_summary(achieved: pd.DataFrame) -> pd.DataFrame:
    """`achieved_sparsity` in one row per (model, method): the levels, the largest gap between
    requested and achieved zeros in the compressed matrices, and the zeros among all parameters
    at the last level (the dense model, with nothing requested, is left out)."""
    rows = []
    for (model, method), part in achieved[achieved["method"] != "dense"].groupby(["model", "method"], sort=False):
        part = part.sort_values("level")
        gap = (part["pruned"].astype(float) - part["level"]).abs()
        rows.append({"model": model, "method": method, "levels": len(part),
                     "requested": f"{part['level'].min():.0%} to {part['level'].max():.0%}",
                     "largest gap (compressed matrices)": float(gap.max()),
                     "zeros among all parameters at the last level": float(part["overall"].iloc[-1])})  # fmt: skip
    return pd.DataFrame(rows)


def knowledge_vs_format(records: pd.DataFrame) -> pd.DataFrame:
    """Per curve and level: generative accuracy, first-token accuracy, invalid rate and the share
    of items whose first token is right while the generated answer is not (format collapse rather
    than knowledge loss)."""
    records = questions(curves_of(records))
    frame = records[records["loglik_answer"].notna()]
    columns = [*CURVE_KEYS, "generative_accuracy", "first_token_accuracy", "invalid_rate", "knows_but_fails"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(first_right=frame["loglik_answer"] == frame["gold"])
    grouped = frame.groupby(CURVE_KEYS)
    return pd.DataFrame({
        "generative_accuracy": grouped["correct"].mean(),
        "first_token_accuracy": grouped["first_right"].mean(),
        "invalid_rate": 1 - grouped["valid"].mean(),
        "knows_but_fails": grouped.apply(lambda f: float((f["first_right"] & ~f["correct"]).mean()), include_groups=False),
    }).reset_index()  # fmt: skip


def examples(records: pd.DataFrame, levels: Sequence[float], per_level: int = 3, seed: int = 0,
             items: Mapping[str, Sequence] | None = None) -> pd.DataFrame:
    """Qualitative examples: `per_level` items per benchmark (drawn with `seed`, the same items at
    every level) with every curve's raw response and parsed answer at each of `levels` (nearest
    levels present)."""
    records = questions(curves_of(records))
    asked = {item.id: item.question for batch in (items or {}).values() for item in batch}
    wanted = sorted({nearest_level(records["level"], level) for level in levels})
    rows = []
    rng = np.random.default_rng(seed)
    for benchmark, frame in records.groupby("benchmark", sort=True):
        ids = sorted(set(frame["item_id"]))
        chosen = [ids[i] for i in sorted(rng.choice(len(ids), size=min(per_level, len(ids)), replace=False))]
        part = frame[frame["item_id"].isin(chosen) & frame["level"].isin(wanted)]
        for row in part.sort_values(["item_id", "level", "setting", "model"]).itertuples(index=False):
            rows.append({"benchmark": benchmark, "item_id": row.item_id, "question": asked.get(row.item_id, ""),
                         "gold": row.gold, "setting": row.setting, "level": row.level, "model": row.model,
                         "raw_response": row.raw_response, "answer": row.answer, "tier": row.tier})  # fmt: skip
    return pd.DataFrame(rows)


def read_tables(run_dir: str | os.PathLike, names: Sequence[str] = ("scores", "robustness")) -> dict[str, pd.DataFrame]:
    """Tables written by an earlier notebook (<run_dir>/tables/<name>.csv)."""
    tables = {}
    for name in names:
        path = Path(run_dir) / "tables" / f"{name}.csv"
        if not path.is_file():
            raise LoboError(f"{path} is missing: run notebook 02_prune_sweep (python -m lobolib run) first")
        tables[name] = pd.read_csv(path, keep_default_na=False, na_values=[""])
    return tables


# ----------------------------------------------------------------------------- writing


def write_tables(tables: Mapping[str, pd.DataFrame], directory: str | os.PathLike, digits: int = 6) -> list[Path]:
    """Write each table as <directory>/<name>.csv (numbers rounded to `digits` decimals, so no
    float noise such as 0.9259999999999998) and <name>.md; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in tables.items():
        csv_path, md_path = directory / f"{name}.csv", directory / f"{name}.md"
        table.round(digits).to_csv(csv_path, index=False)
        md_path.write_text(to_markdown(table), encoding="utf-8")
        paths += [csv_path, md_path]
    return paths


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table, formatted as `readable` does (numbers to `digits`)."""
    shown = readable(table, digits)

    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(str(c) for c in shown.columns) + " |"
    rule = "| " + " | ".join("---" for _ in shown.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


# ----------------------------------------------------------------------------- reading


NOT_APPLICABLE = "–"
P_COLUMNS = ("p",)


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def format_p(p) -> str:
    """A p-value for reading: "< 0.001", "0.042", or "–" where there is none."""
    if isinstance(p, str):
        return p  # already formatted
    if _missing(p):
        return NOT_APPLICABLE
    return "< 0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def format_number(value, digits: int = 3) -> str:
    """A cell for reading: whole numbers without decimals, others to `digits`, "–" for missing."""
    if _missing(value):
        return NOT_APPLICABLE
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def readable(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """`table` as text for reading: numbers to `digits` decimals (integer columns, such as ranks
    and counts, as integers), p-values as "< 0.001", "–" where a value is missing or does not apply."""
    shown = {}
    for column in table.columns:
        values = table[column]
        if column in P_COLUMNS:
            shown[column] = [format_p(v) for v in values]
        elif pd.api.types.is_integer_dtype(values):
            shown[column] = [NOT_APPLICABLE if _missing(v) else str(int(v)) for v in values]
        else:
            shown[column] = [format_number(v, digits) for v in values]
    return pd.DataFrame(shown, columns=list(table.columns), index=table.index)


def show(table: pd.DataFrame, name: str | None = None, digits: int = 3, max_rows: int | None = 60):
    """Display `table` for reading (`readable`) under the HTML id "table-<name>" (what the
    report's findings link to); longer tables show their first `max_rows` rows and say so."""
    from IPython.display import display

    shown = readable(table if max_rows is None else table.head(max_rows), digits)
    html = shown.to_html(index=False, escape=True, border=0, classes="dataframe lobo-table")
    if max_rows is not None and len(table) > max_rows:
        html += f"<p><i>first {max_rows} of {len(table)} rows; the full table is in tables/{name or 'the run folder'}.csv</i></p>"
    if name is not None:
        html = f'<div id="table-{name}" class="lobo-table">{html}</div>'
    display({"text/html": html, "text/plain": shown.to_string(index=False)}, raw=True)
