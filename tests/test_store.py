"""lobolib.experiment.store: records survive a round trip, crashes and edits never leave a
half-read cell (a corrupt one is moved aside and recomputed), and runs of the layout before
settings are migrated."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re

import pytest

from lobolib import LoboError
from lobolib.experiment.files import slug
from lobolib.experiment.store import RecordStore, cell_path, Cell
from lobolib.records import DENSE, RECORD_FIELDS, Record, prompt_hash, record_from_json, record_to_json

MODEL = "BioMistral/BioMistral-7B"
METHOD = "magnitude/layer"


def make_record(item_id="q1", *, model=MODEL, sparsity=0.45, benchmark="pubmedqa", method=None, **changes) -> Record:
    values = dict(
        model=model, method=method or (DENSE if sparsity == 0 else METHOD), level=sparsity, sparsity=sparsity,
        benchmark=benchmark, subject="pubmedqa", item_id=item_id,
        gold="yes", prompt_hash=prompt_hash(item_id), raw_response="yes", answer="yes", tier="exact",
        invalid_reason=None, option_logprobs={"yes": -0.1, "no": -2.5, "maybe": -3.0}, loglik_answer="yes",
    )
    values.update(changes)
    return Record(**values)


def sample_records(sparsity=0.45) -> list[Record]:
    return [
        make_record("q1", sparsity=sparsity),
        make_record("q2", sparsity=sparsity, raw_response="Ça dépend — 可能 🙂\nmaybe", answer=None,
                    tier="none", invalid_reason="no label found", option_logprobs={}, loglik_answer=None),
        make_record("q3", sparsity=sparsity, gold="no", raw_response="", answer="maybe", tier="fallback",
                    option_logprobs={"yes": -math.inf, "no": -0.5, "maybe": -1.25}, loglik_answer="no"),
    ]


def m(sparsity):
    """The method of a cell at `sparsity`."""
    return DENSE if sparsity == 0 else METHOD


# --- records ---------------------------------------------------------------------------------


def test_round_trip_keeps_every_field(tmp_path):
    store = RecordStore(tmp_path)
    records = sample_records()
    store.write(MODEL, m(0.45), 0.45, "pubmedqa", records)
    frame = store.read()
    assert list(frame.columns[: len(RECORD_FIELDS)]) == list(RECORD_FIELDS)
    assert [record_from_json(row) for row in frame.to_dict("records")] == records
    assert frame["answer"].tolist() == ["yes", None, "maybe"]  # None stays None, not NaN
    assert frame["correct"].tolist() == [True, False, False]
    assert frame["valid"].tolist() == [True, False, True]
    assert record_from_json(record_to_json(records[1])) == records[1]


def test_empty_store_reads_as_empty_frame_with_columns(tmp_path):
    frame = RecordStore(tmp_path / "nothing-yet").read()
    assert frame.empty
    assert list(frame.columns) == list(RECORD_FIELDS) + ["correct", "valid"]
    assert RecordStore(tmp_path).cells() == []


def test_level_rounded_to_four_decimals_is_one_cell(tmp_path):
    store = RecordStore(tmp_path)
    store.write(MODEL, m(0.450000001), 0.450000001, "pubmedqa", sample_records(0.450000001))
    assert store.has(MODEL, m(0.45), 0.45, "pubmedqa")
    path = store.path(MODEL, m(0.45), 0.45, "pubmedqa")
    assert path.relative_to(tmp_path).as_posix() == "records/BioMistral--BioMistral-7B/magnitude--layer/pubmedqa__0.4500.jsonl"
    assert store.cells() == [(MODEL, METHOD, 0.45, "pubmedqa")]
    assert set(store.read()["level"]) == {0.45}


def test_rewrite_replaces_cell_and_filters_select(tmp_path):
    store = RecordStore(tmp_path)
    store.write(MODEL, m(0.0), 0.0, "pubmedqa", sample_records(0.0))
    store.write(MODEL, m(0.0), 0.0, "pubmedqa", sample_records(0.0)[:1])
    other = make_record("m/0", model="mistralai/Mistral-7B-v0.1", benchmark="mmlu", subject="anatomy", gold="A")
    store.write("mistralai/Mistral-7B-v0.1", m(0.45), 0.45, "mmlu", [other])
    assert len(store.read()) == 2
    assert store.read(models=MODEL)["item_id"].tolist() == ["q1"]
    assert store.read(benchmarks=["mmlu"])["item_id"].tolist() == ["m/0"]
    assert store.read(levels=[0.45])["model"].tolist() == ["mistralai/Mistral-7B-v0.1"]
    assert store.read(methods=[DENSE])["item_id"].tolist() == ["q1"]
    assert store.cells() == [(MODEL, DENSE, 0.0, "pubmedqa"), ("mistralai/Mistral-7B-v0.1", METHOD, 0.45, "mmlu")]


def test_write_refuses_records_of_another_cell_or_repeated_items(tmp_path):
    store = RecordStore(tmp_path)
    with pytest.raises(LoboError, match="belongs to"):
        store.write(MODEL, m(0.5), 0.5, "pubmedqa", sample_records(0.45))
    with pytest.raises(LoboError, match="twice"):
        store.write(MODEL, m(0.45), 0.45, "pubmedqa", [make_record("q1"), make_record("q1")])
    with pytest.raises(LoboError, match="level"):
        store.write(MODEL, m(1.0), float("nan"), "pubmedqa", [])
    assert store.cells() == []


def test_leftover_temp_file_from_a_crash_is_ignored(tmp_path):
    store = RecordStore(tmp_path)
    path = store.write(MODEL, m(0.45), 0.45, "pubmedqa", sample_records())
    (path.parent / f".{path.name}.k2j3.tmp").write_text('{"_header": {"n": 99}}\n{"half', encoding="utf-8")
    assert store.cells() == [(MODEL, METHOD, 0.45, "pubmedqa")]
    assert len(store.read()) == 3


def test_crash_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    store = RecordStore(tmp_path)
    path = store.write(MODEL, m(0.45), 0.45, "pubmedqa", sample_records())

    def crash(src, dst):
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.write(MODEL, m(0.45), 0.45, "pubmedqa", sample_records()[:1])
    monkeypatch.undo()
    assert len(store.read()) == 3
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # temp file removed


@pytest.mark.parametrize("cut", [1, 2, 40, "last line", "header only"])
def test_truncated_file_is_moved_aside_and_recomputed(tmp_path, cut):
    """has() answers False with one warning, the file is kept as *.corrupt, and other cells stay
    readable: the sweep recomputes the cell."""
    store = RecordStore(tmp_path)
    path = store.write(MODEL, m(0.45), 0.45, "pubmedqa", sample_records())
    store.write(MODEL, m(0.5), 0.5, "pubmedqa", sample_records(0.5))
    data = path.read_bytes()
    if cut == "last line":
        data = data[: data.rstrip(b"\n").rfind(b"\n") + 1]
    elif cut == "header only":
        data = data[: data.find(b"\n") + 1]
    else:
        data = data[:-cut]
    path.write_bytes(data)
    with pytest.warns(UserWarning, match="moved aside .* recomputed"):
        assert not store.has(MODEL, m(0.45), 0.45, "pubmedqa")
    assert not path.exists() and path.with_name(path.name + ".corrupt").read_bytes() == data
    assert store.cells() == [(MODEL, METHOD, 0.5, "pubmedqa")]
    assert len(store.read()) == 3


@pytest.mark.parametrize("damage, why", [
    (lambda text, lines: text + lines[1] + "\n", "announces 3 records, the file holds 4"),
    (lambda text, lines: text.replace('"item_id": "q2"', '"item_id": q2"'), "checksum"),
    (lambda text, lines: text.replace('"answer": "maybe"', '"answer": "yes"'), "checksum"),
    (lambda text, lines: text.replace('"gold": "no"', '"gold": "yes"'), "checksum"),
])
def test_extra_garbled_or_edited_records_are_corrupt(tmp_path, damage, why):
    """An edit that leaves valid JSON (a changed answer) is caught by the header's checksum."""
    store = RecordStore(tmp_path)
    path = store.write(MODEL, m(0.45), 0.45, "pubmedqa", sample_records())
    original = path.read_text(encoding="utf-8")
    path.write_text(damage(original, original.splitlines()), encoding="utf-8")
    with pytest.warns(UserWarning, match=why):
        assert store.read().empty
    assert path.with_name(path.name + ".corrupt").exists()
    store.write(MODEL, m(0.45), 0.45, "pubmedqa", sample_records())
    path.write_text(damage(original, original.splitlines()), encoding="utf-8")
    with pytest.warns(UserWarning):
        store.has(MODEL, m(0.45), 0.45, "pubmedqa")
    assert path.with_name(path.name + ".corrupt2").exists()  # an earlier one is kept


def test_extra_keys_are_stored_and_read_as_columns(tmp_path):
    store = RecordStore(tmp_path)
    records = sample_records()
    store.write(MODEL, m(0.45), 0.45, "pubmedqa", records, extra=[{"reference_parsed": g} for g in ("yes", "maybe", "no")])
    frame = store.read()
    assert frame["reference_parsed"].tolist() == ["yes", "maybe", "no"]
    assert record_from_json(frame.iloc[0].to_dict()) == records[0]
    with pytest.raises(LoboError, match="overwrite Record fields"):
        store.write(MODEL, m(0.45), 0.45, "pubmedqa", records, extra=[{"answer": "no"}] * 3)


# --- names and hashes ------------------------------------------------------------------------


def test_slugs_are_readable_safe_and_unique():
    names = [
        "BioMistral/BioMistral-7B", "BioMistral--BioMistral-7B", "BioMistral_BioMistral-7B",
        "mistralai/Mistral-7B-v0.1", "a-/b", "a/-b", "a b", "a_b", "/home/me/models/bio", "home/me/models/bio",
        "C:\\models\\bio", "x" * 300, "x" * 301, "wanda/2:4/calib=pubmed", "wanda/2-4/calib=pubmed",
    ]
    slugs = [slug(n) for n in names]
    assert slugs[0] == "BioMistral--BioMistral-7B"
    assert slugs[3] == "mistralai--Mistral-7B-v0.1"
    assert len(set(slugs)) == len(names)
    for one in slugs:
        assert re.fullmatch(r"[A-Za-z0-9._~=-]+", one) and len(one) <= 140 and not one.startswith(".")
    files = {cell_path(tmp, Cell(n, "magnitude/layer", s, b)) for tmp in ["/r"] for n in names
             for b in ("mmlu", "pubmedqa") for s in (0.0, 0.05)}
    assert len(files) == len(names) * 4


def test_prompt_hash_is_a_short_sha256():
    assert prompt_hash("Question: é?") == hashlib.sha256("Question: é?".encode()).hexdigest()[:16]
    assert prompt_hash("a") != prompt_hash("a ")




# --- compression reports and the layout before settings ---------------------------------------


def test_reports_merge_level_by_level(tmp_path):
    store = RecordStore(tmp_path)
    store.write_report(MODEL, METHOD, 0.5, {"pruned": 0.5, "overall": 0.4})
    store.write_report(MODEL, METHOD, 0.25, {"pruned": 0.25})
    assert store.read_reports(MODEL, METHOD) == {"0.5000": {"pruned": 0.5, "overall": 0.4}, "0.2500": {"pruned": 0.25}}
    assert store.read_reports(MODEL, "wanda/2:4") == {}


def _legacy_cell(root, model_slug, benchmark, sparsity, rows):
    header = {"_header": {"model": MODEL, "benchmark": benchmark, "sparsity": sparsity, "n": len(rows),
                          "lobolib": "0.1.0", "written": "2026-11-27T00:00:00+00:00"}}
    path = root / "records" / f"{model_slug}__{benchmark}__s{sparsity:.4f}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def test_a_run_in_the_old_layout_is_migrated_without_losing_a_record(tmp_path):
    """Cells written before settings existed (no method, records/<model>__<bench>__s0.4500.jsonl)
    move into the new layout as the run's magnitude setting, dense at 0%, extra keys kept."""
    old = []
    for sparsity in (0.0, 0.45):
        rows = []
        for record in sample_records(sparsity):
            row = record_to_json(record)
            row.pop("method"), row.pop("level")
            rows.append({**row, "reference_parsed": "yes"})
        old.append(_legacy_cell(tmp_path, "BioMistral--BioMistral-7B", "pubmedqa", sparsity, rows))
    (tmp_path / "sparsity").mkdir()
    (tmp_path / "sparsity" / "BioMistral--BioMistral-7B.json").write_text(json.dumps(
        {"model": MODEL, "levels": {"0.4500": {"requested": 0.45, "pruned": 0.45, "overall": 0.4}}}))
    corrupt = _legacy_cell(tmp_path, "x", "mmlu", 0.5, [])
    corrupt.write_text(corrupt.read_text()[:-3])
    store = RecordStore(tmp_path)
    assert len(store.legacy_files()) == 3
    with pytest.warns(UserWarning, match="corrupt"):
        assert store.migrate_legacy(METHOD) == 2
    assert not any(p.exists() for p in old) and store.legacy_files() == []
    assert store.cells() == [(MODEL, DENSE, 0.0, "pubmedqa"), (MODEL, METHOD, 0.45, "pubmedqa")]
    frame = store.read()
    assert len(frame) == 6 and set(frame["reference_parsed"]) == {"yes"}
    migrated = [record_from_json(row) for row in frame.to_dict("records")]
    assert migrated == sample_records(0.0) + sample_records(0.45)
    assert store.read_reports(MODEL, METHOD)["0.4500"]["pruned"] == 0.45
    assert store.migrate_legacy(METHOD) == 0  # nothing left to move


# --- the file system: full, read-only, umask --------------------------------------------------------


def test_a_full_disk_mid_write_is_one_error_naming_the_path_and_the_old_file_is_intact(tmp_path, monkeypatch):
    import errno

    store = RecordStore(tmp_path)
    path = store.write(MODEL, m(0.45), 0.45, "pubmedqa", sample_records())
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the records are in the temp file; flushing them fails
    with pytest.raises(LoboError) as caught:
        store.write(MODEL, m(0.45), 0.45, "pubmedqa", sample_records()[:1])
    assert str(caught.value) == (f"cannot write {path}: the disk is full; free some space or write the run "
                                 "elsewhere with --out DIR")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left behind
    assert len(store.read()) == 3


def test_a_read_only_folder_is_one_error_naming_the_path(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    store = RecordStore(tmp_path)
    with pytest.raises(LoboError, match="cannot write .*pubmedqa__0.4500.jsonl: the file system is read-only"):
        store.write(MODEL, m(0.45), 0.45, "pubmedqa", sample_records())
    with pytest.raises(LoboError, match="manifest.json: the file system is read-only"):
        from lobolib.experiment.manifest import write_manifest

        write_manifest(tmp_path, {"a": 1})


def test_other_os_errors_are_not_taken_for_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("disk vanished")))
    with pytest.raises(OSError, match="disk vanished"):
        RecordStore(tmp_path).write(MODEL, m(0.45), 0.45, "pubmedqa", sample_records())


@pytest.mark.parametrize("umask, mode", [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_files_get_the_permissions_the_umask_gives(tmp_path, umask, mode):
    from lobolib.experiment.files import atomic_write_text
    from lobolib.experiment.manifest import write_manifest

    old = os.umask(umask)
    try:
        records = RecordStore(tmp_path).write(MODEL, m(0.45), 0.45, "pubmedqa", sample_records())
        manifest = write_manifest(tmp_path, {"a": 1})
        report = tmp_path / "report.html"
        atomic_write_text(report, "<html></html>")  # how report.html is written
    finally:
        os.umask(old)
    for path in (records, manifest, report):
        assert path.stat().st_mode & 0o777 == mode, path
