"""lobolib.experiment.reference_logs: the reference study's logs import into the same records as
a sweep's, as the study's method (magnitude per matrix, lm_head included; dense at 0%)."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

import lobolib.parsing
from conftest import shared_path
from lobolib import LoboError
from lobolib.evaluation.parsing import ParseResult
from lobolib.experiment.reference_logs import REFERENCE_METHOD, import_reference_logs, reference_model_name
from lobolib.experiment.store import RecordStore
from lobolib.records import DENSE, prompt_hash

MODEL = "BioMistral/BioMistral-7B"


def m(sparsity):
    return DENSE if sparsity == 0 else REFERENCE_METHOD



def mmlu_prompt(question, options):
    lines = [f"Question: {question}", "Options:"] + [f"{l}. {o}" for l, o in zip("ABCD", options)] + ["Answer:"]
    return "\n".join(lines)


def pubmedqa_prompt(question):
    return f"Context: some context.\nQuestion: {question}\nAnswer (yes/no/maybe):"


MMLU_ROWS = [
    ("anatomy", mmlu_prompt("Which organ pumps blood?", ["heart", "lung", "liver", "kidney"]), "A", "A. heart", "A"),
    ("anatomy", mmlu_prompt("Bones of the\nforearm?", ["radius", "femur", "tibia", "None"]), "A", "", "X"),
    ("virology", mmlu_prompt("Smallest?", ["virus", "cell", "organ", "body"]), "A", "None", "X"),
]
PUBMEDQA_ROWS = [
    (pubmedqa_prompt("Does aspirin reduce fever?"), "yes", "yes, it does", "yes"),
    (pubmedqa_prompt("Is the effect certain?"), "maybe", "none known", "no"),
]


def write_logs(folder, *, gz_pubmedqa=True, flat=False):
    """A small log folder in the study's layout (or flat), with its summary files beside."""
    mmlu_dir = folder if flat else folder / "Mistral_MMLU"
    pqa_dir = folder if flat else folder / "BioMistral_PubMedQA"
    mmlu_dir.mkdir(parents=True, exist_ok=True)
    pqa_dir.mkdir(parents=True, exist_ok=True)
    mmlu = pd.DataFrame(MMLU_ROWS, columns=["subject", "prompt", "true_answer", "raw_response", "parsed_guess"])
    pqa = pd.DataFrame(PUBMEDQA_ROWS, columns=["prompt", "true_answer", "raw_response", "parsed_guess"])
    for percent in (0, 5):
        mmlu.to_csv(mmlu_dir / f"mmlu_mistralai_Mistral-7B-v0.1_{percent}_percent.csv", index=False)
        name = pqa_dir / f"BioMistral_BioMistral-7B_pubmedqa_{percent}_percent.csv"
        if gz_pubmedqa:
            with gzip.open(f"{name}.gz", "wt", encoding="utf-8", newline="") as handle:
                pqa.to_csv(handle, index=False)
        else:
            pqa.to_csv(name, index=False)
    (mmlu_dir / "lobotomy_results_mistral_mmlu.csv").write_text("sparsity,accuracy\n0.0,0.5\n")
    (folder / "prelim_lobotomy_results.csv").write_text("Sparsity (%),Accuracy\n0,0.2\n")
    return folder


@pytest.fixture
def fake_parser(monkeypatch):
    """Replace lobolib.parsing.parse_response by a recorder, so the importer's calls are visible."""
    calls = []

    def parse_response(benchmark, text, options, question=None):
        calls.append((benchmark, text, tuple(options)))
        assert question is not None and question.endswith("?")
        return ParseResult(answer=None if not text else "B", tier="fake", reason=None if text else "empty")

    monkeypatch.setattr(lobolib.parsing, "parse_response", parse_response, raising=False)
    return calls


@pytest.mark.parametrize("flat", [False, True])
def test_import_synthetic_logs(tmp_path, fake_parser, flat):
    store = RecordStore(tmp_path / "run")
    summary = import_reference_logs(write_logs(tmp_path / "logs", flat=flat), store, progress=False)
    assert sorted(summary["status"]) == ["imported"] * 4 and summary["n"].sum() == 2 * (3 + 2)
    assert store.cells() == [
        ("BioMistral/BioMistral-7B", DENSE, 0.0, "pubmedqa"), ("BioMistral/BioMistral-7B", REFERENCE_METHOD, 0.05, "pubmedqa"),
        ("mistralai/Mistral-7B-v0.1", DENSE, 0.0, "mmlu"), ("mistralai/Mistral-7B-v0.1", REFERENCE_METHOD, 0.05, "mmlu"),
    ]
    mmlu = store.read(benchmarks="mmlu", levels=[0.05])
    assert mmlu["item_id"].tolist() == ["anatomy/0", "anatomy/1", "virology/0"]
    assert mmlu["raw_response"].tolist() == ["A. heart", "", "None"]  # empty stays "", "None" stays text
    assert mmlu["reference_parsed"].tolist() == ["A", "X", "X"]
    assert mmlu["gold"].tolist() == ["A", "A", "A"]
    assert mmlu["prompt_hash"].tolist() == [prompt_hash(row[1]) for row in MMLU_ROWS]
    assert mmlu["answer"].tolist() == ["B", None, "B"] and mmlu["tier"].tolist() == ["fake"] * 3
    assert mmlu["invalid_reason"].tolist() == [None, "empty", None]
    assert all(d == {} for d in mmlu["option_logprobs"]) and mmlu["loglik_answer"].isna().all()
    assert ("mmlu", "", ("radius", "femur", "tibia", "None")) in fake_parser
    assert ("pubmedqa", "none known", ("yes", "no", "maybe")) in fake_parser
    pqa = store.read(benchmarks="pubmedqa", levels=[0.0])
    assert pqa["item_id"].tolist() == ["pubmedqa/0", "pubmedqa/1"]
    assert pqa["subject"].tolist() == ["pubmedqa"] * 2 and pqa["gold"].tolist() == ["yes", "maybe"]
    again = import_reference_logs(tmp_path / "logs", store, progress=False)
    assert set(again["status"]) == {"skipped"}
    broken = store.path("mistralai/Mistral-7B-v0.1", m(0.05), 0.05, "mmlu")
    broken.write_bytes(broken.read_bytes()[:-5])  # a cut-off cell is imported again
    with pytest.warns(UserWarning, match="recomputed"):
        third = import_reference_logs(tmp_path / "logs", store, progress=False)
    assert third.set_index(["benchmark", "sparsity"])["status"].to_dict() == {
        ("mmlu", 0.0): "skipped", ("mmlu", 0.05): "imported",
        ("pubmedqa", 0.0): "skipped", ("pubmedqa", 0.05): "skipped",
    }
    assert len(store.read()) == 10


def test_import_with_our_parser(tmp_path):
    """parse=True fills answer/tier with lobolib.parsing.parse_response; parse=False leaves them open."""
    store = RecordStore(tmp_path / "run")
    import_reference_logs(write_logs(tmp_path / "logs", gz_pubmedqa=False), store, progress=False)
    frame = store.read(levels=[0.0])
    from lobolib.evaluation.parsing import parse_response

    expected = [parse_response("pubmedqa", r[2], ("yes", "no", "maybe")).answer for r in PUBMEDQA_ROWS]
    assert frame[frame.benchmark == "pubmedqa"]["answer"].tolist() == expected
    assert frame[frame.benchmark == "pubmedqa"]["answer"].iloc[0] == "yes"
    assert frame[frame.benchmark == "mmlu"]["answer"].iloc[0] == "A"
    bare = RecordStore(tmp_path / "bare")
    import_reference_logs(tmp_path / "logs", bare, parse=False, progress=False)
    assert set(bare.read()["tier"]) == {"unparsed"} and not bare.read()["valid"].any()


def test_import_maps_pubmedqa_rows_to_pmids(tmp_path, fake_parser):
    logs = write_logs(tmp_path / "logs")
    source = tmp_path / "ori_pqal.json"
    items = {"111": {"QUESTION": "Does aspirin reduce fever?", "final_decision": "yes"},
             "222": {"QUESTION": "Is the effect certain?", "final_decision": "maybe"}}
    source.write_text(json.dumps(items))
    store = RecordStore(tmp_path / "run")
    import_reference_logs(logs, store, pubmedqa_source=source, progress=False)
    assert store.read(benchmarks="pubmedqa", levels=[0.0])["item_id"].tolist() == ["111", "222"]
    items["222"]["QUESTION"] = "Something else?"
    source.write_text(json.dumps(items))
    with pytest.raises(LoboError, match="row 1 .* does not map"):
        import_reference_logs(logs, RecordStore(tmp_path / "run2"), pubmedqa_source=source, progress=False)


def test_import_bad_folders_say_which(tmp_path, fake_parser):
    store = RecordStore(tmp_path / "run")
    with pytest.raises(LoboError, match="does not exist"):
        import_reference_logs(tmp_path / "missing", store, progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "lobotomy_results_x.csv").write_text("sparsity\n0\n")
    with pytest.raises(LoboError, match=r"no reference logs found in .*empty"):
        import_reference_logs(tmp_path / "empty", store, progress=False)
    logs = write_logs(tmp_path / "logs")
    (logs / "BioMistral_PubMedQA" / "BioMistral_BioMistral-7B_pubmedqa_5_percent.csv").write_text("x\n")
    with pytest.raises(LoboError, match="two logs for one cell"):
        import_reference_logs(logs, store, progress=False)
    broken = write_logs(tmp_path / "broken", flat=True)
    (broken / "mmlu_mistralai_Mistral-7B-v0.1_0_percent.csv").write_text("subject,prompt\nanatomy,hi\n")
    with pytest.raises(LoboError, match="lacks the columns"):
        import_reference_logs(broken, store, progress=False)


def test_reference_model_names():
    assert reference_model_name("BioMistral_BioMistral-7B") == "BioMistral/BioMistral-7B"
    assert reference_model_name("mistralai_Mistral-7B-v0.1") == "mistralai/Mistral-7B-v0.1"
    assert reference_model_name("gpt2") == "gpt2"


# --- importer on the real logs ---------------------------------------------------------------


@pytest.fixture(scope="module")
def real_store(tmp_path_factory):
    logs = shared_path("reference-logs")
    source = shared_path("pubmedqa", "ori_pqal.json")
    store = RecordStore(tmp_path_factory.mktemp("reference-run"))
    summary = import_reference_logs(logs, store, pubmedqa_source=source, progress=False)
    return store, summary


def test_real_logs_import_every_cell(real_store):
    store, summary = real_store
    assert len(summary) == 20 * 2 * 2 and set(summary["status"]) == {"imported"}
    frame = store.read()
    assert len(frame) == 20 * 2 * (1000 + 762)
    counts = frame.groupby(["model", "benchmark"]).size().to_dict()
    assert counts == {(m, b): 20 * n for m in (MODEL, "mistralai/Mistral-7B-v0.1")
                      for b, n in (("mmlu", 762), ("pubmedqa", 1000))}
    assert sorted(frame["level"].unique()) == pytest.approx([i / 20 for i in range(20)])
    assert set(frame["method"]) == {DENSE, REFERENCE_METHOD}
    assert "unparsed" not in set(frame["tier"])  # our parser filled every answer
    answers = set(frame.loc[frame.valid, "answer"])
    assert answers <= {"yes", "no", "maybe", "A", "B", "C", "D"}
    assert frame.loc[~frame.valid, "invalid_reason"].notna().all()


def test_real_log_item_ids_are_official_rows(real_store):
    """MMLU ids are rows of MMLU's test CSVs (the study took the first 200 per subject, in order);
    PubMedQA rows map to the PMIDs of ori_pqal.json and keep its gold labels."""
    store, _ = real_store
    frame = store.read(models=MODEL, levels=[0.0])
    questions = json.loads(shared_path("pubmedqa", "ori_pqal.json").read_text(encoding="utf-8"))
    pqa = frame[frame.benchmark == "pubmedqa"]
    assert pqa["item_id"].tolist() == list(questions)
    assert pqa["gold"].tolist() == [q["final_decision"] for q in questions.values()]
    mmlu = frame[frame.benchmark == "mmlu"]
    logged = pd.read_csv(next(shared_path("reference-logs").glob("BioMistral_MMLU/mmlu_*_0_percent.csv.gz")),
                         dtype=str, keep_default_na=False)
    assert (mmlu["prompt_hash"].tolist() == [prompt_hash(p) for p in logged["prompt"]])
    squash = lambda text: " ".join(text.split())  # noqa: E731 - one CSV differs in a space only
    for subject, rows in mmlu.groupby("subject"):
        test = pd.read_csv(shared_path("mmlu", "test", f"{subject}_test.csv"), header=None, dtype=str,
                           keep_default_na=False)
        prompts = logged[logged.subject == subject]["prompt"].tolist()
        for item_id, gold, prompt in zip(rows["item_id"], rows["gold"], prompts):
            row = test.iloc[int(item_id.split("/")[1])]
            assert squash(prompt).startswith(squash(f"Question: {row[0]} Options: A. {row[1]}"))
            assert gold == row[5]
