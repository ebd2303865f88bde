"""Simulated weight quantization of a transformer's linear layers, in place (public as
lobolib.quantize).

``quantize(model, bits, method=..., group_size=..., symmetric=..., calibration=...)`` replaces
each weight by its value on a ``bits``-bit integer grid (lobolib.compress.grid: a scale and zero
point per output row and group of ``group_size`` input weights, fp16 scales), in the model's
dtype: the model computes exactly what a kernel reading the integers and scales would.

- ``rtn``: round-to-nearest onto the grid of each group's own range; no calibration.
- ``gptq`` (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
  Pre-trained Transformers"): the OBS sweep of lobolib.compress.obs with the calibration Hessian,
  column by column, each rounding error spread over the columns not yet quantized; groups take
  their grid from their current weights when the sweep reaches them (no act-order), 1%
  dampening. Layer by layer through the shared calibration pass (lobolib.compress.layerwise).

Joint pruning + quantization is lobolib.prune.prune(..., method="sparsegpt", quantize_bits=b).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from lobolib.compress import bits as storage_bits
from lobolib.compress import layerwise, obs
from lobolib.compress.calibration import describe
from lobolib.compress.grid import Grid, check_group_size, fake_quantize, grid_params
from lobolib.compress.magnitude import _checked_weights, prunable_linears, synchronize
from lobolib.compress.methods import QUANT_BITS, QUANT_METHODS, check_quantize_request  # noqa: F401
from lobolib.compress.patterns import row_steps
from lobolib.errors import LoboError


def rtn_(weight: torch.Tensor, grid: Grid) -> None:
    """Round-to-nearest, in place: each row's groups of `grid.group_size` inputs (or the whole row)
    onto their own grid."""
    cols = weight.shape[1]
    group = grid.group_size or cols
    for start, stop in row_steps(weight):
        rows = weight[start:stop].float().reshape(stop - start, cols // group, group)
        scale, zero = grid_params(rows, grid, dim=-1)
        weight[start:stop] = fake_quantize(rows, scale, zero, grid).reshape(stop - start, cols)


def _rtn(model: nn.Module, grid: Grid, options: dict) -> dict:
    for _, module in prunable_linears(model, include_lm_head=options["include_lm_head"]):
        rtn_(module.weight.detach(), grid)
    return {}


def _gptq(model: nn.Module, grid: Grid, options: dict) -> dict:
    if options["include_lm_head"]:
        raise LoboError("include_lm_head=True is for method='rtn' only: GPTQ calibrates the decoder "
                        "layers; set include_lm_head to False")
    targets = {id(module) for _, module in prunable_linears(model)}
    step = obs.ObsStep(targets, sparsity=None, grid=grid, dampening=options["dampening"],
                       block=obs.sweep_block_size(grid.group_size))
    info = layerwise.run(model, options["calibration"], step, offload=options["offload"],
                         batch_size=options["batch_size"])
    return {"calibration": describe(options["calibration"]), "calibration_pass": info,
            "gptq": {"block": step.block, "dampening": step.dampening, "cuda_graphs": step.runner.graphs,
                     "graph_failure": step.runner.failure, "obs_error": step.errors}}


_QUANTIZERS = {"rtn": _rtn, "gptq": _gptq}


@torch.no_grad()
def quantize(model: nn.Module, bits: int, *, method: str = "rtn", group_size: int | None = 128,
             symmetric: bool = False, calibration: torch.Tensor | None = None,
             include_lm_head: bool = False, dampening: float = obs.DAMPENING, offload: str = "auto",
             batch_size: int | None = None) -> dict:
    """Quantize the model's linear layers in place to `bits` (one of QUANT_BITS); returns a report.

    method: "rtn" or "gptq" (needs `calibration`, a LongTensor [n_samples, seq_len]).
    group_size: input weights per scale and zero point (must divide every matrix's input size),
    or None for one per output channel. symmetric: a grid symmetric around 0 (default
    asymmetric). include_lm_head: quantize the output embedding too (rtn only). dampening,
    offload, batch_size: GPTQ's Hessian dampening and the calibration pass's options.

    Report: ``method``, ``bits``, ``group_size``, ``symmetric``, ``include_lm_head``,
    ``matrices``, ``weights``, ``bits_per_weight`` (storage with scales and zero points,
    lobolib.compress.bits), ``seconds``, and for gptq the calibration fingerprint and pass.
    """
    started = time.perf_counter()
    check_quantize_request(method, bits, group_size, calibrated=calibration is not None)
    if not isinstance(symmetric, bool):
        raise LoboError(f"symmetric must be True or False, got {symmetric!r}")
    if isinstance(dampening, bool) or not isinstance(dampening, (int, float)) or not dampening > 0:
        raise LoboError(f"dampening must be a positive fraction of the Hessian's mean diagonal, got {dampening!r}")
    named = _checked_weights(prunable_linears(model, include_lm_head=include_lm_head))
    if not named:
        raise LoboError(f"{type(model).__name__} has no linear layers to quantize (nn.Linear outside the lm_head)")
    if group_size is not None:
        check_group_size(named, group_size)
    if calibration is not None:
        calibration = layerwise.check_tokens(model, calibration)
    grid = Grid(bits, group_size, symmetric)
    options = {"include_lm_head": include_lm_head, "calibration": calibration, "dampening": float(dampening),
               "offload": offload, "batch_size": batch_size}
    extras = _QUANTIZERS[method](model, grid, options)
    synchronize(weight for _, weight in named)
    total = sum(weight.numel() for _, weight in named)
    stored = sum(weight.numel() * storage_bits.quantized(bits, group_size or weight.shape[1])
                 for _, weight in named)
    return {
        "method": method,
        "bits": bits,
        "group_size": group_size,
        "symmetric": symmetric,
        "include_lm_head": include_lm_head,
        "matrices": len(named),
        "weights": total,
        "bits_per_weight": stored / total,
        **extras,
        "seconds": time.perf_counter() - started,
    }
