"""The embedded default: generated fact bases and mini benchmark in the official file formats, its
tokenizer, the cache, and (slow) the trained base and specialist models really knowing the facts."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lobolib.experiment import embedded
from lobolib.errors import LoboError


@pytest.fixture(scope="module")
def corpus():
    return embedded.build_corpus(0)


def test_corpus_is_deterministic_from_seed(corpus):
    again = embedded.build_corpus(0)
    assert again.pubmedqa == corpus.pubmedqa and again.mmlu == corpus.mmlu
    assert again.fingerprint() == corpus.fingerprint()
    other = embedded.build_corpus(1)
    assert other.pubmedqa != corpus.pubmedqa and other.fingerprint() != corpus.fingerprint()


def test_pubmedqa_label_mix_like_pqa_l(corpus):
    labels = Counter(entry["final_decision"] for entry in corpus.pubmedqa.values())
    assert labels == Counter({"yes": 110, "no": 68, "maybe": 22})
    assert len({entry["QUESTION"] for entry in corpus.pubmedqa.values()}) == 200


def test_maybe_items_are_the_mixed_evidence_facts(corpus):
    mixed = {(c["mixed"], name) for name, c in corpus.medical.relations["condition"].items()}
    for entry in corpus.pubmedqa.values():
        if entry["final_decision"] == "maybe":
            assert tuple(entry["MESHES"]) in mixed
            assert f"the evidence that {entry['MESHES'][0]} treats" in " ".join(corpus.medical.statements) \
                or entry["LONG_ANSWER"].startswith("the evidence")


def test_pubmedqa_context_does_not_give_the_verdict_away(corpus):
    # With entities, organs, symptoms and numbers masked, every context pattern occurs with more
    # than one label: the answer must come from memorised facts, not from reading the context.
    words = sorted([*embedded.ORGANS, *embedded.SYMPTOMS], key=len, reverse=True)
    labels_by_pattern: dict[str, set] = {}
    for entry in corpus.pubmedqa.values():
        text = " ".join(entry["CONTEXTS"])
        for entity in sorted(entry["MESHES"], key=len, reverse=True):
            text = re.sub(re.escape(entity), "<E>", text, flags=re.I)
        text = re.sub(r"\d+", "<N>", re.sub(r"\b(" + "|".join(words) + r")\b", "<W>", text))
        labels_by_pattern.setdefault(text, set()).add(entry["final_decision"])
    assert len(labels_by_pattern) >= 4
    assert all(len(labels) >= 2 for labels in labels_by_pattern.values()), labels_by_pattern


def test_mmlu_answers_agree_with_the_fact_base(corpus):
    conditions = corpus.medical.relations["condition"]
    for row in corpus.mmlu["college_medicine"]["test"]:
        name = row[0].removeprefix("Which drug treats ").removesuffix("?")
        assert row[1 + "ABCD".index(row[5])] == conditions[name]["treated_by"]
        assert len(set(row[1:5])) == 4


def test_benchmark_files_in_official_formats(corpus, tmp_path):
    paths = embedded.write_benchmark(tmp_path, corpus.pubmedqa, corpus.mmlu)
    pqal = json.loads(Path(paths["pubmedqa"]).read_text())
    assert Path(paths["pubmedqa"]).name == "ori_pqal.json"
    for pmid, entry in pqal.items():
        assert pmid.isdigit() and len(pmid) == 8
        assert {"QUESTION", "CONTEXTS", "LABELS", "MESHES", "YEAR", "final_decision", "LONG_ANSWER"} <= set(entry)
        assert 1 <= len(entry["CONTEXTS"]) and 1 <= entry["CONTEXTS"][0].count(".") <= 3
    truth = json.loads((Path(paths["pubmedqa"]).parent / "test_ground_truth.json").read_text())
    assert truth == {pmid: entry["final_decision"] for pmid, entry in pqal.items()}
    mmlu = Path(paths["mmlu"])
    assert sorted(p.name for p in (mmlu / "test").iterdir()) == sorted(f"{s}_test.csv" for s in embedded.MMLU_SUBJECTS)
    for subject in embedded.MMLU_SUBJECTS:
        for split, count in (("test", 25), ("dev", 5)):
            with open(mmlu / split / f"{subject}_{split}.csv", newline="") as f:
                rows = list(csv.reader(f))
            assert len(rows) == count and all(len(r) == 6 and r[5] in "ABCD" for r in rows)
            assert rows[0][0] != "question"  # no header row


def test_subjects_use_the_real_mmlu_names(corpus):
    medical = {"anatomy", "clinical_knowledge", "college_biology", "college_medicine",
               "medical_genetics", "professional_medicine"}
    assert {s for s, kind in embedded.MMLU_SUBJECTS.items() if kind == "medical"} <= medical
    assert {"college_medicine", "clinical_knowledge", "formal_logic", "logical_fallacies",
            "global_facts"} <= set(embedded.MMLU_SUBJECTS)


def test_benchmark_loads_through_project_loaders(corpus, tmp_path):
    benchmarks = pytest.importorskip("lobolib.benchmarks")
    if not hasattr(benchmarks, "load_pubmedqa") or not hasattr(benchmarks, "load_mmlu"):
        pytest.skip("lobolib.benchmarks loaders not written yet")
    paths = embedded.write_benchmark(tmp_path, corpus.pubmedqa, corpus.mmlu)
    pubmedqa = benchmarks.load_pubmedqa(paths["pubmedqa"])
    assert Counter(i.answer for i in pubmedqa) == Counter({"yes": 110, "no": 68, "maybe": 22})
    mmlu = benchmarks.load_mmlu(paths["mmlu"], subjects=list(embedded.MMLU_SUBJECTS))
    assert len(mmlu) == 200 and {i.subject for i in mmlu} == set(embedded.MMLU_SUBJECTS)


def test_tokenizer_label_words_are_single_tokens(corpus):
    texts = [p + c for p, c in corpus.examples(embedded.BASE_MIX)]
    tokenizer = embedded.train_tokenizer(texts)
    for label in (" yes", " no", " maybe", " A", " B", " C", " D"):
        assert len(tokenizer.encode(label, add_special_tokens=False)) == 1
    ids = tokenizer.encode("Ünïcode 42 ✓ text")
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Ünïcode 42 ✓ text"


def test_negative_seed_is_a_user_error(tmp_path):
    with pytest.raises(LoboError, match="seed"):
        embedded.ensure_embedded(tmp_path, seed=-1)


def test_cache_reuses_a_complete_build_and_redoes_a_partial_one(tmp_path, monkeypatch):
    calls = []

    def fake_build(root, corpus, progress):
        calls.append(root)
        for name in ("base", "specialist"):
            (root / name).mkdir(parents=True)
        return {**embedded.write_benchmark(root / "data", corpus.pubmedqa, corpus.mmlu), "train_seconds": {}}

    monkeypatch.setattr(embedded, "_build", fake_build)
    first = embedded.ensure_embedded(tmp_path, seed=0, progress=False)
    assert embedded.ensure_embedded(tmp_path, seed=0, progress=False) == first and len(calls) == 1
    assert Path(first["pubmedqa"]).is_file() and Path(first["mmlu"], "test").is_dir()
    (Path(first["base"]).parent / embedded.DONE_MARKER).unlink()  # an interrupted build
    assert embedded.ensure_embedded(tmp_path, seed=0, progress=False) == first and len(calls) == 2


def test_build_removes_staging_folders_of_dead_processes_only(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded, "_build", lambda root, corpus, progress: {
        **embedded.write_benchmark(root / "data", corpus.pubmedqa, corpus.mmlu), "train_seconds": {}})
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead = tmp_path / f".seed-0.building-{int(finished.stdout)}"
    alive = tmp_path / f".seed-0.building-{os.getppid()}"  # another build still running
    other_seed = tmp_path / f".seed-01.building-{int(finished.stdout)}"
    for folder in (dead, alive, other_seed):
        (folder / "base").mkdir(parents=True)
    embedded.ensure_embedded(tmp_path, seed=0, progress=False)
    assert not dead.exists() and alive.exists() and other_seed.exists()
    assert not list(tmp_path.glob(f".seed-0.building-{os.getpid()}"))


# --- slow: the real build (about 1.5-2 minutes on two cores) ---------------------------------------
def _greedy_accuracy(model, tokenizer, items) -> float:
    """Share of items whose first generated word is the gold label (greedy, left padding)."""
    import torch

    tokenizer.padding_side = "left"
    correct = 0
    for start in range(0, len(items), 100):
        batch = items[start:start + 100]
        enc = tokenizer([embedded.render_prompt(i) for i in batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        correct += sum(t.strip().split(" ")[0].rstrip(".") == i.answer for t, i in zip(texts, batch))
    return correct / len(items)


def _prune_blocks(model, sparsity: float) -> None:
    """Zero the smallest |w| of every Linear in the decoder blocks (per matrix)."""
    import torch

    for module in model.model.layers.modules():
        if isinstance(module, torch.nn.Linear) and sparsity > 0:
            w = module.weight.data
            k = int(w.numel() * sparsity)
            w[w.abs() <= w.abs().flatten().kthvalue(k).values] = 0


@pytest.fixture(scope="session")
def built(embedded_cache):
    return embedded.ensure_embedded(embedded_cache, seed=0, progress=False)


@pytest.mark.parametrize("name", ["base", "specialist"])
def test_trained_models_know_the_facts_and_forget_them_when_pruned(built, name):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(built[name]).eval()
    tokenizer = AutoTokenizer.from_pretrained(built[name])
    items = [i for i in embedded.build_corpus(0).items if "/dev/" not in i.id]
    pubmedqa = [i for i in items if i.benchmark == "pubmedqa"]
    mmlu = [i for i in items if i.benchmark == "mmlu"]
    dense = _greedy_accuracy(model, tokenizer, pubmedqa), _greedy_accuracy(model, tokenizer, mmlu)
    assert min(dense) >= 0.8
    _prune_blocks(model, 0.95)
    # Collapse: at most the majority-class share (always "yes" scores 0.55) and near chance (0.25).
    assert _greedy_accuracy(model, tokenizer, pubmedqa) <= 0.55
    assert _greedy_accuracy(model, tokenizer, mmlu) <= 0.5
