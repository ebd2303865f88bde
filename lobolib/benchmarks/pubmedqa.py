"""PubMedQA (Jin et al. 2019): the 1,000 expert-labelled PQA-L questions on PubMed abstracts,
answered yes, no or maybe.

Sources: the hub's `qiaojin/PubMedQA` (config pqa_labeled), or the official release's
`ori_pqal.json` (+ `test_ground_truth.json`, the 500-item test split). Both give the same Items
in the same (file) order.
"""

from __future__ import annotations

import json
from pathlib import Path

from lobolib.benchmarks.benchmark import YES_NO_MAYBE, YES_NO_MAYBE_LABELS, Benchmark, Template
from lobolib.benchmarks.hub import hub_dataset, is_hub
from lobolib.errors import LoboError
from lobolib.records import Item

NAME = "pubmedqa"
PUBMEDQA_HUB = ("qiaojin/PubMedQA", "pqa_labeled")
PUBMEDQA_FILE = "ori_pqal.json"
PUBMEDQA_TEST_FILE = "test_ground_truth.json"

# The reference study ran PubMedQA's abstract passages together with no separator
# ("".join(contexts)); its logged prompts show e.g. "...during PCD in plants.The following paper...".
REFERENCE_CONTEXT_JOIN = ""


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
    if is_hub(source):
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
    dataset = hub_dataset(PUBMEDQA_HUB[0], PUBMEDQA_HUB[1], "train")
    return [(str(row["pubid"]), row["question"], row["context"]["contexts"], row["final_decision"])
            for row in dataset]  # fmt: skip


def _pubmedqa_item(pmid, question, contexts, decision, join: str, origin: str) -> Item:
    """One PubMedQA Item; checks the fields a malformed file would get wrong."""
    if not isinstance(question, str) or not isinstance(contexts, list) or not all(
        isinstance(passage, str) for passage in contexts
    ):
        raise LoboError(f"{origin} is not in the expected format: item {pmid} needs a text "
                        f"question and a list of text contexts")  # fmt: skip
    if decision not in YES_NO_MAYBE_LABELS:
        raise LoboError(f"{origin} is not in the expected format: item {pmid} has final_decision "
                        f"{decision!r}, expected one of yes/no/maybe")  # fmt: skip
    return Item(id=pmid, benchmark=NAME, subject=NAME, question=question,
                context=join.join(contexts), options=YES_NO_MAYBE_LABELS, answer=decision)  # fmt: skip


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


def _load(source, split, max_items=None):
    items = load_pubmedqa(None if is_hub(source) else source, split=split)
    return items[:max_items] if max_items else items


PUBMEDQA = Benchmark(
    name=NAME,
    kind=YES_NO_MAYBE,
    title="PubMedQA (PQA-L)",
    loader=_load,
    hub="qiaojin/PubMedQA (pqa_labeled)",
    local_format="the official ori_pqal.json, or its folder (with test_ground_truth.json for split test)",
    templates={
        "reference": Template("Context: {context}\nQuestion: {question}\nAnswer (yes/no/maybe):"),
        "harness": Template("Abstract: {context}\nQuestion: {question}\nAnswer:"),
    },
    max_new_tokens=10,  # the reference study's
    splits=(None, "test"),
    reference_parser="pubmedqa",
    reference_metric="reference_yes_f1",
)
