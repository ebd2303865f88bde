"""Scores of predictions against gold labels, degradation-curve summaries and bootstrap CIs.

Conventions: `gold` and `pred` are equal-length sequences of labels; an invalid prediction (the
parser found no answer) is None (NaN, as pandas may store it, counts as None too). An invalid
answer always counts as wrong and is never a class of its own in our metrics; `labels` are the
valid classes, e.g. ["yes", "no", "maybe"] or ["A", "B", "C", "D"].

`reference_yes_f1` and `reference_macro_f1` reproduce the reference study's ("BioMedical LLM
Lobotomy", Borzello & Dalvi 2026) scoring for comparison with its published numbers only.

Curves are (sparsity, score) sequences over ascending levels. Bootstrap CIs resample items (Efron
1979, percentile intervals) with the same resample for every level and for both models of a
comparison, so that curve shapes, AUCs and model differences keep their item pairing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from lobolib.errors import LoboError

INVALID = "invalid"  # the name invalid predictions go by in tables (never a scoring class)
REFERENCE_INVALID = "X"  # the reference study's MMLU label for an unparseable answer


# ----------------------------------------------------------------------------- inputs


def is_invalid(value) -> bool:
    """True for an invalid prediction: None, or NaN as pandas stores a missing value."""
    return value is None or (isinstance(value, float) and np.isnan(value))


def _labels_arrays(gold, pred, sentinel: str = INVALID) -> tuple[np.ndarray, np.ndarray]:
    """gold and pred as object arrays, invalid predictions replaced by `sentinel`."""
    gold = list(gold)
    pred = list(pred)
    if len(gold) != len(pred):
        raise LoboError(f"gold and pred differ in length ({len(gold)} vs {len(pred)})")
    if not gold:
        raise LoboError("no items to score: gold and pred are empty")
    if any(is_invalid(g) for g in gold):
        raise LoboError("gold contains a missing label (None/NaN): every item needs a gold answer")
    if sentinel in gold:
        raise LoboError(f"{sentinel!r} is reserved for invalid predictions and cannot be a gold label")
    pred = [sentinel if is_invalid(p) else p for p in pred]
    return np.asarray(gold, dtype=object), np.asarray(pred, dtype=object)


def _labels_or_default(labels, gold, pred) -> list:
    """The valid classes: as given, else the sorted labels seen in gold and valid predictions."""
    if labels is not None:
        labels = list(labels)
        if not labels:
            raise LoboError("labels is empty: give the valid classes, e.g. ['yes', 'no', 'maybe']")
        if INVALID in labels:
            raise LoboError(f"{INVALID!r} cannot be a class: invalid predictions are None")
        return labels
    return sorted(set(gold) | {p for p in pred if not is_invalid(p) and p != INVALID})


# ----------------------------------------------------------------------------- scores


def accuracy(gold: Sequence, pred: Sequence) -> float:
    """Share of items whose prediction equals the gold label (an invalid prediction is wrong)."""
    gold, pred = _labels_arrays(gold, pred)
    return float(np.mean(gold == pred))


def macro_f1(gold: Sequence, pred: Sequence, labels: Sequence | None = None) -> float:
    """Macro F1 over the valid classes `labels` (scikit-learn, zero_division=0).

    An invalid prediction counts against the gold class's recall but is never a class itself.
    Pass `labels` explicitly (e.g. ["yes","no","maybe"]): the default, the labels seen, drops
    classes neither gold nor any prediction used.
    """
    from sklearn.metrics import f1_score  # imported on first use: sklearn takes 1.5 s to import
    gold, pred = _labels_arrays(gold, pred)
    labels = _labels_or_default(labels, gold, pred)
    return float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))


def per_class_report(gold: Sequence, pred: Sequence, labels: Sequence | None = None) -> pd.DataFrame:
    """Precision, recall, F1 and support (gold count) per valid class, one row per label."""
    from sklearn.metrics import precision_recall_fscore_support
    gold, pred = _labels_arrays(gold, pred)
    labels = _labels_or_default(labels, gold, pred)
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=labels, zero_division=0
    )
    return pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support},
        index=pd.Index(labels, name="label"),
    )


def confusion(gold: Sequence, pred: Sequence, labels: Sequence | None = None) -> pd.DataFrame:
    """Counts of gold label (rows) × prediction (columns: the labels, then "invalid")."""
    from sklearn.metrics import confusion_matrix
    gold, pred = _labels_arrays(gold, pred)
    labels = _labels_or_default(labels, gold, pred)
    _check_within(gold, labels, "gold")
    _check_within(pred, [*labels, INVALID], "pred")
    counts = confusion_matrix(gold, pred, labels=[*labels, INVALID])[: len(labels)]
    return pd.DataFrame(
        counts,
        index=pd.Index(labels, name="gold"),
        columns=pd.Index([*labels, INVALID], name="pred"),
    )


def cohen_kappa(gold: Sequence, pred: Sequence, labels: Sequence | None = None) -> float:
    """Cohen's kappa (1960) of predictions against gold (scikit-learn).

    Invalid predictions form their own category on the prediction side only; gold never takes
    it, so an invalid answer is always a disagreement and lowers kappa like any wrong answer.
    """
    from sklearn.metrics import cohen_kappa_score
    gold, pred = _labels_arrays(gold, pred)
    labels = _labels_or_default(labels, gold, pred)
    return float(cohen_kappa_score(gold, pred, labels=[*labels, INVALID]))


def invalid_rate(pred: Sequence) -> float:
    """Share of predictions that are invalid (None/NaN)."""
    pred = list(pred)
    if not pred:
        raise LoboError("no predictions to score")
    return sum(is_invalid(p) for p in pred) / len(pred)


def label_distribution(gold: Sequence, pred: Sequence, labels: Sequence | None = None) -> pd.DataFrame:
    """Share of each label among gold answers and among predictions (rows: labels + "invalid").

    Shows answer bias: e.g. a pruned model that says "yes" to everything.
    """
    gold, pred = _labels_arrays(gold, pred)
    labels = _labels_or_default(labels, gold, pred)
    _check_within(pred, [*labels, INVALID], "pred")
    rows = [*labels, INVALID]
    return pd.DataFrame(
        {"gold": [float(np.mean(gold == r)) for r in rows],
         "pred": [float(np.mean(pred == r)) for r in rows]},
        index=pd.Index(rows, name="label"),
    )  # fmt: skip


def _check_within(values: np.ndarray, allowed: Sequence, what: str) -> None:
    unknown = sorted(set(values) - set(allowed), key=str)
    if unknown:
        raise LoboError(f"{what} holds labels outside {list(allowed)}: {unknown[:5]}; pass the "
                        f"right labels or map answers first")  # fmt: skip


def _constant_baseline(gold, label, labels) -> dict:
    pred = [label] * len(gold)
    return {"label": label, "accuracy": accuracy(gold, pred), "macro_f1": macro_f1(gold, pred, labels)}


def majority_baseline(gold: Sequence, labels: Sequence | None = None) -> dict:
    """Accuracy and macro-F1 of always answering the most frequent gold label.

    Returns {"label", "accuracy", "macro_f1"}; ties go to the label listed first in `labels`
    (default: sorted labels).
    """
    gold = list(gold)
    labels = _labels_or_default(labels, gold, [])
    counts = {label: gold.count(label) for label in labels}
    return _constant_baseline(gold, max(labels, key=lambda label: counts[label]), labels)


def always_yes_baseline(gold: Sequence, labels: Sequence | None = ("yes", "no", "maybe")) -> dict:
    """Accuracy and macro-F1 of always answering "yes" (PubMedQA's 55% yes makes this strong)."""
    return _constant_baseline(list(gold), "yes", labels)


def reference_yes_f1(gold: Sequence, pred: Sequence) -> float:
    """Reproduction only: the reference study's PubMedQA "F1", which is the F1 of the yes class.

    It called sklearn `f1_score(y_true, y_pred, labels=["yes"], pos_label="yes",
    average="micro", zero_division=0)`; an invalid (None) prediction counts as not-yes.
    """
    from sklearn.metrics import f1_score
    gold, pred = _labels_arrays(gold, pred)
    return float(f1_score(gold, pred, labels=["yes"], average="micro", zero_division=0))


def reference_macro_f1(gold: Sequence, pred: Sequence) -> float:
    """Reproduction only: the reference study's MMLU F1, sklearn macro F1 with no `labels=`.

    Every label seen in gold or pred is a class, so its unparseable answer "X" (None is read as
    "X" here) is a fifth class whose F1 of 0 is averaged in: `f1_score(y_true, y_pred,
    average="macro", zero_division=0)`.
    """
    from sklearn.metrics import f1_score
    gold, pred = _labels_arrays(gold, pred, sentinel=REFERENCE_INVALID)
    return float(f1_score(gold, pred, average="macro", zero_division=0))


# ----------------------------------------------------------------------------- curves


def _trapezoid(y, x, axis: int = -1):
    """numpy.trapezoid (numpy >= 2), numpy.trapz before it (same formula)."""
    integrate = getattr(np, "trapezoid", None) or np.trapz
    return integrate(y, x, axis=axis)


def _curve(sparsity, score) -> tuple[np.ndarray, np.ndarray]:
    sparsity = np.asarray(sparsity, dtype=float)
    score = np.asarray(score, dtype=float)
    if sparsity.ndim != 1 or sparsity.shape != score.shape[-1:]:
        raise LoboError(f"sparsity ({sparsity.shape}) and score ({score.shape}) must be curves "
                        f"of the same length")  # fmt: skip
    if len(sparsity) < 2:
        raise LoboError("a curve needs at least two sparsity levels")
    if np.any(np.diff(sparsity) <= 0):
        raise LoboError(f"sparsity levels must be strictly ascending, got {sparsity.tolist()}")
    return sparsity, score


def auc_raw(sparsity: Sequence[float], score: Sequence[float]):
    """The reference study's robustness score: `numpy.trapezoid(score, sparsity)`, not normalised.

    Its value depends on the range of levels (0..0.95 gives at most 0.95). Works on the last
    axis, so a (replicates × levels) array gives one AUC per replicate.
    """
    sparsity = np.asarray(sparsity, dtype=float)
    score = np.asarray(score, dtype=float)
    if sparsity.ndim != 1 or sparsity.shape != score.shape[-1:]:
        raise LoboError(f"sparsity ({sparsity.shape}) and score ({score.shape}) must be curves "
                        f"of the same length")  # fmt: skip
    value = _trapezoid(score, sparsity)
    return float(value) if np.ndim(value) == 0 else value


def auc_normalised(sparsity: Sequence[float], score: Sequence[float]):
    """Trapezoid area under the curve divided by the width of the sparsity range.

    The mean score over the range, in [0, 1] for scores in [0, 1]; comparable across level
    grids. Works on the last axis like `auc_raw`.
    """
    sparsity, score = _curve(sparsity, score)
    value = _trapezoid(score, sparsity) / (sparsity[-1] - sparsity[0])
    return float(value) if np.ndim(value) == 0 else value


def cliff(sparsity: Sequence[float], score: Sequence[float], fraction: float = 0.5) -> float | None:
    """The first level whose score falls below `fraction` × the dense score (the first level's).

    None if the curve never falls that low.
    """
    if not 0 < fraction <= 1:
        raise LoboError(f"fraction must be in (0, 1], got {fraction}")
    sparsity, score = _curve(sparsity, score)
    below = np.flatnonzero(score < fraction * score[0])
    return float(sparsity[below[0]]) if below.size else None


def steepest_drop(sparsity: Sequence[float], score: Sequence[float]) -> tuple[float, float, float]:
    """(from_level, to_level, drop): the consecutive pair of levels with the largest fall in score.

    drop = score(from) - score(to); negative if the score rises at every step. Ties: the first.
    """
    sparsity, score = _curve(sparsity, score)
    falls = score[:-1] - score[1:]
    i = int(np.argmax(falls))
    return float(sparsity[i]), float(sparsity[i + 1]), float(falls[i])


# ----------------------------------------------------------------------------- bootstrap


def resample_indices(n_items: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot × n_items) item indices drawn with replacement; the one resample every level and
    model share."""
    if n_items < 1:
        raise LoboError("cannot bootstrap zero items")
    if not isinstance(n_boot, int) or n_boot < 1:
        raise LoboError(f"n_boot must be a positive integer, got {n_boot!r}")
    return np.random.default_rng(seed).integers(0, n_items, size=(n_boot, n_items))


def resample_counts(indices: np.ndarray) -> np.ndarray:
    """How often each item occurs in each resample: (n_boot × n_items) counts."""
    n_boot, n_items = indices.shape
    flat = (indices + np.arange(n_boot)[:, None] * n_items).ravel()
    return np.bincount(flat, minlength=n_boot * n_items).reshape(n_boot, n_items).astype(float)


def _matrix(values, name: str) -> np.ndarray:
    """A (levels × items) array; a single level may be given as a 1-D sequence."""
    array = np.asarray(values, dtype=object if name.startswith("pred") else float)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] == 0:
        raise LoboError(f"{name} must be a levels × items matrix, got shape {array.shape}")
    return array


def item_matrices(records: pd.DataFrame, pred_column: str = "answer") -> dict:
    """Level × item matrices of one model on one benchmark, ready for the bootstrap.

    `records` holds columns sparsity, item_id, gold and `pred_column` (as `RecordStore.read`
    gives them), one row per (level, item); every level must hold the same items. Returns
    {"sparsity": ascending levels, "item_ids", "gold": per item, "pred": levels × items (None =
    invalid), "correct": levels × items of 0/1}.
    """
    needed = {"sparsity", "item_id", "gold", pred_column}
    if not needed <= set(records.columns):
        raise LoboError(f"records need the columns {sorted(needed)}; missing "
                        f"{sorted(needed - set(records.columns))}")  # fmt: skip
    if records.duplicated(["sparsity", "item_id"]).any():
        raise LoboError("records hold an item twice at one level: select one model and benchmark first")
    pred = records.pivot(index="sparsity", columns="item_id", values=pred_column).sort_index()
    present = records.pivot(index="sparsity", columns="item_id", values="gold").sort_index()
    if present.isna().to_numpy().any():
        raise LoboError("levels hold different items: the bootstrap pairs items across levels, "
                        "so every level needs every item")  # fmt: skip
    gold = present.iloc[0].tolist()
    pred_values = pred.astype(object).to_numpy()
    pred_values = np.where(pd.isna(pred_values), None, pred_values)
    correct = (pred_values == np.asarray(gold, dtype=object)[None, :]).astype(float)
    return {"sparsity": pred.index.to_numpy(dtype=float), "item_ids": pred.columns.tolist(),
            "gold": gold, "pred": pred_values, "correct": correct}  # fmt: skip


def f1_replicates(gold: np.ndarray, pred: np.ndarray, counts: np.ndarray, classes) -> np.ndarray:
    """F1 averaged over classes for each resample (rows of `counts`) and level (rows of `pred`).

    `classes` fixed (e.g. ["yes"] or the four letters): every listed class is averaged, F1 = 0
    where it has no support and no prediction (scikit-learn's zero_division=0). `classes` None:
    the classes are those seen among the resampled gold and predictions of each level, as
    scikit-learn's f1_score does without `labels=` (the reference study's MMLU macro F1).
    Returns (resamples × levels).
    """
    out = np.empty((counts.shape[0], pred.shape[0]))
    for level, row in enumerate(pred):
        labels = list(classes) if classes is not None else sorted(set(gold) | set(row))
        f1s, seen = [], []
        for label in labels:
            g = (gold == label).astype(float)
            p = (row == label).astype(float)
            tp = counts @ (g * p)
            gold_n, pred_n = counts @ g, counts @ p
            denominator = gold_n + pred_n
            f1s.append(np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0))
            seen.append(denominator > 0)
        f1s, seen = np.stack(f1s, axis=1), np.stack(seen, axis=1)
        if classes is None:
            out[:, level] = (f1s * seen).sum(axis=1) / np.maximum(seen.sum(axis=1), 1)
        else:
            out[:, level] = f1s.mean(axis=1)
    return out


def kappa_replicates(gold: np.ndarray, pred: np.ndarray, counts: np.ndarray, classes) -> np.ndarray:
    """Cohen's kappa for each resample (rows of `counts`) and level (rows of `pred`), exactly
    `cohen_kappa` of the resampled items: invalid predictions form their own category on the
    prediction side. NaN where the expected agreement is 1 (kappa undefined). (resamples × levels)."""
    categories = [*classes, INVALID]
    n = counts.sum(axis=1)
    gold_share = np.stack([counts @ (gold == c).astype(float) for c in categories], axis=1) / n[:, None]
    out = np.empty((counts.shape[0], pred.shape[0]))
    for level, row in enumerate(pred):
        observed = counts @ (row == gold).astype(float) / n
        pred_share = np.stack([counts @ (row == c).astype(float) for c in categories], axis=1) / n[:, None]
        expected = (gold_share * pred_share).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, level] = np.where(expected < 1, (observed - expected) / (1 - expected), np.nan)
    return out


def _replicates(correct, pred, gold, metric, labels, indices) -> tuple[np.ndarray, np.ndarray]:
    """(point estimate per level, replicates n_boot × levels) for one model."""
    if correct is not None:
        correct = _matrix(correct, "correct")
        _check_items(correct.shape[1], indices)
        return correct.mean(axis=1), resample_counts(indices) @ correct.T / correct.shape[1]
    if pred is None or gold is None:
        raise LoboError("give either `correct` (levels × items of 0/1) or both `pred` and `gold`")
    pred = _matrix(pred, "pred")
    gold = list(gold)
    if len(gold) != pred.shape[1]:
        raise LoboError(f"gold has {len(gold)} items but pred has {pred.shape[1]} per level")
    _check_items(len(gold), indices)
    if metric == "macro_f1":
        labels = _labels_or_default(labels, _labels_arrays(gold, gold)[0], pred.ravel())
        point = np.array([macro_f1(gold, row, labels) for row in pred])
        return point, f1_replicates(np.asarray(gold, dtype=object), pred, resample_counts(indices), labels)
    if not callable(metric):
        raise LoboError(f"unknown metric {metric!r}: use 'macro_f1' or a function (gold, pred) -> float")
    gold_array = np.asarray(gold, dtype=object)
    point = np.array([metric(gold, list(row)) for row in pred])
    replicates = np.array([[metric(list(gold_array[take]), list(row[take])) for row in pred]
                           for take in indices])  # fmt: skip
    return point, replicates


def _n_items(correct, pred) -> int:
    """The number of items (columns) of whichever matrix was given."""
    if correct is not None:
        return _matrix(correct, "correct").shape[1]
    if pred is not None:
        return _matrix(pred, "pred").shape[1]
    raise LoboError("give either `correct` (levels × items of 0/1) or both `pred` and `gold`")


def _check_items(n_items: int, indices: np.ndarray) -> None:
    if indices.shape[1] != n_items:
        raise LoboError(f"both models must score the same items: {n_items} vs {indices.shape[1]}")


def percentile_interval(replicates, ci: float, *, skip_nan: bool = False) -> tuple:
    """The central `ci` percentile interval of bootstrap replicates along the first axis, (low,
    high); `skip_nan` leaves NaN replicates out (np.nanpercentile) instead of giving NaN bounds."""
    tail = (1 - ci) / 2 * 100
    percentile = np.nanpercentile if skip_nan else np.percentile
    low, high = percentile(replicates, [tail, 100 - tail], axis=0)
    return low, high


def _interval(point: np.ndarray, replicates: np.ndarray, ci: float) -> dict:
    low, high = percentile_interval(replicates, ci)
    return {"estimate": point, "lo": low, "hi": high}


def _summary(point, replicates, sparsity, ci) -> list[dict]:
    """Rows (quantity, sparsity, estimate, lo, hi) for each level's score and the two AUCs."""
    rows = [{"quantity": "score", "sparsity": level, **{k: float(v[i]) for k, v in
             _interval(point, replicates, ci).items()}} for i, level in enumerate(sparsity)]  # fmt: skip
    if len(sparsity) >= 2:
        for quantity, auc in (("auc_normalised", auc_normalised), ("auc_raw", auc_raw)):
            interval = _interval(np.array([auc(sparsity, point)]), auc(sparsity, replicates)[:, None], ci)
            rows.append({"quantity": quantity, "sparsity": np.nan,
                         **{k: float(v[0]) for k, v in interval.items()}})  # fmt: skip
    return rows


def _levels(sparsity, n_levels: int) -> np.ndarray:
    if sparsity is None:
        if n_levels != 1:
            raise LoboError("give `sparsity`, the level of each row of the matrix")
        return np.array([np.nan])
    sparsity = np.asarray(sparsity, dtype=float)
    if sparsity.shape != (n_levels,):
        raise LoboError(f"sparsity has {sparsity.size} levels but the matrix has {n_levels} rows")
    return sparsity


def _check_ci(ci: float) -> None:
    if not 0 < ci < 1:
        raise LoboError(f"ci must be in (0, 1), e.g. 0.95; got {ci}")


def bootstrap_ci(
    correct=None,
    sparsity: Sequence[float] | None = None,
    *,
    pred=None,
    gold: Sequence | None = None,
    metric: str | Callable = "macro_f1",
    labels: Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Percentile bootstrap CIs for one model's score at each level and for its AUCs.

    Either `correct`, a (levels × items) matrix of per-item 0/1 correctness (score = accuracy,
    or any per-item score averaged), or `pred` (levels × items of labels, None = invalid) with
    `gold` (items) and `metric` ("macro_f1" over `labels`, vectorised; or any function
    (gold, pred) -> float, evaluated per resample and slow). Rows of the matrices are the
    ascending `sparsity` levels; columns are the same items in the same order at every level.
    Every level is scored on the same resample of items.

    Returns a long table: quantity ("score", "auc_normalised", "auc_raw"), sparsity (NaN for
    AUCs), estimate (on all items), lo, hi.
    """
    _check_ci(ci)
    indices = resample_indices(_n_items(correct, pred), n_boot, seed)
    point, replicates = _replicates(correct, pred, gold, metric, labels, indices)
    return pd.DataFrame(_summary(point, replicates, _levels(sparsity, len(point)), ci))


def paired_bootstrap(
    correct_a=None,
    correct_b=None,
    sparsity: Sequence[float] | None = None,
    *,
    pred_a=None,
    pred_b=None,
    gold: Sequence | None = None,
    metric: str | Callable = "macro_f1",
    labels: Sequence | None = None,
    names: tuple[str, str] = ("a", "b"),
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Paired bootstrap of two models on the same items: each model's scores and AUCs and their
    difference a - b, all computed on the same item resamples.

    Inputs as in `bootstrap_ci`, once per model (`correct_a`/`correct_b`, or `pred_a`/`pred_b`
    with one `gold`); both matrices must have the same levels and items in the same order.
    Returns the long table of `bootstrap_ci` with a `model` column (names[0], names[1] and
    f"{names[0]} - {names[1]}") and, for the difference, `p`: the two-sided bootstrap p-value
    (twice the smaller share of resamples on either side of 0, at most 1).
    """
    _check_ci(ci)
    indices = resample_indices(_n_items(correct_a, pred_a), n_boot, seed)
    point_a, reps_a = _replicates(correct_a, pred_a, gold, metric, labels, indices)
    point_b, reps_b = _replicates(correct_b, pred_b, gold, metric, labels, indices)
    if point_a.shape != point_b.shape:
        raise LoboError(f"the two models have {len(point_a)} and {len(point_b)} levels; they must match")
    levels = _levels(sparsity, len(point_a))
    tables = []
    for name, point, reps in ((names[0], point_a, reps_a), (names[1], point_b, reps_b),
                              (f"{names[0]} - {names[1]}", point_a - point_b, reps_a - reps_b)):  # fmt: skip
        table = pd.DataFrame(_summary(point, reps, levels, ci))
        table.insert(0, "model", name)
        tables.append(table)
    tables[2]["p"] = _p_values(reps_a - reps_b, levels)
    return pd.concat(tables, ignore_index=True)


def _p_values(differences: np.ndarray, levels: np.ndarray) -> list[float]:
    """Two-sided percentile-bootstrap p-values of difference replicates (per level, then AUCs)."""
    columns = [differences[:, i] for i in range(differences.shape[1])]
    if len(levels) >= 2:
        columns += [auc_normalised(levels, differences), auc_raw(levels, differences)]
    columns = [np.where(np.abs(c) < 1e-12, 0.0, c) for c in columns]  # float noise is a tie
    return [float(min(1.0, 2 * min(np.mean(c <= 0), np.mean(c >= 0)))) for c in columns]
