"""Held-out text for perplexity beside knowledge: general (WikiText-2 test) and medical (PubMed
abstracts of PubMedQA's official test split, which calibration never sees).

Perplexity is token-weighted over consecutive windows of `seq_len` tokens of the text (the
documents joined by blank lines), as the SparseGPT, GPTQ and Wanda evaluations do (they use 2048;
512 here by default, set `seq_len`). LLM-KICK (Jaiswal et al. 2023) found that perplexity hides
knowledge loss under compression: these benchmarks put it on the same levels as the questions.
"""

from __future__ import annotations

from pathlib import Path

from lobolib.benchmarks.benchmark import PERPLEXITY, Benchmark
from lobolib.benchmarks.hub import hub_dataset, is_hub
from lobolib.benchmarks.pubmedqa import load_pubmedqa
from lobolib.errors import LoboError
from lobolib.records import Item

WIKITEXT_HUB = ("wikitext", "wikitext-2-raw-v1")
WIKITEXT_FILE = "test.txt"


def _document(name: str, index: int, text: str, subject: str) -> Item:
    return Item(id=str(index), benchmark=name, subject=subject, question="", context=text, options=(), answer="")


def load_wikitext2(source=None, split: str | None = "test", max_items: int | None = None) -> list[Item]:
    """WikiText-2 test (Merity et al. 2016) as one document: the hub's wikitext-2-raw-v1, or a
    local text file (or a folder holding test.txt, e.g. the tokenised v1 release)."""
    split = split or "test"
    if is_hub(source):
        text = "\n\n".join(row["text"] for row in hub_dataset(*WIKITEXT_HUB, split) if row["text"].strip())
    else:
        path = Path(source)
        path = path / WIKITEXT_FILE if path.is_dir() else path
        if not path.is_file():
            raise LoboError(f"wikitext2: no text file at {path}; give WikiText-2's test.txt or its folder")
        text = path.read_text(encoding="utf-8")
    return [_document("wikitext2", 0, text, "wikitext2")]


def load_pubmed_abstracts(source=None, split: str | None = "test", max_items: int | None = None) -> list[Item]:
    """The abstracts (contexts, passages joined by spaces) of PubMedQA's official 500-item test
    split from a local ori_pqal.json (+ test_ground_truth.json), one document each; from the hub,
    whose pqa_labeled does not say which items are the test split, all 1,000."""
    items = load_pubmedqa(None if is_hub(source) else source, split=None if is_hub(source) else "test", join=" ")
    items = items[:max_items] if max_items else items
    return [_document("pubmed_abstracts", i, item.context, "pubmed_abstracts") for i, item in enumerate(items)]


WIKITEXT2 = Benchmark(
    name="wikitext2",
    kind=PERPLEXITY,
    title="WikiText-2 test (perplexity)",
    loader=load_wikitext2,
    hub="wikitext (wikitext-2-raw-v1)",
    local_format="a text file such as WikiText-2's test.txt, or its folder",
    templates={},
    max_new_tokens=0,
    splits=("test", "validation"),
)

PUBMED_ABSTRACTS = Benchmark(
    name="pubmed_abstracts",
    kind=PERPLEXITY,
    title="PubMed abstracts of PubMedQA's test split (perplexity)",
    loader=load_pubmed_abstracts,
    hub="qiaojin/PubMedQA (pqa_labeled)",
    local_format="the official ori_pqal.json with test_ground_truth.json beside it, or their folder",
    templates={},
    max_new_tokens=0,
    splits=("test",),
)
