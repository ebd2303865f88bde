"""What each compression method is, declared without torch (the config validator imports this).

`METHODS[name]` says what a sweep must know before it compresses anything:

- ``nests``: compressing one loaded model in place from level to level (ascending) gives at each
  level what one-shot compression of the dense model gives. Only magnitude pruning nests (zeros
  rank first, see lobolib.compress.magnitude); for every other method the sweep restores the
  dense weights (lobolib.compress.snapshot) before each level.
- ``calibrated``: it needs calibration tokens (lobolib.calibration.calibration_tokens).
- ``kind``: "prune" (lobolib.prune.prune, a sparsity level) or "quantize"
  (lobolib.quantize.quantize, a bit width).
- ``patterns``: it accepts an N:M pattern; ``scopes``: the scopes it accepts.

The ``check_*`` functions validate a request and raise LoboError saying what to fix; prune() and
quantize() call them first, and so can a config validator.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from lobolib.errors import LoboError


@dataclass(frozen=True)
class MethodInfo:
    """A compression method's declaration (see the module docstring)."""

    kind: str
    nests: bool
    calibrated: bool
    patterns: bool
    scopes: tuple[str, ...]
    paper: str


SCOPES = ("layer", "global")
"""Magnitude pruning's scopes: each matrix loses the same fraction, or one ranking over all."""

PATTERNS = ("2:4", "4:8")
"""N:M patterns: in every group of M consecutive weights of a row, exactly N are zero."""

QUANT_BITS = (8, 6, 5, 4, 3, 2)
"""Bit widths quantize() accepts."""

METHODS = {
    "magnitude": MethodInfo("prune", nests=True, calibrated=False, patterns=True, scopes=SCOPES,
                            paper="Han et al. 2015, Learning both Weights and Connections"),
    "wanda": MethodInfo("prune", nests=False, calibrated=True, patterns=True, scopes=("layer",),
                        paper="Sun et al. 2023, A Simple and Effective Pruning Approach for LLMs"),
    "sparsegpt": MethodInfo("prune", nests=False, calibrated=True, patterns=True, scopes=("layer",),
                            paper="Frantar & Alistarh 2023, SparseGPT"),
    "heads": MethodInfo("prune", nests=False, calibrated=True, patterns=False, scopes=("layer",),
                        paper="structured attention-head removal (Michel et al. 2019, Are Sixteen "
                              "Heads Really Better than One?), scored on calibration activations"),
    "rtn": MethodInfo("quantize", nests=False, calibrated=False, patterns=False, scopes=("layer",),
                      paper="round-to-nearest integer quantization (per channel or per group)"),
    "gptq": MethodInfo("quantize", nests=False, calibrated=True, patterns=False, scopes=("layer",),
                       paper="Frantar et al. 2022, GPTQ"),
}

PRUNE_METHODS = tuple(name for name, info in METHODS.items() if info.kind == "prune")
QUANT_METHODS = tuple(name for name, info in METHODS.items() if info.kind == "quantize")


def parse_pattern(pattern) -> tuple[int, int] | None:
    """(N, M) of an N:M pattern of PATTERNS, or None for no pattern; LoboError otherwise."""
    if pattern is None:
        return None
    if pattern not in PATTERNS:
        raise LoboError(f"unknown sparsity pattern {pattern!r}: use one of {', '.join(PATTERNS)} "
                        "(N zeros in every M consecutive weights of a row) or None (unstructured)")
    n, m = (int(part) for part in pattern.split(":"))
    return n, m


def check_sparsity(sparsity) -> float:
    """The sparsity as a float in [0, 1); LoboError for anything else."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise LoboError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    value = float(sparsity)
    if math.isnan(value) or not 0.0 <= value < 1.0:
        raise LoboError(f"sparsity must be in [0, 1) (fraction of weights set to zero), got {sparsity!r}")
    return value


def check_prune_request(method: str, sparsity, pattern=None, scope: str = "layer",
                        calibrated: bool = False) -> tuple[float, tuple[int, int] | None]:
    """Validate a pruning request; returns (sparsity, (N, M) or None).

    `calibrated` says whether calibration tokens were given (methods that need them refuse
    to start without)."""
    if method not in PRUNE_METHODS:
        raise LoboError(f"unknown pruning method {method!r}: use one of {', '.join(PRUNE_METHODS)}")
    info = METHODS[method]
    level = check_sparsity(sparsity)
    nm = parse_pattern(pattern)
    if nm is not None:
        if not info.patterns:
            raise LoboError(f"method {method!r} removes whole heads and takes no N:M pattern; "
                            "set pattern to None")
        n, m = nm
        if not math.isclose(level, n / m, rel_tol=0, abs_tol=1e-9):
            raise LoboError(f"pattern {pattern} zeros {n} of every {m} weights, i.e. sparsity "
                            f"{n / m:g}; got sparsity {level:g}: set sparsity to {n / m:g} or drop the pattern")
    if scope not in SCOPES:
        raise LoboError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    if scope not in info.scopes:
        raise LoboError(f"method {method!r} compares weights within each layer; scope {scope!r} "
                        f"is for magnitude pruning only: use scope='layer'")
    if nm is not None and scope != "layer":
        raise LoboError(f"an N:M pattern fixes the zeros of every group of {nm[1]}; scope "
                        f"{scope!r} does not apply: use scope='layer'")
    if info.calibrated and not calibrated:
        raise LoboError(f"method {method!r} needs calibration tokens: pass calibration= a "
                        "LongTensor [n_samples, seq_len] (lobolib.calibration.calibration_tokens)")
    return level, nm


def check_quantize_request(method: str, bits, group_size=None, calibrated: bool = False) -> None:
    """Validate a quantization request (the group size against a matrix is checked later)."""
    if method not in QUANT_METHODS:
        raise LoboError(f"unknown quantization method {method!r}: use one of {', '.join(QUANT_METHODS)}")
    if isinstance(bits, bool) or bits not in QUANT_BITS:
        raise LoboError(f"bits must be one of {', '.join(map(str, QUANT_BITS))}; got {bits!r}")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                   or group_size < 1):
        raise LoboError(f"group_size must be a positive integer (weights per scale) or None "
                        f"(one scale per output channel); got {group_size!r}")
    if METHODS[method].calibrated and not calibrated:
        raise LoboError(f"method {method!r} needs calibration tokens: pass calibration= a "
                        "LongTensor [n_samples, seq_len] (lobolib.calibration.calibration_tokens)")
