"""Several GPUs: `bench data-parallel` (the sweep over N GPUs against one, in one launch) and
`bench sharded` (Mistral-7B sharded over two GPUs under a dual-T4 memory budget)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from lobolib.compress import prune
from lobolib.errors import LoboError
from lobolib.perf.shapes import GIB, build_model, fill, fmt, rebuild_rotary, timed, write_json
from lobolib.perf.sweep import bench_inputs


def need_gpus(count: int, what: str) -> None:
    """Refuse (LoboError) before any work when fewer than `count` CUDA GPUs are visible."""
    if not torch.cuda.is_available() or torch.cuda.device_count() < count:
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise LoboError(f"{what} needs {count} CUDA GPU(s), found {found}; run it on a GPU machine")


DATA_PARALLEL_LEVELS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)


def bench_data_parallel(*, data_dir=None, tokenizer_dir=None, seed: int = 0, store_dir=None, out=None) -> dict | None:
    """Data-parallel sweep against one GPU, in one launch (`accelerate launch --num_processes N -m
    lobolib bench data-parallel`). The same work both ways: `sweep.run_sweep` over N levels
    (N = processes) into a scratch store, first by the main process alone (`Shard()`, the others
    waiting), then by all N processes (one level each), each time from the same random weights.
    The parallel store is then checked: every item of every cell once, nothing lost or duplicated.
    Returns the result on the main process (None elsewhere)."""
    import shutil
    import tempfile

    from lobolib.experiment.distributed import Shard, barrier, current_shard
    from lobolib.evaluation.evaluate import evaluate
    from lobolib.experiment.setting import Setting
    from lobolib.experiment.store import RecordStore
    from lobolib.experiment.sweep import run_sweep

    need_gpus(1, "bench data-parallel")
    shard = current_shard()
    levels = list(DATA_PARALLEL_LEVELS[:max(shard.world, 2)])
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    model = build_model({}, device, torch.bfloat16)
    fill(model, seed)
    tokenizer, item_sets, prompts = bench_inputs(model, data_dir, tokenizer_dir, seed)
    for benchmark, items in item_sets.items():  # warm-up on every GPU
        evaluate(model, tokenizer, items[:4], model_name="bench", sparsity=0.0, progress=False)
    root = Path(store_dir or Path(tempfile.gettempdir()) / "lobolib-bench-data-parallel")
    if shard.is_main:
        shutil.rmtree(root, ignore_errors=True)

    def sweep(store, on):
        setting = Setting("magnitude", "magnitude", tuple(levels))
        return timed(lambda: run_sweep(model, tokenizer, model_name="bench", setting=setting, item_sets=item_sets,
                                        store=store, progress=False, shard=on), device)

    barrier(shard)
    single_s = sweep(RecordStore(root / "single"), Shard()) if shard.is_main else None
    fill(model, seed)  # unpruned again, identical on every GPU
    barrier(shard)
    store = RecordStore(root / "parallel")
    parallel_s = sweep(store, shard)
    barrier(shard)
    if not shard.is_main:
        return None
    frame = store.read()
    expected = {(level, b, it.id) for level in levels for b, items in item_sets.items() for it in items}
    stored = list(zip(frame["sparsity"], frame["benchmark"], frame["item_id"]))
    questions = len(expected)
    result = {
        "device": f"{shard.world} x {torch.cuda.get_device_name(device)}",
        "date": time.strftime("%Y-%m-%d"),
        "prompts": prompts,
        "items": {b: len(items) for b, items in item_sets.items()},
        "levels": levels,
        "processes": shard.world,
        "single_gpu_questions_per_s": questions / single_s,
        "data_parallel_questions_per_s": questions / parallel_s,
        "data_parallel_speedup": single_s / parallel_s,
        "records_complete": set(stored) == expected and len(stored) == len(expected),
    }
    print("bench data-parallel: " + ", ".join(f"{k} {fmt(v, '.4g') if isinstance(v, float) else v}"
                                               for k, v in result.items()))
    write_json(result, out)
    return result


def bench_sharded(*, max_memory=None, card_gib: float = 15.0, dtype=torch.float16, level: float = 0.5,
                  data_dir=None, tokenizer_dir=None, seed: int = 0, out=None) -> dict:
    """The dual-T4 budget: Mistral-7B sharded over two GPUs by an accelerate device map with
    max_memory 14 GiB each, every GPU left with `card_gib` (a T4's 15 GiB) free by a ballast
    allocation (so the automatic batch size sees a T4's free memory), fp16 (T4s have no bf16). The
    layers are spread evenly over the cards, as `device_map: auto` does in `models.load_model`
    (accelerate's balanced memory), not packed onto the first card. Runs the whole sweep step
    — global pruning, then both benchmarks — and reports peak memory per card."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory
    from transformers import MistralConfig, MistralForCausalLM

    from lobolib.evaluation.evaluate import evaluate

    max_memory = max_memory or {0: "14GiB", 1: "14GiB"}
    cards = sorted(k for k in max_memory if isinstance(k, int))
    need_gpus(len(cards), "bench sharded")
    ballast = []  # what a T4 lacks, held so that free memory looks like a T4's to the batch sizer
    for card in cards:
        free, _ = torch.cuda.mem_get_info(card)
        if free > card_gib * GIB:
            ballast.append(torch.empty(int(free - card_gib * GIB), dtype=torch.uint8, device=card))
    base_gib = {card: torch.cuda.memory_allocated(card) / GIB for card in cards}
    with torch.device("meta"):
        model = MistralForCausalLM(MistralConfig())
    model = model.to(dtype)
    no_split = list(model._no_split_modules)
    balanced = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)
    device_map = infer_auto_device_map(model, max_memory=balanced, dtype=dtype, no_split_module_classes=no_split)
    for name, where in device_map.items():
        module = model.get_submodule(name) if name else model
        module.to_empty(device=torch.device("cuda", where) if isinstance(where, int) else where)
    fill(model, seed)
    rebuild_rotary(model, torch.device("cuda", device_map.get("model.rotary_emb", cards[0])))
    model = dispatch_model(model, device_map=device_map)
    model.eval()
    tokenizer, item_sets, prompts = bench_inputs(model, data_dir, tokenizer_dir, seed)
    print(f"bench sharded: model dispatched over cards {cards}; pruning, then evaluating", flush=True)
    for card in cards:
        torch.cuda.reset_peak_memory_stats(card)
    weights_gib = {card: torch.cuda.memory_allocated(card) / GIB - base_gib[card] for card in cards}
    first = torch.device("cuda", cards[0])
    prune_s = timed(lambda: prune.magnitude_prune(model, level, scope="global"), first)
    prune_peak = {card: torch.cuda.max_memory_allocated(card) / GIB - base_gib[card] for card in cards}
    eval_s = {b: timed(lambda: evaluate(model, tokenizer, items, model_name="bench", sparsity=level,
                                         progress=False), first) for b, items in item_sets.items()}
    result = {
        "device": f"{len(cards)} x {torch.cuda.get_device_name(first)} capped at {card_gib} GiB each",
        "date": time.strftime("%Y-%m-%d"),
        "dtype": str(dtype).replace("torch.", ""),
        "max_memory": {str(k): v for k, v in max_memory.items()},
        "device_map_cards": {str(c): sum(1 for v in device_map.values() if v == c) for c in cards},
        "prompts": prompts,
        "items": {b: len(items) for b, items in item_sets.items()},
        "weights_gib": weights_gib,
        "global_prune_s": prune_s,
        "global_prune_peak_gib": prune_peak,
        "eval_s": eval_s,
        "peak_gib": {card: torch.cuda.max_memory_allocated(card) / GIB - base_gib[card] for card in cards},
        "sparsity_pruned": prune.sparsity_report(model)["pruned"],
    }
    print("bench sharded: " + json.dumps(result, default=str))
    write_json(result, out)
    return result
