"""MedQA, MedMCQA and declared benchmarks: official file formats and hub rows become Items, the
prompts and parser take any number of options, and every bad row is one error naming the
benchmark, the item and the field."""

from __future__ import annotations

import json

import pytest

from lobolib import LoboError
from lobolib import benchmarks as B
from lobolib.evaluation.parsing import parse_answer
from test_benchmarks import _fake_hub

MEDQA_ROWS = [
    {"question": "A 23-year-old woman presents with fever. Which drug is best?",
     "answer": "Ampicillin", "options": {"A": "Ampicillin", "B": "Ceftriaxone", "C": "Doxycycline", "D": "Nitrofurantoin"},
     "meta_info": "step2&3", "answer_idx": "A", "metamap_phrases": ["fever"]},
    {"question": "Which nerve innervates the deltoid?",
     "answer": "Axillary", "options": {"A": "Radial", "B": "Axillary", "C": "Median", "D": "Ulnar"},
     "meta_info": "step1", "answer_idx": "B", "metamap_phrases": []},
]
MEDMCQA_ROWS = [
    {"id": "e9ad821a", "question": "Which vitamin deficiency causes scurvy?", "opa": "A", "opb": "B12",
     "opc": "C", "opd": "D", "cop": 3, "choice_type": "single", "exp": "", "subject_name": "Biochemistry",
     "topic_name": None},
    {"id": "b0c6e1f2", "question": "Drug of choice for absence seizures?", "opa": "Phenytoin", "opb": "Ethosuximide",
     "opc": "Carbamazepine", "opd": "Phenobarbital", "cop": 2, "choice_type": "single", "exp": "",
     "subject_name": "Pharmacology", "topic_name": None},
]


def jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_medqa_official_jsonl_becomes_items(tmp_path):
    path = jsonl(tmp_path / "phrases_no_exclude_test.jsonl", MEDQA_ROWS)
    items = B.load("medqa", source=str(path), split="test")
    assert [i.answer for i in items] == ["A", "B"] and [i.subject for i in items] == ["step2&3", "step1"]
    assert items[1].options == ("Radial", "Axillary", "Median", "Ulnar") and items[0].benchmark == "medqa"
    assert B.load("medqa", source=str(tmp_path), split="test") == items  # the folder, the split picks the file
    assert B.build_prompt(items[1]).endswith("Options:\nA. Radial\nB. Axillary\nC. Median\nD. Ulnar\nAnswer:")


def test_medqa_hub_rows_are_the_same_items(monkeypatch, tmp_path):
    calls = _fake_hub(monkeypatch, {("GBaker/MedQA-USMLE-4-options", None, "test"): MEDQA_ROWS})
    local = B.load("medqa", source=str(jsonl(tmp_path / "x.jsonl", MEDQA_ROWS)))
    assert B.load("medqa", source="hub", split="test") == local and calls == [("GBaker/MedQA-USMLE-4-options", None, "test")]


def test_medmcqa_official_json_lines_and_hub(monkeypatch, tmp_path):
    (tmp_path / "dev.json").write_text("\n".join(json.dumps(r) for r in MEDMCQA_ROWS) + "\n")
    items = B.load("medmcqa", source=str(tmp_path))
    assert [(i.id, i.answer, i.subject) for i in items] == [("e9ad821a", "C", "Biochemistry"),
                                                            ("b0c6e1f2", "B", "Pharmacology")]
    hub_rows = [{**r, "cop": r["cop"] - 1} for r in MEDMCQA_ROWS]  # the hub's cop is 0-3
    _fake_hub(monkeypatch, {("openlifescienceai/medmcqa", None, "validation"): hub_rows})
    assert B.load("medmcqa", source=None) == items


@pytest.mark.parametrize("change, fragment", [
    (lambda r: r.pop("answer_idx"), "medqa item '0': no field 'answer_idx'"),
    (lambda r: r.__setitem__("answer_idx", "E"), "medqa item '0': field 'answer_idx' is 'E', which matches no option"),
    (lambda r: r["options"].pop("D"), "holds 3 options, the benchmark's items have 4"),
])
def test_bad_medqa_rows_name_the_item_and_the_field(tmp_path, change, fragment):
    rows = json.loads(json.dumps(MEDQA_ROWS))
    change(rows[0])
    with pytest.raises(LoboError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        B.load("medqa", source=str(jsonl(tmp_path / "t.jsonl", rows)))


def test_a_declared_benchmark_with_five_options(tmp_path):
    rows = [{"q": f"question {i}?", "choices": [f"o{i}{j}" for j in range(5)], "gold": f"o{i}{i % 5}", "area": "x" if i % 2 else "y"}
            for i in range(6)]
    path = jsonl(tmp_path / "exam.jsonl", rows)
    spec = {"kind": "multiple_choice", "source": str(path), "question": "q", "options": "choices", "answer": "gold",
            "group": "area"}
    items = B.load("my_exam", spec=spec)
    bench = B.declare("my_exam", spec)
    assert bench.labels == ("A", "B", "C", "D", "E") and [i.answer for i in items] == ["A", "B", "C", "D", "E", "A"]
    prompt = B.build_prompt(items[4], benchmark=bench)
    assert "E. o44\nAnswer:" in prompt
    assert parse_answer("multiple_choice", "E. o44", items[4].options).answer == "E"
    csv = tmp_path / "exam.csv"
    csv.write_text("question,a,b,c,answer\nwhich?,x,y,z,1\n")
    declared = {"kind": "multiple_choice", "source": str(csv), "options": ["a", "b", "c"], "answer_index_base": 0}
    assert B.load("csv_exam", spec=declared)[0].answer == "B"


@pytest.mark.parametrize("spec, fragment", [
    ({"kind": "essay", "source": "x.jsonl"}, "kind: 'essay' is not one of"),
    ({"kind": "multiple_choice", "source": "SOURCE", "options": ["a", "b", "zz"]}, "my_exam item '0': no field 'zz'"),
    ({"kind": "multiple_choice", "source": "SOURCE", "options": ["a", "b", "c"], "answer": "nope"}, "no field 'nope'"),
    ({"kind": "multiple_choice", "source": "SOURCE", "options": ["a", "b", "c"], "answer": "answer",
      "answer_index_base": 1}, "not an option index 1..3"),
])
def test_bad_declarations_name_benchmark_item_and_field(tmp_path, spec, fragment):
    path = jsonl(tmp_path / "e.jsonl", [{"question": "q?", "a": "x", "b": "y", "c": "z", "answer": "0"}])
    spec = {k: (str(path) if v == "SOURCE" else v) for k, v in spec.items()}
    with pytest.raises(LoboError, match=fragment.replace("(", r"\(")):
        B.load("my_exam", spec=spec)


def test_a_declared_benchmark_runs_through_the_cli(tmp_path, embedded_cache, monkeypatch, capsys):
    """`run` on parameters that declare a benchmark: its records carry the method, its tables a row."""
    from lobolib.__main__ import main
    from lobolib.experiment.store import RecordStore

    monkeypatch.setenv("LOBOTOMY_CACHE", str(embedded_cache))
    rows = [{"id": f"q{i}", "question": f"Which organ {i}?", "opa": "heart", "opb": "lung", "opc": "liver",
             "opd": "kidney", "cop": 1 + i % 4, "subject_name": "anatomy" if i % 2 else "physiology"}
            for i in range(8)]
    exam = jsonl(tmp_path / "exam.jsonl", rows)
    parameters = tmp_path / "p.yaml"
    parameters.write_text(f"""
run: declared
models: [{{name: base, model: "embedded:base"}}]
sparsity: [0.0, 0.5]
compression: [{{method: magnitude}}]
benchmarks:
  my_exam: {{kind: multiple_choice, source: {exam}, question: question, options: [opa, opb, opc, opd], answer: cop,
            answer_index_base: 1, group: subject_name, id: id}}
analysis: {{bootstrap: 20}}
""")
    assert main(["sweep", str(parameters), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    frame = RecordStore(tmp_path / "out" / "declared").read()
    assert set(frame["benchmark"]) == {"my_exam"} and set(frame["method"]) == {"dense", "magnitude/layer"}
    assert len(frame) == 16 and set(frame["subject"]) == {"anatomy", "physiology"}
