"""MedMCQA (Pal et al. 2022): Indian medical entrance exam questions (AIIMS, NEET PG), four
options, 21 subjects.

Sources: the hub's `openlifescienceai/medmcqa` (validation split: 4,183 items; there `cop` is
0-3), or the official JSON lines (`dev.json`, `train.json`): one object per question with
`id`, `question`, `opa`...`opd`, `cop` (1-4) and `subject_name`. A local source is that file, or
its folder (split validation reads dev.json). `subject_name` is each item's subject. The public
test split carries no answers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lobolib.benchmarks.benchmark import MULTIPLE_CHOICE, Benchmark, Template
from lobolib.benchmarks.fields import FieldMap, hub_rows, items_from_rows, read_rows
from lobolib.benchmarks.hub import is_hub
from lobolib.errors import LoboError

NAME = "medmcqa"
HUB = "openlifescienceai/medmcqa"
LOCAL_FIELDS = FieldMap(question="question", options=("opa", "opb", "opc", "opd"), answer="cop",
                        answer_index_base=1, group="subject_name", id="id")  # fmt: skip
HUB_FIELDS = dataclasses.replace(LOCAL_FIELDS, answer_index_base=0)
LOCAL_FILES = {"validation": "dev.json", "train": "train.json"}


def _file(source: Path, split: str) -> Path:
    if source.is_file():
        return source
    name = LOCAL_FILES.get(split)
    if name is None or not (source / name).is_file():
        raise LoboError(f"medmcqa: no {split} file in {source}: expected {name or 'dev.json or train.json'}")
    return source / name


def load_medmcqa(source=None, split: str | None = "validation", max_items: int | None = None):
    """MedMCQA Items (ids are the dataset's own)."""
    split = split or "validation"
    if is_hub(source):
        items = items_from_rows(hub_rows(HUB, None, split, NAME), HUB_FIELDS, NAME, n_options=4)
    else:
        items = items_from_rows(read_rows(_file(Path(source), split), NAME), LOCAL_FIELDS, NAME, n_options=4)
    return items[:max_items] if max_items else items


MEDMCQA = Benchmark(
    name=NAME,
    kind=MULTIPLE_CHOICE,
    title="MedMCQA",
    loader=load_medmcqa,
    hub=f"{HUB} (validation)",
    local_format="the official JSON lines (dev.json, train.json), or their folder",
    templates={
        "reference": Template("Question: {question}\nOptions:\n{options}\nAnswer:"),
        "harness": Template("Question: {question}\n{options}\nAnswer:", strip=True),
    },
    max_new_tokens=5,
    splits=("validation", "train"),
    shot_split="train",
    n_options=4,
)
