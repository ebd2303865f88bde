"""Calibration tokens: seeded non-overlapping windows of local files and hub sources, clear errors
when the text is too short, the PubMedQA training contexts, and the tokens' fingerprint."""

import json

import pytest
import torch
from conftest import build_tiny_tokenizer, shared_path

import lobolib.calibration as calibration_alias
from lobolib import LoboError
from lobolib.calibration import calibration_tokens, fingerprint, source_documents


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def stream_of(tokenizer, text):
    return tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"]


def positions(windows, stream):
    """Start of each window inside the stream (every window must be a slice of it)."""
    joined = torch.tensor(stream)
    starts = []
    for window in windows:
        hits = [s for s in range(len(stream) - len(window) + 1) if torch.equal(joined[s:s + len(window)], window)]
        assert hits, "a window is not a slice of the source's tokens"
        starts.append(hits[0])
    return starts


def test_alias_is_the_module():
    from lobolib.compress import calibration
    assert calibration_alias is calibration


def test_windows_of_a_text_file_are_seeded_non_overlapping_slices(tmp_path, tokenizer):
    text = " ".join(f"sentence {i} says aspirin reduces fever in trial {i % 7}." for i in range(120))
    path = tmp_path / "notes.txt"
    path.write_text(text)
    tokens = calibration_tokens(path, tokenizer, n_samples=6, seq_len=40, seed=3)
    assert tokens.shape == (6, 40) and tokens.dtype == torch.int64
    assert torch.equal(tokens, calibration_tokens(str(path), tokenizer, n_samples=6, seq_len=40, seed=3))
    assert not torch.equal(tokens, calibration_tokens(path, tokenizer, n_samples=6, seq_len=40, seed=4))
    starts = positions(tokens, stream_of(tokenizer, text))
    assert all(b - a >= 40 for a, b in zip(starts, starts[1:]))


def test_real_wikitext_valid_file(tokenizer):
    path = shared_path("wikitext-2", "valid.txt")
    tokens = calibration_tokens(path, tokenizer, n_samples=4, seq_len=64, seed=0)
    assert tokens.shape == (4, 64)
    assert int(tokens.max()) < len(tokenizer)


def test_too_little_text_says_how_many_tokens_there_are_and_are_needed(tmp_path, tokenizer):
    path = tmp_path / "short.txt"
    path.write_text("aspirin reduces fever")
    have = len(stream_of(tokenizer, "aspirin reduces fever"))
    with pytest.raises(LoboError, match=f"has {have} tokens; 4 windows of 100 need 400"):
        calibration_tokens(path, tokenizer, n_samples=4, seq_len=100)


def test_jsonl_documents_and_their_errors(tmp_path, tokenizer):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"document {i} on the heart and the lung"}) for i in range(40)))
    documents, _ = source_documents(path)
    assert len(documents) == 40 and documents[3] == "document 3 on the heart and the lung"
    assert calibration_tokens(path, tokenizer, n_samples=3, seq_len=30).shape == (3, 30)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "no text field"}\n')
    with pytest.raises(LoboError, match="line 1 has no text field"):
        source_documents(bad)


@pytest.mark.parametrize("source,message", [("books", "unknown calibration source"), ("missing.txt", "not found"),
                                            ("pubmedqa-train", "data_dir")])
def test_unknown_or_missing_sources_are_lobo_errors(source, message, tokenizer):
    with pytest.raises(LoboError, match=message):
        calibration_tokens(source, tokenizer, n_samples=1, seq_len=8)


@pytest.mark.parametrize("kwargs", [{"n_samples": 0}, {"seq_len": 2.5}, {"seed": "zero"}])
def test_bad_sizes_are_lobo_errors(kwargs, tokenizer, tmp_path):
    with pytest.raises(LoboError):
        calibration_tokens(tmp_path / "x.txt", tokenizer, **kwargs)


def fake_hub(monkeypatch, tables):
    import datasets

    calls = []

    def load_dataset(name, config=None, split=None, data_files=None, **kwargs):
        calls.append((name, config, split, data_files))
        key = (name, config if data_files is None else json.dumps(data_files))
        if key not in tables:
            raise FileNotFoundError(f"no dataset {name}")
        return tables[key]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_sources_read_the_papers_files(monkeypatch, tokenizer):
    c4_rows = [{"text": f"web page {i} about gardening and tools"} for i in range(50)]
    wiki_rows = [{"text": f" = Heading {i} = "} for i in range(30)]
    pubmed_rows = [{"context": {"contexts": [f"Background {i}.", "Results were significant."]}} for i in range(30)]
    calls = fake_hub(monkeypatch, {
        ("allenai/c4", json.dumps({"train": "en/c4-train.00000-of-01024.json.gz"})): c4_rows,
        ("Salesforce/wikitext", "wikitext-2-raw-v1"): wiki_rows,
        ("qiaojin/PubMedQA", "pqa_unlabeled"): pubmed_rows,
    })
    for source in ("c4", "wikitext2", "pubmed"):
        assert calibration_tokens(source, tokenizer, n_samples=2, seq_len=16, seed=1).shape == (2, 16)
    assert [call[2] for call in calls] == ["train"] * 3
    documents, _ = source_documents("pubmed")
    assert documents[2] == "Background 2. Results were significant."
    documents, _ = source_documents("wikitext2")
    assert len(documents) == 1 and documents[0].startswith(" = Heading 0 =  ")


def test_hub_failure_is_one_lobo_error(monkeypatch, tokenizer):
    fake_hub(monkeypatch, {})
    with pytest.raises(LoboError, match="could not load calibration data allenai/c4"):
        calibration_tokens("c4", tokenizer, n_samples=1, seq_len=8)


def test_pubmedqa_train_is_pqal_without_the_test_split(tokenizer):
    folder = shared_path("pubmedqa")
    documents, _ = source_documents("pubmedqa-train", data_dir=folder)
    test = json.loads((folder / "test_ground_truth.json").read_text())
    pqal = json.loads((folder / "ori_pqal.json").read_text())
    assert len(documents) == len(pqal) - len(test) == 500
    test_contexts = {" ".join(pqal[pmid]["CONTEXTS"]) for pmid in test}
    assert not test_contexts & set(documents)
    assert calibration_tokens("pubmedqa-train", tokenizer, n_samples=2, seq_len=128, data_dir=folder).shape == (2, 128)


def test_fingerprint_names_the_exact_tokens():
    tokens = torch.arange(24).reshape(4, 6)
    assert fingerprint(tokens) == fingerprint(tokens.clone()) and len(fingerprint(tokens)) == 16
    changed = tokens.clone()
    changed[3, 5] += 1
    assert fingerprint(changed) != fingerprint(tokens)
    assert fingerprint(tokens.reshape(6, 4)) != fingerprint(tokens)
