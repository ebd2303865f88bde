"""`python -m lobolib bench prune`: one pruning level of a model of the real architecture (random
weights), lobolib's radix-select kernel against a sort-based reference, side by side: seconds,
extra peak memory, exactness of the zero counts, and whether both give the same mask."""

from __future__ import annotations

import torch

from lobolib.compress import prune
from lobolib.perf.shapes import CPU_SHAPE, build_model, device_name, fill, fmt, measure, resolve_device

BENCH_SPARSITY = 0.5


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
    device = resolve_device(device)
    if shape is None:
        shape = {} if device.type == "cuda" else dict(CPU_SHAPE)
    model = build_model(shape, device, dtype)
    sizes = [module.weight.numel() for _, module in prune.prunable_linears(model)]
    _warm_up(device, dtype)
    scopes = {}
    for scope in prune.SCOPES:
        fill(model, seed)
        lobolib_s, lobolib_gib = measure(lambda: prune.magnitude_prune(model, sparsity, scope=scope), device)
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
        fill(model, seed)
        try:
            reference_s, reference_gib = measure(lambda: reference_prune(model, sparsity, scope), device)
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
    result = {
        "device": device_name(device),
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


def format_prune_table(result: dict) -> str:
    """The bench_prune result as a plain-text table."""
    lines = [
        f"bench prune: {result['device']}, {result['dtype']}, shape {result['shape'] or 'Mistral-7B'}, "
        f"{result['weights']:,} prunable weights, one level at sparsity {result['sparsity']}",
        f"{'scope':<7} {'method':<10} {'seconds':>9} {'extra GiB':>10} {'exact zeros':>12} {'same mask':>10}",
    ]
    for scope, row in result["scopes"].items():
        lines.append(
            f"{scope:<7} {'lobolib':<10} {fmt(row['lobolib_s'], '.3f'):>9} "
            f"{fmt(row['lobolib_extra_gib'], '.3f'):>10} {fmt(row['zeros_exact'], ''):>12} {'':>10}"
        )
        lines.append(
            f"{'':<7} {'reference':<10} {fmt(row['reference_s'], '.3f'):>9} "
            f"{fmt(row['reference_extra_gib'], '.3f'):>10} {fmt(row['reference_zeros_exact'], ''):>12} "
            f"{fmt(row['masks_match'], ''):>10}"
        )
        if row["reference_error"]:
            lines.append(f"{'':<7} reference failed: {row['reference_error']}")
    return "\n".join(lines)
