"""Findings: what a run's tables show, written out as sentences with their numbers and intervals.

Every function reads the tables a run writes (`tables.build_tables`' robustness and scores, and
the two per-item tables made here: `accuracy_loss` and `yes_share`) and returns `Finding`s, one
sentence each, linked to the figure or table it rests on. The wording never claims more than the
interval allows: a paired difference whose 95% CI includes 0 is "no difference shown", and an
ordering of models is stated only where a difference's CI excludes 0.

    findings.markdown(findings.sweep(robustness, scores))   # the end of notebook 02
    findings.headline(tables_dir)                           # the report's summary

The statements:
- robustness: which model keeps more of a metric over the sweep (the normalised AUC of the "A - B"
  rows, paired bootstrap over items);
- shield: the same comparison under the reference study's scoring and under lobolib's, and
  whether the specialist's advantage (the study's "Structural Shield") is there under each;
- cliffs: the first level at which each model's score falls below the set fraction of its dense
  score;
- format vs knowledge: of the items a model answered right when dense and no longer does at the
  comparison level, the share whose first-token answer is still right (format collapse) and the
  share whose first-token answer is wrong too (knowledge loss), with Wilson (1927) intervals;
- yes share: the change in the share of "yes" answers from the dense level to the comparison
  level (paired bootstrap over items);
- ranking: whether the models' order depends on the metric, counting only differences whose CI
  excludes 0;
- settings: which compression setting keeps more of a metric (the "S - T" rows).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lobolib.analysis import metrics

METRIC_NAMES = {
    "accuracy": "accuracy", "first_token_accuracy": "first-token accuracy", "macro_f1": "macro-F1",
    "kappa": "Cohen's κ", "yes_f1": "yes-class F1", "reference_yes_f1": "the study's yes-class F1",
    "reference_macro_f1": "the study's macro-F1",
}  # fmt: skip
REFERENCE_METRICS = ("reference_yes_f1", "reference_macro_f1")
ROBUSTNESS_TABLE = "table-robustness"
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Finding:
    """One statement about a run: Markdown text and the HTML id of the figure or table behind it."""

    topic: str
    text: str
    anchor: str | None = None
    key: tuple = ()  # (setting, benchmark, group, ...) it is about, for selecting

    def markdown(self) -> str:
        return self.text if self.anchor is None else f"{self.text} [→]({'#' + self.anchor})"


# ----------------------------------------------------------------------------- wording


def number(value: float, digits: int = 3) -> str:
    """A score with a sign only when negative ("-0.104", "0.512"); NaN as "n/a"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}f}"
    return "0." + "0" * digits if text.lstrip("-") == "0." + "0" * digits else text


def interval(value: float, low: float, high: float, digits: int = 3) -> str:
    """"value [low, high]", or the value alone when there is no interval. A bound that is not 0
    but rounds to it is written with one significant figure ("-3e-06"): whether an interval
    excludes 0 must read the way the verdict beside it was decided."""
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return number(value, digits)
    return f"{number(value, digits)} [{_bound(low, digits)}, {_bound(high, digits)}]"


def _bound(value: float, digits: int) -> str:
    return f"{value:.1g}" if value != 0 and abs(value) < 0.5 * 10**-digits else number(value, digits)


def p_value(p: float) -> str:
    """"p < 0.001" or "p = 0.03"; empty when there is none."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}".rstrip("0").rstrip(".") if p < 1 else "p = 1"


def level_text(level: float, unit: str = "sparsity") -> str:
    """A level as a reader says it: "35% sparsity" or "4 bits"."""
    return f"{level:g} bits" if unit == "bits" else f"{level:.0%} sparsity"


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def where(benchmark: str, group: str, benchmarks: Mapping | None = None) -> str:
    """"PubMedQA" for a benchmark's own group, "MMLU (medical)" for a subject group."""
    bench = (benchmarks or {}).get(benchmark)
    title = getattr(bench, "title", None) or benchmark
    if group in (benchmark, None) or (isinstance(group, float) and math.isnan(group)):
        return title
    return f"{title} ({'all subjects' if group == 'all' else group})"


def ci_excludes_zero(low: float, high: float) -> bool:
    return not (math.isnan(low) or math.isnan(high)) and (low > 0 or high < 0)


def direction(row, level_ci: float = 0.95) -> int:
    """+1 when a difference row's CI lies above 0, -1 below, 0 when it includes 0 (or is absent)."""
    if not ci_excludes_zero(float(row["ci_low"]), float(row["ci_high"])):
        return 0
    return 1 if row["ci_low"] > 0 else -1


def _pair(label: str) -> tuple[str, str]:
    first, second = label.split(" - ", 1)
    return first, second


def _ci_words(ci: float) -> str:
    return f"{ci:.0%} CI"


def _difference_text(row, ci: float) -> str:
    p = p_value(float(row["p"])) if "p" in row else ""
    return f"{interval(row['auc_normalised'], row['ci_low'], row['ci_high'])}" + (f", {p}" if p else "")


def _is_difference(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].astype(str).str.contains(" - ", regex=False)


def _single(robustness: pd.DataFrame) -> pd.DataFrame:
    return robustness[~_is_difference(robustness, "model") & ~_is_difference(robustness, "setting")]


def _model_differences(robustness: pd.DataFrame) -> pd.DataFrame:
    return robustness[_is_difference(robustness, "model") & ~_is_difference(robustness, "setting")]


def table_anchor(name: str) -> str:
    """The HTML id of table `name` in the report (`tables.show` puts it there)."""
    return f"table-{name}"


def figure_anchor(name: str) -> str:
    return f"fig-{name}"


def curves_figure(unit: str, benchmark: str, group: str) -> str:
    """The name notebook 02 publishes a benchmark group's degradation curves under."""
    return f"curves_{unit}_{benchmark}_{group}"


def _groups(frame: pd.DataFrame, groups: Sequence[str] | None) -> pd.DataFrame:
    """Rows of the groups wanted: a benchmark's own group, "all", and `groups` (None: every group)."""
    if groups is None:
        return frame
    keep = [g == b or g == "all" or g in groups for b, g in zip(frame["benchmark"], frame["group"])]
    return frame[np.array(keep, dtype=bool)]  # a plain empty list would select no columns


# ----------------------------------------------------------------------------- robustness


def robustness(robustness: pd.DataFrame, scoring: str = "lobolib", metric: str = "accuracy", *,
               ci: float = 0.95, groups: Sequence[str] | None = None, benchmarks: Mapping | None = None,
               units: Mapping[str, str] | None = None) -> list[Finding]:
    """For each pair of models, setting and benchmark group: which keeps more of `metric` over the
    sweep (normalised AUC difference, `ci` interval, p-value), or that no difference is shown."""
    rows = _groups(_model_differences(robustness), groups)
    rows = rows[(rows["scoring"] == scoring) & (rows["metric"] == metric)]
    several = rows["setting"].nunique() > 1
    found = []
    for _, row in rows.iterrows():
        a, b = _pair(row["model"])
        sign = direction(row)
        verdict = {1: f"{a} is more robust", -1: f"{b} is more robust",
                   0: f"the {_ci_words(ci)} includes 0: no difference shown"}[sign]  # fmt: skip
        setting = f" under {row['setting']}" if several else ""
        text = (f"**{where(row['benchmark'], row['group'], benchmarks)}**{setting}: robustness ({metric_name(metric)}, "
                f"normalised AUC over the sweep) of {a} minus {b} is {_difference_text(row, ci)}: {verdict}.")
        unit = (units or {}).get(row["setting"], "sparsity")
        found.append(Finding("robustness", text, figure_anchor(curves_figure(unit, row["benchmark"], row["group"])),
                             (row["setting"], row["benchmark"], row["group"], scoring, metric)))  # fmt: skip
    return found


def shield(robustness: pd.DataFrame, *, ci: float = 0.95, groups: Sequence[str] | None = None,
           benchmarks: Mapping | None = None, specialist: str | None = None) -> list[Finding]:
    """For each pair of models and benchmark group the reference study scored: the robustness
    difference under the study's scoring (its metric) and under lobolib's (accuracy). With
    `specialist` (the domain-tuned model of the pair), whether the study's "Structural Shield",
    the specialist degrading more slowly, is there under the study's scoring and under lobolib's;
    without it, whether the model the study's scoring puts ahead stays ahead."""
    rows = _groups(_model_differences(robustness), groups)
    found = []
    for (setting, benchmark, group, pair), part in rows.groupby(["setting", "benchmark", "group", "model"], sort=False):
        reference = part[(part["scoring"] == "reference") & part["metric"].isin(REFERENCE_METRICS)]
        ours = part[(part["scoring"] == "lobolib") & (part["metric"] == "accuracy")]
        if reference.empty or ours.empty:
            continue
        ref, lob = reference.iloc[0], ours.iloc[0]
        a, b = _pair(pair)
        ref_sign, lob_sign = direction(ref), direction(lob)
        ahead = {1: a, -1: b}
        text = (f"**{where(benchmark, group, benchmarks)}**: robustness of {a} minus {b} is "
                f"{_difference_text(ref, ci)} under the study's scoring ({metric_name(ref['metric'])}, normalised AUC) "
                f"and {_difference_text(lob, ci)} under lobolib's (accuracy): ")
        text += (_shield_verdict(ref_sign, lob_sign, ahead, specialist, ci) if specialist in (a, b)
                 else _ordering_verdict(ref_sign, lob_sign, ahead, ci))
        state = _shield_state(ref_sign, lob_sign, ahead, specialist) if specialist in (a, b) else None
        found.append(Finding("shield", text + ".", ROBUSTNESS_TABLE, (setting, benchmark, group, state)))
    return found


def _ordering_verdict(ref_sign: int, lob_sign: int, ahead: dict, ci: float) -> str:
    if ref_sign == 0:
        return (f"the study's scoring shows no difference (its {_ci_words(ci)} includes 0)"
                + (f"; lobolib's puts {ahead[lob_sign]} ahead" if lob_sign else "; neither does lobolib's"))
    if lob_sign == ref_sign:
        return f"both put {ahead[ref_sign]} ahead"
    if lob_sign == 0:
        return f"only the study's scoring puts {ahead[ref_sign]} ahead; under lobolib's the {_ci_words(ci)} includes 0"
    return f"the study's scoring puts {ahead[ref_sign]} ahead, lobolib's {ahead[lob_sign]}: the order reverses"


SHIELD_STATES = {
    "holds": "holds under lobolib's scoring too",
    "not shown": "is not shown under lobolib's scoring (its difference's {ci} includes 0)",
    "reverses": "reverses under lobolib's scoring",
    "absent": "is not there even under the study's own scoring",
}


def _shield_state(ref_sign: int, lob_sign: int, ahead: dict, specialist: str) -> str:
    """"holds", "not shown", "reverses" (the study's scoring shows the shield; lobolib's agrees,
    cannot tell, or disagrees) or "absent" (the study's scoring does not show it)."""
    shield_sign = next(sign for sign, model in ahead.items() if model == specialist)
    if ref_sign != shield_sign:
        return "absent"
    return "holds" if lob_sign == shield_sign else "not shown" if lob_sign == 0 else "reverses"


def shield_summary(shields: Sequence[Finding], specialist: str | None, *, ci: float = 0.95,
                   benchmarks: Mapping | None = None) -> list[Finding]:
    """One plain sentence on what happens to the "Structural Shield" in every group (`shield`'s findings)."""
    judged = [f for f in shields if len(f.key) > 3 and f.key[3]]
    if not judged or specialist is None:
        return []
    by_state: dict[str, list[str]] = {}
    for finding in judged:
        by_state.setdefault(finding.key[3], []).append(where(finding.key[1], finding.key[2], benchmarks))
    parts = [f"{SHIELD_STATES[state].format(ci=_ci_words(ci))} on {', '.join(places)}"
             for state, places in by_state.items()]
    text = (f"**The study's “Structural Shield”** ({specialist} degrading more slowly, in robustness AUC): it "
            + "; it ".join(parts) + ".")
    return [Finding("shield", text, ROBUSTNESS_TABLE)]


def _shield_verdict(ref_sign: int, lob_sign: int, ahead: dict, specialist: str, ci: float) -> str:
    """Whether the specialist's advantage (the "Structural Shield") is there under each scoring."""
    shield_sign = next(sign for sign, model in ahead.items() if model == specialist)
    lobolib = ("lobolib's scoring shows it too: the shield holds" if lob_sign == shield_sign else
               f"under lobolib's scoring the {_ci_words(ci)} includes 0: the shield is not shown" if lob_sign == 0 else
               f"lobolib's scoring puts {ahead[lob_sign]} ahead instead: the shield reverses")
    if ref_sign == shield_sign:
        return f"the study's scoring shows the “Structural Shield” ({specialist} more robust); {lobolib}"
    if ref_sign == 0:
        study = f"the study's own scoring shows no shield here (its {_ci_words(ci)} includes 0)"
    else:
        study = f"the study's own scoring puts {ahead[ref_sign]} ahead here, not {specialist}: no shield"
    after = ("lobolib's shows none either" if lob_sign == 0 else
             f"lobolib's puts {ahead[lob_sign]} ahead")
    return f"{study}; {after}"


def settings(robustness: pd.DataFrame, scoring: str = "lobolib", metric: str = "accuracy", *, ci: float = 0.95,
             groups: Sequence[str] | None = None, benchmarks: Mapping | None = None) -> list[Finding]:
    """For each model and pair of settings ("S - T" rows): which setting keeps more of `metric`."""
    rows = robustness[_is_difference(robustness, "setting")]
    rows = _groups(rows[(rows["scoring"] == scoring) & (rows["metric"] == metric)], groups)
    found = []
    for _, row in rows.iterrows():
        s, t = _pair(row["setting"])
        verdict = {1: f"{s} keeps more", -1: f"{t} keeps more",
                   0: f"the {_ci_words(ci)} includes 0: no difference shown"}[direction(row)]  # fmt: skip
        text = (f"**{where(row['benchmark'], row['group'], benchmarks)}**, {row['model']}: {metric_name(metric)} "
                f"robustness under {s} minus under {t} is {_difference_text(row, ci)}: {verdict}.")
        found.append(Finding("settings", text, ROBUSTNESS_TABLE, (row["setting"], row["benchmark"], row["group"])))
    return found


def cliffs(robustness: pd.DataFrame, scores: pd.DataFrame, scoring: str = "lobolib", metric: str = "accuracy", *,
           cliff_fraction: float = 0.5, groups: Sequence[str] | None = None, benchmarks: Mapping | None = None,
           units: Mapping[str, str] | None = None) -> list[Finding]:
    """Per setting and benchmark group: each model's dense score (with its interval) and its cliff,
    the first level whose score falls below `cliff_fraction` of the dense score."""
    rows = _groups(_single(robustness), groups)
    rows = rows[(rows["scoring"] == scoring) & (rows["metric"] == metric)]
    mine = scores[(scores["scoring"] == scoring) & (scores["metric"] == metric)]
    found = []
    for (setting, benchmark, group), part in rows.groupby(["setting", "benchmark", "group"], sort=False):
        unit = (units or {}).get(setting, "sparsity")
        curve = mine[(mine["setting"] == setting) & (mine["benchmark"] == benchmark) & (mine["group"] == group)]
        if curve.empty:
            continue
        last = curve["level"].min() if unit == "bits" else curve["level"].max()
        first = curve["level"].max() if unit == "bits" else curve["level"].min()
        pieces = []
        for _, row in part.iterrows():
            dense = curve[(curve["model"] == row["model"]) & np.isclose(curve["level"], first)]
            start = interval(*dense.iloc[0][["value", "ci_low", "ci_high"]]) if len(dense) else "n/a"
            cliff = row["cliff"]
            at = (f"falls below {cliff_fraction:.0%} of it at {level_text(float(cliff), unit)}"
                  if cliff is not None and not (isinstance(cliff, float) and math.isnan(cliff))
                  else f"stays above {cliff_fraction:.0%} of it up to {level_text(float(last), unit)}")
            pieces.append(f"{row['model']} starts at {start} and {at}")
        text = f"**{where(benchmark, group, benchmarks)}**, {metric_name(metric)}: " + "; ".join(pieces) + "."
        found.append(Finding("cliff", text, figure_anchor(curves_figure(unit, benchmark, group)), (setting, benchmark, group)))
    return found


# ----------------------------------------------------------------------------- per-item tables


def wilson(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson (1927) score interval of a proportion (NaN bounds for 0 trials)."""
    if total == 0:
        return math.nan, math.nan
    share = successes / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def _nearest(levels: Iterable[float], level: float) -> float:
    present = np.unique(np.asarray(list(levels), dtype=float))
    return float(present[np.argmin(np.abs(present - level))])


def _dense_level(levels: Iterable[float], unit: str) -> float:
    present = list(levels)
    return max(present) if unit == "bits" else min(present)


LOSS_COLUMNS = ["model", "setting", "benchmark", "level", "dense_correct", "lost", "format_collapse", "invalid",
                "knowledge_loss", "format_share", "format_ci_low", "format_ci_high", "first_token"]  # fmt: skip


def accuracy_loss(records: pd.DataFrame, level: float, units: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per curve (model, setting) and benchmark, the items answered right at the dense level and
    not at `level` (the nearest present): how many, how many of those keep a right first-token
    answer (format collapse; `invalid`: of those, how many generations are unparseable) and how
    many lose it too (knowledge loss); `format_share` with its Wilson 95% interval. Records
    without first-token answers (imported logs) get first_token False and NaN splits."""
    rows = []
    for (model, setting, benchmark), part in records.groupby(["model", "setting", "benchmark"], sort=False):
        unit = (units or {}).get(setting, "sparsity")
        dense_level, at = _dense_level(part["level"], unit), _nearest(part["level"], level)
        dense = part[np.isclose(part["level"], dense_level)].drop_duplicates("item_id").set_index("item_id")
        later = part[np.isclose(part["level"], at)].drop_duplicates("item_id").set_index("item_id")
        right = [i for i in dense.index[dense["correct"].astype(bool)] if i in later.index]
        lost = [i for i in right if not bool(later.loc[i, "correct"])]
        first = "loglik_answer" in later.columns and later.loc[lost, "loglik_answer"].notna().all() and \
            later["loglik_answer"].notna().any()
        row = {"model": model, "setting": setting, "benchmark": benchmark, "level": at, "dense_correct": len(right),
               "lost": len(lost), "first_token": bool(first)}
        if first:
            kept = [i for i in lost if later.loc[i, "loglik_answer"] == later.loc[i, "gold"]]
            low, high = wilson(len(kept), len(lost))
            row.update(format_collapse=len(kept), invalid=int(sum(not bool(later.loc[i, "valid"]) for i in kept)),
                       knowledge_loss=len(lost) - len(kept), format_share=len(kept) / len(lost) if lost else math.nan,
                       format_ci_low=low, format_ci_high=high)  # fmt: skip
        else:
            row.update(format_collapse=math.nan, invalid=int(sum(not bool(later.loc[i, "valid"]) for i in lost)),
                       knowledge_loss=math.nan, format_share=math.nan, format_ci_low=math.nan, format_ci_high=math.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=LOSS_COLUMNS)


YES_COLUMNS = ["model", "setting", "benchmark", "dense_level", "level", "gold_share", "dense_share", "share",
               "change", "ci_low", "ci_high", "items"]  # fmt: skip


def yes_share(records: pd.DataFrame, level: float, *, label: str = "yes", n_boot: int = 1000, seed: int = 0,
              ci: float = 0.95, units: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per curve and benchmark whose gold labels include `label`: the share of answers that are
    `label` (invalid answers count in the denominator) at the dense level and at `level`, their
    change and its paired bootstrap interval over the items present at both."""
    rows = []
    for (model, setting, benchmark), part in records.groupby(["model", "setting", "benchmark"], sort=False):
        if label not in set(part["gold"]):
            continue
        unit = (units or {}).get(setting, "sparsity")
        dense_level, at = _dense_level(part["level"], unit), _nearest(part["level"], level)
        dense = part[np.isclose(part["level"], dense_level)].drop_duplicates("item_id").set_index("item_id")
        later = part[np.isclose(part["level"], at)].drop_duplicates("item_id").set_index("item_id")
        items = sorted(set(dense.index) & set(later.index))
        before = np.array([dense.loc[i, "answer"] == label for i in items], dtype=float)
        after = np.array([later.loc[i, "answer"] == label for i in items], dtype=float)
        gold = np.array([dense.loc[i, "gold"] == label for i in items], dtype=float)
        low = high = math.nan
        if n_boot and items:
            counts = metrics.resample_counts(metrics.resample_indices(len(items), n_boot, seed))
            changes = counts @ (after - before) / len(items)
            low, high = (float(v) for v in metrics.percentile_interval(changes, ci))
        rows.append({"model": model, "setting": setting, "benchmark": benchmark, "dense_level": dense_level,
                     "level": at, "gold_share": gold.mean() if items else math.nan,
                     "dense_share": before.mean() if items else math.nan, "share": after.mean() if items else math.nan,
                     "change": (after - before).mean() if items else math.nan, "ci_low": low, "ci_high": high,
                     "items": len(items)})  # fmt: skip
    return pd.DataFrame(rows, columns=YES_COLUMNS)


# ----------------------------------------------------------------------------- statements from them


def _by_setting_and_benchmark(frame: pd.DataFrame, benchmarks: Mapping | None, units: Mapping[str, str] | None):
    """Each (setting, benchmark) of a comparison-level table: (setting, benchmark, its rows, the
    setting's unit, the bold place name a sentence starts with, "under <setting>" when the table
    holds several settings)."""
    several = frame["setting"].nunique() > 1
    for (setting, benchmark), part in frame.groupby(["setting", "benchmark"], sort=False):
        place = f"**{where(benchmark, benchmark, benchmarks)}**" + (f" under {setting}" if several else "")
        yield setting, benchmark, part, (units or {}).get(setting, "sparsity"), place


def format_vs_knowledge(loss: pd.DataFrame, *, benchmarks: Mapping | None = None,
                        units: Mapping[str, str] | None = None) -> list[Finding]:
    """Per benchmark: what each model's lost answers at the comparison level are (see `accuracy_loss`)."""
    found = []
    for setting, benchmark, part, unit, place in _by_setting_and_benchmark(loss, benchmarks, units):
        pieces = []
        for _, row in part.iterrows():
            lost, right = int(row["lost"]), int(row["dense_correct"])
            head = f"{row['model']} lost {lost} of the {right} items it answered right when dense"
            if lost == 0:
                pieces.append(head)
            elif not row["first_token"]:
                pieces.append(f"{head} ({int(row['invalid'])} now invalid; no first-token answers to tell format "
                              "collapse from knowledge loss)")
            else:
                share = interval(row["format_share"], row["format_ci_low"], row["format_ci_high"], 2)
                pieces.append(f"{head}: {int(row['format_collapse'])} (share {share}) are format collapse, the "
                              f"first-token answer still right ({int(row['invalid'])} of them invalid generations), "
                              f"and {int(row['knowledge_loss'])} knowledge loss, the first-token answer wrong too")
        level = level_text(float(part["level"].iloc[0]), unit)
        found.append(Finding("format", f"{place} at {level}: " + "; ".join(pieces) + ".",
                             table_anchor("accuracy_loss"), (setting, benchmark)))
    return found


def yes_bias(shares: pd.DataFrame, *, ci: float = 0.95, label: str = "yes", benchmarks: Mapping | None = None,
             units: Mapping[str, str] | None = None) -> list[Finding]:
    """Per benchmark: whether each model's share of `label` answers rises from the dense level to
    the comparison level (its change's interval above 0), falls, or shows no change."""
    found = []
    for setting, benchmark, part, unit, place in _by_setting_and_benchmark(shares, benchmarks, units):
        pieces = []
        for _, row in part.iterrows():
            change = interval(row["change"], row["ci_low"], row["ci_high"], 2)
            verdict = ("it rises" if ci_excludes_zero(row["ci_low"], row["ci_high"]) and row["ci_low"] > 0 else
                       "it falls" if ci_excludes_zero(row["ci_low"], row["ci_high"]) else
                       f"no change shown ({_ci_words(ci)} includes 0)")
            pieces.append(f"{row['model']} {number(row['dense_share'], 2)} → {number(row['share'], 2)} "
                          f"(change {change}: {verdict})")
        first = part.iloc[0]
        text = (f"{place}: share of “{label}” answers from {level_text(float(first['dense_level']), unit)} to "
                f"{level_text(float(first['level']), unit)} (gold {number(first['gold_share'], 2)}): "
                + "; ".join(pieces) + ".")
        found.append(Finding("bias", text, figure_anchor(f"labels_{benchmark}"), (setting, benchmark)))
    return found


def ranking(robustness: pd.DataFrame, *, ci: float = 0.95, groups: Sequence[str] | None = None,
            benchmarks: Mapping | None = None) -> list[Finding]:
    """Per setting, benchmark group and pair of models: whether their order depends on the metric,
    counting a metric (under either scoring) only where the robustness difference's CI excludes 0."""
    rows = _groups(_model_differences(robustness), groups)
    rows = rows[rows["metric"] != "first_token_accuracy"]
    found = []
    for (setting, benchmark, group, pair), part in rows.groupby(["setting", "benchmark", "group", "model"], sort=False):
        a, b = _pair(pair)
        ahead = {1: [], -1: [], 0: []}
        for _, row in part.iterrows():
            ahead[direction(row)].append(f"{metric_name(row['metric'])} ({row['scoring']})"
                                         if row["metric"] == "accuracy" else metric_name(row["metric"]))
        place = f"**{where(benchmark, group, benchmarks)}**"
        if ahead[1] and ahead[-1]:
            text = (f"{place}: the ranking depends on the metric: {a} is ahead by {', '.join(ahead[1])}, {b} by "
                    f"{', '.join(ahead[-1])}.")
        elif ahead[1] or ahead[-1]:
            lead, by = (a, ahead[1]) if ahead[1] else (b, ahead[-1])
            rest = f"; the {_ci_words(ci)}s of {', '.join(ahead[0])} include 0" if ahead[0] else ""
            text = f"{place}: the ranking does not depend on the metric: {lead} is ahead by {', '.join(by)}{rest}."
        else:
            text = f"{place}: no metric separates {a} and {b} (every {_ci_words(ci)} includes 0)."
        found.append(Finding("ranking", text, table_anchor("ranking"), (setting, benchmark, group)))
    return found


def baseline(scores: pd.DataFrame, baselines: pd.DataFrame, *, benchmarks: Mapping | None = None) -> list[Finding]:
    """Per benchmark (its own group or "all"): each model's dense accuracy and κ with intervals,
    against the majority baseline, and its invalid rate."""
    found = []
    dense = scores[np.isclose(scores["level"], scores.groupby("setting")["level"].transform("min"))]
    dense = dense[(dense["scoring"] == "lobolib")
                  & ((dense["group"] == dense["benchmark"]) | (dense["group"] == "all"))]  # fmt: skip
    for (benchmark, group), part in dense.groupby(["benchmark", "group"], sort=False):
        majority = baselines[(baselines["benchmark"] == benchmark) & (baselines["baseline"] == "majority")]
        floor = float(majority["accuracy"].iloc[0]) if len(majority) else math.nan
        pieces = []
        for model, mine in part.groupby("model", sort=False):
            values = mine.drop_duplicates("metric").set_index("metric")
            acc = values.loc["accuracy"] if "accuracy" in values.index else None
            if acc is None:
                continue
            above = "above" if acc["ci_low"] > floor else "not above" if not math.isnan(floor) else "against no"
            piece = f"{model} {interval(acc['value'], acc['ci_low'], acc['ci_high'])} ({above} the majority baseline)"
            if "kappa" in values.index:
                piece += f", κ {interval(*values.loc['kappa'][['value', 'ci_low', 'ci_high']])}"
            if "invalid_rate" in values.index:
                piece += f", {values.loc['invalid_rate', 'value']:.0%} invalid"
            pieces.append(piece)
        text = (f"**{where(benchmark, group, benchmarks)}**, dense accuracy against a majority baseline of "
                f"{number(floor)}: " + "; ".join(pieces) + ".")
        found.append(Finding("baseline", text, table_anchor("baseline_scores"), ("dense", benchmark, group)))
    return found


# ----------------------------------------------------------------------------- per notebook and report


def sweep(robustness_table: pd.DataFrame, scores: pd.DataFrame, *, ci: float = 0.95, cliff_fraction: float = 0.5,
          groups: Sequence[str] | None = None, benchmarks: Mapping | None = None,
          units: Mapping[str, str] | None = None, specialist: str | None = None) -> list[Finding]:
    """Notebook 02's interpretation: robustness differences, the shield comparison, cliffs and,
    with several settings, which keeps knowledge best."""
    options = {"groups": groups, "benchmarks": benchmarks}
    return [*robustness(robustness_table, ci=ci, units=units, **options),
            *shield(robustness_table, ci=ci, specialist=specialist, **options),
            *cliffs(robustness_table, scores, cliff_fraction=cliff_fraction, units=units, **options),
            *settings(robustness_table, ci=ci, **options)]  # fmt: skip


def dense(scores: pd.DataFrame, baselines: pd.DataFrame, *, benchmarks: Mapping | None = None, **_common) -> list[Finding]:
    """Notebook 01's interpretation: the dense scores against the majority baseline."""
    return baseline(scores, baselines, benchmarks=benchmarks)


def bias(shares: pd.DataFrame, robustness_table: pd.DataFrame, *, ci: float = 0.95, groups: Sequence[str] | None = None,
         benchmarks: Mapping | None = None, units: Mapping[str, str] | None = None, **_common) -> list[Finding]:
    """Notebook 03's interpretation: the yes share's change and whether the ranking depends on the metric."""
    return [*yes_bias(shares, ci=ci, benchmarks=benchmarks, units=units),
            *ranking(robustness_table, ci=ci, groups=groups, benchmarks=benchmarks)]


def errors(loss: pd.DataFrame, *, benchmarks: Mapping | None = None, units: Mapping[str, str] | None = None,
           **_common) -> list[Finding]:
    """Notebook 04's interpretation: format collapse against knowledge loss at the comparison level."""
    return format_vs_knowledge(loss, benchmarks=benchmarks, units=units)


def markdown(found: Sequence[Finding], title: str | None = "What this run shows"):
    """The findings as an IPython Markdown object (a bulleted list under `title`)."""
    from IPython.display import Markdown

    lines = [f"## {title}", ""] if title else []
    lines += [f"- {f.markdown()}" for f in found] or ["- nothing to report: the tables are empty"]
    return Markdown("\n".join(lines))


def read_optional(tables_dir: str | os.PathLike, name: str) -> pd.DataFrame | None:
    path = Path(tables_dir) / f"{name}.csv"
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.is_file() else None


def headline(tables_dir: str | os.PathLike, *, ci: float = 0.95, cliff_fraction: float = 0.5,
             groups: Sequence[str] = (), benchmarks: Mapping | None = None, units: Mapping[str, str] | None = None,
             specialist: str | None = None) -> list[Finding]:
    """The report's summary, from the tables a run wrote (robustness, scores, accuracy_loss,
    yes_share), one screen: per benchmark group (its own, "all" and `groups`) the robustness
    difference (beside the reference scoring's where the study scored it) with each model's
    cliff; per benchmark the split of the lost answers and the yes share; whether the ranking
    depends on the metric; and the settings' differences."""
    robust, scores = read_optional(tables_dir, "robustness"), read_optional(tables_dir, "scores")
    if robust is None or scores is None or robust.empty:
        return []
    options = {"groups": list(groups), "benchmarks": benchmarks}
    shield_found = shield(robust, ci=ci, specialist=specialist, **options)
    shields = {f.key[:3]: f for f in shield_found}
    cliff_texts = {f.key: f for f in cliffs(robust, scores, cliff_fraction=cliff_fraction, units=units, **options)}
    found = shield_summary(shield_found, specialist, ci=ci, benchmarks=benchmarks)
    for finding in robustness(robust, ci=ci, units=units, **options):
        setting, benchmark, group = finding.key[:3]
        main = shields.get((setting, benchmark, group), finding)
        cliff = cliff_texts.get((setting, benchmark, group))
        text = main.text + (" Accuracy: " + cliff.text.split(": ", 1)[1] if cliff else "")
        found.append(Finding(main.topic, text, finding.anchor, finding.key))
    loss, shares = read_optional(tables_dir, "accuracy_loss"), read_optional(tables_dir, "yes_share")
    if loss is not None and not loss.empty:
        found += format_vs_knowledge(loss, benchmarks=benchmarks, units=units)
    if shares is not None and not shares.empty:
        found += yes_bias(shares, ci=ci, benchmarks=benchmarks, units=units)
    found += ranking_summary(ranking(robust, ci=ci, **options))
    found += settings(robust, ci=ci, **options)
    return found


def ranking_summary(rankings: Sequence[Finding]) -> list[Finding]:
    """One statement for all groups: where the ranking depends on the metric, or that it nowhere does."""
    if not rankings:
        return []
    depends = [f for f in rankings if "depends on the metric" in f.text and "does not" not in f.text]
    if depends:
        return list(depends)
    return [Finding("ranking", "In no benchmark group does the models' order depend on the metric: every metric "
                    "whose robustness difference's CI excludes 0 puts the same model ahead.", rankings[0].anchor)]
