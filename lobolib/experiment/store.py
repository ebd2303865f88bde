"""Per-item records on disk: one JSONL file per (model, benchmark, sparsity) cell, written atomically.

Layout of a run folder ``outputs/<run>/``::

    records/BioMistral--BioMistral-7B__pubmedqa__s0.4500.jsonl
    manifest.json

A records file starts with a header line ``{"_header": {"model", "benchmark", "sparsity", "n",
"lobolib", "written"}}`` followed by exactly ``n`` record lines and a final newline. A file that
does not parse, has a different number of lines than its header announces, or lacks the final
newline is *incomplete*: ``has()`` answers False for it (so a sweep recomputes the cell) and
``read()`` raises a LoboError naming it. Files are written to a temporary file in the same folder,
fsynced and moved into place with ``os.replace``, so a crash leaves either the old file or the new
one, plus at worst a hidden ``.*.tmp`` file that every reader ignores.

Sparsity is part of a cell's key rounded to 4 decimals (0.45 and 0.450000001 are one cell,
file suffix ``s0.4500``); records are stored with that rounded sparsity.

Also here: the importer for the reference study's CSV logs (Borzello & Dalvi, 2026, "BioMedical
LLM Lobotomy"), which turns them into the same records so every analysis runs on them too.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lobolib import __version__
from lobolib.errors import LoboError


@dataclass
class Record:
    """One evaluated item at one sparsity level of one model."""

    model: str
    sparsity: float
    benchmark: str
    subject: str
    item_id: str
    gold: str
    prompt_hash: str
    raw_response: str
    answer: str | None  # parsed by lobolib.parsing; None = invalid
    tier: str
    invalid_reason: str | None
    option_logprobs: dict[str, float] = field(default_factory=dict)  # label -> log-prob of its first token
    loglik_answer: str | None = None  # argmax of option_logprobs; None when not scored (imported logs)


RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Record))
SPARSITY_DECIMALS = 4
_HEADER = "_header"
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_BENCHMARK_NAME = re.compile(r"[a-z0-9]+")
_SLUG_MAX = 120


# ---------------------------------------------------------------------------------------------
# small helpers


def prompt_hash(prompt: str) -> str:
    """The first 16 hex digits of the SHA-256 of the prompt text (UTF-8): identifies a prompt
    without storing it."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def record_to_json(record: Record) -> dict:
    """A Record as a plain JSON-ready dict: what ``dataclasses.asdict`` gives for this flat record
    (the option_logprobs dict copied), built field by field because asdict's deep copy is ten
    times slower on a 70,000-record import."""
    data = {name: getattr(record, name) for name in RECORD_FIELDS}
    data["option_logprobs"] = dict(record.option_logprobs or {})
    return data


def record_from_json(data: Mapping) -> Record:
    """A Record from a dict written by ``record_to_json``; extra keys (e.g. ``reference_parsed``
    of imported logs) are ignored, a missing field raises LoboError."""
    missing = [name for name in RECORD_FIELDS if name not in data]
    if missing:
        raise LoboError(f"a record lacks the fields {missing}; it was not written by lobolib.store")
    values = {name: data[name] for name in RECORD_FIELDS}
    values["option_logprobs"] = dict(values["option_logprobs"] or {})
    return Record(**values)


def sparsity_key(sparsity: float) -> float:
    """A cell's sparsity: rounded to 4 decimals; must lie in [0, 1)."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise LoboError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= value < 1.0:
        raise LoboError(f"sparsity must lie in [0, 1), got {sparsity!r}")
    return round(value, SPARSITY_DECIMALS)


def model_slug(model: str) -> str:
    """A file-name-safe, readable and unique slug of a model id.

    "BioMistral/BioMistral-7B" -> "BioMistral--BioMistral-7B". Plain hub ids (segments of
    letters, digits, ``.``, ``_``, ``-`` that neither start nor end with ``-`` and hold no ``--``)
    map one-to-one this way; any other name (a local path, spaces, ``--``) gets its characters
    outside that set replaced by ``_`` and a ``~`` plus 10 hex digits of its SHA-256 appended, so
    two different names never share a slug.
    """
    if not isinstance(model, str) or not model.strip():
        raise LoboError(f"model name must be a non-empty string, got {model!r}")
    segments = model.split("/")
    plain = all(
        _SAFE_SEGMENT.fullmatch(s) and "--" not in s and not s.endswith("-") for s in segments
    )
    readable = "--".join(segments)
    if plain and len(readable) <= _SLUG_MAX:
        return readable
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", readable).strip("._-")[:_SLUG_MAX] or "model"
    digest = hashlib.sha256(model.encode("utf-8")).hexdigest()[:10]
    return f"{cleaned}~{digest}"


def cell_filename(model: str, benchmark: str, sparsity: float) -> str:
    """The records file name of a cell, e.g. ``BioMistral--BioMistral-7B__mmlu__s0.4500.jsonl``."""
    if not isinstance(benchmark, str) or not _BENCHMARK_NAME.fullmatch(benchmark):
        raise LoboError(f"benchmark must be a lower-case name like 'pubmedqa' or 'mmlu', got {benchmark!r}")
    return f"{model_slug(model)}__{benchmark}__s{sparsity_key(sparsity):.{SPARSITY_DECIMALS}f}.jsonl"


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path atomically: temp file in the same folder, flush + fsync, os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX); not possible everywhere
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _incomplete(path: Path, detail: str) -> LoboError:
    return LoboError(
        f"records file {path} is corrupt or incomplete ({detail}); delete it so the sweep recomputes that cell"
    )


def _parse_cell_file(path: Path) -> tuple[dict, list[dict]]:
    """The header and record dicts of a records file; LoboError naming the file when it is not
    complete and well-formed."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise _incomplete(path, f"not UTF-8: {err}") from None
    if not text.endswith("\n"):
        raise _incomplete(path, "it does not end with a newline, so it was cut off")
    lines = text[:-1].split("\n")
    try:
        header = json.loads(lines[0])[_HEADER]
        n = int(header["n"])
        keys = (header["model"], header["benchmark"], header["sparsity"])
    except (ValueError, KeyError, TypeError):
        raise _incomplete(path, "the first line is not a valid header") from None
    if len(lines) - 1 != n:
        raise _incomplete(path, f"the header announces {n} records, the file holds {len(lines) - 1}")
    if cell_filename(*keys) != path.name:
        raise _incomplete(path, f"its header names another cell {keys}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            row = json.loads(line)
        except ValueError:
            raise _incomplete(path, f"line {number} is not valid JSON") from None
        if not isinstance(row, dict) or any(name not in row for name in RECORD_FIELDS):
            raise _incomplete(path, f"line {number} is not a record")
        rows.append(row)
    return header, rows


def _read_header(path: Path) -> dict | None:
    """The header of a records file, or None when its first line is not one."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.loads(handle.readline())[_HEADER]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def _as_set(values) -> set | None:
    if values is None:
        return None
    if isinstance(values, str):
        return {values}
    return set(values)


# ---------------------------------------------------------------------------------------------
# the store


class RecordStore:
    """Records of one run on disk: ``<root>/records/*.jsonl`` (one file per model, benchmark and
    sparsity) and ``<root>/manifest.json``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.records_dir = self.root / "records"

    def __repr__(self) -> str:
        return f"RecordStore({str(self.root)!r})"

    def path(self, model: str, benchmark: str, sparsity: float) -> Path:
        """Where the records of a cell live."""
        return self.records_dir / cell_filename(model, benchmark, sparsity)

    def write(
        self,
        model: str,
        benchmark: str,
        sparsity: float,
        records: Sequence[Record],
        *,
        extra: Sequence[Mapping] | None = None,
    ) -> Path:
        """Write (or replace) the records of one cell atomically and return the file path.

        Every record must belong to the cell (same model, benchmark and, after rounding to 4
        decimals, sparsity) and item ids must be unique. `extra`, when given, holds one dict per
        record whose keys are added to its JSON line (e.g. ``reference_parsed`` of imported logs);
        they may not shadow Record fields, and ``read()`` shows them as columns.
        """
        key = sparsity_key(sparsity)
        path = self.path(model, benchmark, key)
        records = list(records)
        if extra is not None and len(extra) != len(records):
            raise LoboError(f"extra has {len(extra)} entries for {len(records)} records; give one per record")
        seen: set[str] = set()
        lines = [
            json.dumps(
                {_HEADER: {"model": model, "benchmark": benchmark, "sparsity": key, "n": len(records),
                           "lobolib": __version__, "written": _now()}},
                ensure_ascii=False,
            )
        ]
        for index, record in enumerate(records):
            if not isinstance(record, Record):
                raise LoboError(f"write() takes Record objects, got {type(record).__name__} at position {index}")
            if (record.model, record.benchmark) != (model, benchmark) or sparsity_key(record.sparsity) != key:
                raise LoboError(
                    f"record {record.item_id!r} belongs to ({record.model!r}, {record.benchmark!r}, "
                    f"{record.sparsity!r}), not to the cell ({model!r}, {benchmark!r}, {sparsity!r})"
                )
            if record.item_id in seen:
                raise LoboError(
                    f"item id {record.item_id!r} appears twice in the cell ({model!r}, {benchmark!r}, {key})"
                )
            seen.add(record.item_id)
            row = record_to_json(record)
            row["sparsity"] = key
            if extra is not None:
                clash = set(extra[index]) & set(RECORD_FIELDS)
                if clash:
                    raise LoboError(f"extra keys {sorted(clash)} would overwrite Record fields; rename them")
                row.update(extra[index])
            lines.append(json.dumps(row, ensure_ascii=False))
        atomic_write_text(path, "\n".join(lines) + "\n")
        return path

    def has(self, model: str, benchmark: str, sparsity: float) -> bool:
        """True when a complete, well-formed records file of the cell exists. An incomplete one
        (cut off, corrupt) answers False with a warning, so the sweep recomputes and replaces it."""
        path = self.path(model, benchmark, sparsity)
        if not path.is_file():
            return False
        try:
            _parse_cell_file(path)
        except LoboError as err:
            warnings.warn(f"{err}; it will be recomputed", stacklevel=2)
            return False
        return True

    def _files(self) -> list[Path]:
        if not self.records_dir.is_dir():
            return []
        return sorted(p for p in self.records_dir.glob("*.jsonl") if not p.name.startswith("."))

    def cells(self) -> list[tuple[str, str, float]]:
        """The (model, benchmark, sparsity) cells with a complete records file, sorted.
        Incomplete files are left out (``has()`` says why)."""
        found = []
        for path in self._files():
            try:
                header, _ = _parse_cell_file(path)
            except LoboError:
                continue
            found.append((header["model"], header["benchmark"], float(header["sparsity"])))
        return sorted(found)

    def read(self, models=None, benchmarks=None, sparsities=None) -> pd.DataFrame:
        """All records (optionally of some models, benchmarks, sparsities) as one DataFrame.

        One row per record; columns: the Record fields (``option_logprobs`` a dict column), then
        ``correct`` (answer == gold) and ``valid`` (answer is not None), then any extra keys stored
        with the records (``reference_parsed`` for imported logs). An incomplete records file
        raises LoboError naming it. An empty store gives an empty frame with those columns. Text
        columns have object dtype, so a missing answer is ``None`` (not NaN).
        """
        want_models, want_benchmarks = _as_set(models), _as_set(benchmarks)
        want_sparsities = None if sparsities is None else {sparsity_key(s) for s in _as_set(sparsities)}
        rows: list[dict] = []
        for path in self._files():
            header = _read_header(path)
            if header is not None and (
                (want_models is not None and header.get("model") not in want_models)
                or (want_benchmarks is not None and header.get("benchmark") not in want_benchmarks)
                or (want_sparsities is not None and header.get("sparsity") not in want_sparsities)
            ):
                continue
            _, cell_rows = _parse_cell_file(path)
            rows.extend(cell_rows)
        # object dtype keeps None as None (pandas 3 would turn a str column's None into NaN)
        frame = pd.DataFrame(rows, columns=_columns(rows), dtype=object)
        frame["sparsity"] = frame["sparsity"].astype(float)
        frame["correct"] = [a is not None and a == g for a, g in zip(frame["answer"], frame["gold"])]
        frame["valid"] = [a is not None for a in frame["answer"]]
        frame["correct"] = frame["correct"].astype(bool)
        frame["valid"] = frame["valid"].astype(bool)
        extras = [c for c in frame.columns if c not in RECORD_FIELDS + ("correct", "valid")]
        return frame[list(RECORD_FIELDS) + ["correct", "valid"] + extras]

    # -- manifest ------------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def read_manifest(self) -> dict:
        """The run's manifest.json ({} when there is none yet)."""
        if not self.manifest_path.exists():
            return {}
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except ValueError:
            raise LoboError(
                f"{self.manifest_path} is not valid JSON; delete it and rerun to write a fresh manifest"
            ) from None

    def write_manifest(self, info: Mapping) -> Path:
        """Merge `info` into ``<root>/manifest.json`` (nested dicts merged key by key, other values
        replaced) and write it atomically. Keeps ``created`` from the first write, sets
        ``updated``. Secrets are dropped first: any key naming a token (``hf_token``,
        ``HF_TOKEN``, ``use_auth_token``…; not ``max_new_tokens`` or ``tokenizer…``), a password,
        secret or api key, and any string value that looks like a Hugging Face token."""
        manifest = _merge(self.read_manifest(), scrub_secrets(dict(info)))
        manifest = scrub_secrets(manifest)
        manifest.setdefault("created", _now())
        manifest["updated"] = _now()
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n")
        return self.manifest_path


def _columns(rows: list[dict]) -> list[str]:
    extras: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in RECORD_FIELDS:
                extras.setdefault(key, None)
    return list(RECORD_FIELDS) + list(extras)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# manifest


_SECRET_KEY = re.compile(r"token(?!s\b|s_|izer)|secret|password|passwd|api_?key|credential", re.IGNORECASE)
_HF_TOKEN_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")


def is_secret_key(key: str) -> bool:
    """True for a key that names a credential: "hf_token", "HF_TOKEN", "token", "use_auth_token",
    "api_key", "password"; False for "max_new_tokens", "num_tokens", "tokenizer_revision"."""
    return bool(_SECRET_KEY.search(str(key)))


def scrub_secrets(value):
    """A copy of a nested dict/list structure without secret keys (``is_secret_key``) and without
    string values that look like a Hugging Face token."""
    if isinstance(value, Mapping):
        return {
            k: scrub_secrets(v)
            for k, v in value.items()
            if not is_secret_key(k) and not (isinstance(v, str) and _HF_TOKEN_VALUE.search(v))
        }
    if isinstance(value, (list, tuple)):
        return [scrub_secrets(v) for v in value if not (isinstance(v, str) and _HF_TOKEN_VALUE.search(v))]
    return value


def _merge(old: Mapping, new: Mapping) -> dict:
    merged = dict(old)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """``git rev-parse HEAD`` of the repository holding `path` (default: lobolib's), or None
    when git or the repository is unavailable."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def manifest_base() -> dict:
    """What every manifest records: lobolib version, git commit, Python, platform and the
    versions of torch, transformers, datasets, numpy, pandas, scikit-learn."""
    return {
        "lobolib": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {
            name: _package_version(name)
            for name in ("torch", "transformers", "datasets", "numpy", "pandas", "scikit-learn")
        },
    }


def fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 (first 16 hex digits) of a data file, or of a folder's files (relative names and
    contents, in sorted order): for the manifest's dataset fingerprints."""
    path = Path(path)
    if not path.exists():
        raise LoboError(f"cannot fingerprint {path}: it does not exist")
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path if path.is_dir() else path.parent)).encode("utf-8"))
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# importer for the reference study's logs


PUBMEDQA_OPTIONS = ("yes", "no", "maybe")
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
                         "sparsity": sparsity_key(int(match["percent"]) / 100)}
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
            options, gold = PUBMEDQA_OPTIONS, gold.strip().lower()
            valid_gold = PUBMEDQA_OPTIONS
        else:
            try:
                options = mmlu_options_from_prompt(prompt)
            except LoboError as err:
                raise LoboError(f"row {row} of {path}: {err}") from None
            gold, valid_gold = gold.strip().upper(), ("A", "B", "C", "D")
        if gold not in valid_gold:
            raise LoboError(f"row {row} of {path} has the gold answer {gold!r}; expected one of {valid_gold}")
        if parse:
            result = parse_response(benchmark, response, options)
            answer, tier, reason = result.answer, result.tier, result.reason
        else:
            answer, tier, reason = None, "unparsed", None  # not an invalid answer: never parsed
        records.append(Record(
            model=model, sparsity=sparsity, benchmark=benchmark, subject=subject, item_id=item_id,
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
        if store.has(model, entry["benchmark"], entry["sparsity"]):
            summary.append({**row, "n": None, "status": "skipped"})
            continue
        frame = _read_log(entry["path"], entry["benchmark"])
        records, extra = _log_records(entry, model, frame, parse=parse, pqal=pqal)
        store.write(model, entry["benchmark"], entry["sparsity"], records, extra=extra)
        summary.append({**row, "n": len(records), "status": "imported"})
    columns = ["model", "benchmark", "sparsity", "n", "status", "file"]
    return pd.DataFrame(summary, columns=columns)
