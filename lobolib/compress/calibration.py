"""Calibration tokens for the calibrated methods: seeded random windows of a text source.

``calibration_tokens(source, tokenizer, n_samples, seq_len, seed)`` returns a LongTensor
[n_samples, seq_len] of token ids. The source's documents are put in a seeded random order,
tokenized (no special tokens; documents separated by a blank line) until the stream holds
twice the tokens needed or the source is exhausted, and ``n_samples`` non-overlapping windows
are drawn at seeded random places of that stream. Wanda and SparseGPT draw 128 windows of 2048
tokens of C4 the same way (theirs are cut within one long document each).

Sources:

- ``"c4"``: the first English shard of the C4 training set (hub ``allenai/c4``,
  ``en/c4-train.00000-of-01024.json.gz``), the file the Wanda and SparseGPT code calibrate on
  (both evaluate on the validation shard, ``C4_VALIDATION``).
- ``"wikitext2"``: the WikiText-2 training split (hub ``Salesforce/wikitext``,
  ``wikitext-2-raw-v1``), one document, its lines joined by spaces as in both papers' code.
- ``"pubmed"``: medical text, the abstracts (contexts) of the 61k unlabelled PubMedQA items
  (hub ``qiaojin/PubMedQA``, ``pqa_unlabeled``), which do not overlap the labelled PQA-L.
- ``"pubmedqa-train"``: the contexts of the PQA-L items outside the official 500-item test split,
  from the local ``ori_pqal.json`` + ``test_ground_truth.json`` folder given as ``data_dir``.
- a path: a ``.txt`` file (one document, e.g. ``../shared/data/wikitext-2/valid.txt``) or a
  ``.jsonl`` file with a ``text`` field per line (one document per line).

``fingerprint(tokens)`` names the exact tokens for records.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Sequence

import torch

from lobolib.errors import LoboError

C4 = ("allenai/c4", "en/c4-train.00000-of-01024.json.gz")
C4_VALIDATION = ("allenai/c4", "en/c4-validation.00000-of-00008.json.gz")
WIKITEXT2 = ("Salesforce/wikitext", "wikitext-2-raw-v1")
PUBMED = ("qiaojin/PubMedQA", "pqa_unlabeled")
SOURCES = ("c4", "wikitext2", "pubmed", "pubmedqa-train")
SEPARATOR = "\n\n"
TOKENIZE_BATCH = 256
"""Documents tokenized per call."""


def calibration_tokens(source, tokenizer, n_samples: int = 128, seq_len: int = 2048, seed: int = 0,
                       *, data_dir: str | Path | None = None) -> torch.Tensor:
    """LongTensor [n_samples, seq_len]: seeded random non-overlapping windows of `source`.

    source: "c4", "wikitext2", "pubmed", "pubmedqa-train" (with `data_dir`, the folder of the
    official PubMedQA files) or the path of a .txt / .jsonl file (see the module docstring).
    LoboError when the source holds fewer than n_samples * seq_len tokens (saying how many).
    """
    for name, value in (("n_samples", n_samples), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LoboError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise LoboError(f"seed must be an integer, got {seed!r}")
    documents, label = source_documents(source, data_dir=data_dir)
    return _windows(documents, label, tokenizer, n_samples, seq_len, seed)


def fingerprint(tokens: torch.Tensor) -> str:
    """First 16 hex digits of the sha256 of the tokens (int64, row-major) and their shape."""
    data = tokens.detach().to("cpu", torch.int64).contiguous()
    digest = hashlib.sha256(str(tuple(data.shape)).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()[:16]


def describe(tokens: torch.Tensor) -> dict:
    """What a report records of the calibration tokens: samples, seq_len, fingerprint."""
    return {"samples": int(tokens.shape[0]), "seq_len": int(tokens.shape[1]), "fingerprint": fingerprint(tokens)}


# ---------------------------------------------------------------------------------------------
# Sources


def source_documents(source, *, data_dir=None) -> tuple[Sequence[str], str]:
    """(documents, label) of a calibration source (see the module docstring)."""
    if source == "c4":
        rows = _hub(C4[0], data_files={"train": C4[1]})
        return _Column(rows, lambda row: row["text"]), f"{C4[0]} {C4[1]}"
    if source == "wikitext2":
        rows = _hub(WIKITEXT2[0], WIKITEXT2[1])
        return [" ".join(row["text"] for row in rows)], f"{WIKITEXT2[0]} {WIKITEXT2[1]} train"
    if source == "pubmed":
        rows = _hub(PUBMED[0], PUBMED[1])
        return _Column(rows, lambda row: " ".join(row["context"]["contexts"])), f"{PUBMED[0]} {PUBMED[1]}"
    if source == "pubmedqa-train":
        return _pubmedqa_train(data_dir), f"PubMedQA PQA-L outside the test split ({data_dir})"
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix in (".txt", ".jsonl"):
            return _local_documents(path), str(path)
    raise LoboError(f"unknown calibration source {source!r}: use one of {', '.join(SOURCES)}, or the "
                    "path of a .txt file or of a .jsonl file with a 'text' field")


class _Column(Sequence):
    """A dataset's rows read lazily as texts (only the documents drawn are touched)."""

    def __init__(self, rows, text):
        self.rows, self.text = rows, text

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.text(self.rows[index])


def _hub(name: str, config: str | None = None, *, data_files=None):
    """The train split of a hub dataset; any failure (offline, unknown name) as one LoboError."""
    import datasets

    try:
        return datasets.load_dataset(name, config, data_files=data_files, split="train")
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one user-facing message
        raise LoboError(
            f"could not load calibration data {name} ({config or data_files}) from the Hugging Face "
            f"hub: {type(err).__name__}: {err}; check the network (or HF_HUB_OFFLINE), or give a "
            "local .txt / .jsonl file as the calibration source"
        ) from err


def _pubmedqa_train(data_dir) -> list[str]:
    """Contexts of the PQA-L items not in the official test split."""
    from lobolib.benchmarks import load_pubmedqa

    if data_dir is None:
        raise LoboError("calibration source 'pubmedqa-train' needs data_dir= the folder holding the "
                        "official ori_pqal.json and test_ground_truth.json")
    test = {item.id for item in load_pubmedqa(data_dir, split="test")}
    return [item.context for item in load_pubmedqa(data_dir, join=" ") if item.id not in test]


def _local_documents(path: Path) -> list[str]:
    if not path.is_file():
        raise LoboError(f"calibration file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LoboError(f"cannot read calibration file {path} as UTF-8 text: {err}") from err
    if path.suffix == ".txt":
        return [text]
    documents = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise LoboError(f"{path} line {number} is not JSON: {err}") from err
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise LoboError(f"{path} line {number} has no text field: each line must be an object "
                            'like {"text": "..."}')
        documents.append(row["text"])
    return documents


# ---------------------------------------------------------------------------------------------
# Windows


def _windows(documents: Sequence[str], label: str, tokenizer, n: int, length: int, seed: int) -> torch.Tensor:
    needed = n * length
    rng = random.Random(seed)
    order = list(range(len(documents)))
    rng.shuffle(order)
    pieces, total = [], 0
    for start in range(0, len(order), TOKENIZE_BATCH):
        texts = [documents[i] + SEPARATOR for i in order[start:start + TOKENIZE_BATCH]]
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            pieces.append(ids)
            total += len(ids)
        if total >= 2 * needed:
            break
    if total < needed:
        raise LoboError(f"calibration source {label} has {total} tokens; {n} windows of {length} "
                        f"need {needed}: lower n_samples or seq_len, or use a larger source")
    stream = torch.tensor([token for ids in pieces for token in ids], dtype=torch.int64)
    slack = total - needed
    gaps = sorted(rng.randint(0, slack) for _ in range(n))
    starts = [gap + i * length for i, gap in enumerate(gaps)]
    return torch.stack([stream[s:s + length] for s in starts])
