"""Per-item records on disk: one JSONL file per cell, written atomically, resumable.

A cell is (model, method, level, benchmark): one model, compressed by one method (a setting's
canonical description, or "dense") at one level, evaluated on one benchmark. Layout of a run
folder ``outputs/<run>/``::

    records/<model slug>/<method slug>/<benchmark>__<level>.jsonl
    reports/<model slug>/<method slug>.json      (what the compression did at each level)

A records file starts with a header line ``{"_header": {"model", "method", "level",
"benchmark", "n", "sha256", "lobolib", "written"}}`` followed by exactly ``n`` record lines and a
final newline; ``sha256`` is the digest of the record lines. A file that does not parse, holds
another number of lines than its header announces, lacks the final newline or whose records do
not match their checksum (an edit) is *corrupt*: it is moved aside (kept as ``*.corrupt``) with
one warning, so `has()` answers False and the sweep recomputes the cell. Files are written to a
temporary file in the same folder, fsynced and moved into place with ``os.replace``, so a crash
leaves either the old file or the new one, plus at worst a hidden ``.*.tmp`` that readers ignore.

Levels are part of a cell's key rounded to 4 decimals (0.45 and 0.450000001 are one cell).

Runs written before cells named their method (``records/<model>__<benchmark>__s0.4500.jsonl``)
are migrated in place by `migrate_legacy`, their records read as the method the run used.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from lobolib import __version__
from lobolib.errors import LoboError
from lobolib.experiment.files import atomic_write_text, slug
from lobolib.records import DENSE, RECORD_FIELDS, REQUIRED_FIELDS, Record, record_to_json

LEVEL_DECIMALS = 4
_HEADER = "_header"
_BENCHMARK_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")
_LEGACY_NAME = re.compile(r"(?P<model>.+)__(?P<benchmark>[a-z0-9]+)__s(?P<level>\d\.\d{4})\.jsonl")


class Cell(NamedTuple):
    model: str
    method: str
    level: float
    benchmark: str


def level_key(level) -> float:
    """A cell's level: a finite number >= 0, rounded to 4 decimals."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise LoboError(f"a level must be a number, got {level!r}") from None
    if not math.isfinite(value) or value < 0:
        raise LoboError(f"a level must be a finite number >= 0, got {level!r}")
    return round(value, LEVEL_DECIMALS)


def cell_path(root: Path, cell: Cell) -> Path:
    """Where the records of a cell live, under `root`/records."""
    if not isinstance(cell.benchmark, str) or not _BENCHMARK_NAME.fullmatch(cell.benchmark):
        raise LoboError(f"a benchmark name must be lower-case letters, digits and '_', got {cell.benchmark!r}")
    name = f"{cell.benchmark}__{level_key(cell.level):.{LEVEL_DECIMALS}f}.jsonl"
    return Path(root) / "records" / slug(cell.model) / slug(cell.method) / name


class Corrupt(Exception):
    """A records file that is not complete and well-formed (why: the message)."""


def _digest(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def parse_cell_file(path: Path) -> tuple[dict, list[dict]]:
    """The header and record dicts of a records file; `Corrupt` saying why when it is not
    complete, well-formed and unedited."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise Corrupt(f"not UTF-8: {err}") from None
    if not text.endswith("\n"):
        raise Corrupt("it does not end with a newline, so it was cut off")
    lines = text[:-1].split("\n")
    try:
        header = json.loads(lines[0])[_HEADER]
        n = int(header["n"])
        cell = Cell(header["model"], header["method"], float(header["level"]), header["benchmark"])
    except (ValueError, KeyError, TypeError):
        raise Corrupt("the first line is not a valid header") from None
    if len(lines) - 1 != n:
        raise Corrupt(f"the header announces {n} records, the file holds {len(lines) - 1}")
    if header.get("sha256") != _digest(lines[1:]):
        raise Corrupt("its records do not match the header's checksum (the file was edited)")
    if cell_path(path.parents[3], cell) != path:
        raise Corrupt(f"its header names another cell {tuple(cell)}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            row = json.loads(line)
        except ValueError:
            raise Corrupt(f"line {number} is not valid JSON") from None
        if not isinstance(row, dict) or any(name not in row for name in REQUIRED_FIELDS):
            raise Corrupt(f"line {number} is not a record")
        rows.append(row)
    return header, rows


def _read_header(path: Path) -> dict | None:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.loads(handle.readline())[_HEADER]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def _as_set(values) -> set | None:
    if values is None:
        return None
    return {values} if isinstance(values, (str, float, int)) else set(values)


class RecordStore:
    """The records of one run on disk, under ``<root>/records/``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.records_dir = self.root / "records"

    def __repr__(self) -> str:
        return f"RecordStore({str(self.root)!r})"

    def path(self, model: str, method: str, level: float, benchmark: str) -> Path:
        """Where the records of a cell live."""
        return cell_path(self.root, Cell(model, method, level, benchmark))

    # -- writing ---------------------------------------------------------------------------------

    def write(self, model: str, method: str, level: float, benchmark: str, records: Sequence[Record], *,
              extra: Sequence[Mapping] | None = None) -> Path:
        """Write (or replace) the records of one cell atomically and return the file path.

        Every record must belong to the cell (same model, method, benchmark and, rounded to 4
        decimals, level) and item ids must be unique. `extra`, when given, holds one dict per
        record whose keys are added to its JSON line (e.g. ``reference_parsed`` of imported logs);
        they may not shadow Record fields, and ``read()`` shows them as columns.
        """
        key = level_key(level)
        cell = Cell(model, method, key, benchmark)
        path = cell_path(self.root, cell)
        records = list(records)
        if extra is not None and len(extra) != len(records):
            raise LoboError(f"extra has {len(extra)} entries for {len(records)} records; give one per record")
        seen: set[str] = set()
        lines = []
        for index, record in enumerate(records):
            self._check(record, cell, index, seen)
            row = record_to_json(record)
            row["level"] = key
            if extra is not None:
                clash = set(extra[index]) & set(RECORD_FIELDS)
                if clash:
                    raise LoboError(f"extra keys {sorted(clash)} would overwrite Record fields; rename them")
                row.update(extra[index])
            lines.append(json.dumps(row, ensure_ascii=False))
        header = {"model": model, "method": method, "level": key, "benchmark": benchmark, "n": len(records),
                  "sha256": _digest(lines), "lobolib": __version__, "written": _now()}  # fmt: skip
        atomic_write_text(path, "\n".join([json.dumps({_HEADER: header}, ensure_ascii=False), *lines]) + "\n")
        return path

    @staticmethod
    def _check(record, cell: Cell, index: int, seen: set) -> None:
        if not isinstance(record, Record):
            raise LoboError(f"write() takes Record objects, got {type(record).__name__} at position {index}")
        mine = (record.model, record.method, record.benchmark) == (cell.model, cell.method, cell.benchmark)
        if not mine or level_key(record.level) != cell.level:
            raise LoboError(
                f"record {record.item_id!r} belongs to ({record.model!r}, {record.method!r}, {record.level!r}, "
                f"{record.benchmark!r}), not to the cell {tuple(cell)}"
            )
        if record.item_id in seen:
            raise LoboError(f"item id {record.item_id!r} appears twice in the cell {tuple(cell)}")
        seen.add(record.item_id)

    # -- reading ---------------------------------------------------------------------------------

    def has(self, model: str, method: str, level: float, benchmark: str) -> bool:
        """True when a complete, well-formed records file of the cell exists. A corrupt one is
        moved aside with a warning and answers False, so the sweep recomputes the cell."""
        path = self.path(model, method, level, benchmark)
        return path.is_file() and self._parsed(path) is not None

    def _parsed(self, path: Path) -> tuple[dict, list[dict]] | None:
        try:
            return parse_cell_file(path)
        except Corrupt as why:
            aside = quarantine(path)
            warnings.warn(f"records file {path} is corrupt ({why}); moved aside to {aside.name}, "
                          "the cell will be recomputed", stacklevel=3)  # fmt: skip
            return None

    def _files(self) -> list[Path]:
        if not self.records_dir.is_dir():
            return []
        return sorted(p for p in self.records_dir.glob("*/*/*.jsonl") if not p.name.startswith("."))

    def cells(self) -> list[Cell]:
        """The cells with a complete records file, sorted (corrupt ones are moved aside)."""
        found = []
        for path in self._files():
            parsed = self._parsed(path)
            if parsed is not None:
                header = parsed[0]
                found.append(Cell(header["model"], header["method"], float(header["level"]), header["benchmark"]))
        return sorted(found)

    def read(self, models=None, methods=None, levels=None, benchmarks=None) -> pd.DataFrame:
        """All records (optionally of some models, methods, levels, benchmarks) as one DataFrame.

        One row per record; columns: the Record fields (``option_logprobs`` a dict column), then
        ``correct`` (answer == gold) and ``valid`` (answer is not None), then any extra keys stored
        with the records (``reference_parsed`` for imported logs). A corrupt cell is moved aside
        with a warning and left out. An empty store gives an empty frame with those columns. Text
        columns have object dtype, so a missing answer is ``None`` (not NaN).
        """
        wanted = {"model": _as_set(models), "method": _as_set(methods), "benchmark": _as_set(benchmarks),
                  "level": None if levels is None else {level_key(v) for v in _as_set(levels)}}  # fmt: skip
        rows: list[dict] = []
        for path in self._files():
            header = _read_header(path)
            if header is not None and any(want is not None and header.get(key) not in want
                                          for key, want in wanted.items()):  # fmt: skip
                continue
            parsed = self._parsed(path)
            if parsed is not None:
                rows.extend(parsed[1])
        frame = pd.DataFrame(rows, columns=_columns(rows), dtype=object)
        for column in ("level", "sparsity"):
            frame[column] = frame[column].astype(float)
        frame["correct"] = pd.Series([a is not None and a == g for a, g in zip(frame["answer"], frame["gold"])],
                                     dtype=bool, index=frame.index)  # fmt: skip
        frame["valid"] = pd.Series([a is not None for a in frame["answer"]], dtype=bool, index=frame.index)
        extras = [c for c in frame.columns if c not in RECORD_FIELDS + ("correct", "valid")]
        return frame[list(RECORD_FIELDS) + ["correct", "valid"] + extras]

    # -- compression reports ---------------------------------------------------------------------

    def report_path(self, model: str, method: str) -> Path:
        return self.root / "reports" / slug(model) / f"{slug(method)}.json"

    def read_reports(self, model: str, method: str) -> dict:
        """{level key "0.4500": report} of what the compression did at each level ({} when none)."""
        path = self.report_path(model, method)
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("levels", {})
        except ValueError:
            raise LoboError(f"{path} is not valid JSON; delete it (the next sweep rewrites it)") from None

    def write_report(self, model: str, method: str, level: float, report: Mapping) -> None:
        """Merge one level's compression report into the (model, method) report file, atomically."""
        levels = self.read_reports(model, method)
        levels[f"{level_key(level):.{LEVEL_DECIMALS}f}"] = dict(report)
        data = {"model": model, "method": method, "levels": levels}
        atomic_write_text(self.report_path(model, method), json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")

    # -- the layout before cells named their method ----------------------------------------------

    def legacy_files(self) -> list[Path]:
        """Records files of the old layout (records/<model>__<benchmark>__s0.4500.jsonl)."""
        if not self.records_dir.is_dir():
            return []
        return sorted(p for p in self.records_dir.glob("*.jsonl") if _LEGACY_NAME.fullmatch(p.name))

    def migrate_legacy(self, method: str) -> int:
        """Move every old-layout cell into the new layout, its records read as `method` (and
        "dense" at sparsity 0); the old sparsity reports become `method`'s reports. Returns the
        number of cells moved. A corrupt old file is moved aside, as in the new layout."""
        moved = 0
        for path in self.legacy_files():
            rows = _legacy_rows(path)
            if rows is None:
                aside = quarantine(path)
                warnings.warn(f"old-layout records file {path} is corrupt; moved aside to {aside.name}", stacklevel=2)
                continue
            for header, cell_rows in rows:
                records, extra = _legacy_records(cell_rows, method)
                self.write(header["model"], records[0].method if records else method, header["sparsity"],
                           header["benchmark"], records, extra=extra)  # fmt: skip
            path.unlink()
            moved += 1
        self._migrate_legacy_reports(method)
        return moved

    def _migrate_legacy_reports(self, method: str) -> None:
        for path in sorted((self.root / "sparsity").glob("*.json")) if (self.root / "sparsity").is_dir() else []:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                continue
            for key, entry in data.get("levels", {}).items():
                self.write_report(data.get("model", path.stem), DENSE if float(key) == 0 else method, float(key), entry)
            path.unlink()


def quarantine(path: Path) -> Path:
    """Move a corrupt file aside as <name>.corrupt (numbered when that exists); returns where."""
    aside = path.with_name(path.name + ".corrupt")
    number = 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}.corrupt{number}")
    os.replace(path, aside)
    return aside


def _legacy_rows(path: Path) -> list[tuple[dict, list[dict]]] | None:
    """(header, rows) of an old-layout file, or None when it is not complete and well-formed."""
    try:
        text = path.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            return None
        lines = text[:-1].split("\n")
        header = json.loads(lines[0])[_HEADER]
        rows = [json.loads(line) for line in lines[1:]]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if len(rows) != int(header.get("n", -1)):
        return None
    return [(header, rows)]


def _legacy_records(rows: list[dict], method: str) -> tuple[list[Record], list[dict]]:
    """Old-layout rows as Records of `method` (dense at sparsity 0), their extra keys kept."""
    records, extra = [], []
    old_fields = set(REQUIRED_FIELDS) - {"method", "level"}
    for row in rows:
        sparsity = float(row["sparsity"])
        values = {name: row[name] for name in old_fields}
        values["option_logprobs"] = dict(values["option_logprobs"] or {})
        records.append(Record(method=DENSE if sparsity == 0 else method, level=sparsity, **values))
        extra.append({k: v for k, v in row.items() if k not in RECORD_FIELDS})
    return records, extra


def _columns(rows: list[dict]) -> list[str]:
    extras: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in RECORD_FIELDS:
                extras.setdefault(key, None)
    return list(RECORD_FIELDS) + list(extras)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
