"""lobolib.store: records survive a round trip, crashes never leave a half-read cell, manifests
merge and hold no secrets, and the reference study's logs import into the same records."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re

import pandas as pd
import pytest

import lobolib.parsing
from conftest import shared_path
from lobolib import LoboError
from lobolib.evaluation.parsing import ParseResult
from lobolib.experiment.store import (
    RECORD_FIELDS,
    Record,
    RecordStore,
    cell_filename,
    import_reference_logs,
    manifest_base,
    model_slug,
    prompt_hash,
    record_from_json,
    record_to_json,
    reference_model_name,
)

MODEL = "BioMistral/BioMistral-7B"


def make_record(item_id="q1", *, model=MODEL, sparsity=0.45, benchmark="pubmedqa", **changes) -> Record:
    values = dict(
        model=model, sparsity=sparsity, benchmark=benchmark, subject="pubmedqa", item_id=item_id,
        gold="yes", prompt_hash=prompt_hash(item_id), raw_response="yes", answer="yes", tier="exact",
        invalid_reason=None, option_logprobs={"yes": -0.1, "no": -2.5, "maybe": -3.0}, loglik_answer="yes",
    )
    values.update(changes)
    return Record(**values)


def sample_records(sparsity=0.45) -> list[Record]:
    return [
        make_record("q1", sparsity=sparsity),
        make_record("q2", sparsity=sparsity, raw_response="Ça dépend — 可能 🙂\nmaybe", answer=None,
                    tier="none", invalid_reason="no label found", option_logprobs={}, loglik_answer=None),
        make_record("q3", sparsity=sparsity, gold="no", raw_response="", answer="maybe", tier="fallback",
                    option_logprobs={"yes": -math.inf, "no": -0.5, "maybe": -1.25}, loglik_answer="no"),
    ]


# --- records ---------------------------------------------------------------------------------


def test_round_trip_keeps_every_field(tmp_path):
    store = RecordStore(tmp_path)
    records = sample_records()
    store.write(MODEL, "pubmedqa", 0.45, records)
    frame = store.read()
    assert list(frame.columns[: len(RECORD_FIELDS)]) == list(RECORD_FIELDS)
    assert [record_from_json(row) for row in frame.to_dict("records")] == records
    assert frame["answer"].tolist() == ["yes", None, "maybe"]  # None stays None, not NaN
    assert frame["correct"].tolist() == [True, False, False]
    assert frame["valid"].tolist() == [True, False, True]
    assert record_from_json(record_to_json(records[1])) == records[1]


def test_empty_store_reads_as_empty_frame_with_columns(tmp_path):
    frame = RecordStore(tmp_path / "nothing-yet").read()
    assert frame.empty
    assert list(frame.columns) == list(RECORD_FIELDS) + ["correct", "valid"]
    assert RecordStore(tmp_path).cells() == []


def test_sparsity_rounded_to_four_decimals_is_one_cell(tmp_path):
    store = RecordStore(tmp_path)
    store.write(MODEL, "pubmedqa", 0.450000001, sample_records(0.450000001))
    assert store.has(MODEL, "pubmedqa", 0.45)
    assert store.path(MODEL, "pubmedqa", 0.45).name == "BioMistral--BioMistral-7B__pubmedqa__s0.4500.jsonl"
    assert store.cells() == [(MODEL, "pubmedqa", 0.45)]
    assert set(store.read()["sparsity"]) == {0.45}


def test_rewrite_replaces_cell_and_filters_select(tmp_path):
    store = RecordStore(tmp_path)
    store.write(MODEL, "pubmedqa", 0.0, sample_records(0.0))
    store.write(MODEL, "pubmedqa", 0.0, sample_records(0.0)[:1])
    other = make_record("m/0", model="mistralai/Mistral-7B-v0.1", benchmark="mmlu", subject="anatomy", gold="A")
    store.write("mistralai/Mistral-7B-v0.1", "mmlu", 0.45, [other])
    assert len(store.read()) == 2
    assert store.read(models=MODEL)["item_id"].tolist() == ["q1"]
    assert store.read(benchmarks=["mmlu"])["item_id"].tolist() == ["m/0"]
    assert store.read(sparsities=[0.45])["model"].tolist() == ["mistralai/Mistral-7B-v0.1"]
    assert store.cells() == [(MODEL, "pubmedqa", 0.0), ("mistralai/Mistral-7B-v0.1", "mmlu", 0.45)]


def test_write_refuses_records_of_another_cell_or_repeated_items(tmp_path):
    store = RecordStore(tmp_path)
    with pytest.raises(LoboError, match="belongs to"):
        store.write(MODEL, "pubmedqa", 0.5, sample_records(0.45))
    with pytest.raises(LoboError, match="twice"):
        store.write(MODEL, "pubmedqa", 0.45, [make_record("q1"), make_record("q1")])
    with pytest.raises(LoboError, match="sparsity"):
        store.write(MODEL, "pubmedqa", 1.0, [])
    assert store.cells() == []


def test_leftover_temp_file_from_a_crash_is_ignored(tmp_path):
    store = RecordStore(tmp_path)
    path = store.write(MODEL, "pubmedqa", 0.45, sample_records())
    (path.parent / f".{path.name}.k2j3.tmp").write_text('{"_header": {"n": 99}}\n{"half', encoding="utf-8")
    assert store.cells() == [(MODEL, "pubmedqa", 0.45)]
    assert len(store.read()) == 3


def test_crash_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    store = RecordStore(tmp_path)
    path = store.write(MODEL, "pubmedqa", 0.45, sample_records())

    def crash(src, dst):
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.write(MODEL, "pubmedqa", 0.45, sample_records()[:1])
    monkeypatch.undo()
    assert len(store.read()) == 3
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # temp file removed


@pytest.mark.parametrize("cut", [1, 2, 40, "last line", "header only"])
def test_truncated_file_is_incomplete_never_half_read(tmp_path, cut):
    """has() answers False (with a warning) so the sweep recomputes the cell; read() raises naming
    the file and saying to delete it."""
    store = RecordStore(tmp_path)
    path = store.write(MODEL, "pubmedqa", 0.45, sample_records())
    store.write(MODEL, "pubmedqa", 0.5, sample_records(0.5))
    data = path.read_bytes()
    if cut == "last line":
        data = data[: data.rstrip(b"\n").rfind(b"\n") + 1]
    elif cut == "header only":
        data = data[: data.find(b"\n") + 1]
    else:
        data = data[:-cut]
    path.write_bytes(data)
    with pytest.warns(UserWarning, match="recomputed"):
        assert not store.has(MODEL, "pubmedqa", 0.45)
    assert store.cells() == [(MODEL, "pubmedqa", 0.5)]
    with pytest.raises(LoboError, match=re.escape(path.name) + ".*delete it"):
        store.read()
    assert len(store.read(sparsities=[0.5])) == 3  # other cells stay readable


def test_file_with_extra_or_garbled_lines_is_incomplete(tmp_path):
    store = RecordStore(tmp_path)
    path = store.write(MODEL, "pubmedqa", 0.45, sample_records())
    original = path.read_text(encoding="utf-8")
    path.write_text(original + original.splitlines()[1] + "\n", encoding="utf-8")
    with pytest.raises(LoboError, match="announces 3 records, the file holds 4"):
        store.read()
    path.write_text(original.replace('"item_id": "q2"', '"item_id": q2"'), encoding="utf-8")
    with pytest.raises(LoboError, match="line 3 is not valid JSON"):
        store.read()


def test_extra_keys_are_stored_and_read_as_columns(tmp_path):
    store = RecordStore(tmp_path)
    records = sample_records()
    store.write(MODEL, "pubmedqa", 0.45, records, extra=[{"reference_parsed": g} for g in ("yes", "maybe", "no")])
    frame = store.read()
    assert frame["reference_parsed"].tolist() == ["yes", "maybe", "no"]
    assert record_from_json(frame.iloc[0].to_dict()) == records[0]
    with pytest.raises(LoboError, match="overwrite Record fields"):
        store.write(MODEL, "pubmedqa", 0.45, records, extra=[{"answer": "no"}] * 3)


# --- names and hashes ------------------------------------------------------------------------


def test_model_slugs_are_readable_safe_and_unique():
    names = [
        "BioMistral/BioMistral-7B", "BioMistral--BioMistral-7B", "BioMistral_BioMistral-7B",
        "mistralai/Mistral-7B-v0.1", "a-/b", "a/-b", "a b", "a_b", "/home/me/models/bio", "home/me/models/bio",
        "C:\\models\\bio", "x" * 300, "x" * 301,
    ]
    slugs = [model_slug(n) for n in names]
    assert slugs[0] == "BioMistral--BioMistral-7B"
    assert slugs[3] == "mistralai--Mistral-7B-v0.1"
    assert len(set(slugs)) == len(names)
    for slug in slugs:
        assert re.fullmatch(r"[A-Za-z0-9._~-]+", slug) and len(slug) <= 140 and not slug.startswith(".")
    files = {cell_filename(n, b, s) for n in names for b in ("mmlu", "pubmedqa") for s in (0.0, 0.05)}
    assert len(files) == len(names) * 4


def test_prompt_hash_is_a_short_sha256():
    assert prompt_hash("Question: é?") == hashlib.sha256("Question: é?".encode()).hexdigest()[:16]
    assert prompt_hash("a") != prompt_hash("a ")


# --- manifest --------------------------------------------------------------------------------


def test_manifest_merges_and_never_holds_tokens(tmp_path):
    store = RecordStore(tmp_path)
    secret = "hf_" + "A1b2C3d4" * 5
    store.write_manifest({**manifest_base(), "parameters": {
        "models": [MODEL], "hf_token": secret, "HF_TOKEN": secret, "Use_Auth_Token": True,
        "max_new_tokens": 10, "tokenizer_revision": "main", "token": secret,
        "nested": {"access_token": secret, "note": f"login with {secret}", "seed": 0},
    }, "datasets": {"pubmedqa": "abc"}})
    first = store.read_manifest()
    store.write_manifest({"parameters": {"sparsities": [0.0, 0.5]}, "datasets": {"mmlu": "def"},
                          "model_revisions": {MODEL: "1234"}})
    text = store.manifest_path.read_text(encoding="utf-8")
    manifest = json.loads(text)
    assert secret not in text and "hf_token" not in text.lower() and "auth_token" not in text.lower()
    assert manifest["parameters"] == {"models": [MODEL], "max_new_tokens": 10, "tokenizer_revision": "main",
                                      "nested": {"seed": 0}, "sparsities": [0.0, 0.5]}
    assert manifest["datasets"] == {"pubmedqa": "abc", "mmlu": "def"}
    assert manifest["created"] == first["created"] and "updated" in manifest
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_manifest_base_names_versions_and_commit():
    base = manifest_base()
    import lobolib

    assert base["lobolib"] == lobolib.__version__
    assert base["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", base["git_commit"])
    assert base["packages"]["torch"] and base["packages"]["transformers"] and base["python"]


# --- importer on synthetic logs --------------------------------------------------------------


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

    def parse_response(benchmark, text, options):
        calls.append((benchmark, text, tuple(options)))
        return ParseResult(answer=None if not text else "B", tier="fake", reason=None if text else "empty")

    monkeypatch.setattr(lobolib.parsing, "parse_response", parse_response, raising=False)
    return calls


@pytest.mark.parametrize("flat", [False, True])
def test_import_synthetic_logs(tmp_path, fake_parser, flat):
    store = RecordStore(tmp_path / "run")
    summary = import_reference_logs(write_logs(tmp_path / "logs", flat=flat), store, progress=False)
    assert sorted(summary["status"]) == ["imported"] * 4 and summary["n"].sum() == 2 * (3 + 2)
    assert store.cells() == [
        ("BioMistral/BioMistral-7B", "pubmedqa", 0.0), ("BioMistral/BioMistral-7B", "pubmedqa", 0.05),
        ("mistralai/Mistral-7B-v0.1", "mmlu", 0.0), ("mistralai/Mistral-7B-v0.1", "mmlu", 0.05),
    ]
    mmlu = store.read(benchmarks="mmlu", sparsities=[0.05])
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
    pqa = store.read(benchmarks="pubmedqa", sparsities=[0.0])
    assert pqa["item_id"].tolist() == ["pubmedqa/0", "pubmedqa/1"]
    assert pqa["subject"].tolist() == ["pubmedqa"] * 2 and pqa["gold"].tolist() == ["yes", "maybe"]
    again = import_reference_logs(tmp_path / "logs", store, progress=False)
    assert set(again["status"]) == {"skipped"}
    broken = store.path("mistralai/Mistral-7B-v0.1", "mmlu", 0.05)
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
    frame = store.read(sparsities=[0.0])
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
    assert store.read(benchmarks="pubmedqa", sparsities=[0.0])["item_id"].tolist() == ["111", "222"]
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
    assert sorted(frame["sparsity"].unique()) == pytest.approx([i / 20 for i in range(20)])
    assert "unparsed" not in set(frame["tier"])  # our parser filled every answer
    answers = set(frame.loc[frame.valid, "answer"])
    assert answers <= {"yes", "no", "maybe", "A", "B", "C", "D"}
    assert frame.loc[~frame.valid, "invalid_reason"].notna().all()


def test_real_log_item_ids_are_official_rows(real_store):
    """MMLU ids are rows of MMLU's test CSVs (the study took the first 200 per subject, in order);
    PubMedQA rows map to the PMIDs of ori_pqal.json and keep its gold labels."""
    store, _ = real_store
    frame = store.read(models=MODEL, sparsities=[0.0])
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
