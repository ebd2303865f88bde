"""Records as curves: each record is put on the curve of the compression setting it belongs to.

A setting's curve holds its own records and the dense records (method "dense"), which every
setting shares as its first point. `x` is where a level sits on the curve's axis, ascending with
compression: the sparsity for pruning, and the share of bits removed, 1 - bits/16, for
quantization (so 16 bits is 0, 4 bits is 0.75).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from lobolib.records import DENSE

DENSE_BITS = 16


@dataclass(frozen=True)
class Curve:
    """A setting as the analysis sees it: its label, its method description and its unit."""

    name: str
    method: str
    unit: str = "sparsity"  # or "bits"


def default_curves(records: pd.DataFrame) -> list[Curve]:
    """One curve per compressed method in the records (a single "dense" one if there is none)."""
    methods = [m for m in dict.fromkeys(records["method"]) if m != DENSE]
    return [Curve(m, m) for m in methods] or [Curve(DENSE, DENSE)]


def assign_settings(records: pd.DataFrame, curves: Sequence[Curve] | None = None) -> pd.DataFrame:
    """The records of each curve, with columns `setting` (the curve's name) and `x`; dense
    records appear once in every curve (at 16 bits on a quantization curve)."""
    curves = list(curves) if curves is not None else default_curves(records)
    parts = []
    for curve in curves:
        part = records[(records["method"] == curve.method) | (records["method"] == DENSE)].copy()
        dense = part["method"] == DENSE
        if curve.unit == "bits":
            part.loc[dense, "level"] = float(DENSE_BITS)
            part["x"] = 1 - part["level"].astype(float) / DENSE_BITS
        else:
            part["x"] = part["level"].astype(float)
        parts.append(part.assign(setting=curve.name))
    if not parts:
        return records.assign(setting=pd.Series(dtype=object), x=pd.Series(dtype=float))
    return pd.concat(parts, ignore_index=True)


def unit_of(frame: pd.DataFrame, setting: str) -> str:
    """"bits" when the setting's levels are bit widths (x differs from the level), else "sparsity"."""
    part = frame[frame["setting"] == setting]
    return "bits" if len(part) and (part["x"] != part["level"]).any() else "sparsity"
