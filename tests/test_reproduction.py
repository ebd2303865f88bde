"""The reference study's published robustness scores, reproduced from its raw logs.

"BioMedical LLM Lobotomy" (Borzello & Dalvi, 2026) logged every generation of BioMistral-7B and
Mistral-7B-v0.1 at sparsity 0, 0.05, …, 0.95. Imported into our records and scored with the
study's own rules (``lobolib.parsing.parse_reference``, ``lobolib.metrics.reference_*``), they
give its published numbers to 4 decimals. Which score each number is (checked against the study's
summary files ``lobotomy_results_*.csv.gz`` and against accuracy, which does *not* reproduce them):

- PubMedQA 0.4871 / 0.4787 (Mistral / BioMistral): the area under the **yes-class F1**
  (``reference_yes_f1``, sklearn ``labels=["yes"]``) — the summary files' ``f1`` column.
- MMLU "medical" 0.2894 / 0.3399 (college_medicine + clinical_knowledge, 373 items) and "logic"
  0.2282 / 0.2606 (formal_logic + logical_fallacies + global_facts, 389 items): the area under
  the **5-class macro F1** (``reference_macro_f1``: sklearn ``average="macro"`` without
  ``labels=``, so the unparseable answer "X" is a fifth class) computed per subject group. The
  summary files' ``f1`` column is the same score over all 762 MMLU items.
- Robustness = ``auc_raw`` = ``numpy.trapezoid(score, sparsity)`` over the 20 levels 0..0.95,
  not normalised (a perfect score would give 0.95).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import shared_path
from lobolib.analysis.metrics import accuracy, auc_raw, reference_macro_f1, reference_yes_f1
from lobolib.evaluation.parsing import parse_reference
from lobolib.experiment.reference_logs import import_reference_logs
from lobolib.experiment.store import RecordStore

MISTRAL, BIOMISTRAL = "mistralai/Mistral-7B-v0.1", "BioMistral/BioMistral-7B"
GROUPS = {
    "pubmedqa": ("pubmedqa",),
    "reference_medical": ("college_medicine", "clinical_knowledge"),
    "reference_logic": ("formal_logic", "logical_fallacies", "global_facts"),
}
PUBLISHED = {  # (group, model) -> robustness score in the study's report
    ("reference_medical", MISTRAL): 0.2894,
    ("reference_medical", BIOMISTRAL): 0.3399,
    ("reference_logic", MISTRAL): 0.2282,
    ("reference_logic", BIOMISTRAL): 0.2606,
    ("pubmedqa", MISTRAL): 0.4871,
    ("pubmedqa", BIOMISTRAL): 0.4787,
}
SUMMARIES = {  # the study's own per-level scores
    (MISTRAL, "mmlu"): "Mistral_MMLU/lobotomy_results_mistral_mmlu.csv.gz",
    (BIOMISTRAL, "mmlu"): "BioMistral_MMLU/lobotomy_results_biomistral_mmlu.csv.gz",
    (MISTRAL, "pubmedqa"): "Mistral_PubMedQA/lobotomy_results_mistral_pubmedqa.csv.gz",
    (BIOMISTRAL, "pubmedqa"): "BioMistral_PubMedQA/lobotomy_results_biomistral_pubmedqa.csv.gz",
}


def mmlu_options() -> dict[str, tuple[str, ...]]:
    """item_id -> the four option texts, from MMLU's official test CSVs (so the check also covers
    the importer's item ids)."""
    options = {}
    for subject in GROUPS["reference_medical"] + GROUPS["reference_logic"]:
        rows = pd.read_csv(shared_path("mmlu", "test", f"{subject}_test.csv"), header=None, dtype=str,
                           keep_default_na=False)
        for index, row in enumerate(rows.itertuples(index=False)):
            options[f"{subject}/{index}"] = tuple(row[1:5])
    return options


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> pd.DataFrame:
    """Every logged generation as a record, with the reference parser's answer in `reference`."""
    store = RecordStore(tmp_path_factory.mktemp("reference-logs-run"))
    import_reference_logs(shared_path("reference-logs"), store, parse=False, progress=False)
    frame = store.read()
    options = mmlu_options()
    frame["reference"] = [
        parse_reference(benchmark, text, ("yes", "no", "maybe") if benchmark == "pubmedqa" else options[item])
        for benchmark, text, item in zip(frame["benchmark"], frame["raw_response"], frame["item_id"])
    ]
    return frame


def level_scores(frame: pd.DataFrame, model: str, subjects, score) -> pd.Series:
    """score(gold, reference answer) per sparsity level of one model on some subjects."""
    part = frame[(frame.model == model) & frame.subject.isin(subjects)]
    return part.groupby("sparsity").apply(lambda g: score(g["gold"].tolist(), g["reference"].tolist()))


def group_score(group: str):
    return reference_yes_f1 if group == "pubmedqa" else reference_macro_f1


def test_reference_parser_reproduces_the_logged_answers(records):
    """parse_reference gives the study's own parsed_guess for every one of the 70,480 generations."""
    assert len(records) == 20 * 2 * (1000 + 762)
    differ = records[records["reference"] != records["reference_parsed"]]
    assert differ.empty, differ[["benchmark", "item_id", "raw_response", "reference_parsed", "reference"]].head()


@pytest.mark.parametrize(("model", "benchmark"), sorted(SUMMARIES))
def test_level_scores_match_the_study_summary_files(records, model, benchmark):
    summary = pd.read_csv(shared_path("reference-logs", SUMMARIES[model, benchmark])).set_index("sparsity")
    mmlu_subjects = GROUPS["reference_medical"] + GROUPS["reference_logic"]
    subjects = GROUPS["pubmedqa"] if benchmark == "pubmedqa" else mmlu_subjects
    f1 = level_scores(records, model, subjects, group_score("pubmedqa" if benchmark == "pubmedqa" else "mmlu"))
    acc = level_scores(records, model, subjects, accuracy)
    assert list(f1.index) == pytest.approx(list(summary.index))
    np.testing.assert_allclose(f1.to_numpy(), summary["f1"].to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(acc.to_numpy(), summary["accuracy"].to_numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("group", "model"), sorted(PUBLISHED))
def test_published_robustness_scores_are_reproduced(records, group, model):
    scores = level_scores(records, model, GROUPS[group], group_score(group))
    assert len(scores) == 20 and scores.index[0] == 0.0 and scores.index[-1] == pytest.approx(0.95)
    assert round(float(auc_raw(scores.index.to_numpy(), scores.to_numpy())), 4) == PUBLISHED[group, model]
    acc = level_scores(records, model, GROUPS[group], accuracy)  # the score it is not
    assert round(float(auc_raw(acc.index.to_numpy(), acc.to_numpy())), 4) != PUBLISHED[group, model]
