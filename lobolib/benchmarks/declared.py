"""Benchmarks declared in a parameters file, with no code: a source and a field map.

    benchmarks:
      my_exam:
        kind: multiple_choice
        source: data/my_exam.jsonl     # .jsonl, .json, .csv, or a hub dataset id
        split: test                    # for a hub dataset
        question: question             # field names
        options: [opa, opb, opc, opd]  # a list of fields, or one field holding a list or a {letter: text} map
        answer: cop                    # a letter, an index (answer_index_base: 0 or 1) or the option's text
        group: subject_name            # optional: a subject column for per-group curves
        max_items: 500                 # optional

A declared benchmark goes through the same prompts (the multiple-choice templates MMLU uses),
parser, metrics, tables and figures as the built-in ones. `kind: yes_no_maybe` works the same
way, with an answer field holding yes, no or maybe (and an optional `context` field).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lobolib.benchmarks.benchmark import KINDS, MULTIPLE_CHOICE, YES_NO_MAYBE, YES_NO_MAYBE_LABELS, Benchmark
from lobolib.benchmarks.fields import FILE_SUFFIXES, FieldMap, hub_rows, items_from_rows, read_rows
from lobolib.benchmarks.prompts import MULTIPLE_CHOICE_TEMPLATES
from lobolib.benchmarks.pubmedqa import PUBMEDQA
from lobolib.errors import LoboError
from lobolib.records import Item

FIELD_KEYS = ("question", "options", "answer", "answer_index_base", "group", "context", "id")
SOURCE_KEYS = ("kind", "source", "split", "config")
"""The keys a declaration may hold besides the common benchmark keys (max_items, template ...)."""


def declare(name: str, spec: Mapping) -> Benchmark:
    """The Benchmark of a declaration; reads the source once to count the options."""
    kind = spec.get("kind")
    if kind not in KINDS:
        raise LoboError(f"benchmarks.{name}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    if not spec.get("source"):
        raise LoboError(f"benchmarks.{name}.source: give a .jsonl, .json or .csv file or a hub dataset id")
    fields = _field_map(name, spec, kind)
    source, config = str(spec["source"]), spec.get("config")

    def rows(split):
        if _is_file(source):
            return read_rows(source, name)
        return hub_rows(source, config, split or spec.get("split"), name)

    def load(_source=None, split=None, max_items=None) -> list[Item]:
        items = _items(rows(split), fields, name, kind)
        return items[:max_items] if max_items else items

    first = _items(rows(spec.get("split"))[:1], fields, name, kind)[0]
    return Benchmark(
        name=name,
        kind=kind,
        title=name,
        loader=load,
        hub=source if not _is_file(source) else "",
        local_format=f"{source} read through its declared fields",
        templates=MULTIPLE_CHOICE_TEMPLATES if kind == MULTIPLE_CHOICE else PUBMEDQA.templates,
        max_new_tokens=5 if kind == MULTIPLE_CHOICE else PUBMEDQA.max_new_tokens,
        splits=(spec.get("split"),),
        n_options=len(first.options) if kind == MULTIPLE_CHOICE else None,
        declared=True,
    )


def _is_file(source: str) -> bool:
    return source.lower().endswith(FILE_SUFFIXES) or Path(source).expanduser().exists()


def _field_map(name: str, spec: Mapping, kind: str) -> FieldMap:
    options = spec.get("options", "options")
    if kind == YES_NO_MAYBE and "options" in spec:
        raise LoboError(f"benchmarks.{name}.options: a yes_no_maybe benchmark has the options yes, no, maybe")
    if isinstance(options, list):
        options = tuple(str(o) for o in options)
    base = spec.get("answer_index_base")
    if base not in (None, 0, 1):
        raise LoboError(f"benchmarks.{name}.answer_index_base: {base!r} must be 0 or 1 (or left out for letters)")
    return FieldMap(question=str(spec.get("question", "question")), options=options,
                    answer=str(spec.get("answer", "answer")), answer_index_base=base,
                    group=spec.get("group"), context=spec.get("context"), id=spec.get("id"))  # fmt: skip


def _items(rows, fields: FieldMap, name: str, kind: str) -> list[Item]:
    if kind == MULTIPLE_CHOICE:
        return items_from_rows(rows, fields, name)
    return [_yes_no_maybe(row, number, fields, name) for number, row in enumerate(rows)] or _empty(name)


def _yes_no_maybe(row: Mapping, number: int, fields: FieldMap, name: str) -> Item:
    item_id = str(row.get(fields.id, number)) if fields.id else str(number)
    for field in (fields.question, fields.answer, fields.context, fields.group):
        if field is not None and field not in row:
            raise LoboError(f"{name} item {item_id!r}: no field {field!r} (fields: {', '.join(map(str, row))})")
    answer = str(row[fields.answer]).strip().lower()
    if answer not in YES_NO_MAYBE_LABELS:
        raise LoboError(f"{name} item {item_id!r}: field {fields.answer!r} is {row[fields.answer]!r}, not yes, no or maybe")
    return Item(id=item_id, benchmark=name, subject=str(row[fields.group]) if fields.group else name,
                question=str(row[fields.question]), context=str(row[fields.context]) if fields.context else "",
                options=YES_NO_MAYBE_LABELS, answer=answer)  # fmt: skip


def _empty(name: str):
    raise LoboError(f"{name}: the source holds no items")
