"""Score and robustness tables from per-item records, written as CSV and Markdown.

Two scorings side by side:

- "lobolib": our parser's answers (`answer`, None = invalid) and metrics that never count an
  invalid answer as a class: accuracy, macro_f1 (valid classes), kappa (Cohen 1960),
  invalid_rate, yes_f1 (PubMedQA), first_token_accuracy (the first-token log-likelihood answer,
  where the records carry it).
- "reference": the reference study's parser re-applied to `raw_response`
  (`parsing.parse_reference`) and its metrics (Borzello & Dalvi 2026, "BioMedical LLM
  Lobotomy"): accuracy, reference_yes_f1 (PubMedQA: the F1 of the yes class) and
  reference_macro_f1 (MMLU: macro F1 over every label seen, its invalid "X" a fifth class).

`build_tables(records)` gives
- ``scores``: long format, one row per (model, benchmark, group, sparsity, scoring, metric):
  value, ci_low, ci_high (percentile bootstrap over items, Efron 1979);
- ``robustness``: one row per (model, benchmark, group, scoring, metric) with auc_raw (the
  study's `numpy.trapezoid(score, sparsity)`), auc_normalised (divided by the sparsity range),
  their CIs and the cliff level; rows whose model is "A - B" hold the paired difference of two
  models (same item resamples for both) with its two-sided bootstrap p-value.

Groups: "pubmedqa" for PubMedQA; for MMLU "all" (every subject pooled) and each subject group of
`benchmarks.SUBJECT_GROUPS` whose subjects are all in the records (or that the caller names).
Every level of a (benchmark, group) is scored on the items present at every level for every
model, so curves, AUCs and differences keep their item pairing.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lobolib.analysis import metrics
from lobolib.benchmarks import SUBJECT_GROUPS, option_labels
from lobolib.errors import LoboError

SCORE_COLUMNS = ["model", "benchmark", "group", "sparsity", "scoring", "metric", "value", "ci_low", "ci_high"]
ROBUSTNESS_COLUMNS = [
    "model", "benchmark", "group", "scoring", "metric", "levels", "items",
    "auc_raw", "auc_raw_ci_low", "auc_raw_ci_high",
    "auc_normalised", "ci_low", "ci_high", "cliff", "p",
]  # fmt: skip
ROBUSTNESS_SKIP = ("invalid_rate",)  # a rate of failures has no "robustness"
PUBMEDQA_OPTIONS = ("yes", "no", "maybe")


# ----------------------------------------------------------------------------- predictions


def reference_predictions(records: pd.DataFrame, options: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The reference study's answer for each record, re-parsed from `raw_response`.

    PubMedQA needs no options. MMLU needs each item's option texts: from `options`
    ({item_id: four texts}), else an `options` column of the records; failing both, the
    `reference_parsed` column that imported logs carry (the study's own parse) is used.
    """
    from lobolib.evaluation.parsing import parse_reference

    lookup = dict(options or {})
    has_column = "options" in records.columns
    logged = records["reference_parsed"] if "reference_parsed" in records.columns else None
    answers = []
    for row, (benchmark, item_id, text) in enumerate(
        zip(records["benchmark"], records["item_id"], records["raw_response"])
    ):
        text = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
        if benchmark == "pubmedqa":
            answers.append(parse_reference(benchmark, text, PUBMEDQA_OPTIONS))
            continue
        item_options = lookup.get(item_id)
        if item_options is None and has_column:
            item_options = records["options"].iloc[row]
        if item_options is not None and not (isinstance(item_options, float) and math.isnan(item_options)):
            answers.append(parse_reference(benchmark, text, tuple(item_options)))
        elif logged is not None and isinstance(logged.iloc[row], str) and logged.iloc[row]:
            answers.append(logged.iloc[row].strip().upper())
        else:
            raise LoboError(
                f"reference scoring of MMLU item {item_id!r} needs its option texts: pass options="
                "{item_id: options} (e.g. from config.load_items) or records with a reference_parsed column"
            )
    return answers


def mmlu_groups(subjects: Sequence[str], requested: Sequence[str] = ()) -> dict[str, list[str]]:
    """{group: subjects present} for MMLU: "all", each SUBJECT_GROUPS group fully present, and each
    `requested` group (restricted to the subjects present, when any is)."""
    present = list(dict.fromkeys(subjects))
    groups = {"all": present}
    for name, members in SUBJECT_GROUPS.items():
        inside = [s for s in members if s in present]
        if inside and (len(inside) == len(members) or name in requested):
            groups[name] = inside
    return groups


# ----------------------------------------------------------------------------- bootstrap helpers


def _labels(values) -> np.ndarray:
    """Labels as an object array, None/NaN (invalid) as the string "invalid" (never a class)."""
    return np.array([metrics.INVALID if metrics.is_invalid(v) else v for v in values], dtype=object)


# ----------------------------------------------------------------------------- tables


def build_tables(
    records: pd.DataFrame,
    *,
    models: Sequence[str] | None = None,
    options: Mapping[str, Sequence[str]] | None = None,
    groups: Sequence[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    cliff_fraction: float = 0.5,
) -> dict[str, pd.DataFrame]:
    """{"scores": ..., "robustness": ...} from a records DataFrame (RecordStore.read()).

    `models` orders the models (differences are models[i] - models[j], i < j); default: the order
    they first appear. `options` ({item_id: option texts}) serves reference scoring of MMLU (see
    `reference_predictions`). `groups` names MMLU subject groups to report even when only some of
    their subjects are present. `n_boot` 0 gives no intervals.
    """
    if records.empty:
        raise LoboError("no records to score: run the sweep (notebook 02) or import logs first")
    records = records.copy()
    records["pred_lobolib"] = list(records["answer"])
    records["pred_reference"] = reference_predictions(records, options)
    order = list(models) if models is not None else list(dict.fromkeys(records["model"]))
    order = [m for m in order if m in set(records["model"])]
    scores, robustness = [], []
    for benchmark in [b for b in ("pubmedqa", "mmlu") if b in set(records["benchmark"])]:
        frame = records[records["benchmark"] == benchmark]
        if benchmark == "pubmedqa":
            group_map = {"pubmedqa": ["pubmedqa"]}
        else:
            group_map = mmlu_groups(list(frame["subject"]), groups)
        for group, subjects in group_map.items():
            part = frame[frame["subject"].isin(subjects)]
            s, r = _group_tables(part, benchmark, group, order, n_boot, seed, ci, cliff_fraction)
            scores.extend(s)
            robustness.extend(r)
    return {
        "scores": pd.DataFrame(scores, columns=SCORE_COLUMNS),
        "robustness": pd.DataFrame(robustness, columns=ROBUSTNESS_COLUMNS),
    }


def _aligned(part: pd.DataFrame, models: Sequence[str]) -> tuple[list[str], list[float], list[str]]:
    """Models present, the levels every one of them has, and the items present at all of those."""
    present = [m for m in models if m in set(part["model"])]
    levels = None
    for m in present:
        mine = set(part.loc[part["model"] == m, "sparsity"])
        levels = mine if levels is None else levels & mine
    levels = sorted(levels or [])
    keep = part[part["sparsity"].isin(levels) & part["model"].isin(present)]
    cells = keep.groupby("item_id")[["model", "sparsity"]].apply(lambda f: len(set(zip(f["model"], f["sparsity"]))))
    items = sorted(cells.index[cells == len(present) * len(levels)])
    return present, levels, items


def _matrix(part: pd.DataFrame, model: str, levels: list[float], items: list[str], column: str) -> np.ndarray:
    """(levels × items) of one column for one model."""
    mine = part[part["model"] == model]
    table = pd.Series(list(mine[column]), index=pd.MultiIndex.from_arrays([mine["sparsity"], mine["item_id"]]), dtype=object)
    table = table[~table.index.duplicated()].unstack("item_id")
    return table.loc[levels, items].to_numpy(dtype=object)


def _metric_specs(benchmark: str, has_first_token: bool) -> list[tuple[str, str, str, str]]:
    """(scoring, metric, prediction column, kind) — kind says how the score is computed."""
    specs = [
        ("lobolib", "accuracy", "pred_lobolib", "accuracy"),
        ("lobolib", "macro_f1", "pred_lobolib", "macro_f1"),
        ("lobolib", "kappa", "pred_lobolib", "kappa"),
        ("lobolib", "invalid_rate", "pred_lobolib", "invalid_rate"),
    ]
    if benchmark == "pubmedqa":
        specs.append(("lobolib", "yes_f1", "pred_lobolib", "yes_f1"))
    if has_first_token:
        specs.append(("lobolib", "first_token_accuracy", "loglik_answer", "accuracy"))
    specs.append(("reference", "accuracy", "pred_reference", "accuracy"))
    if benchmark == "pubmedqa":
        specs.append(("reference", "reference_yes_f1", "pred_reference", "yes_f1"))
    else:
        specs.append(("reference", "reference_macro_f1", "pred_reference", "reference_macro_f1"))
    return specs


def _point(kind: str, gold, pred, labels) -> float:
    """The score on all items, by lobolib.metrics."""
    pred = [None if p == metrics.INVALID else p for p in pred]
    if kind == "accuracy":
        return metrics.accuracy(gold, pred)
    if kind == "macro_f1":
        return metrics.macro_f1(gold, pred, labels)
    if kind == "kappa":
        import warnings

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
    """(resamples × levels) bootstrap replicates of a score; None where none are computed (kappa)."""
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
    return None  # kappa: the point estimate only (a per-resample sklearn call is too slow)


def _interval(replicates: np.ndarray | None, ci: float) -> tuple[np.ndarray, np.ndarray]:
    if replicates is None:
        return None, None
    tail = (1 - ci) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail], axis=0)
    return low, high


def _group_tables(part, benchmark, group, models, n_boot, seed, ci, cliff_fraction):
    """Score rows and robustness rows of one (benchmark, group)."""
    present, levels, items = _aligned(part, models)
    if not present or not levels or not items:
        return [], []
    labels = list(option_labels(benchmark))
    gold_frame = part.drop_duplicates("item_id").set_index("item_id")["gold"]
    gold = np.array([gold_frame.loc[i] for i in items], dtype=object)
    counts = metrics.resample_counts(metrics.resample_indices(len(items), n_boot, seed)) if n_boot else None
    has_first_token = "loglik_answer" in part.columns and part["loglik_answer"].notna().all()
    score_rows, robust_rows = [], []
    for scoring, metric, column, kind in _metric_specs(benchmark, has_first_token):
        curves = {}
        for model in present:
            pred = _labels(_matrix(part, model, levels, items, column).ravel()).reshape(len(levels), len(items))
            point = np.array([_point(kind, list(gold), list(row), labels) for row in pred])
            reps = _replicates(kind, gold, pred, counts, labels) if counts is not None else None
            curves[model] = (point, reps)
            low, high = _interval(reps, ci)
            for i, level in enumerate(levels):
                score_rows.append({
                    "model": model, "benchmark": benchmark, "group": group, "sparsity": level,
                    "scoring": scoring, "metric": metric, "value": float(point[i]),
                    "ci_low": float(low[i]) if low is not None else math.nan,
                    "ci_high": float(high[i]) if high is not None else math.nan,
                })  # fmt: skip
        if metric in ROBUSTNESS_SKIP or len(levels) < 2:
            continue
        base = {"benchmark": benchmark, "group": group, "scoring": scoring, "metric": metric,
                "levels": len(levels), "items": len(items)}
        for model, (point, reps) in curves.items():
            robust_rows.append({"model": model, **base, **_auc_row(levels, point, reps, ci),
                                "cliff": metrics.cliff(levels, point, cliff_fraction) if point[0] > 0 else None,
                                "p": math.nan})  # fmt: skip
        for a, b in itertools.combinations(present, 2):
            (pa, ra), (pb, rb) = curves[a], curves[b]
            diff_reps = None if ra is None or rb is None else ra - rb
            row = _auc_row(levels, pa - pb, diff_reps, ci)
            p = math.nan
            if diff_reps is not None:
                aucs = metrics.auc_raw(levels, diff_reps)
                aucs = np.where(np.abs(aucs) < 1e-12, 0.0, aucs)
                p = float(min(1.0, 2 * min(np.mean(aucs <= 0), np.mean(aucs >= 0))))
            robust_rows.append({"model": f"{a} - {b}", **base, **row, "cliff": None, "p": p})
    return score_rows, robust_rows


def _auc_row(levels, point, reps, ci) -> dict:
    row = {"auc_raw": metrics.auc_raw(levels, point), "auc_normalised": metrics.auc_normalised(levels, point)}
    if reps is None:
        return {**row, "auc_raw_ci_low": math.nan, "auc_raw_ci_high": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    raw_low, raw_high = _interval(metrics.auc_raw(levels, reps)[:, None], ci)
    norm_low, norm_high = _interval(metrics.auc_normalised(levels, reps)[:, None], ci)
    return {**row, "auc_raw_ci_low": float(raw_low[0]), "auc_raw_ci_high": float(raw_high[0]),
            "ci_low": float(norm_low[0]), "ci_high": float(norm_high[0])}  # fmt: skip


# ----------------------------------------------------------------------------- analysis tables


def label_distribution(records: pd.DataFrame, column: str = "answer") -> pd.DataFrame:
    """Share of each predicted label (and "invalid") per model, benchmark and level, with the gold
    shares as model "gold": the answer-bias view (long format: model, benchmark, sparsity, label, share)."""
    rows = []
    for (model, benchmark, level), cell in records.groupby(["model", "benchmark", "sparsity"], sort=True):
        labels = list(option_labels(benchmark))
        table = metrics.label_distribution(list(cell["gold"]), [None if metrics.is_invalid(a) else a for a in cell[column]], labels)
        for label, share in table["pred"].items():
            rows.append({"model": model, "benchmark": benchmark, "sparsity": level, "label": label, "share": share})
        if not any(r["model"] == "gold" and r["benchmark"] == benchmark for r in rows):
            for label, share in table["gold"].items():
                rows.append({"model": "gold", "benchmark": benchmark, "sparsity": math.nan, "label": label, "share": share})
    return pd.DataFrame(rows, columns=["model", "benchmark", "sparsity", "label", "share"])


def baselines(records: pd.DataFrame) -> pd.DataFrame:
    """Majority-class and always-"yes" (PubMedQA) accuracy and macro-F1 per benchmark."""
    rows = []
    for benchmark, frame in records.groupby("benchmark"):
        gold = list(frame.drop_duplicates("item_id")["gold"])
        labels = list(option_labels(benchmark))
        rows.append({"benchmark": benchmark, "baseline": "majority", **metrics.majority_baseline(gold, labels)})
        if benchmark == "pubmedqa":
            rows.append({"benchmark": benchmark, "baseline": "always yes", **metrics.always_yes_baseline(gold, labels)})
    return pd.DataFrame(rows, columns=["benchmark", "baseline", "label", "accuracy", "macro_f1"])


def failure_modes(records: pd.DataFrame) -> pd.DataFrame:
    """Share of items per outcome (correct, wrong answer, invalid: <reason>) per model, benchmark
    and level (long format: model, benchmark, sparsity, outcome, share)."""
    outcome = np.where(
        records["answer"].isna(),
        "invalid: " + records["invalid_reason"].fillna("unknown").astype(str),
        np.where(records["answer"] == records["gold"], "correct", "wrong answer"),
    )
    frame = records.assign(outcome=outcome)
    shares = (
        frame.groupby(["model", "benchmark", "sparsity"])["outcome"].value_counts(normalize=True)
        .rename("share").reset_index()
    )
    return shares[["model", "benchmark", "sparsity", "outcome", "share"]]


def ranking(scores: pd.DataFrame, level: float | None = None) -> pd.DataFrame:
    """Rank of each model per (benchmark, group, scoring, metric) at `level` (default: the
    robustness AUC is not used; the dense level 0). Shows whether the ranking depends on the metric."""
    level = 0.0 if level is None else level
    at = scores[np.isclose(scores["sparsity"], level)]
    at = at[at["metric"] != "invalid_rate"]
    ranked = at.assign(rank=at.groupby(["benchmark", "group", "scoring", "metric"])["value"].rank(ascending=False, method="min"))
    return ranked.pivot_table(index=["benchmark", "group", "scoring", "metric"], columns="model", values="rank").reset_index()


def divergent_items(records: pd.DataFrame, level: float, model_a: str, model_b: str) -> pd.DataFrame:
    """Items at `level` that exactly one of two models answers correctly (one row per item)."""
    at = records[np.isclose(records["sparsity"], level)]
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


def item_summary(items: Mapping[str, Sequence]) -> pd.DataFrame:
    """Items per benchmark and subject with the share of each gold label."""
    rows = []
    for benchmark, batch in items.items():
        frame = pd.DataFrame({"subject": [i.subject for i in batch], "gold": [i.answer for i in batch]})
        for subject, part in frame.groupby("subject", sort=False):
            shares = part["gold"].value_counts(normalize=True)
            rows.append({"benchmark": benchmark, "subject": subject, "items": len(part),
                         **{f"gold {label}": float(shares.get(label, 0.0)) for label in option_labels(benchmark)}})
    return pd.DataFrame(rows)


def at_level(scores: pd.DataFrame, level: float, metrics_shown: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (benchmark, group, scoring, metric), one column per model: "value [low, high]"
    at `level` (the nearest level present)."""
    level = nearest_level(scores["sparsity"], level)
    part = scores[np.isclose(scores["sparsity"], level)]
    if metrics_shown is not None:
        part = part[part["metric"].isin(metrics_shown)]

    def text(row) -> str:
        if math.isnan(row["ci_low"]):
            return f"{row['value']:.3f}"
        return f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"

    part = part.assign(cell=part.apply(text, axis=1))
    table = part.pivot_table(index=["benchmark", "group", "scoring", "metric"], columns="model", values="cell", aggfunc="first", sort=False)
    return table.reset_index().rename_axis(columns=None)


def nearest_level(levels, level: float) -> float:
    """The level in `levels` closest to `level` (the grid may not hold it exactly)."""
    present = np.unique(np.asarray(list(levels), dtype=float))
    if present.size == 0:
        raise LoboError("no sparsity levels in the records")
    return float(present[np.argmin(np.abs(present - level))])


def robustness_view(robustness: pd.DataFrame, scoring: str = "lobolib", metric: str | Sequence[str] = "accuracy") -> pd.DataFrame:
    """The robustness rows of one scoring and metric (or several metrics): AUCs with intervals as
    text, the cliff and the p-value of differences."""
    wanted = [metric] if isinstance(metric, str) else list(metric)
    part = robustness[(robustness["scoring"] == scoring) & robustness["metric"].isin(wanted)]

    def interval(value, low, high) -> str:
        return f"{value:.4f}" if math.isnan(low) else f"{value:.4f} [{low:.4f}, {high:.4f}]"

    return pd.DataFrame({
        "benchmark": part["benchmark"], "group": part["group"], "metric": part["metric"], "model": part["model"],
        "AUC (normalised)": [interval(*v) for v in zip(part["auc_normalised"], part["ci_low"], part["ci_high"])],
        "AUC (raw)": [interval(*v) for v in zip(part["auc_raw"], part["auc_raw_ci_low"], part["auc_raw_ci_high"])],
        "cliff": part["cliff"], "p": part["p"],
    }).reset_index(drop=True)  # fmt: skip


def auc_ranking(robustness: pd.DataFrame) -> pd.DataFrame:
    """Rank of each model by normalised AUC per (benchmark, group, scoring, metric); a row where
    the ranks differ from another metric's shows the conclusion depends on the metric."""
    single = robustness[~robustness["model"].str.contains(" - ", regex=False)]
    ranked = single.assign(rank=single.groupby(["benchmark", "group", "scoring", "metric"])["auc_normalised"]
                           .rank(ascending=False, method="min"))  # fmt: skip
    return ranked.pivot_table(index=["benchmark", "group", "scoring", "metric"], columns="model", values="rank").reset_index().rename_axis(columns=None)


def achieved_sparsity(store, models: Sequence[str]) -> pd.DataFrame:
    """Requested against achieved sparsity per model and level (the sweep's sparsity reports):
    model, requested, pruned (zeros in the pruned matrices), overall (zeros among all parameters)."""
    from lobolib.experiment.sweep import read_sparsity

    rows = []
    for model in models:
        for entry in read_sparsity(store, model).get("levels", {}).values():
            rows.append({"model": model, "requested": entry.get("requested"), "pruned": entry.get("pruned"),
                         "overall": entry.get("overall")})  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "requested", "pruned", "overall"]).sort_values(["model", "requested"], kind="stable")


def knowledge_vs_format(records: pd.DataFrame) -> pd.DataFrame:
    """Per model, benchmark and level: generative accuracy, first-token accuracy, invalid rate and
    the share of items whose first token is right while the generated answer is not (format
    collapse rather than knowledge loss)."""
    frame = records[records["loglik_answer"].notna()]
    if frame.empty:
        return pd.DataFrame(columns=["model", "benchmark", "sparsity", "generative_accuracy",
                                     "first_token_accuracy", "invalid_rate", "knows_but_fails"])  # fmt: skip
    frame = frame.assign(first_right=frame["loglik_answer"] == frame["gold"])
    grouped = frame.groupby(["model", "benchmark", "sparsity"])
    return pd.DataFrame({
        "generative_accuracy": grouped["correct"].mean(),
        "first_token_accuracy": grouped["first_right"].mean(),
        "invalid_rate": 1 - grouped["valid"].mean(),
        "knows_but_fails": grouped.apply(lambda f: float((f["first_right"] & ~f["correct"]).mean()), include_groups=False),
    }).reset_index()  # fmt: skip


def examples(records: pd.DataFrame, levels: Sequence[float], per_level: int = 3, seed: int = 0,
             items: Mapping[str, Sequence] | None = None) -> pd.DataFrame:
    """Qualitative examples: `per_level` items per benchmark (drawn with `seed`, the same items at
    every level) with every model's raw response and parsed answer at each of `levels` (nearest
    levels present)."""
    questions = {item.id: item.question for batch in (items or {}).values() for item in batch}
    wanted = sorted({nearest_level(records["sparsity"], level) for level in levels})
    rows = []
    rng = np.random.default_rng(seed)
    for benchmark, frame in records.groupby("benchmark", sort=True):
        ids = sorted(set(frame["item_id"]))
        chosen = [ids[i] for i in sorted(rng.choice(len(ids), size=min(per_level, len(ids)), replace=False))]
        part = frame[frame["item_id"].isin(chosen) & frame["sparsity"].isin(wanted)]
        for row in part.sort_values(["item_id", "sparsity", "model"]).itertuples(index=False):
            rows.append({"benchmark": benchmark, "item_id": row.item_id, "question": questions.get(row.item_id, ""),
                         "gold": row.gold, "sparsity": row.sparsity, "model": row.model,
                         "raw_response": row.raw_response, "answer": row.answer, "tier": row.tier})  # fmt: skip
    return pd.DataFrame(rows)


def read_tables(run_dir: str | os.PathLike, names: Sequence[str] = ("scores", "robustness")) -> dict[str, pd.DataFrame]:
    """Tables written by an earlier notebook (<run_dir>/tables/<name>.csv)."""
    tables = {}
    for name in names:
        path = Path(run_dir) / "tables" / f"{name}.csv"
        if not path.is_file():
            raise LoboError(f"{path} is missing: run notebook 02_prune_sweep (python -m lobolib run) first")
        tables[name] = pd.read_csv(path)
    return tables


# ----------------------------------------------------------------------------- writing


def write_tables(tables: Mapping[str, pd.DataFrame], directory: str | os.PathLike) -> list[Path]:
    """Write each table as <directory>/<name>.csv and <name>.md; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in tables.items():
        csv_path, md_path = directory / f"{name}.csv", directory / f"{name}.md"
        table.to_csv(csv_path, index=False)
        md_path.write_text(to_markdown(table), encoding="utf-8")
        paths += [csv_path, md_path]
    return paths


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (numbers rounded to `digits`)."""

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"
