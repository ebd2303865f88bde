"""Benchmark loaders (local official files and hub shape) and prompt templates."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest
from conftest import shared_path

from lobolib import benchmarks as B
from lobolib.benchmarks import Item, build_prompt, load_mmlu, load_mmlu_shots, load_pubmedqa
from lobolib.errors import LoboError

MMLU_TEST_COUNTS = {
    "anatomy": 135, "clinical_knowledge": 265, "college_biology": 144, "college_medicine": 173,
    "medical_genetics": 100, "professional_medicine": 272, "formal_logic": 126,
    "logical_fallacies": 163, "global_facts": 100,
}  # fmt: skip

# The one reference-log prompt our CSV release does not rebuild: the study read cais/mmlu from
# the hub, whose copy of this question has a space before a blank line that the CSV lacks.
HUB_WHITESPACE_DIFFERS = {"college_medicine/80"}


def _reference_log(folder: str, name: str) -> pd.DataFrame:
    return pd.read_csv(shared_path("reference-logs", folder, name), keep_default_na=False)


# ----------------------------------------------------------------------------- PubMedQA


def test_pubmedqa_local_has_the_1000_labelled_items_in_file_order():
    path = shared_path("pubmedqa", "ori_pqal.json")
    items = load_pubmedqa(path)
    assert len(items) == 1000
    assert Counter(item.answer for item in items) == {"yes": 552, "no": 338, "maybe": 110}
    assert [item.id for item in items] == list(json.loads(path.read_text()))
    first = items[0]
    assert (first.id, first.benchmark, first.subject, first.options) == (
        "21645374", "pubmedqa", "pubmedqa", ("yes", "no", "maybe"))  # fmt: skip
    assert load_pubmedqa(path.parent) == items  # a folder holding the file works too


def test_pubmedqa_test_split_is_the_official_500_in_file_order():
    folder = shared_path("pubmedqa")
    test = load_pubmedqa(folder, split="test")
    truth = json.loads((folder / "test_ground_truth.json").read_text())
    assert len(test) == 500
    assert {item.id: item.answer for item in test} == truth
    all_ids = [item.id for item in load_pubmedqa(folder)]
    assert [item.id for item in test] == [pmid for pmid in all_ids if pmid in truth]


def test_pubmedqa_contexts_are_joined_with_the_chosen_separator():
    path = shared_path("pubmedqa", "ori_pqal.json")
    contexts = json.loads(path.read_text())["21645374"]["CONTEXTS"]
    assert load_pubmedqa(path)[0].context == "".join(contexts)  # the reference study's way
    assert load_pubmedqa(path, join="\n\n")[0].context == "\n\n".join(contexts)


def _write_pqal(folder, entries):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ori_pqal.json"
    path.write_text(json.dumps(entries))
    return path


def _pqal_entry(question="Q?", decision="yes"):
    return {"QUESTION": question, "CONTEXTS": ["a.", "b."], "LABELS": ["X", "Y"], "MESHES": [],
            "YEAR": "2000", "final_decision": decision, "LONG_ANSWER": "..."}  # fmt: skip


def test_pubmedqa_test_split_needs_its_ground_truth_file(tmp_path):
    path = _write_pqal(tmp_path, {"1": _pqal_entry(), "2": _pqal_entry(decision="no")})
    with pytest.raises(LoboError, match="test_split_file"):
        load_pubmedqa(path, split="test")
    truth = tmp_path / "elsewhere.json"
    truth.write_text(json.dumps({"2": "no"}))
    assert [item.id for item in load_pubmedqa(path, "test", test_split_file=truth)] == ["2"]
    truth.write_text(json.dumps({"2": "yes"}))
    with pytest.raises(LoboError, match="disagrees"):
        load_pubmedqa(path, "test", test_split_file=truth)


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "top level must be an object"),
        ("{not json", "cannot read"),
        (json.dumps({"1": {"QUESTION": "Q?"}}), "needs the keys"),
        (json.dumps({"1": _pqal_entry(decision="perhaps")}), "final_decision 'perhaps'"),
        (json.dumps({"1": {**_pqal_entry(), "CONTEXTS": "one string"}}), "list of text contexts"),
    ],
)
def test_pubmedqa_malformed_file_names_the_problem(tmp_path, content, message):
    path = tmp_path / "ori_pqal.json"
    path.write_text(content)
    with pytest.raises(LoboError, match=message) as raised:
        load_pubmedqa(path)
    assert str(path) in str(raised.value)


def test_pubmedqa_missing_file_and_unknown_split(tmp_path):
    with pytest.raises(LoboError, match="PubMedQA file not found"):
        load_pubmedqa(tmp_path)
    with pytest.raises(LoboError, match="unknown PubMedQA split"):
        load_pubmedqa(tmp_path, split="train")


def _fake_hub(monkeypatch, tables: dict):
    """Replace datasets.load_dataset by an in-memory lookup {(name, config, split): rows}."""
    import datasets

    calls = []

    def load_dataset(name, config=None, split=None, **kwargs):
        calls.append((name, config, split))
        if (name, config, split) not in tables:
            raise FileNotFoundError(f"no such dataset {name}/{config}")
        return datasets.Dataset.from_list(tables[(name, config, split)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_pubmedqa_hub_rows_become_the_same_items(monkeypatch, tmp_path):
    rows = [{"pubid": 111, "question": "Does A cause B?",
             "context": {"contexts": ["First.", "Second."], "labels": ["B", "R"], "meshes": ["m"]},
             "long_answer": "Yes.", "final_decision": "yes"},
            {"pubid": 222, "question": "Is C safe?",
             "context": {"contexts": ["Only."], "labels": ["B"], "meshes": []},
             "long_answer": "Unclear.", "final_decision": "maybe"}]  # fmt: skip
    calls = _fake_hub(monkeypatch, {("qiaojin/PubMedQA", "pqa_labeled", "train"): rows})
    items = load_pubmedqa()
    assert calls == [("qiaojin/PubMedQA", "pqa_labeled", "train")]
    assert items == [
        Item("111", "pubmedqa", "pubmedqa", "Does A cause B?", "First.Second.", ("yes", "no", "maybe"), "yes"),
        Item("222", "pubmedqa", "pubmedqa", "Is C safe?", "Only.", ("yes", "no", "maybe"), "maybe"),
    ]
    with pytest.raises(LoboError, match="no test split"):
        load_pubmedqa("hub", split="test")
    truth = tmp_path / "test_ground_truth.json"
    truth.write_text(json.dumps({"222": "maybe"}))
    assert [item.id for item in load_pubmedqa(None, "test", test_split_file=truth)] == ["222"]


def test_hub_failure_is_one_clear_error(monkeypatch):
    _fake_hub(monkeypatch, {})
    with pytest.raises(LoboError, match="could not load qiaojin/PubMedQA.*local copy"):
        load_pubmedqa()


# ----------------------------------------------------------------------------- MMLU


def test_mmlu_local_counts_match_the_release():
    folder = shared_path("mmlu")
    items = load_mmlu(folder, list(MMLU_TEST_COUNTS))
    assert Counter(item.subject for item in items) == MMLU_TEST_COUNTS
    assert [item.id for item in items[:2]] == ["anatomy/0", "anatomy/1"]
    assert {item.answer for item in items} == {"A", "B", "C", "D"}
    assert all(len(item.options) == 4 and item.context == "" for item in items)
    assert len(load_mmlu(folder, "anatomy", split="dev")) == 5
    assert len(load_mmlu(folder, "anatomy", split="val")) == len(load_mmlu(folder, "anatomy", split="validation"))


def test_mmlu_csv_with_embedded_newlines_and_quotes_reads_row_by_row(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "anatomy_test.csv").write_text(
        '"Line one\nline two, with ""quotes""",a,"b, c",d,e,C\nplain,1,2,3,4,A\n', encoding="utf-8"
    )
    items = load_mmlu(tmp_path, "anatomy")
    assert [(item.question, item.options, item.answer) for item in items] == [
        ('Line one\nline two, with "quotes"', ("a", "b, c", "d", "e"), "C"),
        ("plain", ("1", "2", "3", "4"), "A"),
    ]


def test_mmlu_groups_expand_in_order_and_dedupe():
    assert B.expand_subjects(["reference_medical"]) == ["college_medicine", "clinical_knowledge"]
    assert B.expand_subjects("reference_logic") == ["formal_logic", "logical_fallacies", "global_facts"]
    assert B.expand_subjects(["logic", "formal_logic", "reference_logic", "anatomy"]) == [
        "formal_logic", "logical_fallacies", "global_facts", "anatomy"]  # fmt: skip
    assert B.expand_subjects(["medical"]) == [
        "anatomy", "clinical_knowledge", "college_biology", "college_medicine",
        "medical_genetics", "professional_medicine"]  # fmt: skip
    assert B.groups_of("college_medicine") == ["medical", "reference_medical"]
    assert B.groups_of("formal_logic") == ["reference_logic", "logic"]
    assert B.groups_of("astronomy") == []
    assert len(B.MMLU_SUBJECTS) == len(set(B.MMLU_SUBJECTS)) == 57


def test_mmlu_subject_list_matches_the_release_files():
    folder = shared_path("mmlu", "test")
    assert sorted(p.name.removesuffix("_test.csv") for p in folder.glob("*_test.csv")) == sorted(B.MMLU_SUBJECTS)


def test_mmlu_first_200_per_subject_cap():
    items = load_mmlu(shared_path("mmlu"), ["reference_logic", "reference_medical"], max_items_per_subject=200)
    assert Counter(item.subject for item in items) == {
        "formal_logic": 126, "logical_fallacies": 163, "global_facts": 100,
        "college_medicine": 173, "clinical_knowledge": 200}  # fmt: skip
    assert [i.id for i in items if i.subject == "clinical_knowledge"][-1] == "clinical_knowledge/199"
    with pytest.raises(LoboError, match="max_items_per_subject"):
        load_mmlu(shared_path("mmlu"), "anatomy", max_items_per_subject=0)


def test_mmlu_unknown_subject_or_group_is_named():
    with pytest.raises(LoboError, match="'cardiology'"):
        B.expand_subjects(["reference_medical", "cardiology"])
    with pytest.raises(LoboError, match="'medicall'"):
        load_mmlu(shared_path("mmlu"), ["medicall"])
    with pytest.raises(LoboError, match="unknown MMLU split"):
        load_mmlu(shared_path("mmlu"), ["anatomy"], split="train")


def _mmlu_folder(tmp_path, name, text, split="test"):
    (tmp_path / split).mkdir(parents=True, exist_ok=True)
    path = tmp_path / split / f"{name}_{split}.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_mmlu_local_folder_may_add_its_own_subjects(tmp_path):
    _mmlu_folder(tmp_path, "mini_medical", "Which organ pumps blood?,heart,lung,liver,kidney,A\n")
    items = load_mmlu(tmp_path, ["mini_medical"])
    assert items == [Item("mini_medical/0", "mmlu", "mini_medical", "Which organ pumps blood?", "",
                          ("heart", "lung", "liver", "kidney"), "A")]  # fmt: skip


def test_mmlu_missing_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(LoboError, match="MMLU folder not found"):
        load_mmlu(tmp_path, "anatomy")
    path = _mmlu_folder(tmp_path, "anatomy", "q,a,b,c,d,A\n")
    with pytest.raises(LoboError, match="MMLU file not found: .*virology_test.csv"):
        load_mmlu(tmp_path, ["anatomy", "virology"])
    path.write_text("q,a,b,c,A\n")
    with pytest.raises(LoboError, match="anatomy_test.csv row 1 has 5 columns"):
        load_mmlu(tmp_path, "anatomy")
    path.write_text("q,a,b,c,d,A\nq2,a,b,c,d,E\n")
    with pytest.raises(LoboError, match="anatomy_test.csv row 2 has answer 'E'"):
        load_mmlu(tmp_path, "anatomy")
    path.write_text("question,A,B,C,D,answer\n")  # a header row is not the release's format
    with pytest.raises(LoboError, match="answer 'answer'"):
        load_mmlu(tmp_path, "anatomy")


def test_mmlu_hub_rows_become_letter_answers(monkeypatch):
    row = {"question": "Which organ pumps blood?", "subject": "anatomy",
           "choices": ["lung", "heart", "liver", "kidney"], "answer": 1}  # fmt: skip
    calls = _fake_hub(monkeypatch, {("cais/mmlu", "anatomy", "validation"): [row, {**row, "answer": 3}],
                                    ("cais/mmlu", "anatomy", "test"): [row] * 3})  # fmt: skip
    items = load_mmlu(None, ["anatomy"], split="val")
    assert calls == [("cais/mmlu", "anatomy", "validation")]
    assert [(item.id, item.answer, item.options) for item in items] == [
        ("anatomy/0", "B", ("lung", "heart", "liver", "kidney")),
        ("anatomy/1", "D", ("lung", "heart", "liver", "kidney"))]  # fmt: skip
    assert len(load_mmlu("hub", ["anatomy"], max_items_per_subject=2)) == 2
    with pytest.raises(LoboError, match="'made_up'"):  # validated before any download
        load_mmlu(None, ["made_up"])


def test_mmlu_shots_are_the_first_dev_items():
    folder = shared_path("mmlu")
    shots = load_mmlu_shots(folder, "anatomy", 3)
    assert shots == load_mmlu(folder, "anatomy", split="dev")[:3]
    assert load_mmlu_shots(folder, "anatomy", 0) == []
    with pytest.raises(LoboError, match="only 5"):
        load_mmlu_shots(folder, "anatomy", 6)


def test_option_labels():
    assert B.option_labels("pubmedqa") == ("yes", "no", "maybe")
    assert B.option_labels("mmlu") == ("A", "B", "C", "D")
    assert B.option_labels("medqa") == ("A", "B", "C", "D")
    with pytest.raises(LoboError, match="unknown benchmark"):
        B.option_labels("bioasq")


# ----------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("folder, name", [
    ("BioMistral_PubMedQA", "BioMistral_BioMistral-7B_pubmedqa_0_percent.csv.gz"),
    ("Mistral_PubMedQA", "mistralai_Mistral-7B-v0.1_pubmedqa_95_percent.csv.gz"),
])  # fmt: skip
def test_reference_pubmedqa_prompts_are_rebuilt_exactly(folder, name):
    log = _reference_log(folder, name)
    items = load_pubmedqa(shared_path("pubmedqa", "ori_pqal.json"))
    assert [build_prompt(item) for item in items] == log["prompt"].tolist()
    assert [item.answer for item in items] == log["true_answer"].tolist()
    # the study ran the abstract's passages together: "...in plants.The following paper..."
    assert "in plants.The following paper" in log["prompt"][0]


@pytest.mark.parametrize("folder, name", [
    ("BioMistral_MMLU", "mmlu_BioMistral_BioMistral-7B_0_percent.csv.gz"),
    ("Mistral_MMLU", "mmlu_mistralai_Mistral-7B-v0.1_50_percent.csv.gz"),
])  # fmt: skip
def test_reference_mmlu_prompts_are_rebuilt_exactly(folder, name):
    log = _reference_log(folder, name)
    items = load_mmlu(shared_path("mmlu"), ["reference_logic", "reference_medical"], max_items_per_subject=200)
    assert len(items) == len(log) == 762
    assert [(item.subject, item.answer) for item in items] == list(zip(log["subject"], log["true_answer"]))
    differing = {item.id for item, prompt in zip(items, log["prompt"]) if build_prompt(item) != prompt}
    assert differing == HUB_WHITESPACE_DIFFERS
    for item, prompt in zip(items, log["prompt"]):
        if item.id in HUB_WHITESPACE_DIFFERS:  # the hub copy differs by whitespace only
            assert build_prompt(item).split() == prompt.split()


def test_harness_templates():
    mmlu = Item("college_medicine/0", "mmlu", "college_medicine", "What is 2+2? ", "", ("3", "4", "5", "6"), "B")
    assert build_prompt(mmlu, "harness") == (
        "The following are multiple choice questions (with answers) about college medicine.\n\n"
        "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"
    )
    pubmed = Item("1", "pubmedqa", "pubmedqa", "Does it?", "It does.", ("yes", "no", "maybe"), "yes")
    assert build_prompt(pubmed, "harness") == "Abstract: It does.\nQuestion: Does it?\nAnswer:"
    assert build_prompt(pubmed) == "Context: It does.\nQuestion: Does it?\nAnswer (yes/no/maybe):"


def test_k_shot_prompt_puts_solved_dev_items_first():
    folder = shared_path("mmlu")
    item = load_mmlu(folder, "anatomy")[0]
    shots = load_mmlu_shots(folder, "anatomy", 2)
    prompt = build_prompt(item, "reference", shots)
    assert prompt == "\n\n".join([build_prompt(shots[0]) + " " + shots[0].answer,
                                  build_prompt(shots[1]) + " " + shots[1].answer,
                                  build_prompt(item)])  # fmt: skip
    harness = build_prompt(item, "harness", shots)
    assert harness.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert harness.count("The following are") == 1
    assert harness.count("\nAnswer: ") == 2 and harness.endswith("\nAnswer:")


def test_unknown_template_and_mixed_shots_are_errors():
    mmlu = Item("x/0", "mmlu", "x", "Q", "", ("a", "b", "c", "d"), "A")
    pubmed = Item("1", "pubmedqa", "pubmedqa", "Q", "C", ("yes", "no", "maybe"), "no")
    with pytest.raises(LoboError, match="unknown prompt template 'chat'"):
        build_prompt(mmlu, "chat")
    with pytest.raises(LoboError, match="pubmedqa shot"):
        build_prompt(mmlu, shots=[pubmed])


def test_items_fingerprint_changes_with_ids_answers_questions_and_order():
    a = Item("1", "pubmedqa", "pubmedqa", "Q1", "C", ("yes", "no", "maybe"), "yes")
    b = Item("2", "pubmedqa", "pubmedqa", "Q2", "C", ("yes", "no", "maybe"), "no")
    base = B.items_fingerprint([a, b])
    assert len(base) == 64 and base == B.items_fingerprint([a, b])
    changed = [
        [b, a],
        [Item("9", *list(a.__dict__.values())[1:]), b],
        [a, Item("2", "pubmedqa", "pubmedqa", "Q2", "C", ("yes", "no", "maybe"), "maybe")],
        [a, Item("2", "pubmedqa", "pubmedqa", "Q2 edited", "C", ("yes", "no", "maybe"), "no")],
    ]
    assert len({base, *(B.items_fingerprint(items) for items in changed)}) == 5
