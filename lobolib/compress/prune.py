"""Pruning a transformer's linear layers: one entry point, one short function per method.

``prune(model, sparsity, method=..., pattern=..., calibration=...)`` validates the request
(lobolib.compress.methods), hands it to the method's function — all share the signature
``(model, request) -> dict of method-specific report fields`` — and reports what was achieved.

Methods (METHODS in lobolib.compress.methods says which nest and which need calibration):

- ``magnitude``: smallest |w| (Han et al. 2015), per matrix or globally, exact under ties
  (lobolib.compress.magnitude); with an N:M pattern, the smallest |w| of every group.
- ``wanda``: smallest |w_ij| * ||x_j||_2 within each output row, x the calibration inputs of the
  layer (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models").
- ``sparsegpt``: layer-wise OBS reconstruction with the Hessian of the calibration inputs; the
  kept weights are updated to make up for the pruned ones (Frantar & Alistarh 2023, "SparseGPT:
  Massive Language Models Can Be Accurately Pruned in One-Shot"). With ``quantize_bits`` the
  kept weights are GPTQ-quantized in the same sweep (the paper's joint sparse + quantized mode).
- ``heads``: whole attention heads removed (lobolib.compress.heads).

Unstructured methods zero exactly ``round(sparsity * n)`` weights of each matrix of n weights
(SparseGPT too: its per-block counts are apportioned so that they add up to that), ties broken
by position; N:M patterns are exact in every group. The calibrated methods run the shared
layer-by-layer pass of lobolib.compress.layerwise: each decoder layer sees the outputs of the
layers before it, already pruned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from lobolib.compress import magnitude as _magnitude_kernel
from lobolib.compress.magnitude import (  # noqa: F401 - public names of lobolib.prune
    CHUNK_ELEMENTS,
    HISTOGRAM_COPIES,
    SCOPES,
    magnitude_prune,
    prunable_linears,
    sparsity_report,
)
from lobolib.compress.methods import (  # noqa: F401
    METHODS, PATTERNS, PRUNE_METHODS, check_prune_request, check_quantize_request)
from lobolib.compress import bits as storage_bits
from lobolib.compress import layerwise, obs
from lobolib.compress.grid import Grid, check_group_size
from lobolib.compress.heads import HeadPruning
from lobolib.compress.calibration import describe
from lobolib.compress.layerwise import ColumnNorms, decoder_layers, layer_linears
from lobolib.compress.patterns import check_groups, prune_nm, prune_rows
from lobolib.errors import LoboError


@dataclass(frozen=True)
class Request:
    """A validated pruning request, as every method function receives it."""

    sparsity: float
    nm: tuple[int, int] | None
    scope: str
    include_lm_head: bool
    calibration: torch.Tensor | None
    options: dict


# ---------------------------------------------------------------------------------------------
# The methods: (model, request) -> report fields


def _magnitude(model: nn.Module, request: Request) -> dict:
    """Magnitude pruning (Han et al. 2015): unstructured via the exact radix-select kernel, or the
    smallest |w| of every N:M group."""
    if request.nm is None:
        summary = magnitude_prune(model, request.sparsity, scope=request.scope,
                                  include_lm_head=request.include_lm_head)
        return {"pruned": summary["pruned"]}
    n, m = request.nm
    for _, module in prunable_linears(model, include_lm_head=request.include_lm_head):
        weight = module.weight.detach()
        prune_nm(weight, lambda a, b, w=weight: w[a:b].abs().float(), n, m)
    return {}


class _Wanda:
    """Wanda's layer step: score |W_ij| * ||X_j||_2, compared within each output row."""

    def __init__(self, request: Request, targets: set[int]):
        self.request, self.targets = request, targets

    def observers(self, index, layer):
        return {name: ColumnNorms(module.in_features, module.weight.device)
                for name, module in layer_linears(layer) if id(module) in self.targets}

    def compress(self, index, layer, observed):
        for name, norms in observed.items():
            weight = layer.get_submodule(name).weight.detach()
            column = norms.sumsq.sqrt()
            score = lambda a, b, w=weight, c=column: w[a:b].abs().float() * c  # noqa: E731
            if self.request.nm is None:
                prune_rows(weight, score, round(self.request.sparsity * weight.numel()))
            else:
                prune_nm(weight, score, *self.request.nm)


def _wanda(model: nn.Module, request: Request) -> dict:
    """Wanda (Sun et al. 2023): per output row, zero the weights of smallest |W_ij| * ||X_j||_2,
    X the calibration inputs of the layer; no weight update. Calibrated layer by layer."""
    return _calibrated(model, request, _Wanda(request, _targets(model, request)))


def _targets(model: nn.Module, request: Request) -> set[int]:
    """ids of the modules to prune; LoboError if one lies outside the decoder layers."""
    if request.include_lm_head:
        raise LoboError("include_lm_head=True is for magnitude pruning only: the calibrated methods "
                        "prune the decoder layers; set include_lm_head to False")
    targets = {id(module) for _, module in prunable_linears(model)}
    inside = {id(module) for layer in decoder_layers(model) for _, module in layer_linears(layer)}
    outside = [name for name, module in prunable_linears(model) if id(module) not in inside]
    if outside:
        raise LoboError(f"{outside[0]} is a linear layer outside the decoder layers, which the "
                        "calibrated methods cannot reach; use method='magnitude'")
    return targets


def _calibrated(model: nn.Module, request: Request, step) -> dict:
    """Run a method's layer step through the calibration pass; report fields."""
    info = layerwise.run(model, request.calibration, step, offload=request.options.get("offload", "auto"),
                         batch_size=request.options.get("batch_size"))
    return {"calibration": describe(request.calibration), "calibration_pass": info}


def _sparsegpt(model: nn.Module, request: Request) -> dict:
    """SparseGPT (Frantar & Alistarh 2023): layer-wise OBS with the calibration Hessian, 128-column
    blocks, 1% dampening (the paper's defaults); with quantize_bits, GPTQ-quantizes the kept
    weights in the same sweep (the paper's joint mode). See lobolib.compress.obs."""
    grid = request.options.get("grid")
    step = obs.ObsStep(_targets(model, request), sparsity=obs.Sparsity(request.sparsity, request.nm),
                       grid=grid, dampening=request.options["dampening"])
    report = _calibrated(model, request, step)
    report["sparsegpt"] = {"block": step.block, "dampening": step.dampening,
                           "cuda_graphs": step.runner.graphs, "graph_failure": step.runner.failure,
                           "obs_error": step.errors}
    if grid is not None:
        report["quantization"] = {"bits": grid.bits, "group_size": grid.group_size, "symmetric": grid.symmetric}
    return report


def _heads(model: nn.Module, request: Request) -> dict:
    """Whole attention heads: each layer loses round(sparsity * heads) query heads of least output
    energy through o_proj on the calibration data (lobolib.compress.heads)."""
    _targets(model, request)
    step = HeadPruning(model, request.sparsity)
    report = _calibrated(model, request, step)
    report["heads"] = step.summary(sum(m.weight.numel() for _, m in prunable_linears(model)))
    return report


_PRUNERS = {"magnitude": _magnitude, "wanda": _wanda, "sparsegpt": _sparsegpt, "heads": _heads}


# ---------------------------------------------------------------------------------------------
# Public API


def _joint_grid(method: str, bits, group_size, symmetric) -> Grid | None:
    """The quantization grid of joint sparsegpt + GPTQ, or None without quantize_bits."""
    if bits is None:
        return None
    if method != "sparsegpt":
        raise LoboError(f"quantize_bits is for joint pruning + quantization with method='sparsegpt', "
                        f"not {method!r}: quantize separately with lobolib.quantize.quantize")
    check_quantize_request("gptq", bits, group_size, calibrated=True)
    if group_size is not None and obs.BLOCK % group_size and group_size % obs.BLOCK:
        raise LoboError(f"joint pruning + quantization needs a group_size dividing {obs.BLOCK} or a "
                        f"multiple of it (SparseGPT's mask blocks), got {group_size}")
    if not isinstance(symmetric, bool):
        raise LoboError(f"symmetric must be True or False, got {symmetric!r}")
    return Grid(bits, group_size, symmetric)


def _check_matrices(model: nn.Module, request: Request) -> list[tuple[str, torch.Tensor]]:
    named = _magnitude_kernel._checked_weights(
        prunable_linears(model, include_lm_head=request.include_lm_head))
    if not named:
        raise LoboError(f"{type(model).__name__} has no prunable linear layers (nn.Linear outside "
                        "the lm_head); pruning needs a transformer with linear projections")
    if request.nm is not None:
        for name, weight in named:
            check_groups(name, weight, request.nm[1])
    grid = request.options.get("grid")
    if grid is not None and grid.group_size is not None:
        check_group_size(named, grid.group_size)
    return named


@torch.no_grad()
def prune(model: nn.Module, sparsity: float, *, method: str = "magnitude", pattern: str | None = None,
          calibration: torch.Tensor | None = None, scope: str = "layer",
          include_lm_head: bool = False, quantize_bits: int | None = None, group_size: int | None = 128,
          symmetric: bool = False, dampening: float = obs.DAMPENING, offload: str = "auto",
          batch_size: int | None = None) -> dict:
    """Prune the model's linear layers in place to `sparsity` with `method`; returns a report.

    method: one of magnitude, wanda, sparsegpt, heads (see the module docstring). pattern: None
    (unstructured) or an N:M pattern of PATTERNS ("2:4", "4:8"), which fixes sparsity at N/M.
    calibration: LongTensor [n_samples, seq_len] of token ids, required by wanda, sparsegpt and
    heads (lobolib.calibration.calibration_tokens). scope: "layer" (each matrix loses the same
    fraction) or, for magnitude only, "global". include_lm_head: prune the output embedding too
    (magnitude only; refused when tied to the input embeddings).

    Joint compression (sparsegpt only): ``quantize_bits`` (one of QUANT_BITS) quantizes the kept
    weights in the same OBS sweep, with ``group_size`` weights per scale (None: per output
    channel; must divide 128 or be a multiple of it) and ``symmetric`` grids, as
    lobolib.quantize does. dampening: SparseGPT's λ as a fraction of mean(diag H) (1%).
    offload, batch_size: where the
    calibration pass keeps its activations and how many samples go per layer forward
    (lobolib.compress.layerwise.run).

    Report: ``method``, ``pattern``, ``scope``, ``sparsity`` (asked), ``include_lm_head``,
    ``matrices``, ``weights`` (their total size), ``zeros`` ({matrix: zeros after pruning}),
    ``total_zeros``, ``achieved`` ({matrix: fraction of zeros}), ``achieved_total``,
    ``bits_per_weight`` (storage with its metadata, lobolib.compress.bits), ``seconds``, plus the
    method's own fields.
    """
    started = time.perf_counter()
    level, nm = check_prune_request(method, sparsity, pattern, scope, calibrated=calibration is not None)
    if not isinstance(include_lm_head, bool):
        raise LoboError(f"include_lm_head must be True or False, got {include_lm_head!r}")
    grid = _joint_grid(method, quantize_bits, group_size, symmetric)
    if isinstance(dampening, bool) or not isinstance(dampening, (int, float)) or not dampening > 0:
        raise LoboError(f"dampening must be a positive fraction of the Hessian's mean diagonal, got {dampening!r}")
    if calibration is not None:
        calibration = layerwise.check_tokens(model, calibration)
    request = Request(level, nm, scope, include_lm_head, calibration,
                      {"offload": offload, "batch_size": batch_size, "grid": grid, "dampening": float(dampening)})
    named = _check_matrices(model, request)
    extras = _PRUNERS[method](model, request)
    _magnitude_kernel.synchronize(weight for _, weight in named)
    zeros = {name: _magnitude_kernel._count_zeros(weight) for name, weight in named}
    total = sum(weight.numel() for _, weight in named)
    stored = sum(weight.numel() * _bits(method, nm, grid, zeros[name] / weight.numel(), weight.shape[1], extras)
                 for name, weight in named)
    return {
        "method": method,
        "pattern": pattern,
        "scope": scope,
        "sparsity": level,
        "include_lm_head": include_lm_head,
        "matrices": len(named),
        "weights": total,
        "zeros": zeros,
        "total_zeros": sum(zeros.values()),
        "achieved": {name: zeros[name] / weight.numel() for name, weight in named},
        "achieved_total": sum(zeros.values()) / total,
        "bits_per_weight": stored / total,
        **extras,
        "seconds": time.perf_counter() - started,
    }


def _bits(method, nm, grid, achieved, in_features, extras) -> float:
    """Storage bits per weight of one pruned matrix (lobolib.compress.bits)."""
    if method == "heads":
        return storage_bits.heads(1 - extras["heads"]["weights_fraction"])
    if grid is not None:
        group = grid.group_size or in_features
        return storage_bits.nm_quantized(*nm, grid.bits, group) if nm else \
            storage_bits.sparse_quantized(achieved, grid.bits, group)
    return storage_bits.nm(*nm) if nm else storage_bits.unstructured(achieved)


