"""What each compression method is, as data the sweep and the parameters check read without
importing torch: what its levels count, whether its levels nest, whether it needs calibration
data, and whether it takes an N:M pattern."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    unit: str  # "sparsity" (levels in [0, 1)) or "bits"
    nests: bool  # in place from level to level == one-shot at each level
    calibrated: bool  # needs calibration token windows
    patterns: bool  # takes an N:M pattern


METHODS = {
    "magnitude": MethodInfo("sparsity", nests=True, calibrated=False, patterns=True),
}
PATTERNS = ("2:4", "4:8")
SCOPES = ("layer", "global")
QUANT_BITS = (8, 6, 5, 4, 3, 2)
