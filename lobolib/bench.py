"""Benchmarks behind `python -m lobolib bench ...`.

`bench_prune`: one pruning level of a model of the real architecture (random weights), lobolib's
radix-select kernel against a sort-based reference, side by side: seconds, extra peak memory,
exactness of the zero counts, and whether both give the same mask.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from lobolib import prune

BENCH_SPARSITY = 0.5
CPU_SHAPE = {
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
}
"""Small enough for CI to run in seconds on a CPU; on CUDA the default is Mistral-7B's shape."""

GIB = 1024**3


# ---------------------------------------------------------------------------------------------
# Model and weights


def _build_model(shape: dict, device: torch.device, dtype: torch.dtype):
    """A MistralForCausalLM of the given shape, allocated on `device` without weight init."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(**shape)
    with torch.device("meta"):
        model = MistralForCausalLM(config)
    model = model.to(dtype=dtype).to_empty(device=device)
    return model.eval()


@torch.no_grad()
def _fill(model, seed: int) -> None:
    """Random weights N(0, 0.02), the same for a given seed (init scale of Mistral)."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for parameter in model.parameters():
        parameter.normal_(0.0, 0.02, generator=generator)


# ---------------------------------------------------------------------------------------------
# Reference implementations (sort / kthvalue), exact, with the same tie-break as lobolib


@torch.no_grad()
def reference_prune(model, sparsity: float, scope: str) -> None:
    """Sort-based magnitude pruning, the usual way: layer = stable argsort of each matrix's |w|;
    global = concatenate every |w|, take the k-th smallest with kthvalue, then zero ties in
    matrix and flat order. Same mask as lobolib's, at the cost of full-size temporaries."""
    weights = [module.weight.detach() for _, module in prune.prunable_linears(model)]
    if scope == "layer":
        for weight in weights:
            flat = weight.view(-1)
            order = torch.argsort(flat.abs(), stable=True)
            flat[order[: round(sparsity * flat.numel())]] = 0
            del order
        return
    magnitudes = torch.cat([weight.abs().view(-1) for weight in weights])
    k = round(sparsity * magnitudes.numel())
    if k == 0:
        return
    threshold = torch.kthvalue(magnitudes, k).values
    ties = k - int((magnitudes < threshold).sum())
    del magnitudes
    for weight in weights:
        flat = weight.view(-1)
        equal = (flat.abs() == threshold).nonzero().squeeze(1)
        flat[flat.abs() < threshold] = 0
        flat[equal[:ties]] = 0
        ties -= min(ties, equal.numel())


# ---------------------------------------------------------------------------------------------
# Measurement


class _RssPeak:
    """Peak resident memory of this process above its level at start, sampled from /proc (Linux).

    Coarse (1 ms sampling, allocator caching), but torch's CPU allocations are invisible to
    tracemalloc. `extra_gib` is None where /proc/self/statm does not exist."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.path = Path("/proc/self/statm")
        self.page = __import__("resource").getpagesize()
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self):
        try:
            return int(self.path.read_text().split()[1]) * self.page
        except (OSError, IndexError, ValueError):
            return None

    def _run(self):
        while not self._stop.is_set():
            rss = self._rss()
            if rss is not None:
                self.peak = max(self.peak, rss)
            time.sleep(self.interval)

    def __enter__(self):
        if self.start is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.start is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss() or 0)

    @property
    def extra_gib(self):
        return None if self.start is None else (self.peak - self.start) / GIB


def _measure(run, device: torch.device) -> tuple[float, float | None]:
    """(seconds, extra peak GiB) of `run()`; CUDA: max_memory_allocated above the start."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        started = time.perf_counter()
        run()
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        return seconds, (torch.cuda.max_memory_allocated(device) - base) / GIB
    with _RssPeak() as peak:
        started = time.perf_counter()
        run()
        seconds = time.perf_counter() - started
    return seconds, peak.extra_gib


@torch.no_grad()
def _mask_fingerprint(model) -> tuple[list[int], int]:
    """Zeros per matrix and a checksum of their positions (wrapping int64 sums of index and
    index squared), computed in chunks: equal fingerprints mean, with near certainty, equal masks."""
    counts, checksum = [], 0
    for _, module in prune.prunable_linears(model):
        flat = module.weight.detach().view(-1)
        zeros = 0
        for start in range(0, flat.numel(), prune.CHUNK_ELEMENTS):
            where = (flat[start:start + prune.CHUNK_ELEMENTS] == 0).nonzero().squeeze(1) + start
            zeros += where.numel()
            checksum = (checksum + int(where.sum()) + 7 * int((where * where).sum())) % (1 << 63)
        counts.append(zeros)
    return counts, checksum


def _exact(counts: list[int], sizes: list[int], sparsity: float, scope: str) -> bool:
    if scope == "layer":
        return all(c == round(sparsity * n) for c, n in zip(counts, sizes))
    return sum(counts) == round(sparsity * sum(sizes))


def _warm_up(device: torch.device, dtype: torch.dtype) -> None:
    """Load the kernels both methods use, on a throwaway model, so timings exclude it."""
    stack = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 64)).to(device, dtype)
    for scope in prune.SCOPES:
        prune.magnitude_prune(stack, 0.3, scope=scope)
        reference_prune(stack, 0.4, scope)


# ---------------------------------------------------------------------------------------------
# Entry point


def bench_prune(device=None, shape=None, *, sparsity: float = BENCH_SPARSITY, seed: int = 0,
                dtype: torch.dtype = torch.bfloat16) -> dict:
    """Time and peak memory of one pruning level, lobolib vs a sort-based reference, per scope.

    device: None = CUDA when available, else CPU. shape: MistralConfig fields; None = the
    defaults of MistralConfig (Mistral-7B) on CUDA, CPU_SHAPE on CPU. Random N(0, 0.02) bf16
    weights, the same seed for every run. Prints a table and returns {device, dtype, shape,
    weights, sparsity, scopes: {layer|global: {lobolib_s, reference_s, lobolib_extra_gib,
    reference_extra_gib, zeros_exact, reference_zeros_exact, masks_match, reference_error}}}.
    Extra memory is CUDA max_memory_allocated above the start, or sampled RSS on CPU (coarse).
    """
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if shape is None:
        shape = {} if device.type == "cuda" else dict(CPU_SHAPE)
    model = _build_model(shape, device, dtype)
    sizes = [module.weight.numel() for _, module in prune.prunable_linears(model)]
    _warm_up(device, dtype)
    scopes = {}
    for scope in prune.SCOPES:
        _fill(model, seed)
        lobolib_s, lobolib_gib = _measure(lambda: prune.magnitude_prune(model, sparsity, scope=scope), device)
        counts, checksum = _mask_fingerprint(model)
        row = {
            "lobolib_s": lobolib_s,
            "lobolib_extra_gib": lobolib_gib,
            "zeros_exact": _exact(counts, sizes, sparsity, scope),
            "reference_s": None,
            "reference_extra_gib": None,
            "reference_zeros_exact": None,
            "masks_match": None,
            "reference_error": None,
        }
        _fill(model, seed)
        try:
            reference_s, reference_gib = _measure(lambda: reference_prune(model, sparsity, scope), device)
        except (torch.OutOfMemoryError, RuntimeError) as error:  # report it, keep benchmarking
            row["reference_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            ref_counts, ref_checksum = _mask_fingerprint(model)
            row.update(
                reference_s=reference_s,
                reference_extra_gib=reference_gib,
                reference_zeros_exact=_exact(ref_counts, sizes, sparsity, scope),
                masks_match=(ref_counts, ref_checksum) == (counts, checksum),
            )
        scopes[scope] = row
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "device": f"{device} ({name})",
        "dtype": str(dtype).replace("torch.", ""),
        "shape": dict(shape),
        "weights": sum(sizes),
        "sparsity": sparsity,
        "scopes": scopes,
    }
    print(format_prune_table(result))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _fmt(value, spec: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def format_prune_table(result: dict) -> str:
    """The bench_prune result as a plain-text table."""
    lines = [
        f"bench prune: {result['device']}, {result['dtype']}, shape {result['shape'] or 'Mistral-7B'}, "
        f"{result['weights']:,} prunable weights, one level at sparsity {result['sparsity']}",
        f"{'scope':<7} {'method':<10} {'seconds':>9} {'extra GiB':>10} {'exact zeros':>12} {'same mask':>10}",
    ]
    for scope, row in result["scopes"].items():
        lines.append(
            f"{scope:<7} {'lobolib':<10} {_fmt(row['lobolib_s'], '.3f'):>9} "
            f"{_fmt(row['lobolib_extra_gib'], '.3f'):>10} {_fmt(row['zeros_exact'], ''):>12} {'':>10}"
        )
        lines.append(
            f"{'':<7} {'reference':<10} {_fmt(row['reference_s'], '.3f'):>9} "
            f"{_fmt(row['reference_extra_gib'], '.3f'):>10} {_fmt(row['reference_zeros_exact'], ''):>12} "
            f"{_fmt(row['masks_match'], ''):>10}"
        )
        if row["reference_error"]:
            lines.append(f"{'':<7} reference failed: {row['reference_error']}")
    return "\n".join(lines)
