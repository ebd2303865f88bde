"""Run a two-level sweep of the tiny test model into STORE_DIR (used by test_distributed.py, under
`accelerate launch --cpu --num_processes 2` or plainly)."""

import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]
from conftest import build_tiny_model, build_tiny_tokenizer  # noqa: E402

from lobolib.benchmarks import Item  # noqa: E402
from lobolib.experiment.setting import Setting  # noqa: E402
from lobolib.experiment.store import RecordStore  # noqa: E402
from lobolib.experiment.sweep import run_sweep  # noqa: E402

torch.set_num_threads(1)
tokenizer = build_tiny_tokenizer()
model = build_tiny_model(len(tokenizer))
items = {
    "pubmedqa": [Item(str(i), "pubmedqa", "pubmedqa", f"does drug {i} help?", "aspirin reduces fever " * (i % 4 + 1),
                      ("yes", "no", "maybe"), ("yes", "no", "maybe")[i % 3]) for i in range(11)],
    "mmlu": [Item(f"anatomy/{i}", "mmlu", "anatomy", f"which organ {i}?", "", ("heart", "lung", "liver", "kidney"),
                  "ABCD"[i % 4]) for i in range(7)],
}
run_sweep(model, tokenizer, model_name="tiny", setting=Setting("magnitude", "magnitude", (0.0, 0.5, 0.7)), item_sets=items,
          store=RecordStore(sys.argv[1]), progress=False)
