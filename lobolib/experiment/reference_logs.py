"""The reference study's published generation logs as records ("BioMedical LLM Lobotomy",
Borzello & Dalvi, 2026): every analysis then runs on them too.

The study pruned every linear layer, lm_head included, by magnitude per matrix, cumulatively, in
fp16: its records carry the method `REFERENCE_METHOD` (and "dense" at 0%).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from lobolib.benchmarks import MMLU, PUBMEDQA
from lobolib.errors import LoboError
from lobolib.experiment.store import RecordStore, level_key
from lobolib.records import DENSE, Record, prompt_hash

REFERENCE_METHOD = "magnitude/layer/lm_head"
_LOG_NAME = {
    "pubmedqa": re.compile(r"(?P<model>.+)_pubmedqa_(?P<percent>\d+)_percent\.csv(?:\.gz)?"),
    "mmlu": re.compile(r"mmlu_(?P<model>.+)_(?P<percent>\d+)_percent\.csv(?:\.gz)?"),
}
_LOG_COLUMNS = {
    "pubmedqa": ("prompt", "true_answer", "raw_response", "parsed_guess"),
    "mmlu": ("subject", "prompt", "true_answer", "raw_response", "parsed_guess"),
}
_MMLU_PROMPT = re.compile(
    r"Question: (?P<question>.*)\nOptions:\nA\. (?P<A>.*)\nB\. (?P<B>.*)\nC\. (?P<C>.*)\nD\. (?P<D>.*)\nAnswer:\s*",
    re.DOTALL,
)
_PUBMEDQA_QUESTION = re.compile(r"\nQuestion: (?P<question>.*)\nAnswer \(yes/no/maybe\):\s*$", re.DOTALL)


def reference_model_name(file_model: str) -> str:
    """The hub id behind a model name in the reference study's log file names.

    The study wrote ``model.replace("/", "_")``, so "BioMistral_BioMistral-7B" ->
    "BioMistral/BioMistral-7B" and "mistralai_Mistral-7B-v0.1" -> "mistralai/Mistral-7B-v0.1":
    the first "_" is read as the org separator (true for both of the study's models; pass
    ``model_names=`` to the importer for an org whose name holds "_"). A name without "_" stays.
    """
    org, sep, name = file_model.partition("_")
    return f"{org}/{name}" if sep and org and name else file_model


def mmlu_options_from_prompt(prompt: str) -> tuple[str, str, str, str]:
    """The four option texts of a reference-study MMLU prompt
    ("Question: …\\nOptions:\\nA. …\\nB. …\\nC. …\\nD. …\\nAnswer:"); LoboError when it has no such block."""
    match = _MMLU_PROMPT.fullmatch(prompt)
    if match is None:
        raise LoboError("an MMLU prompt lacks the 'Options:\\nA. …\\nD. …\\nAnswer:' block")
    return tuple(match.group(label) for label in "ABCD")


def find_reference_logs(logs_dir: str | os.PathLike) -> list[dict]:
    """The per-level generation logs under `logs_dir` (searched recursively; .csv or .csv.gz),
    each as {path, benchmark, file_model, sparsity}; the study's summary files
    (``lobotomy_results_*``, ``prelim_*``) are ignored. LoboError when the folder is missing or
    holds no logs, or when one cell has two logs."""
    folder = Path(logs_dir)
    if not folder.is_dir():
        raise LoboError(
            f"reference logs folder {folder} does not exist; point logs_dir at the folder holding the study's CSV logs"
        )
    found: dict[tuple, dict] = {}
    for path in sorted(folder.rglob("*")):
        name = path.name
        if not path.is_file() or name.startswith(("lobotomy_results_", "prelim_", ".")):
            continue
        for benchmark, pattern in _LOG_NAME.items():
            match = pattern.fullmatch(name)
            if match:
                entry = {"path": path, "benchmark": benchmark, "file_model": match["model"],
                         "sparsity": level_key(int(match["percent"]) / 100)}
                key = (benchmark, entry["file_model"], entry["sparsity"])
                if key in found:
                    raise LoboError(f"two logs for one cell: {found[key]['path']} and {path}; remove one")
                found[key] = entry
                break
    if not found:
        raise LoboError(
            f"no reference logs found in {folder}: expected files like "
            "mmlu_<model>_<N>_percent.csv(.gz) or <model>_pubmedqa_<N>_percent.csv(.gz)"
        )
    return sorted(found.values(), key=lambda e: (e["benchmark"], e["file_model"], e["sparsity"]))


def _read_log(path: Path, benchmark: str) -> pd.DataFrame:
    """A log as strings exactly as written (an empty response stays "", "None" stays "None")."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (OSError, ValueError, EOFError) as err:
        raise LoboError(f"cannot read reference log {path}: {err}") from None
    missing = [c for c in _LOG_COLUMNS[benchmark] if c not in frame.columns]
    if missing:
        raise LoboError(f"reference log {path} lacks the columns {missing}; is it one of the study's {benchmark} logs?")
    return frame


def _load_pqal(source: str | os.PathLike) -> tuple[Path, dict]:
    """(path, items) of PubMedQA's ori_pqal.json given the file or its folder."""
    source = Path(source)
    if source.is_dir():
        source = source / "ori_pqal.json"
    if not source.is_file():
        raise LoboError(f"PubMedQA source {source} not found; give the path of ori_pqal.json or pubmedqa_source=None")
    try:
        return source, json.loads(source.read_text(encoding="utf-8"))
    except ValueError:
        raise LoboError(f"PubMedQA source {source} is not valid JSON; use the official ori_pqal.json") from None


def _pubmedqa_pmids(frame: pd.DataFrame, pqal: tuple[Path, dict], path: Path) -> list[str]:
    """Row -> PMID by the question text (and gold label) of ori_pqal.json; rows in the file's
    order are matched first, so repeated question texts still map one-to-one."""
    source, items = pqal
    order = list(items)
    by_question: dict[str, list[str]] = {}
    for pmid, item in items.items():
        by_question.setdefault(item["QUESTION"].strip(), []).append(pmid)
    pmids, used = [], set()
    for row, (prompt, gold) in enumerate(zip(frame["prompt"], frame["true_answer"])):
        match = _PUBMEDQA_QUESTION.search(prompt)
        question = match["question"].strip() if match else None
        candidates = [p for p in by_question.get(question, []) if p not in used
                      and items[p]["final_decision"] == gold.strip().lower()]
        if row < len(order) and order[row] in candidates:
            pmid = order[row]
        elif len(candidates) == 1:
            pmid = candidates[0]
        else:
            raise LoboError(
                f"row {row} of {path} does not map to one PubMedQA item of {source}; "
                "import with pubmedqa_source=None to use row ids"
            )
        used.add(pmid)
        pmids.append(pmid)
    return pmids


def _question(benchmark: str, prompt: str) -> str | None:
    """The item's question, read out of a logged prompt (the parser grounds restated answers in it)."""
    match = (_PUBMEDQA_QUESTION.search if benchmark == "pubmedqa" else _MMLU_PROMPT.fullmatch)(prompt)
    return match["question"].strip() if match else None


def _log_records(entry: dict, model: str, frame: pd.DataFrame, *, parse: bool, pqal) -> tuple[list, list]:
    """The Records (and their extra ``reference_parsed`` keys) of one log."""
    benchmark, path, sparsity = entry["benchmark"], entry["path"], entry["sparsity"]
    if parse:
        from lobolib.evaluation.parsing import parse_response
    if benchmark == "pubmedqa":
        subjects = ["pubmedqa"] * len(frame)
        ids = (_pubmedqa_pmids(frame, pqal, path) if pqal is not None
               else [f"pubmedqa/{row}" for row in range(len(frame))])
    else:
        subjects = [s.strip() for s in frame["subject"]]
        counters: dict[str, int] = {}
        ids = []
        for subject in subjects:
            ids.append(f"{subject}/{counters.get(subject, 0)}")
            counters[subject] = counters.get(subject, 0) + 1
    records, extra = [], []
    for row, (subject, item_id, prompt, gold, response, guess) in enumerate(zip(
        subjects, ids, frame["prompt"], frame["true_answer"], frame["raw_response"], frame["parsed_guess"]
    )):
        if benchmark == "pubmedqa":
            options, gold = PUBMEDQA.labels, gold.strip().lower()
            valid_gold = PUBMEDQA.labels
        else:
            try:
                options = mmlu_options_from_prompt(prompt)
            except LoboError as err:
                raise LoboError(f"row {row} of {path}: {err}") from None
            gold, valid_gold = gold.strip().upper(), MMLU.labels
        if gold not in valid_gold:
            raise LoboError(f"row {row} of {path} has the gold answer {gold!r}; expected one of {valid_gold}")
        if parse:
            result = parse_response(benchmark, response, options, question=_question(benchmark, prompt))
            answer, tier, reason = result.answer, result.tier, result.reason
        else:
            answer, tier, reason = None, "unparsed", None  # not an invalid answer: never parsed
        records.append(Record(
            model=model, method=DENSE if sparsity == 0 else REFERENCE_METHOD, level=sparsity, sparsity=sparsity,
            benchmark=benchmark, subject=subject, item_id=item_id,
            gold=gold, prompt_hash=prompt_hash(prompt), raw_response=response, answer=answer, tier=tier,
            invalid_reason=reason, option_logprobs={}, loglik_answer=None,
        ))
        extra.append({"reference_parsed": guess})
    return records, extra


def import_reference_logs(
    logs_dir: str | os.PathLike,
    store: RecordStore,
    *,
    parse: bool = True,
    pubmedqa_source: str | os.PathLike | None = None,
    model_names: Mapping[str, str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Import the reference study's per-level CSV logs into `store` as Records.

    Reads ``*_MMLU/mmlu_<model>_<N>_percent.csv(.gz)`` (subject, prompt, true_answer,
    raw_response, parsed_guess) and ``*_PubMedQA/<model>_pubmedqa_<N>_percent.csv(.gz)`` from
    `logs_dir` or any folder below it (a flat folder of plain .csv works too); sparsity = N/100.

    - model: the file's name with its first "_" read as "/" (``reference_model_name``), unless
      `model_names` maps the file's name ("BioMistral_BioMistral-7B") to an id.
    - item_id: MMLU f"{subject}/{k}" for the k-th row of that subject in the file; the study took
      the first rows of each subject's test CSV in order, so k is the row index in MMLU's test CSV.
      PubMedQA "pubmedqa/<row>", or the PMID when `pubmedqa_source` (ori_pqal.json or its folder)
      is given: rows are matched to items by question text and label (LoboError if any row does
      not map to exactly one item).
    - gold: true_answer (lower-case yes/no/maybe; letter A-D). raw_response as logged (an empty
      cell is ""). prompt_hash of the logged prompt. option_logprobs {} and loglik_answer None
      (the study did not score options).
    - answer/tier/invalid_reason: ``lobolib.parsing.parse_response`` (MMLU options taken from
      the prompt's "Options:" block); with ``parse=False`` answer None and tier "unparsed".
    - the study's own parsed_guess is kept in each JSON line as the extra key
      ``reference_parsed`` (a column of ``store.read()``).

    Cells already complete in the store are skipped. Returns one row per log: model, benchmark,
    sparsity, n, status ("imported" | "skipped"), file.
    """
    from tqdm.auto import tqdm

    entries = find_reference_logs(logs_dir)
    pqal = _load_pqal(pubmedqa_source) if pubmedqa_source is not None else None
    names = dict(model_names or {})
    summary = []
    for entry in tqdm(entries, desc="importing reference logs", disable=not progress):
        model = names.get(entry["file_model"]) or reference_model_name(entry["file_model"])
        row = {"model": model, "benchmark": entry["benchmark"], "sparsity": entry["sparsity"],
               "file": str(entry["path"])}
        method = DENSE if entry["sparsity"] == 0 else REFERENCE_METHOD
        if store.has(model, method, entry["sparsity"], entry["benchmark"]):
            summary.append({**row, "n": None, "status": "skipped"})
            continue
        frame = _read_log(entry["path"], entry["benchmark"])
        records, extra = _log_records(entry, model, frame, parse=parse, pqal=pqal)
        store.write(model, method, entry["sparsity"], entry["benchmark"], records, extra=extra)
        summary.append({**row, "n": len(records), "status": "imported"})
    columns = ["model", "benchmark", "sparsity", "n", "status", "file"]
    return pd.DataFrame(summary, columns=columns)
