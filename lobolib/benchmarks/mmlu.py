"""MMLU (Hendrycks et al. 2021): 57 subjects of four-option questions; the medical and logic
subjects are the reference study's.

Sources: the hub's `cais/mmlu`, or the original CSV release (`<split>/<subject>_<split>.csv`, no
header row; question, A, B, C, D, answer letter). Both give the same Items in the same order.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from lobolib.benchmarks.benchmark import MULTIPLE_CHOICE, Benchmark, letters
from lobolib.benchmarks.hub import hub_dataset, is_hub
from lobolib.benchmarks.prompts import MULTIPLE_CHOICE_TEMPLATES
from lobolib.errors import LoboError
from lobolib.records import Item

NAME = "mmlu"
MMLU_HUB = "cais/mmlu"
LETTERS = letters(4)

# The 57 subjects of MMLU's release (file stems of test/<subject>_test.csv).
MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics",
    "econometrics", "electrical_engineering", "elementary_mathematics", "formal_logic",
    "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law",
    "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations",
    "security_studies", "sociology", "us_foreign_policy", "virology", "world_religions",
)  # fmt: skip

SUBJECT_GROUPS: dict[str, tuple[str, ...]] = {
    "medical": (
        "anatomy", "clinical_knowledge", "college_biology", "college_medicine",
        "medical_genetics", "professional_medicine",
    ),
    # The reference study's two MMLU domains, in its loading order within each.
    "reference_medical": ("college_medicine", "clinical_knowledge"),
    "reference_logic": ("formal_logic", "logical_fallacies", "global_facts"),
    "logic": ("formal_logic", "logical_fallacies"),
}  # fmt: skip

# Split names: local folder name and hub split name.
_MMLU_SPLITS = {"test": ("test", "test"), "dev": ("dev", "dev"), "val": ("val", "validation"),
                "validation": ("val", "validation")}  # fmt: skip



def expand_subjects(names: str | Iterable[str], extra_subjects: Iterable[str] = ()) -> list[str]:
    """Expand group names (see `SUBJECT_GROUPS`) into MMLU subjects; dedupe, keeping first order.

    `names` may mix groups and subjects (a single string is one name). A name that is neither a
    group, one of the 57 MMLU subjects, nor in `extra_subjects` raises LoboError.
    """
    if isinstance(names, str):
        names = [names]
    known = set(MMLU_SUBJECTS) | set(extra_subjects)
    subjects: list[str] = []
    for name in names:
        if name in SUBJECT_GROUPS:
            members = SUBJECT_GROUPS[name]
        elif name in known:
            members = (name,)
        else:
            raise LoboError(
                f"unknown MMLU subject or group {name!r}: use one of the groups "
                f"{sorted(SUBJECT_GROUPS)} or an MMLU subject such as 'college_medicine' "
                f"(lobolib.benchmarks.MMLU_SUBJECTS lists all 57)"
            )
        subjects.extend(s for s in members if s not in subjects)
    if not subjects:
        raise LoboError("no MMLU subjects given: name at least one subject or group")
    return subjects


def groups_of(subject: str) -> list[str]:
    """The names of the subject groups that contain `subject` (in `SUBJECT_GROUPS` order)."""
    return [group for group, members in SUBJECT_GROUPS.items() if subject in members]



def load_mmlu(
    source: str | Path | None = None,
    subjects: str | Iterable[str] = ("reference_medical",),
    split: str = "test",
    max_items_per_subject: int | None = None,
) -> list[Item]:
    """MMLU items (Hendrycks et al. 2021) of the given subjects/groups, subject by subject.

    source: None or "hub" for `cais/mmlu`, or a folder of the original CSV release
    (`<split>/<subject>_<split>.csv`, no header; question, A, B, C, D, answer letter). A local
    folder may hold extra subjects (e.g. the embedded mini benchmark): any subject whose file
    exists is accepted.
    split: "test", "dev" (5 per subject, for few-shot) or "val"/"validation".
    max_items_per_subject: keep the first N of each subject (the reference study used 200).
    Item ids are f"{subject}/{row_index}" (0-based row in the split).
    """
    local_split, hub_split = _mmlu_split(split)
    if max_items_per_subject is not None and (
        not isinstance(max_items_per_subject, int) or max_items_per_subject < 1
    ):
        raise LoboError(f"max_items_per_subject must be a positive integer or None, "
                        f"got {max_items_per_subject!r}")  # fmt: skip
    hub = is_hub(source)
    folder = None if hub else _mmlu_folder(Path(source), local_split)
    extra = () if hub else [p.name[: -len(f"_{local_split}.csv")]
                            for p in (folder / local_split).glob(f"*_{local_split}.csv")]  # fmt: skip
    items: list[Item] = []
    for subject in expand_subjects(subjects, extra_subjects=extra):
        if hub:
            rows = _mmlu_rows_from_hub(subject, hub_split)
        else:
            rows = _mmlu_rows_from_csv(folder / local_split / f"{subject}_{local_split}.csv")
        items.extend(_mmlu_item(subject, index, row) for index, row in
                     enumerate(rows[:max_items_per_subject]))  # fmt: skip
    return items


def load_mmlu_shots(source: str | Path | None, subject: str, k: int) -> list[Item]:
    """The first `k` dev-split items of `subject`, the few-shot examples MMLU provides (5 each)."""
    if not isinstance(k, int) or k < 0:
        raise LoboError(f"the number of shots must be a non-negative integer, got {k!r}")
    if k == 0:
        return []
    shots = load_mmlu(source, [subject], split="dev")
    if len(shots) < k:
        raise LoboError(f"{k} shots asked for {subject!r} but its dev split holds only "
                        f"{len(shots)} items")  # fmt: skip
    return shots[:k]


def _mmlu_split(split: str) -> tuple[str, str]:
    """(local folder name, hub split name) of an MMLU split."""
    if split not in _MMLU_SPLITS:
        raise LoboError(f"unknown MMLU split {split!r}: use 'test', 'dev' or 'val'")
    return _MMLU_SPLITS[split]


def _mmlu_folder(folder: Path, local_split: str) -> Path:
    """The release folder; it must hold a `<split>/` subfolder."""
    if not (folder / local_split).is_dir():
        raise LoboError(f"MMLU folder not found: {folder / local_split} does not exist; give the "
                        f"folder of the original CSV release (holding dev/, val/, test/) or "
                        f"source=None to use the hub")  # fmt: skip
    return folder


def _mmlu_rows_from_csv(path: Path) -> list[tuple[str, list[str], str]]:
    """(question, [4 options], answer letter) rows of one original MMLU CSV (no header row)."""
    if not path.is_file():
        raise LoboError(f"MMLU file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            records = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LoboError(f"cannot read {path} as an MMLU CSV: {err}") from err
    rows = []
    for number, record in enumerate(records, start=1):
        if len(record) != 6:
            raise LoboError(f"{path} row {number} has {len(record)} columns, expected 6 "
                            f"(question, A, B, C, D, answer) and no header row")  # fmt: skip
        if record[5] not in LETTERS:
            raise LoboError(f"{path} row {number} has answer {record[5]!r}, expected A, B, C or D")
        rows.append((record[0], record[1:5], record[5]))
    return rows


def _mmlu_rows_from_hub(subject: str, hub_split: str) -> list[tuple[str, list[str], str]]:
    """(question, [4 options], answer letter) rows of cais/mmlu (answer there is an int 0-3)."""
    rows = []
    for row in hub_dataset(MMLU_HUB, subject, hub_split):
        answer = row["answer"]
        if len(row["choices"]) != 4 or answer not in range(4):
            raise LoboError(f"{MMLU_HUB} {subject} row is not in the expected format: "
                            f"4 choices and an answer index 0-3 needed")  # fmt: skip
        rows.append((row["question"], list(row["choices"]), LETTERS[answer]))
    return rows


def _mmlu_item(subject: str, index: int, row: tuple[str, list[str], str]) -> Item:
    question, options, answer = row
    return Item(id=f"{subject}/{index}", benchmark=NAME, subject=subject, question=question,
                context="", options=tuple(options), answer=answer)  # fmt: skip


def _load(source, split, subjects=("medical", "logic"), max_items_per_subject=None, max_items=None):
    items = load_mmlu(None if is_hub(source) else source, subjects=subjects, split=split or "test",
                      max_items_per_subject=max_items_per_subject)
    return items[:max_items] if max_items else items


MMLU = Benchmark(
    name=NAME,
    kind=MULTIPLE_CHOICE,
    title="MMLU",
    loader=_load,
    hub=MMLU_HUB,
    local_format="the folder of the original CSV release (holding dev/, val/, test/)",
    templates=MULTIPLE_CHOICE_TEMPLATES,
    max_new_tokens=5,  # the reference study's
    splits=("test", "val", "dev"),
    shot_split="dev",
    n_options=4,
    options={"subjects": ["medical", "logic"], "max_items_per_subject": None},
    reference_parser="mmlu",
    reference_metric="reference_macro_f1",
    groups=SUBJECT_GROUPS,
    subjects_by_group=True,
)
