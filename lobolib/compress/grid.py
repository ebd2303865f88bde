"""The integer grid of simulated quantization: scale and zero point per row of a group, and
round-to-nearest onto it.

A group of weights (one row of ``group_size`` consecutive input weights, or a whole row per
channel) gets ``b``-bit levels ``q in [0, 2^b - 1]`` and the values ``(q - zero) * scale``, as
GPTQ's quantizer (Frantar et al. 2022, ``quant.py``) defines them:

- asymmetric (default): the range ``[min(x, 0), max(x, 0)]`` in ``2^b - 1`` steps, ``zero =
  round(-min / scale)``;
- symmetric: ``[-m, m]`` with ``m = max |x|``, ``zero = 2^(b-1)``.

Either way 0 lies on the grid, so pruned weights stay exactly zero when quantized. The scale is
stored as fp16 (and the integer zero point is exact in fp16): the values are computed from the
fp16 scale, so they are exactly what a kernel reading fp16 scales and b-bit integers would
produce. A group holds at most ``2^b`` distinct values.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch

from lobolib.errors import LoboError

FP16_TINY = 2.0 ** -24
"""Smallest positive fp16 (subnormal): the floor of a stored scale."""
FP16_MAX = 65504.0


@dataclass(frozen=True)
class Grid:
    """A quantization grid: bit width, weights per scale (None: one per row), symmetry."""

    bits: int
    group_size: int | None
    symmetric: bool = False

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1


def grid_params(x: torch.Tensor, grid: Grid, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) of the groups of `x` reduced along `dim` (kept as a size-1 dimension), fp32
    tensors holding fp16-exact values."""
    x = x.float()
    low = x.amin(dim, keepdim=True).clamp(max=0)
    high = x.amax(dim, keepdim=True).clamp(min=0)
    if grid.symmetric:
        high = torch.maximum(-low, high)
        low = -high
    empty = (low == 0) & (high == 0)
    low = torch.where(empty, -1.0, low)
    high = torch.where(empty, 1.0, high)
    scale = ((high - low) / grid.levels).clamp(FP16_TINY, FP16_MAX).half().float()
    if grid.symmetric:
        zero = torch.full_like(scale, float((grid.levels + 1) // 2))
    else:
        zero = torch.round(-low / scale).clamp(0, grid.levels)
    return scale, zero


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, grid: Grid,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Round `x` (fp32) to the nearest grid value ``(clamp(round(x / scale) + zero) - zero) * scale``."""
    q = torch.div(x, scale, out=out)
    torch.round(q, out=q)  # (in-place round_ runs ~1000x slower on some CPU builds)
    q.add_(zero).clamp_(0, grid.levels).sub_(zero).mul_(scale)
    return q


def check_group_size(named_weights, group_size: int) -> None:
    """LoboError unless `group_size` divides every matrix's input features (row length)."""
    for name, weight in named_weights:
        if weight.shape[1] % group_size:
            common = math.gcd(*(w.shape[1] for _, w in named_weights))
            fits = [g for g in (256, 128, 64, 32, 16) if common % g == 0]
            hint = f"e.g. {fits[0]}" if fits else "a divisor of every input size"
            raise LoboError(f"group_size {group_size} does not divide the {weight.shape[1]} input features "
                            f"of {name}; use a group size that divides every matrix's inputs ({hint}), "
                            "or None for one scale per output channel")
