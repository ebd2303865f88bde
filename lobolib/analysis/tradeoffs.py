"""What each compression buys: knowledge against bits per weight, model bytes and measured costs.

Every (model, method, level) has an effective storage in bits per weight of the compressed
matrices, metadata included (lobolib.compress.bits: dense 16; unstructured sparsity s with a
bitmask 16(1-s)+1; N:M 2:4 16*0.5+0.5*2; heads the dense bits of what remains; int b with groups
of g b+32/g), recorded by the sweep in the compression reports with the model's bytes at that
storage. That is the common axis on which pruning and quantization settings can be compared.

`retention` gives, per setting, the most compression that keeps at least a fraction (95%) of the
dense accuracy at every level up to it, with a bootstrap interval over items. `deployment` joins
the knowledge to costs measured with real kernels (`python -m lobolib bench compress`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lobolib.analysis import metrics
from lobolib.analysis.tables import benchmark_groups, curves_of, questions
from lobolib.benchmarks import Benchmark
from lobolib.benchmarks import get as get_benchmark
from lobolib.errors import LoboError
from lobolib.records import DENSE

DENSE_BITS = 16.0
GIB = 2**30
AXIS_COLUMNS = ["model", "method", "level", "bits_per_weight", "model_gib"]


def compression_axis(reports: Mapping[tuple[str, str], Mapping]) -> pd.DataFrame:
    """Bits per weight and model size of every (model, method, level) from the sweep's reports
    ({(model, method): {level key: report}})."""
    rows = []
    for (model, method), levels in reports.items():
        for key, report in levels.items():
            bits = report.get("bits_per_weight", DENSE_BITS if method == DENSE else math.nan)
            size = report.get("model_bytes")
            rows.append({"model": model, "method": method, "level": float(key), "bits_per_weight": float(bits),
                         "model_gib": size / GIB if size is not None else math.nan})  # fmt: skip
    return pd.DataFrame(rows, columns=AXIS_COLUMNS)


def on_axis(scores: pd.DataFrame, axis: pd.DataFrame) -> pd.DataFrame:
    """`scores` (tables.build_tables) with each row's bits per weight and model GiB; dense rows
    (at level 0, or 16 bits on a quantization curve) take the dense report's."""
    scores = scores[~scores["setting"].astype(str).str.contains(" - ", regex=False)].copy()
    dense = axis[axis["method"] == DENSE].drop_duplicates("model").set_index("model")
    keyed = axis[axis["method"] != DENSE].set_index(["model", "method", "level"])
    bits, gib = [], []
    for model, method, level in zip(scores["model"], scores["method"], scores["level"]):
        if method == DENSE or method is None or (isinstance(method, float) and math.isnan(method)):
            row = dense.loc[model] if model in dense.index else None
        else:
            row = keyed.loc[(model, method, float(level))] if (model, method, float(level)) in keyed.index else None
        bits.append(math.nan if row is None else float(row["bits_per_weight"]))
        gib.append(math.nan if row is None else float(row["model_gib"]))
    return scores.assign(bits_per_weight=bits, model_gib=gib)


def pareto(points: pd.DataFrame, x: str = "bits_per_weight", y: str = "value") -> pd.DataFrame:
    """The points no other point beats: none with less or equal `x` has a higher `y` (ascending x)."""
    ordered = points.sort_values([x, y], ascending=[True, False])
    best, keep = -math.inf, []
    for index, value in zip(ordered.index, ordered[y]):
        if value > best:
            keep.append(index)
            best = value
    return ordered.loc[keep]


def retention(records: pd.DataFrame, axis: pd.DataFrame, *, threshold: float = 0.95,
              benchmarks: Mapping[str, Benchmark] | None = None, groups: Sequence[str] = (),
              n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """Per (model, setting, benchmark, group): the most compression that keeps at least
    `threshold` of the dense accuracy at every level up to it — its level, bits per weight and
    model GiB, with a bootstrap interval of the bits per weight over items (the same resamples
    for every level). `kept` is that level's accuracy over the dense accuracy."""
    rows = []
    for key, curve in _question_curves(records, benchmarks, groups):
        row = _retained(curve, axis, key["model"], threshold, n_boot, seed, ci)
        if row is not None:
            rows.append({**key, **row})
    return pd.DataFrame(rows, columns=["model", "setting", "benchmark", "group", "level", "bits_per_weight",
                                       "bits_ci_low", "bits_ci_high", "model_gib", "kept", "items"])


def _question_curves(records: pd.DataFrame, benchmarks, groups):
    """Each curve of a question benchmark: ({model, setting, benchmark, group}, its records)."""
    frame = questions(curves_of(records), benchmarks)
    for name in dict.fromkeys(frame["benchmark"]):
        benchmark = get_benchmark(name, benchmarks)
        part = frame[frame["benchmark"] == name]
        for group, subjects in benchmark_groups(benchmark, list(part["subject"]), groups).items():
            grouped = part[part["subject"].isin(subjects)]
            for (model, setting), curve in grouped.groupby(["model", "setting"], sort=False):
                yield {"model": model, "setting": setting, "benchmark": name, "group": group}, curve


def _retained(curve: pd.DataFrame, axis: pd.DataFrame, model: str, threshold: float, n_boot, seed, ci) -> dict | None:
    correct = curve.pivot_table(index="x", columns="item_id", values="correct", aggfunc="first").dropna(axis=1)
    if correct.shape[0] < 2 or correct.shape[1] == 0:
        return None
    xs = list(correct.index)
    method_at = curve.drop_duplicates("x").set_index("x")[["method", "level"]]
    bits, gib = (_storage(axis, model, method_at, xs, column) for column in ("bits_per_weight", "model_gib"))
    matrix = correct.to_numpy(dtype=float)
    point = _safe_index(matrix.mean(axis=1)[None, :], threshold)[0]
    row = {"level": float(method_at.loc[xs[point], "level"]), "bits_per_weight": float(bits[point]),
           "model_gib": float(gib[point]), "items": matrix.shape[1],
           "kept": float(matrix[point].mean() / matrix[0].mean()) if matrix[0].mean() else math.nan}  # fmt: skip
    low = high = math.nan
    if n_boot:
        replicates = bits[_safe_index(_resampled_accuracy(matrix, n_boot, seed), threshold)]
        low, high = (float(v) for v in metrics.percentile_interval(replicates, ci))
    return {**row, "bits_ci_low": low, "bits_ci_high": high}


def _safe_index(accuracy: np.ndarray, threshold: float) -> np.ndarray:
    """For each row (a resample) of (resamples x levels) accuracies, ascending in compression: the
    last level before the first that falls below `threshold` of the first (dense) level's."""
    dense = accuracy[:, :1]
    below = accuracy < threshold * dense - 1e-12
    below[:, 0] = False
    first_below = np.where(below.any(axis=1), below.argmax(axis=1), accuracy.shape[1])
    return first_below - 1


def _storage(axis: pd.DataFrame, model: str, method_at: pd.DataFrame, xs, column: str) -> np.ndarray:
    """`column` of the axis (bits per weight, model GiB) at each x of one model's curve, NaN where
    the sweep reported none (the dense report serves every dense point)."""
    values = []
    for method, level in (method_at.loc[x] for x in xs):
        match = axis[(axis["model"] == model) & (axis["method"] == method) & ((axis["level"] == level) | (method == DENSE))]
        values.append(float(match[column].iloc[0]) if len(match) else math.nan)
    return np.array(values)


def _resampled_accuracy(matrix: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(resamples x levels) accuracies of a (levels x items) 0/1 matrix over bootstrap resamples of its items."""
    counts = metrics.resample_counts(metrics.resample_indices(matrix.shape[1], n_boot, seed))
    return counts @ matrix.T / matrix.shape[1]


def robustness_on_bits(records: pd.DataFrame, axis: pd.DataFrame, *, benchmarks: Mapping[str, Benchmark] | None = None,
                       groups: Sequence[str] = (), cliff_fraction: float = 0.5, n_boot: int = 1000, seed: int = 0,
                       ci: float = 0.95) -> pd.DataFrame:
    """Robustness of every curve on the common axis: the area under accuracy against the bits
    removed per weight (16 minus bits per weight, so every setting runs from dense at 0), divided
    by the curve's range, with a bootstrap interval over items; and the cliff, the bits per weight
    of the first level below `cliff_fraction` of the dense accuracy. Comparable across pruning and
    quantization settings. A level whose format would store more than 16 bits per weight (a
    bitmask under 1/16 sparsity) counts as 16: stored dense, it removes nothing, and of levels
    stored in the same bits only the least compressed is kept."""
    rows = []
    for key, curve in _question_curves(records, benchmarks, groups):
        row = _bits_auc(curve, axis, key["model"], cliff_fraction, n_boot, seed, ci)
        if row is not None:
            rows.append({**key, **row})
    return pd.DataFrame(rows, columns=["model", "setting", "benchmark", "group", "levels", "items", "bits_from",
                                       "bits_to", "auc_normalised", "ci_low", "ci_high", "cliff_bits"])


def _bits_auc(curve, axis, model, cliff_fraction, n_boot, seed, ci) -> dict | None:
    correct = curve.pivot_table(index="x", columns="item_id", values="correct", aggfunc="first").dropna(axis=1)
    method_at = curve.drop_duplicates("x").set_index("x")[["method", "level"]]
    bits = np.minimum(_storage(axis, model, method_at, correct.index, "bits_per_weight"), DENSE_BITS)
    if len(bits) < 2 or correct.shape[1] == 0 or np.isnan(bits).any():
        return None
    removed = DENSE_BITS - bits
    order = np.argsort(removed, kind="stable")
    removed, bits, matrix = removed[order], bits[order], correct.to_numpy(dtype=float)[order]
    distinct = np.concatenate([[True], np.diff(removed) > 0])  # of levels stored alike, the least compressed
    removed, bits, matrix = removed[distinct], bits[distinct], matrix[distinct]
    if len(removed) < 2:
        return None
    point = matrix.mean(axis=1)
    row = {"levels": len(bits), "items": matrix.shape[1], "bits_from": float(bits[0]), "bits_to": float(bits[-1]),
           "auc_normalised": float(metrics.auc_normalised(removed, point)), "ci_low": math.nan, "ci_high": math.nan}
    below = np.flatnonzero(point < cliff_fraction * point[0])
    row["cliff_bits"] = float(bits[below[0]]) if below.size and point[0] > 0 else math.nan
    if n_boot:
        aucs = metrics.auc_normalised(removed, _resampled_accuracy(matrix, n_boot, seed))
        row["ci_low"], row["ci_high"] = (float(v) for v in metrics.percentile_interval(aucs, ci))
    return row


# ----------------------------------------------------------------------------- measured costs


def read_costs(path) -> dict:
    """A `bench compress` JSON ({"device", "formats": {name: row}, ...})."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LoboError(f"cannot read the measured costs {file}: {err}; give the JSON `python -m lobolib bench "
                        "compress --out F.json` wrote") from None
    if "formats" not in data:
        raise LoboError(f"{file} holds no 'formats': it is not a `bench compress` JSON")
    return data


def kernel_format(method: str, level: float) -> str | None:
    """The measured format whose kernels run (method, level): dense kernels for dense and for
    unstructured or head sparsity (zeros in the dense layout buy no speed), 2:4 semi-structured
    sparse for 2:4, int8/int4 weight-only for 8- and 4-bit quantization; None where no kernel was
    measured (4:8, other bit widths)."""
    if method == DENSE:
        return "dense"
    if "/2:4" in method:
        return "sparse24_cusparselt"
    if "/4:8" in method:
        return None
    if method.startswith(("rtn", "gptq")):
        return {8: "int8", 4: "int4"}.get(int(level))
    return "unstructured50"


def deployment(scores: pd.DataFrame, axis: pd.DataFrame, costs: Mapping | None = None,
               metric: str = "accuracy") -> pd.DataFrame:
    """Per (model, setting, level, benchmark, group): the knowledge (`metric` under lobolib's
    scoring, with its CI), the storage (bits per weight, model GiB) and, where a measured format
    runs it, its measured weight GiB, prefill ms and joules per question, and accuracy per GiB
    and per joule."""
    part = on_axis(scores[(scores["scoring"] == "lobolib") & (scores["metric"] == metric)], axis)
    formats = (costs or {}).get("formats", {})
    rows = []
    for row in part.itertuples(index=False):
        name = kernel_format(row.method if isinstance(row.method, str) else DENSE, row.level)
        measured = formats.get(name, {}) if name else {}
        joules = measured.get("joules_per_question")
        rows.append({"model": row.model, "setting": row.setting, "level": row.level, "benchmark": row.benchmark,
                     "group": row.group, metric: row.value, "ci_low": row.ci_low, "ci_high": row.ci_high,
                     "bits_per_weight": row.bits_per_weight, "model_gib": row.model_gib, "kernel": name,
                     "measured_weight_gib": measured.get("weight_gib"),
                     "prefill_ms_per_question": measured.get("prefill_ms_per_question"),
                     "joules_per_question": joules,
                     f"{metric}_per_gib": row.value / row.model_gib if row.model_gib else math.nan,
                     f"{metric}_per_joule": row.value / joules if joules else math.nan})  # fmt: skip
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- findings


def findings(retained: pd.DataFrame, threshold: float = 0.95, costs: Mapping | None = None,
             deployed: pd.DataFrame | None = None) -> str:
    """Markdown sentences from the retention table (and the measured costs): per benchmark group
    and model, how far each setting compresses while keeping `threshold` of the dense accuracy,
    and whether one setting is shown to compress further (bootstrap intervals apart)."""
    if retained.empty:
        return "No setting has a curve of two levels or more: nothing to compare."
    lines = []
    for (benchmark, group), part in retained.groupby(["benchmark", "group"], sort=False):
        if group not in ("all", benchmark) and len(retained["group"].unique()) > 2:
            continue
        for model, mine in part.groupby("model", sort=False):
            mine = mine.sort_values("bits_per_weight")
            best = mine.iloc[0]
            parts = [f"{r.setting} to {r.bits_per_weight:.2f} bits per weight (level {r.level:g}; "
                     f"{_interval(r.bits_ci_low, r.bits_ci_high)}; {size(r.model_gib)})" for r in mine.itertuples()]
            sentence = (f"- **{benchmark} ({group}), {model}**: keeping at least {threshold:.0%} of the dense accuracy, "
                        + "; ".join(parts) + ".")
            if len(mine) > 1:
                second = mine.iloc[1]
                apart = best.bits_ci_high < second.bits_ci_low if not math.isnan(best.bits_ci_high) else False
                sentence += (f" {best.setting} compresses furthest" + (", its interval clear of the next setting's."
                             if apart else ", but its interval overlaps the next setting's: no setting is shown to "
                             "compress further."))  # fmt: skip
            lines.append(sentence)
    if costs and deployed is not None and not deployed.empty:
        lines.append(_cost_sentence(costs, deployed))
    return "\n".join(lines)


def size(gib: float) -> str:
    """A model size read easily: GiB, or MiB below one GiB."""
    if math.isnan(gib):
        return "size unknown"
    return f"{gib:.2f} GiB" if gib >= 1 else f"{gib * 1024:.1f} MiB"


def _interval(low: float, high: float) -> str:
    if math.isnan(low):
        return "no interval"
    return f"95% CI of the bits {low:.2f}-{high:.2f}"


def _cost_sentence(costs: Mapping, deployed: pd.DataFrame) -> str:
    formats = costs.get("formats", {})
    dense = formats.get("dense", {})
    said = []
    for name in ("sparse24_cusparselt", "int8", "int4", "unstructured50"):
        row = formats.get(name, {})
        if not row or row.get("unavailable") or not dense.get("prefill_ms_per_question"):
            continue
        speed = dense["prefill_ms_per_question"] / row["prefill_ms_per_question"] if row.get("prefill_ms_per_question") else math.nan
        energy = (f", {row['joules_per_question'] / dense['joules_per_question']:.2f}x the joules per question"
                  if row.get("joules_per_question") and dense.get("joules_per_question") else "")
        said.append(f"{name}: {row['weight_gib'] / dense['weight_gib']:.2f}x the weight bytes, prefill {speed:.2f}x "
                    f"as fast{energy}")
    device = costs.get("device", "the measuring device")
    return f"- **Measured on {device}** ({costs.get('date', 'undated')}), against dense bf16: " + "; ".join(said) + "."
