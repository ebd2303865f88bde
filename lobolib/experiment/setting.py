"""A compression setting: a method with its options, and the levels it is swept through.

A setting has a name (its label in tables and figures) and a canonical description of what it
does to the weights — ``magnitude/layer``, ``magnitude/global/lm_head``,
``wanda/2:4/calib=pubmed``, ``rtn/g128`` — that keys its cells, fills every Record's `method`
and the tables' `method` column. Two settings that do the same thing have the same description.

Levels are sparsities in [0, 1) for pruning methods and bit widths for quantization. Level 0
(and 16 bits) is the uncompressed model, whose cells every setting shares (method "dense").
A setting says whether its levels nest: a nested setting (magnitude) prunes cumulatively, in
place, from one level to the next; the others restore the dense weights before each level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lobolib.compress.methods import METHODS, PATTERNS, QUANT_BITS
from lobolib.errors import LoboError
from lobolib.records import DENSE

DENSE_BITS = 16


@dataclass(frozen=True)
class Calibration:
    """Where a calibration-based method's token windows come from (lobolib.calibration)."""

    source: str = "wikitext2"
    n_samples: int = 128
    seq_len: int = 2048
    seed: int = 0
    data_dir: str | None = None  # pubmedqa-train: the folder of ori_pqal.json + test_ground_truth.json

    def describe(self) -> str:
        """"calib=pubmed", with any option that differs from the papers' 128 x 2048, seed 0."""
        extra = [f"{name}{value}" for name, value, default in (("n", self.n_samples, 128), ("L", self.seq_len, 2048),
                                                                ("seed", self.seed, 0)) if value != default]  # fmt: skip
        return "calib=" + ":".join([_source_name(self.source), *extra])


@dataclass(frozen=True)
class Setting:
    """One compression setting of a run (see the module docstring)."""

    name: str
    method: str
    levels: tuple[float, ...]
    scope: str = "layer"
    include_lm_head: bool = False
    pattern: str | None = None
    calibration: Calibration | None = None
    group_size: int | None = 128
    symmetric: bool = False
    quantize_bits: int | None = None  # SparseGPT only: GPTQ-quantize the kept weights in the same sweep

    @property
    def info(self):
        return METHODS[self.method]

    @property
    def unit(self) -> str:
        """"sparsity" or "bits": what a level counts."""
        return "bits" if self.info.kind == "quantize" else "sparsity"

    @property
    def nests(self) -> bool:
        """Whether level after level in place equals one-shot at each level (magnitude)."""
        return self.info.nests

    @property
    def description(self) -> str:
        """The canonical description: the method, then every option that changes the weights."""
        parts = [self.method]
        if self.method == "magnitude":
            parts.append(self.scope)
        if self.pattern:
            parts.append(self.pattern)
        if self.quantize_bits is not None:
            parts.append(f"gptq{self.quantize_bits}")
        if self.unit == "bits" or self.quantize_bits is not None:
            parts.append("channel" if self.group_size is None else f"g{self.group_size}")
            if self.symmetric:
                parts.append("sym")
        if self.calibration is not None:
            parts.append(self.calibration.describe())
        if self.include_lm_head:
            parts.append("lm_head")
        return "/".join(parts)

    def is_dense(self, level: float) -> bool:
        """Whether `level` leaves the model uncompressed (sparsity 0, or 16 bits)."""
        return level == 0 if self.unit == "sparsity" else level >= DENSE_BITS

    def method_at(self, level: float) -> str:
        """The `method` of a record at `level`: "dense" where nothing is compressed."""
        return DENSE if self.is_dense(level) else self.description

    def cell_level(self, level: float) -> float:
        """The level a cell is stored at: 0 for the dense model (also at 16 bits), else `level`."""
        return 0.0 if self.is_dense(level) else float(level)

    def sparsity_at(self, level: float) -> float:
        """The fraction of weights set to zero at `level`."""
        return float(level) if self.unit == "sparsity" else 0.0


def _source_name(source: str) -> str:
    """A calibration source's short name: the named sources as they are, a file by its name and
    6 hex digits of the SHA-256 of its absolute path (two files of one name stay apart)."""
    import hashlib
    from pathlib import PurePath

    if "/" not in source and "\\" not in source:
        return source
    return f"{PurePath(source).name}@{hashlib.sha256(source.encode('utf-8')).hexdigest()[:6]}"


def check_levels(levels: Sequence, unit: str, where: str) -> tuple[float, ...]:
    """The levels of a setting, checked: sparsities in [0, 1) strictly ascending, or bit widths
    from `QUANT_BITS` (16 for dense) without repeats."""
    values = list(levels)
    if not values:
        raise LoboError(f"{where}: the setting has no levels")
    if unit == "sparsity":
        for value in values:
            check_sparsity(value, where)
        for low, high in zip(values, values[1:]):
            if not high > low:
                raise LoboError(f"{where}: levels must be strictly ascending, but {high} follows {low}")
        return tuple(round(float(v), 10) for v in values)
    allowed = (DENSE_BITS, *QUANT_BITS)
    for value in values:
        if isinstance(value, bool) or value not in allowed:
            raise LoboError(f"{where}: {value!r} bits is not one of {', '.join(map(str, allowed))}")
    if len(set(values)) != len(values):
        raise LoboError(f"{where}: a bit width is listed twice")
    return tuple(float(v) for v in values)


def check_sparsity(value, where: str = "sparsity") -> float:
    """A sparsity in [0, 1): LoboError naming the value that was given otherwise."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LoboError(f"{where}: {value!r} is not a sparsity (a number in [0, 1))")
    if not 0.0 <= value < 1.0:
        raise LoboError(f"{where}: {value!r} is outside [0, 1) (1.0 would remove every weight)")
    return float(value)


def check_method(method: str, pattern: str | None, scope: str, where: str) -> None:
    """Method, pattern and scope must exist and go together."""
    if method not in METHODS:
        raise LoboError(f"{where}.method: {method!r} is not one of {', '.join(METHODS)}")
    if pattern is not None and (pattern not in PATTERNS or not METHODS[method].patterns):
        allowed = ", ".join(PATTERNS) if METHODS[method].patterns else "none"
        raise LoboError(f"{where}.pattern: {pattern!r} does not apply to {method} (patterns: {allowed})")
    if scope not in METHODS[method].scopes:
        raise LoboError(f"{where}.scope: {scope!r} is not one of {', '.join(METHODS[method].scopes)} for {method}")
