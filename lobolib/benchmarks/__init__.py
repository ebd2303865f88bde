"""Benchmark items: PubMedQA (yes/no/maybe) and MMLU (A-D), their loaders and prompt templates.

Sources are either the Hugging Face hub (`source=None` or `"hub"`) or local copies of the official
releases: PubMedQA's `ori_pqal.json` (+ `test_ground_truth.json`, Jin et al. 2019) and MMLU's
original CSVs `<split>/<subject>_<split>.csv` (Hendrycks et al. 2021). Both paths give the same
`Item`s in the same (file) order.

The "reference" prompt templates are those of the reference study ("BioMedical LLM Lobotomy",
Borzello & Dalvi 2026); they rebuild its logged prompts character for character (see the tests).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lobolib.errors import LoboError


@dataclass(frozen=True)
class Item:
    """One benchmark question.

    `options` are the answer choices as shown to the model: ("yes", "no", "maybe") for PubMedQA,
    the four option texts for MMLU. `answer` is the gold label: "yes"/"no"/"maybe" or "A".."D".
    """

    id: str
    benchmark: str  # "pubmedqa" | "mmlu"
    subject: str  # MMLU subject; "pubmedqa" for PubMedQA
    question: str
    context: str
    options: tuple[str, ...]
    answer: str


PUBMEDQA_OPTIONS = ("yes", "no", "maybe")
MMLU_LETTERS = ("A", "B", "C", "D")

PUBMEDQA_HUB = ("qiaojin/PubMedQA", "pqa_labeled")
PUBMEDQA_FILE = "ori_pqal.json"
PUBMEDQA_TEST_FILE = "test_ground_truth.json"
MMLU_HUB = "cais/mmlu"

# The reference study ran PubMedQA's abstract passages together with no separator
# ("".join(contexts)); its logged prompts show e.g. "...during PCD in plants.The following paper...".
REFERENCE_CONTEXT_JOIN = ""

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

TEMPLATES = ("reference", "harness")


# ----------------------------------------------------------------------------- subjects


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


def option_labels(benchmark: str) -> tuple[str, ...]:
    """The labels a prediction may take: ("yes","no","maybe") or ("A","B","C","D")."""
    if benchmark == "pubmedqa":
        return PUBMEDQA_OPTIONS
    if benchmark == "mmlu":
        return MMLU_LETTERS
    raise LoboError(f"unknown benchmark {benchmark!r}: use 'pubmedqa' or 'mmlu'")


# ----------------------------------------------------------------------------- PubMedQA


def load_pubmedqa(
    source: str | Path | None = None,
    split: str | None = None,
    *,
    join: str = REFERENCE_CONTEXT_JOIN,
    test_split_file: str | Path | None = None,
) -> list[Item]:
    """The 1,000 expert-labelled PubMedQA items (PQA-L; Jin et al. 2019), in file order.

    source: None or "hub" for `qiaojin/PubMedQA` (config pqa_labeled), or the path of the official
    `ori_pqal.json` or of a folder holding it.
    split: None or "all" for all 1,000 items; "test" for the official 500-item test split, whose
    PMIDs are read from `test_split_file` or else from `test_ground_truth.json` beside the local
    file. The hub's pqa_labeled has no test split, so with the hub `test_split_file` is required.
    join: the text put between an abstract's passages in `Item.context`. The default "" is what
    the reference study did (passages run together); " " or "\\n\\n" read better but then the
    "reference" template no longer rebuilds the study's prompts exactly.
    """
    if split not in (None, "all", "test"):
        raise LoboError(f"unknown PubMedQA split {split!r}: use None (all 1,000 items) or 'test'")
    if source is None or str(source) == "hub":
        rows = _pubmedqa_rows_from_hub()
        origin = f"{PUBMEDQA_HUB[0]} ({PUBMEDQA_HUB[1]})"
    else:
        path = _pubmedqa_file(Path(source))
        rows = _pubmedqa_rows_from_file(path)
        origin = str(path)
        if split == "test" and test_split_file is None:
            test_split_file = path.parent / PUBMEDQA_TEST_FILE
    items = [_pubmedqa_item(pmid, question, contexts, decision, join, origin)
             for pmid, question, contexts, decision in rows]  # fmt: skip
    if split == "test":
        items = _pubmedqa_test_split(items, test_split_file)
    return items


def _pubmedqa_file(path: Path) -> Path:
    """The ori_pqal.json at `path` (a file, or a folder holding it)."""
    if path.is_dir():
        path = path / PUBMEDQA_FILE
    if not path.is_file():
        raise LoboError(
            f"PubMedQA file not found: {path}; give the path of the official {PUBMEDQA_FILE} "
            f"(or a folder holding it), or source=None to use the hub"
        )
    return path


def _read_json_object(path: Path) -> dict:
    """A JSON file whose top level must be an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LoboError(f"cannot read {path} as JSON: {err}") from err
    if not isinstance(data, dict):
        raise LoboError(f"{path} is not in the expected format: the top level must be an object "
                        f"keyed by PMID, found {type(data).__name__}")  # fmt: skip
    return data


def _pubmedqa_rows_from_file(path: Path) -> list[tuple[str, str, list, str]]:
    """(pmid, question, contexts, final_decision) from the official ori_pqal.json format."""
    rows = []
    for pmid, entry in _read_json_object(path).items():
        if not isinstance(entry, dict) or not {"QUESTION", "CONTEXTS", "final_decision"} <= set(entry):
            raise LoboError(f"{path} is not in the expected format: entry {pmid!r} needs the keys "
                            f"QUESTION, CONTEXTS and final_decision")  # fmt: skip
        rows.append((str(pmid), entry["QUESTION"], entry["CONTEXTS"], entry["final_decision"]))
    return rows


def _pubmedqa_rows_from_hub() -> list[tuple[str, str, list, str]]:
    """(pmid, question, contexts, final_decision) from qiaojin/PubMedQA pqa_labeled."""
    dataset = _hub_dataset(PUBMEDQA_HUB[0], PUBMEDQA_HUB[1], "train")
    return [(str(row["pubid"]), row["question"], row["context"]["contexts"], row["final_decision"])
            for row in dataset]  # fmt: skip


def _pubmedqa_item(pmid, question, contexts, decision, join: str, origin: str) -> Item:
    """One PubMedQA Item; checks the fields a malformed file would get wrong."""
    if not isinstance(question, str) or not isinstance(contexts, list) or not all(
        isinstance(passage, str) for passage in contexts
    ):
        raise LoboError(f"{origin} is not in the expected format: item {pmid} needs a text "
                        f"question and a list of text contexts")  # fmt: skip
    if decision not in PUBMEDQA_OPTIONS:
        raise LoboError(f"{origin} is not in the expected format: item {pmid} has final_decision "
                        f"{decision!r}, expected one of yes/no/maybe")  # fmt: skip
    return Item(id=pmid, benchmark="pubmedqa", subject="pubmedqa", question=question,
                context=join.join(contexts), options=PUBMEDQA_OPTIONS, answer=decision)  # fmt: skip


def _pubmedqa_test_split(items: list[Item], test_split_file: str | Path | None) -> list[Item]:
    """The items whose PMIDs are in the official test split file ({PMID: label}), in item order."""
    if test_split_file is None:
        raise LoboError(
            "the hub's PubMedQA pqa_labeled has no test split and the hub does not say which 500 "
            f"PMIDs form the official one: pass test_split_file= the path of {PUBMEDQA_TEST_FILE} "
            "(github.com/pubmedqa/pubmedqa, data/), or use split=None for all 1,000 items"
        )
    path = Path(test_split_file)
    if not path.is_file():
        raise LoboError(f"PubMedQA test split file not found: {path}; pass test_split_file= the "
                        f"path of the official {PUBMEDQA_TEST_FILE}")  # fmt: skip
    truth = _read_json_object(path)
    by_id = {item.id: item for item in items}
    unknown = [pmid for pmid in truth if pmid not in by_id]
    if unknown:
        raise LoboError(f"{path} names {len(unknown)} PMIDs not among the PubMedQA items "
                        f"(first: {unknown[0]}); is it the PQA-L test split?")  # fmt: skip
    wrong = [pmid for pmid, label in truth.items() if by_id[pmid].answer != label]
    if wrong:
        raise LoboError(f"{path} disagrees with the items' labels for {len(wrong)} PMIDs "
                        f"(first: {wrong[0]}); are the two files from the same release?")  # fmt: skip
    return [item for item in items if item.id in truth]


# ----------------------------------------------------------------------------- MMLU


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
    hub = source is None or str(source) == "hub"
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
        if record[5] not in MMLU_LETTERS:
            raise LoboError(f"{path} row {number} has answer {record[5]!r}, expected A, B, C or D")
        rows.append((record[0], record[1:5], record[5]))
    return rows


def _mmlu_rows_from_hub(subject: str, hub_split: str) -> list[tuple[str, list[str], str]]:
    """(question, [4 options], answer letter) rows of cais/mmlu (answer there is an int 0-3)."""
    rows = []
    for row in _hub_dataset(MMLU_HUB, subject, hub_split):
        answer = row["answer"]
        if len(row["choices"]) != 4 or answer not in range(4):
            raise LoboError(f"{MMLU_HUB} {subject} row is not in the expected format: "
                            f"4 choices and an answer index 0-3 needed")  # fmt: skip
        rows.append((row["question"], list(row["choices"]), MMLU_LETTERS[answer]))
    return rows


def _mmlu_item(subject: str, index: int, row: tuple[str, list[str], str]) -> Item:
    question, options, answer = row
    return Item(id=f"{subject}/{index}", benchmark="mmlu", subject=subject, question=question,
                context="", options=tuple(options), answer=answer)  # fmt: skip


def _hub_dataset(name: str, config: str, split: str):
    """A dataset split from the Hugging Face hub; failures (offline, unknown name) as LoboError."""
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one user-facing message
        raise LoboError(
            f"could not load {name} ({config}, split {split}) from the Hugging Face hub: "
            f"{type(err).__name__}: {err}; check the network (or HF_HUB_OFFLINE) or give a local "
            f"copy of the official files as source"
        ) from err


# ----------------------------------------------------------------------------- prompts


def build_prompt(item: Item, template: str = "reference", shots: Sequence[Item] = ()) -> str:
    """The prompt shown to the model for `item`.

    "reference" (default): the reference study's zero-shot prompts, exactly —
      PubMedQA "Context: {context}\\nQuestion: {question}\\nAnswer (yes/no/maybe):",
      MMLU "Question: {question}\\nOptions:\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\nAnswer:".
    "harness": lm-evaluation-harness style — MMLU "The following are multiple choice questions
      (with answers) about {subject}.\\n\\n{question}\\nA. ..\\nD. ..\\nAnswer:", PubMedQA
      "Abstract: {context}\\nQuestion: {question}\\nAnswer:".
    shots: solved examples (e.g. `load_mmlu_shots`) put before the question in the same format,
    each ending in its answer (" A", " yes"), separated by blank lines.
    """
    if template not in TEMPLATES:
        raise LoboError(f"unknown prompt template {template!r}: use one of {list(TEMPLATES)}")
    for shot in shots:
        if shot.benchmark != item.benchmark:
            raise LoboError(f"a {shot.benchmark} shot cannot precede a {item.benchmark} question")
    blocks = [_render(shot, template) + " " + shot.answer for shot in shots]
    blocks.append(_render(item, template))
    prompt = "\n\n".join(blocks)
    if template == "harness" and item.benchmark == "mmlu":
        subject = item.subject.replace("_", " ")
        prompt = f"The following are multiple choice questions (with answers) about {subject}.\n\n" + prompt
    return prompt


def _render(item: Item, template: str) -> str:
    """One question in a template, up to and including "Answer...:" (no answer, no header)."""
    if item.benchmark == "pubmedqa":
        if template == "reference":
            return f"Context: {item.context}\nQuestion: {item.question}\nAnswer (yes/no/maybe):"
        return f"Abstract: {item.context}\nQuestion: {item.question}\nAnswer:"
    if item.benchmark == "mmlu":
        if len(item.options) != len(MMLU_LETTERS):
            raise LoboError(f"MMLU item {item.id} has {len(item.options)} options, expected 4")
        options = "\n".join(f"{letter}. {text}" for letter, text in zip(MMLU_LETTERS, item.options))
        if template == "reference":
            return f"Question: {item.question}\nOptions:\n{options}\nAnswer:"
        return f"{item.question.strip()}\n{options}\nAnswer:"
    raise LoboError(f"item {item.id} has unknown benchmark {item.benchmark!r}")


def items_fingerprint(items: Iterable[Item]) -> str:
    """sha256 (hex) over the items' ids, gold answers and question texts, in order (for manifests)."""
    payload = json.dumps([[item.id, item.answer, item.question] for item in items], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
