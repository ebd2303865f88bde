"""`python -m lobolib bench methods`: what one level of each compression method costs to compute.

On a random-weight model of the real architecture (Mistral-7B's shape, bf16, one GPU; a small
shape on the CPU) with random calibration token ids (128 sequences of 2,048 tokens on a GPU),
each method is applied once, through the library's API, to a freshly built model:

* pruning, `lobolib.prune.prune(model, 0.5, method=..., pattern=None | "2:4", calibration=...)`:
  magnitude (Han et al. 2015), Wanda (Sun et al. 2023), SparseGPT (Frantar & Alistarh 2023),
  unstructured and 2:4, and attention heads;
* quantization to 4 bits, `lobolib.quantize.quantize(model, 4, method=..., group_size=128,
  calibration=...)`: round-to-nearest and GPTQ (Frantar et al. 2022).

For each: seconds, the peak memory above the model and calibration data (CUDA's
max_memory_allocated, or sampled RSS on the CPU), and — for the methods that run the model over
the calibration data — the FLOP bound of that forward pass (2 x matmul parameters x calibration
tokens / the measured matmul peak) beside the time; and the full paper sweep projected per
method: 2 models x 20 levels x (this level's time + one level's evaluation of both benchmarks).
The evaluation time is not measured here: it comes from a `bench sweep` result (`--sweep-json`,
its per-question seconds times the paper's item counts) or is given in seconds
(`--eval-seconds`); without either the projection is null.

Each method first runs once on a tiny model (loading its kernels, and finding out whether the
API offers it: a method the library lacks gets a row saying why, not a crash).
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lobolib.errors import LoboError
from lobolib.perf.shapes import (CPU_SHAPE, build_model, device_name, fill, fmt, matmul_flops, measure,
                                 resolve_device, write_json)
from lobolib.perf.sweep import PAPER_ITEMS, PAPER_RUNS

LEVEL = 0.5  # sparsity of the pruning methods' level
BITS = 4  # bits of the quantization methods' level
GROUP_SIZE = 128
GPU_CALIBRATION = (128, 2048)  # sequences x tokens
CPU_CALIBRATION = (4, 32)
PROBE_SHAPE = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "vocab_size": 256}


@dataclass(frozen=True)
class Method:
    """One method at one level: `api` is "prune" (`lobolib.prune.prune(model, LEVEL, ...)`) or
    "quantize" (`lobolib.quantize.quantize(model, BITS, ...)`), `options` its keyword arguments;
    `calibrated` methods get the calibration token ids."""

    name: str
    api: str
    options: dict = field(default_factory=dict)
    calibrated: bool = True

    def function(self):
        """The library function this method calls, or why there is none on this branch."""
        module_name = {"prune": "lobolib.prune", "quantize": "lobolib.quantize"}[self.api]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return f"there is no {module_name} on this branch (merge the compression methods)"
        found = getattr(module, self.api, None)
        return found if callable(found) else f"{module_name} has no {self.api}() on this branch (merge the compression methods)"

    def apply(self, function, model, calibration: torch.Tensor) -> None:
        extra = {"calibration": calibration} if self.calibrated else {}
        function(model, LEVEL if self.api == "prune" else BITS, **self.options, **extra)


METHODS = (
    Method("magnitude", "prune", {"method": "magnitude"}, calibrated=False),
    Method("wanda", "prune", {"method": "wanda"}),
    Method("wanda_2:4", "prune", {"method": "wanda", "pattern": "2:4"}),
    Method("sparsegpt", "prune", {"method": "sparsegpt"}),
    Method("sparsegpt_2:4", "prune", {"method": "sparsegpt", "pattern": "2:4"}),
    Method("heads", "prune", {"method": "heads"}),
    Method("rtn4", "quantize", {"method": "rtn", "group_size": GROUP_SIZE}, calibrated=False),
    Method("gptq4", "quantize", {"method": "gptq", "group_size": GROUP_SIZE}),
)
METHOD_NAMES = tuple(m.name for m in METHODS)
ROW_KEYS = ("call", "unavailable", "error", "seconds", "extra_peak_gib", "calibration_tokens", "forward_bound_s",
            "time_over_bound", "projected_sweep_minutes")


def _chosen(names) -> list[Method]:
    if names is None:
        return list(METHODS)
    unknown = [name for name in names if name not in METHOD_NAMES]
    if unknown:
        raise LoboError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_NAMES)}")
    return [m for m in METHODS if m.name in names]


def evaluation_seconds(eval_seconds=None, sweep_json=None) -> tuple[float | None, str]:
    """(seconds one paper level's evaluation of both benchmarks takes, where the figure comes
    from): `eval_seconds` as given, or a `bench sweep` result's per-question seconds times the
    paper's items (PubMedQA 1,000, MMLU 762), or (None, why) when neither is given."""
    if eval_seconds is not None and sweep_json is not None:
        raise LoboError("give --eval-seconds or --sweep-json, not both")
    if eval_seconds is not None:
        if not eval_seconds > 0:
            raise LoboError(f"--eval-seconds must be a positive number of seconds, got {eval_seconds}")
        return float(eval_seconds), "given (--eval-seconds)"
    if sweep_json is None:
        return None, "no evaluation time given (--sweep-json from `bench sweep`, or --eval-seconds)"
    path = Path(sweep_json)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        per_question = result["seconds_per_question"]
        seconds = sum(per_question[b] * n for b, n in PAPER_ITEMS.items())
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LoboError(f"{path} is not a `bench sweep` result with seconds_per_question per benchmark "
                        f"({type(error).__name__}: {error})") from None
    return seconds, f"{path} ({result.get('device')}, {result.get('date')}): seconds_per_question x the paper's items"


def _call_text(method: Method) -> str:
    options = ", ".join(f"{k}={v!r}" for k, v in method.options.items())
    extra = ", calibration=ids" if method.calibrated else ""
    level = LEVEL if method.api == "prune" else BITS
    return f"lobolib.{method.api}.{method.api}(model, {level}, {options}{extra})"


def _probe(method: Method, device: torch.device):
    """(function, None) when `method` runs on a tiny model on `device`, else (None, why)."""
    function = method.function()
    if isinstance(function, str):
        return None, function
    model = build_model(PROBE_SHAPE, device, torch.bfloat16)
    fill(model, 0)
    calibration = torch.randint(0, PROBE_SHAPE["vocab_size"], (2, 16), device=device)
    try:
        method.apply(function, model, calibration)
    except Exception as error:  # noqa: BLE001 - whatever the method raises is the row's reason
        return None, f"{_call_text(method)} failed on a tiny model: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    finally:
        del model
    return function, None


@torch.no_grad()
def bench_methods(device=None, shape=None, *, methods=None, calibration=None, eval_seconds=None, sweep_json=None,
                  seed: int = 0, out=None) -> dict:
    """Seconds, extra peak memory and calibration-forward FLOP bound of one level of each method
    (see the module docstring), and the paper sweep projected per method.

    device None: CUDA when available (Mistral-7B's shape), else the CPU with a small shape.
    methods: names from METHOD_NAMES (None: all). calibration: (sequences, tokens) of random ids
    (None: 128 x 2048 on CUDA, 4 x 32 on the CPU). eval_seconds / sweep_json: where one level's
    evaluation time comes from (`evaluation_seconds`). Prints a table; returns {device, date,
    torch, dtype, shape, note, calibration, matmul_parameters, peak_flops_measured,
    eval_seconds_per_level, eval_source, paper_runs, methods: {name: row}}, each row with the keys
    of ROW_KEYS; writes it to `out` (JSON) when given. LoboError before any work when none of the
    chosen methods is available."""
    chosen = _chosen(methods)
    eval_s, eval_source = evaluation_seconds(eval_seconds, sweep_json)
    device = resolve_device(device)
    on_gpu = device.type == "cuda"
    shape = dict(shape if shape is not None else ({} if on_gpu else CPU_SHAPE))
    sequences, tokens = calibration or (GPU_CALIBRATION if on_gpu else CPU_CALIBRATION)
    rows = {}
    functions = {}
    for method in chosen:
        rows[method.name] = dict.fromkeys(ROW_KEYS)
        rows[method.name]["call"] = _call_text(method)
        functions[method.name], rows[method.name]["unavailable"] = _probe(method, device)
    if all(row["unavailable"] for row in rows.values()):
        by_reason = {}
        for name, row in rows.items():
            by_reason.setdefault(row["unavailable"], []).append(name)
        reasons = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in by_reason.items())
        raise LoboError(f"no compression method to time: {reasons}")
    peak = matmul_flops(device)
    params = None
    for method in chosen:
        row = rows[method.name]
        if row["unavailable"]:
            continue
        print(f"bench methods: {method.name} ...", flush=True)
        model = build_model(shape, device, torch.bfloat16)
        fill(model, seed)
        params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
        generator = torch.Generator(device=device).manual_seed(seed)
        ids = torch.randint(0, model.config.vocab_size, (sequences, tokens), device=device, generator=generator)
        try:
            row["seconds"], row["extra_peak_gib"] = measure(lambda: method.apply(functions[method.name], model, ids),
                                                            device)
        except Exception as error:  # noqa: BLE001 - reported in the row, the other methods still run
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        del model, ids
        if on_gpu:
            torch.cuda.empty_cache()
        if row["seconds"] is None:
            continue
        if method.calibrated:
            row["calibration_tokens"] = sequences * tokens
            row["forward_bound_s"] = 2 * params * sequences * tokens / peak
            row["time_over_bound"] = row["seconds"] / row["forward_bound_s"]
        if eval_s is not None:
            row["projected_sweep_minutes"] = PAPER_RUNS * (row["seconds"] + eval_s) / 60
    result = {
        "device": device_name(device),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "dtype": "bfloat16",
        "shape": shape or "MistralConfig() defaults (Mistral-7B)",
        "note": None if on_gpu else "CPU run with a small shape: exercises the code, says nothing about GPU speed",
        "calibration": {"sequences": sequences, "tokens": tokens, "ids": "uniform random"},
        "matmul_parameters": params,
        "peak_flops_measured": peak,
        "eval_seconds_per_level": eval_s,
        "eval_source": eval_source,
        "paper_runs": PAPER_RUNS,
        "methods": rows,
    }
    print(format_methods_table(result))
    write_json(result, out)
    return result


def format_methods_table(result: dict) -> str:
    """The bench_methods result as plain text."""
    lines = [f"bench methods: {result['device']}, {result['dtype']}, shape {result['shape']}, calibration "
             f"{result['calibration']['sequences']} x {result['calibration']['tokens']} tokens; evaluation per level: "
             f"{fmt(result['eval_seconds_per_level'], '.4g')} s ({result['eval_source']})"]
    if result["note"]:
        lines.append(f"note: {result['note']}")
    lines.append(f"{'method':<15} {'seconds':>9} {'extra GiB':>10} {'bound s':>9} {'x bound':>8} {'sweep min':>10}")
    for name, row in result["methods"].items():
        if row["unavailable"] or row["error"]:
            lines.append(f"{name:<15} {'unavailable' if row['unavailable'] else 'failed'}: "
                         f"{row['unavailable'] or row['error']}")
            continue
        lines.append(f"{name:<15} {fmt(row['seconds'], '.3f'):>9} {fmt(row['extra_peak_gib'], '.3f'):>10} "
                     f"{fmt(row['forward_bound_s'], '.3g'):>9} {fmt(row['time_over_bound'], '.3g'):>8} "
                     f"{fmt(row['projected_sweep_minutes'], '.4g'):>10}")
    return "\n".join(lines)
