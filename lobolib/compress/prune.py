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
from lobolib.compress.methods import METHODS, PATTERNS, PRUNE_METHODS, check_prune_request  # noqa: F401
from lobolib.compress import layerwise
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


_PRUNERS = {"magnitude": _magnitude, "wanda": _wanda}


# ---------------------------------------------------------------------------------------------
# Public API


def _check_matrices(model: nn.Module, request: Request) -> list[tuple[str, torch.Tensor]]:
    named = _magnitude_kernel._checked_weights(
        prunable_linears(model, include_lm_head=request.include_lm_head))
    if not named:
        raise LoboError(f"{type(model).__name__} has no prunable linear layers (nn.Linear outside "
                        "the lm_head); pruning needs a transformer with linear projections")
    if request.nm is not None:
        for name, weight in named:
            check_groups(name, weight, request.nm[1])
    return named


@torch.no_grad()
def prune(model: nn.Module, sparsity: float, *, method: str = "magnitude", pattern: str | None = None,
          calibration: torch.Tensor | None = None, scope: str = "layer",
          include_lm_head: bool = False, offload: str = "auto", batch_size: int | None = None) -> dict:
    """Prune the model's linear layers in place to `sparsity` with `method`; returns a report.

    method: one of magnitude, wanda, sparsegpt, heads (see the module docstring). pattern: None
    (unstructured) or an N:M pattern of PATTERNS ("2:4", "4:8"), which fixes sparsity at N/M.
    calibration: LongTensor [n_samples, seq_len] of token ids, required by wanda, sparsegpt and
    heads (lobolib.calibration.calibration_tokens). scope: "layer" (each matrix loses the same
    fraction) or, for magnitude only, "global". include_lm_head: prune the output embedding too
    (magnitude only; refused when tied to the input embeddings). offload, batch_size: where the
    calibration pass keeps its activations and how many samples go per layer forward
    (lobolib.compress.layerwise.run).

    Report: ``method``, ``pattern``, ``scope``, ``sparsity`` (asked), ``include_lm_head``,
    ``matrices``, ``weights`` (their total size), ``zeros`` ({matrix: zeros after pruning}),
    ``total_zeros``, ``achieved`` ({matrix: fraction of zeros}), ``achieved_total``,
    ``seconds``, plus the method's own fields.
    """
    started = time.perf_counter()
    level, nm = check_prune_request(method, sparsity, pattern, scope, calibrated=calibration is not None)
    if not isinstance(include_lm_head, bool):
        raise LoboError(f"include_lm_head must be True or False, got {include_lm_head!r}")
    if calibration is not None:
        calibration = layerwise.check_tokens(model, calibration)
    request = Request(level, nm, scope, include_lm_head, calibration,
                      {"offload": offload, "batch_size": batch_size})
    named = _check_matrices(model, request)
    extras = _PRUNERS[method](model, request)
    _synchronize(named)
    zeros = {name: _magnitude_kernel._count_zeros(weight) for name, weight in named}
    total = sum(weight.numel() for _, weight in named)
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
        **extras,
        "seconds": time.perf_counter() - started,
    }


def _synchronize(named: list[tuple[str, torch.Tensor]]) -> None:
    for device in {weight.device for _, weight in named}:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
