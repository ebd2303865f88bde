"""Multiple-choice items from rows of any file or hub dataset, read through a field map.

A `FieldMap` says which field holds the question, the options, the answer and (optionally) the
subject, the context and the item id. `options` is a list of fields (``[opa, opb, opc, opd]``),
or one field holding a list or a ``{letter: text}`` map. `answer` holds a letter, an index
(`answer_index_base` 0 or 1) or the right option's text. Rows come from ``.jsonl`` (JSON lines),
``.json`` (a list of objects, or JSON lines), ``.csv`` (with a header row), or a hub dataset id
through `datasets`. Every problem names the benchmark, the item and the field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lobolib.benchmarks.benchmark import letters
from lobolib.benchmarks.hub import hub_dataset
from lobolib.errors import LoboError
from lobolib.records import Item

FILE_SUFFIXES = (".jsonl", ".json", ".csv")


@dataclass(frozen=True)
class FieldMap:
    """Where a row keeps the parts of a multiple-choice item."""

    question: str = "question"
    options: str | tuple[str, ...] = "options"
    answer: str = "answer"
    answer_index_base: int | None = None  # None: the answer is a letter or the option's text
    group: str | None = None
    context: str | None = None
    id: str | None = None


def read_rows(source: str | Path, benchmark: str) -> list[Mapping]:
    """The rows of a local .jsonl, .json or .csv file, as dicts."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise LoboError(f"{benchmark}: source file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise LoboError(f"{benchmark}: source {path} is not one of {', '.join(FILE_SUFFIXES)} (or a hub dataset id)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LoboError(f"{benchmark}: cannot read {path}: {err}") from None
    if suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    stripped = text.lstrip()
    if suffix == ".json" and stripped.startswith("["):
        rows = _json(stripped, path, benchmark)
    else:
        rows = [_json(line, path, benchmark, number) for number, line in enumerate(text.splitlines(), 1)
                if line.strip()]  # fmt: skip
    if not all(isinstance(row, Mapping) for row in rows):
        raise LoboError(f"{benchmark}: {path} must hold JSON objects, one per item")
    return rows


def hub_rows(dataset: str, config: str | None, split: str | None, benchmark: str) -> list[Mapping]:
    """The rows of a hub dataset split."""
    if not split:
        raise LoboError(f"{benchmark}: a hub dataset needs a split (e.g. split: test)")
    return list(hub_dataset(dataset, config, split))


def items_from_rows(rows: Iterable[Mapping], fields: FieldMap, benchmark: str, n_options: int | None = None,
                    default_group: str | None = None) -> list[Item]:
    """The Items of `rows` read through `fields`; every item must have `n_options` options (the
    first row's count when None)."""
    items = []
    for number, row in enumerate(rows):
        item_id = str(_field(row, fields.id, benchmark, number)) if fields.id else str(number)
        where = f"{benchmark} item {item_id!r}"
        options = _options(row, fields.options, where)
        if n_options is None:
            n_options = len(options)
        if len(options) != n_options:
            raise LoboError(f"{where}: field {fields.options!r} holds {len(options)} options, "
                            f"the benchmark's items have {n_options}")  # fmt: skip
        labels = letters(n_options)
        answer = _answer(_field(row, fields.answer, benchmark, number, item_id), options, labels, fields, where)
        group = str(_field(row, fields.group, benchmark, number, item_id)) if fields.group else (default_group or benchmark)
        context = str(_field(row, fields.context, benchmark, number, item_id)) if fields.context else ""
        question = _field(row, fields.question, benchmark, number, item_id)
        if not isinstance(question, str) or not question.strip():
            raise LoboError(f"{where}: field {fields.question!r} holds no question text")
        items.append(Item(id=item_id, benchmark=benchmark, subject=group, question=question, context=context,
                          options=tuple(options), answer=answer))  # fmt: skip
    if not items:
        raise LoboError(f"{benchmark}: the source holds no items")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise LoboError(f"{benchmark}: item id {twice!r} appears twice; give an `id` field that is unique")
    return items


def _json(text: str, path: Path, benchmark: str, line: int | None = None):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = f" line {line}" if line else ""
        raise LoboError(f"{benchmark}: {path}{where} is not valid JSON: {err.msg}") from None


def _field(row: Mapping, name: str, benchmark: str, number: int, item_id: str | None = None):
    if name not in row:
        who = f"item {item_id!r}" if item_id is not None else f"row {number}"
        raise LoboError(f"{benchmark} {who}: no field {name!r} (fields: {', '.join(map(str, row))})")
    return row[name]


def _options(row: Mapping, spec: str | Sequence[str], where: str) -> list[str]:
    """The option texts, in label order."""
    if isinstance(spec, str):
        if spec not in row:
            raise LoboError(f"{where}: no field {spec!r} (fields: {', '.join(map(str, row))})")
        value = row[spec]
        if isinstance(value, Mapping):
            keys = sorted(value, key=str)
            expected = list(letters(len(keys))) if 2 <= len(keys) <= 26 else []
            if [str(k).upper() for k in keys] != expected:
                raise LoboError(f"{where}: field {spec!r} maps {keys}, expected the letters A, B, ...")
            value = [value[k] for k in keys]
        if not isinstance(value, list) or len(value) < 2:
            raise LoboError(f"{where}: field {spec!r} holds no list of options or {{letter: text}} map")
        texts = value
    else:
        missing = [name for name in spec if name not in row]
        if missing:
            raise LoboError(f"{where}: no field {missing[0]!r} (fields: {', '.join(map(str, row))})")
        texts = [row[name] for name in spec]
    if not all(isinstance(t, (str, int, float)) and str(t).strip() for t in texts):
        raise LoboError(f"{where}: an option of field {spec!r} is empty")
    return [str(t) for t in texts]


def _answer(value, options: list[str], labels: tuple[str, ...], fields: FieldMap, where: str) -> str:
    """The gold letter from a letter, an index or the option's text."""
    if fields.answer_index_base is not None:
        try:
            index = int(value) - fields.answer_index_base
        except (TypeError, ValueError):
            index = -1
        if isinstance(value, bool) or not 0 <= index < len(options):
            raise LoboError(f"{where}: field {fields.answer!r} is {value!r}, not an option index "
                            f"{fields.answer_index_base}..{len(options) - 1 + fields.answer_index_base}")  # fmt: skip
        return labels[index]
    text = str(value).strip()
    if text.upper() in labels:
        return text.upper()
    matches = [label for label, option in zip(labels, options) if option.strip() == text]
    if len(matches) != 1:
        raise LoboError(f"{where}: field {fields.answer!r} is {value!r}, which matches no option "
                        f"(a letter {labels[0]}-{labels[-1]} or one option's text; set answer_index_base for an index)")  # fmt: skip
    return matches[0]
