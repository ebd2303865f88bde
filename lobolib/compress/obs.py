"""The Optimal Brain Surgeon machinery shared by SparseGPT and GPTQ, in fp32.

For a linear layer with calibration inputs X ([in_features, tokens]) the layer-wise
reconstruction error ||W X - Ŵ X||² has the Hessian ``H = 2 X Xᵀ / n`` (one per input; linears
fed the same input share it). Both methods (Frantar & Alistarh 2023, SparseGPT; Frantar et al.
2022, GPTQ; the same structure as their reference ``fasterprune`` / ``fasterquant``) then:

1. dampen: ``H += λ I`` with ``λ = dampening * mean(diag H)`` (paper default 1%); an input
   never active (``H_jj = 0``) gets ``H_jj = 1`` (its weights are kept, not zeroed as in the
   reference code, so the pruned counts stay exact);
2. factor: ``U`` = the upper Cholesky factor of ``H⁻¹`` (``H⁻¹ = Uᵀ U``); row j of U holds the
   OBS update of the columns after j once columns before j are fixed;
3. sweep the input columns in order, in blocks of ``BLOCK`` = 128: inside a block, column i is
   fixed to q (pruned to 0, and/or rounded to the quantization grid), its error
   ``e = (w_i - q) / U_ii`` is spread over the block's later columns (``w_j -= e U_ij``); after
   the block, all later columns get the block's errors at once (``W[:, after] -= E U[block,
   after]``, one matrix product: the lazy batch update).

SparseGPT's mask: unstructured, chosen at the start of each 128-column block as the smallest
``w² / U_ii²`` over that block (the paper's adaptive mask selection, block size 128); each block
of a matrix zeros its share of ``round(s * n)``, apportioned so that the shares add up exactly.
N:M: chosen every M columns, inside the sweep, from the current (updated) weights.
GPTQ's grid (lobolib.compress.grid): per row, or per group of ``group_size`` columns, its scale
and zero point taken from the group's current weights when the sweep reaches the group's first
column. Joint pruning + quantization (the SparseGPT paper's 50% + 4-bit): both in one sweep, the
mask first, then the kept weights rounded.

Speed: matrices sharing an input are swept together as one stacked matrix (rows of q/k/v; of
gate/up). The sweep runs on the transposed matrix (column i of W = a contiguous row). The
128-column inner loop is a few small kernels per column, launch-bound on a GPU: on CUDA each
block shape is captured once as a CUDA graph and replayed (``BlockRunner``), with the eager loop
as fallback (and on CPU).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from lobolib.compress.grid import Grid, fake_quantize, grid_params
from lobolib.compress.layerwise import layer_linears
from lobolib.compress.patterns import smallest_mask
from lobolib.errors import LoboError

BLOCK = 128
DAMPENING = 0.01
DAMPENING_RETRIES = 4
"""Times the dampening is raised tenfold when H + λI is not positive definite in fp32."""


# ---------------------------------------------------------------------------------------------
# Hessian


class Hessian:
    """Observer accumulating ``X Xᵀ`` of a linear layer's inputs in fp32 (``matrix()`` = 2XXᵀ/n)."""

    def __init__(self, features: int, device):
        self.sum = torch.zeros(features, features, dtype=torch.float32, device=device)
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        _add_gram(self.sum, x)
        self.tokens += x.shape[0]

    def matrix(self) -> torch.Tensor:
        """2 X Xᵀ / n, in place of the sum (the observer is spent)."""
        return self.sum.mul_(2.0 / max(self.tokens, 1))


def _add_gram(acc: torch.Tensor, x: torch.Tensor) -> None:
    """acc += xᵀ x in fp32. 16-bit inputs are exact in TF32 (8- and 11-bit significands fit in its
    11), so on a GPU they go through bf16/fp16 tensor cores with fp32 output, or TF32."""
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        try:
            acc.add_(torch.mm(x.t(), x, out_dtype=torch.float32))
            return
        except (TypeError, RuntimeError):
            pass
    xf = x.float()
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        allowed = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            acc.addmm_(xf.t(), xf)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = allowed
    else:
        acc.addmm_(xf.t(), xf)


def inverse_factor(H: torch.Tensor, dampening: float = DAMPENING) -> torch.Tensor:
    """U, the upper Cholesky factor of (H + λI)⁻¹, λ = dampening * mean(diag H); H is overwritten.

    Raises the dampening tenfold (up to DAMPENING_RETRIES times) if fp32 Cholesky fails."""
    diagonal = H.diagonal()
    diagonal[diagonal == 0] = 1.0
    damp = dampening * float(diagonal.mean())
    base = diagonal.clone()
    for _ in range(DAMPENING_RETRIES + 1):
        diagonal.copy_(base + damp)
        lower, info = torch.linalg.cholesky_ex(H)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            del lower
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
        damp *= 10
    raise LoboError("the calibration Hessian is not positive definite even with 10^4 times the "
                    "dampening; use more calibration samples or raise dampening")


# ---------------------------------------------------------------------------------------------
# The sweep


@dataclass(frozen=True)
class Sparsity:
    """What the sweep prunes: a fraction (unstructured) or an N:M pattern."""

    fraction: float
    nm: tuple[int, int] | None = None


@dataclass(frozen=True)
class BlockSpec:
    """Everything that fixes the work of one block (and so one captured graph)."""

    nm: tuple[int, int] | None
    grid: Grid | None
    group_in_block: int | None  # group size when groups start inside the block


def _lowest_along_rows(scores: torch.Tensor, n: int, earlier: torch.Tensor) -> torch.Tensor:
    """True at the n lowest of each column of `scores` [m, r] (ties: lower row), by ranks (no
    sort, so it captures in a CUDA graph); earlier[j, k] = k < j."""
    a, b = scores.unsqueeze(1), scores.unsqueeze(0)  # a[j], b[k]
    rank = ((b < a) | ((b == a) & earlier)).sum(1)
    return rank < n


def sweep_block(W1, U1, mask, scale, zero, Q1, E1, spec: BlockSpec) -> None:
    """The in-block OBS sweep on transposed columns: W1 [width, rows] (updated in place), U1 the
    block of U, mask [width, rows] (True = pruned; filled here for N:M), scale/zero [rows] of
    the current group; writes the fixed columns to Q1 and their scaled errors to E1."""
    width = W1.shape[0]
    d = U1.diagonal()
    if spec.nm is not None:
        n, m = spec.nm
        earlier = torch.ones(m, m, dtype=torch.bool, device=W1.device).tril(-1).unsqueeze(-1)
    for i in range(width):
        if spec.nm is not None and i % m == 0:
            scores = W1[i:i + m].square() / d[i:i + m, None].square()
            mask[i:i + m] = _lowest_along_rows(scores, n, earlier)
        if spec.group_in_block is not None and i % spec.group_in_block == 0:
            scale, zero = (p.reshape(-1) for p in grid_params(W1[i:i + spec.group_in_block], spec.grid, dim=0))
        w, q = W1[i], Q1[i]
        q.copy_(w)
        if mask is not None:
            q.masked_fill_(mask[i], 0.0)
        if spec.grid is not None:
            fake_quantize(q, scale, zero, spec.grid, out=q)
        torch.sub(w, q, out=E1[i]).div_(d[i])
        if i + 1 < width:  # a rank-1 update as a matrix product (addr_ is ~10x slower on CPUs)
            W1[i + 1:].addmm_(U1[i, i + 1:, None], E1[i:i + 1], alpha=-1)


@contextmanager
def _single_thread(on: bool):
    """One intra-op thread while `on`: the eager loop's ops are so small that OpenMP's fork/join
    costs more than they do (3-6x slower with 2 threads on a shared 2-core CPU)."""
    threads = torch.get_num_threads()
    if on and threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


class BlockRunner:
    """Runs sweep_block eagerly, or on CUDA replays it from a graph captured once per block shape
    (the loop's ~5-12 small kernels per column then cost no Python or launch overhead). A new
    graph's first replay is checked against the eager loop; any capture error or mismatch turns
    graphs off for the rest of the run (``failure`` says why)."""

    def __init__(self, graphs: bool = True):
        self.graphs, self.cache, self.failure = graphs, {}, None

    def __call__(self, W1, U1, mask, scale, zero, spec: BlockSpec):
        if spec.nm is not None and mask is None:
            mask = torch.zeros(W1.shape, dtype=torch.bool, device=W1.device)
        if not self._use_graphs(W1):
            Q1, E1 = torch.empty_like(W1), torch.empty_like(W1)
            with _single_thread(W1.device.type == "cpu"):
                sweep_block(W1, U1, mask, scale, zero, Q1, E1, spec)
            return Q1, E1
        key = (tuple(W1.shape), W1.device, spec, mask is not None, scale is not None)
        entry = self.cache.get(key)
        if entry is None:
            try:
                entry = self._capture(W1, U1, mask, scale, zero, spec)
                self._check(entry, W1, U1, mask, scale, zero, spec)
            except Exception as err:  # noqa: BLE001 - any capture failure: run eagerly from now on
                self.graphs, self.failure = False, f"{type(err).__name__}: {err}"
                return self(W1, U1, mask, scale, zero, spec)
            self.cache[key] = entry
        return self._replay(entry, W1, U1, mask, scale, zero)

    def _use_graphs(self, W1) -> bool:
        return self.graphs and W1.is_cuda

    @staticmethod
    def _replay(entry, *values):
        inputs, graph, outputs = entry
        for static, value in zip(inputs, values):
            if static is not None:
                static.copy_(value)
        graph.replay()
        return outputs

    def _check(self, entry, W1, U1, mask, scale, zero, spec) -> None:
        """The first replay of a new graph must match the eager loop on the same block."""
        eager = [None if t is None else t.clone() for t in (W1, U1, mask, scale, zero)]
        Q1, E1 = torch.empty_like(W1), torch.empty_like(W1)
        sweep_block(*eager, Q1, E1, spec)
        Qg, Eg = self._replay(entry, W1, U1, mask, scale, zero)
        if not (torch.allclose(Qg, Q1, rtol=1e-5, atol=1e-6) and torch.allclose(Eg, E1, rtol=1e-5, atol=1e-6)):
            raise RuntimeError("the captured block differs from the eager loop")

    @staticmethod
    def _capture(W1, U1, mask, scale, zero, spec):
        inputs = [None if t is None else t.clone() for t in (W1, U1, mask, scale, zero)]
        outputs = (torch.empty_like(W1), torch.empty_like(W1))
        side = torch.cuda.Stream(W1.device)
        side.wait_stream(torch.cuda.current_stream(W1.device))
        with torch.cuda.stream(side):  # warm-up (workspaces, lazy inits) outside the capture
            sweep_block(*[None if t is None else t.clone() for t in inputs], *outputs, spec)
        torch.cuda.current_stream(W1.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            sweep_block(*inputs, *outputs, spec)
        return inputs, graph, outputs


def sweep(Wt: torch.Tensor, U: torch.Tensor, segments: list[tuple[int, int]], *,
          sparsity: Sparsity | None = None, grid: Grid | None = None, block: int = BLOCK,
          runner: BlockRunner | None = None) -> torch.Tensor:
    """Prune and/or quantize, in place, the transposed fp32 matrix Wt [in_features, rows] by the
    OBS sweep (see the module docstring); `segments` are the (start, stop) columns of Wt that
    belong to each stacked matrix (an unstructured mask counts per matrix). Returns the OBS
    error per row, sum of (w - q)² / U_ii² / 2."""
    cols, rows = Wt.shape
    runner = runner or BlockRunner(graphs=False)
    diagonal = U.diagonal()
    group = grid.group_size if grid is not None else None
    scale = zero = None
    if grid is not None and group is None:
        scale, zero = (p.reshape(-1) for p in grid_params(Wt, grid, dim=0))
    spec = BlockSpec(sparsity.nm if sparsity is not None else None, grid,
                     group if group is not None and group < block else None)
    targets = [round(sparsity.fraction * (b - a) * cols) for a, b in segments] \
        if sparsity is not None and sparsity.nm is None else None
    losses = torch.zeros(rows, device=Wt.device)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, U1 = Wt[i1:i2], U[i1:i2, i1:i2]
        mask = None
        if targets is not None:
            mask = torch.zeros(W1.shape, dtype=torch.bool, device=Wt.device)
            scores = W1.square() / diagonal[i1:i2, None].square()
            for (a, b), k in zip(segments, targets):
                share = round(k * i2 / cols) - round(k * i1 / cols)
                mask[:, a:b] = smallest_mask(scores[:, a:b].t(), share).t()
        if group is not None and group >= block and i1 % group == 0:
            scale, zero = (p.reshape(-1) for p in grid_params(Wt[i1:i1 + group], grid, dim=0))
        Q1, E1 = runner(W1, U1, mask, scale, zero, spec)
        Wt[i1:i2].copy_(Q1)
        losses += E1.square().sum(0) / 2
        if i2 < cols:
            Wt[i2:].addmm_(U[i1:i2, i2:].t(), E1, alpha=-1)
    return losses


def sweep_block_size(group_size: int | None) -> int:
    """A block size whose blocks never split a quantization group: BLOCK if the group divides it
    or is a multiple of it, else the group itself (GPTQ's result does not depend on it)."""
    if group_size is None or BLOCK % group_size == 0 or group_size % BLOCK == 0:
        return BLOCK
    return group_size


# ---------------------------------------------------------------------------------------------
# One decoder layer


class ObsStep:
    """The layer step of SparseGPT and GPTQ for lobolib.compress.layerwise: one Hessian per
    shared input; the matrices sharing it swept together; weights written back in their dtype.
    `errors` collects the OBS error of each matrix."""

    def __init__(self, targets: set[int], *, sparsity: Sparsity | None, grid: Grid | None,
                 dampening: float = DAMPENING, block: int = BLOCK, graphs: bool = True):
        self.targets, self.sparsity, self.grid = targets, sparsity, grid
        self.dampening, self.block = dampening, block
        self.runner = BlockRunner(graphs)
        self.errors: dict[str, float] = {}

    def observers(self, index: int, layer: nn.Module) -> dict:
        return {name: Hessian(module.in_features, module.weight.device)
                for name, module in layer_linears(layer) if id(module) in self.targets}

    def compress(self, index: int, layer: nn.Module, observed: dict) -> None:
        groups: dict[int, list[str]] = {}
        for name, observer in observed.items():
            groups.setdefault(id(observer), []).append(name)
        for names in groups.values():
            U = inverse_factor(observed[names[0]].matrix(), self.dampening)
            modules = [layer.get_submodule(name) for name in names]
            Wt = torch.cat([module.weight.detach().t().float() for module in modules], dim=1)
            bounds = [0]
            for module in modules:
                bounds.append(bounds[-1] + module.weight.shape[0])
            segments = list(zip(bounds, bounds[1:]))
            losses = sweep(Wt, U, segments, sparsity=self.sparsity, grid=self.grid, block=self.block,
                           runner=self.runner)
            del U
            for name, module, (a, b) in zip(names, modules, segments):
                module.weight.detach().copy_(Wt[:, a:b].t())
                self.errors[f"{index}.{name}"] = float(losses[a:b].sum())
