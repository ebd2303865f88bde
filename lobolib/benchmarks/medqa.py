"""MedQA-USMLE (Jin et al. 2021), four options: US medical licensing exam questions.

Sources: the hub's `GBaker/MedQA-USMLE-4-options` (splits train, test), or the official
release's JSON lines (`data_clean/questions/US/4_options/phrases_no_exclude_<split>.jsonl`), one
object per question: ``{"question", "options": {"A": ...}, "answer_idx", "answer", "meta_info"}``.
A local source is that file, or its folder (the split picks the file). The test split has 1,273
items. `meta_info` (the exam step) is each item's subject.
"""

from __future__ import annotations

from pathlib import Path

from lobolib.benchmarks.benchmark import MULTIPLE_CHOICE, Benchmark, Template
from lobolib.benchmarks.fields import FieldMap, hub_rows, items_from_rows, read_rows
from lobolib.benchmarks.hub import is_hub
from lobolib.errors import LoboError

NAME = "medqa"
HUB = "GBaker/MedQA-USMLE-4-options"
FIELDS = FieldMap(question="question", options="options", answer="answer_idx", group="meta_info")
FILE_PATTERNS = ("phrases_no_exclude_{split}.jsonl", "{split}.jsonl")


def _file(source: Path, split: str) -> Path:
    if source.is_file():
        return source
    for pattern in FILE_PATTERNS:
        candidate = source / pattern.format(split=split)
        if candidate.is_file():
            return candidate
    raise LoboError(f"medqa: no {split} file in {source}: expected one of "
                    f"{', '.join(p.format(split=split) for p in FILE_PATTERNS)}")  # fmt: skip


def load_medqa(source=None, split: str | None = "test", max_items: int | None = None):
    """MedQA-USMLE 4-option Items (ids are the row numbers of the split)."""
    split = split or "test"
    rows = hub_rows(HUB, None, split, NAME) if is_hub(source) else read_rows(_file(Path(source), split), NAME)
    items = items_from_rows(rows, FIELDS, NAME, n_options=4)
    return items[:max_items] if max_items else items


MEDQA = Benchmark(
    name=NAME,
    kind=MULTIPLE_CHOICE,
    title="MedQA-USMLE (4 options)",
    loader=load_medqa,
    hub=HUB,
    local_format="the official JSON lines (phrases_no_exclude_<split>.jsonl of US/4_options), or its folder",
    templates={
        "reference": Template("Question: {question}\nOptions:\n{options}\nAnswer:"),
        "harness": Template("Question: {question}\n{options}\nAnswer:", strip=True),
    },
    max_new_tokens=5,
    splits=("test", "train", "dev"),
    shot_split="train",
    n_options=4,
)
