"""Data-parallel evaluation: shards cover every item once, and a two-process sweep (accelerate,
CPU/gloo) writes exactly the records a single process writes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lobolib.benchmarks import Item
from lobolib.experiment.distributed import Shard, gather_in_order, shard_indices, shard_items
from lobolib.experiment.store import RecordStore

SCRIPT = Path(__file__).parent / "scripts" / "dp_sweep.py"


def _item(i: int, context_words: int) -> Item:
    return Item(str(i), "pubmedqa", "pubmedqa", "q?", "word " * context_words, ("yes", "no", "maybe"), "yes")


def test_shards_partition_the_items_and_balance_their_size():
    sizes = [5, 90, 7, 60, 61, 3, 88, 30, 31, 2, 95]  # long and short prompts mixed, unevenly
    items = [_item(i, n) for i, n in enumerate(sizes)]
    shards = [shard_items(items, Shard(rank, 3)) for rank in range(3)]
    positions = [p for p, _ in shards]
    assert sorted(sum(positions, [])) == list(range(11))  # every item once
    assert all(p == sorted(p) for p in positions)
    assert max(map(len, positions)) - min(map(len, positions)) <= 1
    for p, chosen in shards:
        assert [it.id for it in chosen] == [str(i) for i in p]
    work = [sum(sizes[i] for i in p) for p in positions]
    assert max(work) - min(work) <= 5  # dealing by position (rank::3) would give 155 / 276 / 41
    assert shard_indices([1, 1, 1, 1], Shard(0, 2)) == [0, 3] and shard_indices([1, 1, 1, 1], Shard(1, 2)) == [1, 2]


def test_single_process_shard_is_everything_and_gather_is_identity():
    items = [_item(i, i) for i in range(4)]
    assert shard_items(items, Shard()) == ([0, 1, 2, 3], items)
    assert gather_in_order(["a", "b"], [0, 1], Shard(), 2) == ["a", "b"]


def _records(root: Path):
    frame = RecordStore(root).read()
    return frame.drop(columns=[c for c in frame.columns if c == "option_logprobs"]).sort_values(
        ["benchmark", "level", "item_id"]).reset_index(drop=True)


@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="accelerate's launcher is not installed")
def test_two_processes_write_the_same_records_as_one(tmp_path):
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    subprocess.run([sys.executable, str(SCRIPT), str(single)], check=True, timeout=300)
    launcher = Path(sys.executable).parent / "accelerate"
    subprocess.run([str(launcher if launcher.exists() else "accelerate"), "launch", "--cpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    str(SCRIPT), str(parallel)], check=True, timeout=300, capture_output=True)
    one, two = _records(single), _records(parallel)
    # three levels: one per process for 0.0 and 0.5, then 0.7 shared item-wise; every item once
    assert len(two) == 3 * (11 + 7)
    assert not two.duplicated(["benchmark", "level", "item_id"]).any()
    assert one.equals(two)
    reports = RecordStore(parallel).read_reports("tiny", "magnitude/layer")
    assert sorted(reports) == ["0.5000", "0.7000"] and RecordStore(parallel).read_reports("tiny", "dense")
    assert reports["0.5000"]["pruned"] == pytest.approx(0.5, abs=0.01)
