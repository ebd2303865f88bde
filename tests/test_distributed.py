"""Data-parallel evaluation: shards cover every item once, and a two-process sweep (accelerate,
CPU/gloo) writes exactly the records a single process writes."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lobolib.distributed import Shard, gather_in_order, shard_items
from lobolib.store import RecordStore

SCRIPT = Path(__file__).parent / "scripts" / "dp_sweep.py"


def test_shards_partition_the_items():
    items = list(range(11))
    shards = [shard_items(items, Shard(rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == items
    assert shards[1] == [1, 4, 7, 10]


def test_single_process_gather_is_identity():
    assert gather_in_order(["a", "b"], Shard(), 2) == ["a", "b"]


def _records(root: Path):
    frame = RecordStore(root).read()
    return frame.drop(columns=[c for c in frame.columns if c == "option_logprobs"]).sort_values(
        ["benchmark", "sparsity", "item_id"]).reset_index(drop=True)


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
    assert len(two) == 2 * (11 + 7)  # two levels, every item exactly once
    assert not two.duplicated(["benchmark", "sparsity", "item_id"]).any()
    assert one.equals(two)
