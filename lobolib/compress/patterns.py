"""Where the zeros go, given a score per weight: N:M groups, per-row counts, smallest-k of a block.

Every function here is exact: it zeros exactly the number of weights its rule asks for, and
breaks ties in the score by position (lower index first), so a mask never depends on the sort
algorithm or the device.

- N:M (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks"; the sparse tensor core
  layout): in every group of M consecutive weights along a row (the input dimension), the N of
  lowest score are zeroed. "2:4" and "4:8" both give sparsity 1/2.
- Per-row comparison (Wanda, Sun et al. 2023, compares scores within each output row): a matrix
  of r rows loses k weights in all, ``k // r`` per row; the ``k % r`` rows that lose one more are
  those whose next-lowest score is lowest (ties by row). With ``k`` a multiple of ``r`` this is
  Wanda's rule exactly; otherwise the total is still exactly ``k``.
- Smallest-k of a block (SparseGPT's adaptive mask over a block of columns).

Scores come from a callable ``score(start, stop)`` returning float32 scores of rows
``[start, stop)``, so no full-size score matrix is ever held: rows go in chunks of at most
``CHUNK_ELEMENTS`` weights.
"""

from __future__ import annotations

from typing import Callable

import torch

from lobolib.errors import LoboError

CHUNK_ELEMENTS = 1 << 22
"""Most scores held at once (a selection over them takes about 20 bytes each)."""

Score = Callable[[int, int], torch.Tensor]


def row_steps(weight: torch.Tensor):
    """(start, stop) of consecutive row chunks of at most CHUNK_ELEMENTS weights."""
    rows, cols = weight.shape
    step = max(1, CHUNK_ELEMENTS // max(cols, 1))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def check_groups(name: str, weight: torch.Tensor, m: int) -> None:
    """LoboError unless the rows of `weight` split into whole groups of m."""
    if weight.shape[1] % m:
        raise LoboError(f"{name} has {weight.shape[1]} input columns, not a multiple of {m}: an "
                        f"N:{m} pattern needs whole groups of {m}; use unstructured pruning (pattern=None)")


def lowest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """True at the k lowest scores along the last dimension (ties: lower index first).

    On a GPU by a stable sort (radix sort is fast there); elsewhere by selection, which the CPU
    does several times faster than sorting: the k-th value (kthvalue), every score below it, then
    the first of the scores equal to it, by position, until k are taken. Both give the same mask."""
    size = scores.shape[-1]
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= size:
        return torch.ones_like(scores, dtype=torch.bool)
    if scores.is_cuda:
        return _lowest_k_sorted(scores, k)
    kth = torch.kthvalue(scores, k, dim=-1, keepdim=True).values
    below = scores < kth
    tie = scores == kth
    missing = k - below.sum(-1, keepdim=True)
    return below | (tie & (tie.cumsum(-1) <= missing))


def _lowest_k_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    order = torch.sort(scores, dim=-1, stable=True).indices[..., :k]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, order, True)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """True at the n lowest scores of every group of m consecutive columns (ties: lower column)."""
    rows, cols = scores.shape
    return lowest_k(scores.reshape(rows, cols // m, m), n).reshape(rows, cols)


def prune_nm(weight: torch.Tensor, score: Score, n: int, m: int) -> int:
    """Zero, in place, n of every m consecutive weights of each row (lowest score); returns the count."""
    for start, stop in row_steps(weight):
        weight[start:stop].masked_fill_(nm_mask(score(start, stop), n, m), 0)
    return weight.shape[0] * (weight.shape[1] // m) * n


def prune_rows(weight: torch.Tensor, score: Score, k: int) -> int:
    """Zero, in place, exactly k weights, compared within each row (see the module docstring)."""
    rows, cols = weight.shape
    base, extra = divmod(k, rows)
    next_score = torch.full((rows,), float("inf"), device=weight.device)
    next_col = torch.zeros(rows, dtype=torch.int64, device=weight.device)
    for start, stop in row_steps(weight):
        scores = score(start, stop)
        mask = lowest_k(scores, base)
        weight[start:stop].masked_fill_(mask, 0)
        if extra and base < cols:  # the lowest score left in each row (argmin: first on ties)
            next_score[start:stop], next_col[start:stop] = scores.masked_fill(mask, float("inf")).min(1)
    if extra:
        chosen = lowest_k(next_score, extra).nonzero().squeeze(1)
        weight[chosen, next_col[chosen]] = 0
    return k


def smallest_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """True at the k lowest scores of a 2-D block (ties: row-major order)."""
    return lowest_k(scores.reshape(-1), k).reshape(scores.shape)


def nm_groups_exact(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether every group of m consecutive weights of every row holds exactly n zeros."""
    for start, stop in row_steps(weight):
        zeros = (weight[start:stop] == 0).reshape(stop - start, -1, m).sum(-1)
        if not bool((zeros == n).all()):
            return False
    return True
