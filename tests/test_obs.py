"""The OBS machinery of SparseGPT and GPTQ: Hessian, inverse factor, the blocked sweep against an
unblocked reference, exact counts, and the error it minimises."""

import pytest
import torch

from lobolib import LoboError
from lobolib.compress import obs
from lobolib.compress.grid import Grid, fake_quantize, grid_params
from lobolib.compress.obs import BlockRunner, Hessian, Sparsity, inverse_factor, sweep

ROWS, COLS, TOKENS = 24, 64, 256


def problem(seed=0, rows=ROWS, cols=COLS):
    """A weight matrix and correlated inputs X [tokens, cols] whose features differ in scale (as
    real activations do, outlier features included)."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(cols, cols, generator=g) / cols ** 0.5 + torch.eye(cols)
    scales = torch.exp(torch.randn(cols, generator=g))
    X = (torch.randn(TOKENS, cols, generator=g) @ mixing) * scales
    return torch.randn(rows, cols, generator=g), X


def factor(X, dampening=0.01):
    h = Hessian(X.shape[1], "cpu")
    h.add(X)
    return inverse_factor(h.matrix(), dampening)


def reference_sweep(W, U, *, fraction=None, nm=None, grid=None, block=obs.BLOCK):
    """Unblocked OBS (every update applied to all later columns at once), written independently."""
    W = W.clone().double()
    U = U.double()
    rows, cols = W.shape
    d = U.diagonal()
    mask = torch.zeros_like(W, dtype=torch.bool)
    k = round(fraction * W.numel()) if fraction is not None else 0
    scale = zero = None
    if grid is not None and grid.group_size is None:
        scale, zero = (p.double() for p in grid_params(W.float(), grid))
    for i in range(cols):
        if fraction is not None and i % block == 0:
            j = min(cols, i + block)
            share = round(k * j / cols) - round(k * i / cols)
            scores = (W[:, i:j] ** 2 / d[i:j] ** 2).reshape(-1)
            chosen = torch.argsort(scores, stable=True)[:share]
            flat = torch.zeros(scores.numel(), dtype=torch.bool)
            flat[chosen] = True
            mask[:, i:j] = flat.reshape(rows, j - i)
        if nm is not None and i % nm[1] == 0:
            scores = W[:, i:i + nm[1]] ** 2 / d[i:i + nm[1]] ** 2
            chosen = torch.argsort(scores, dim=1, stable=True)[:, :nm[0]]
            mask[:, i:i + nm[1]] = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, chosen, True)
        if grid is not None and grid.group_size is not None and i % grid.group_size == 0:
            scale, zero = (p.double() for p in grid_params(W[:, i:i + grid.group_size].float(), grid))
        q = torch.where(mask[:, i], 0.0, W[:, i])
        if grid is not None:
            q = fake_quantize(q.float().unsqueeze(1), scale.float(), zero.float(), grid).squeeze(1).double()
        err = (W[:, i] - q) / d[i]
        W[:, i] = q
        W[:, i + 1:] -= torch.outer(err, U[i, i + 1:])
    return W.float()


def blocked(W, U, block=obs.BLOCK, **kwargs):
    Wt = W.t().contiguous()
    sweep(Wt, U, [(0, W.shape[0])], block=block, **kwargs)
    return Wt.t()


def test_hessian_is_two_x_xt_over_tokens_accumulated_in_batches():
    _, X = problem()
    h = Hessian(COLS, "cpu")
    for part in X.split(100):
        h.add(part.bfloat16())
    expected = 2 * X.bfloat16().double().t() @ X.bfloat16().double() / TOKENS
    torch.testing.assert_close(h.matrix().double(), expected, rtol=1e-5, atol=1e-4)


def test_inverse_factor_is_the_upper_cholesky_of_the_dampened_inverse():
    _, X = problem(1)
    H = 2 * X.t() @ X / TOKENS
    U = inverse_factor(H.clone(), 0.01)
    assert torch.equal(U, U.triu())
    dampened = H + 0.01 * H.diagonal().mean() * torch.eye(COLS)
    torch.testing.assert_close(U.t() @ U, torch.linalg.inv(dampened), rtol=1e-3, atol=1e-4)


def test_dead_inputs_and_hopeless_hessians():
    _, X = problem(2)
    X[:, 5] = 0  # an input never active
    U = factor(X)
    assert torch.isfinite(U).all() and U[5, 5] > 0
    with pytest.raises(LoboError, match="not positive definite"):
        inverse_factor(-torch.eye(4), 0.01)


def test_a_sweep_with_nothing_to_do_changes_nothing():
    W, X = problem(3)
    Wt = W.t().contiguous()
    losses = sweep(Wt, factor(X), [(0, ROWS)])
    assert torch.equal(Wt.t(), W) and float(losses.sum()) == 0


@pytest.mark.parametrize("kwargs", [
    {"sparsity": Sparsity(0.5)},
    {"sparsity": Sparsity(0.3)},
    {"sparsity": Sparsity(0.5, (2, 4))},
    {"grid": Grid(3, 16)},
    {"grid": Grid(4, None)},
    {"grid": Grid(4, 32, symmetric=True), "sparsity": Sparsity(0.5, (4, 8))},
    {"grid": Grid(4, 16), "sparsity": Sparsity(0.5)},
])
def test_blocked_sweep_equals_the_unblocked_reference(kwargs):
    W, X = problem(4)
    U = factor(X)
    block = 32
    got = blocked(W, U, block=block, **kwargs)
    sparsity, grid = kwargs.get("sparsity"), kwargs.get("grid")
    want = reference_sweep(W, U, fraction=sparsity.fraction if sparsity and not sparsity.nm else None,
                           nm=sparsity.nm if sparsity else None, grid=grid, block=block)
    assert torch.equal(got == 0, want == 0) or grid is not None
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs", [{"grid": Grid(3, 16)}, {"sparsity": Sparsity(0.5, (2, 4))}])
def test_gptq_and_nm_results_do_not_depend_on_the_block_size(kwargs):
    W, X = problem(5)
    U = factor(X)
    results = [blocked(W, U, block=b, **kwargs) for b in (16, 32, COLS)]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=1e-4, atol=1e-4)


def test_unstructured_counts_are_exact_per_stacked_matrix():
    W, X = problem(6, rows=30)
    Wt = W.t().contiguous()
    segments = [(0, 7), (7, 19), (19, 30)]
    sweep(Wt, factor(X), segments, sparsity=Sparsity(0.37), block=16)
    for a, b in segments:
        assert int((Wt[:, a:b] == 0).sum()) == round(0.37 * (b - a) * COLS)


def reconstruction_error(W, Q, X):
    return float(((X @ (W - Q).t()) ** 2).sum())


def test_sparsegpt_reconstructs_better_than_its_mask_alone_and_than_magnitude():
    W, X = problem(7)
    pruned = blocked(W, factor(X), sparsity=Sparsity(0.5))
    same_mask = torch.where(pruned == 0, 0.0, W)
    k = W.numel() // 2
    magnitude = W.clone().reshape(-1)
    magnitude[torch.argsort(W.abs().reshape(-1))[:k]] = 0
    error = reconstruction_error(W, pruned, X)
    assert error < 0.8 * reconstruction_error(W, same_mask, X)
    assert error < 0.8 * reconstruction_error(W, magnitude.reshape(W.shape), X)


def test_gptq_reconstructs_better_than_round_to_nearest():
    W, X = problem(8)
    grid = Grid(3, 16)
    gptq = blocked(W, factor(X), grid=grid)
    groups = W.reshape(ROWS, -1, 16)
    rtn = fake_quantize(groups.clone(), *grid_params(groups, grid), grid).reshape(ROWS, COLS)
    assert reconstruction_error(W, gptq, X) < 0.8 * reconstruction_error(W, rtn, X)
    for row in gptq.reshape(ROWS, -1, 16).reshape(-1, 16):
        assert row.unique().numel() <= 8


def test_joint_sweep_keeps_pruned_weights_exactly_zero_on_the_grid():
    W, X = problem(9)
    joint = blocked(W, factor(X), sparsity=Sparsity(0.5), grid=Grid(4, 16))
    pruned_only = blocked(W, factor(X), sparsity=Sparsity(0.5))
    assert bool((joint[pruned_only == 0] == 0).all())
    for row in joint.reshape(-1, 16):
        assert row.unique().numel() <= 16


def test_block_runner_without_cuda_runs_the_eager_loop():
    runner = BlockRunner(graphs=True)
    W, X = problem(10)
    Wt = W.t().contiguous()
    sweep(Wt, factor(X), [(0, ROWS)], sparsity=Sparsity(0.5), runner=runner)
    assert runner.cache == {} and runner.failure is None


def test_sweep_block_size_never_splits_a_group():
    assert obs.sweep_block_size(None) == 128 and obs.sweep_block_size(64) == 128
    assert obs.sweep_block_size(256) == 128 and obs.sweep_block_size(96) == 96


class FakeGraph:
    """Stands in for a CUDA graph on the CPU: replay runs the block (or garbage, if broken)."""

    def __init__(self, inputs, outputs, spec, broken):
        self.inputs, self.outputs, self.spec, self.broken = inputs, outputs, spec, broken
        self.replays = 0

    def replay(self):
        self.replays += 1
        work = [None if t is None else t.clone() for t in self.inputs]
        obs.sweep_block(*work, *self.outputs, self.spec)
        if self.broken:
            self.outputs[0].add_(1.0)


class CpuGraphRunner(BlockRunner):
    def __init__(self, broken=False):
        super().__init__(graphs=True)
        self.broken, self.captures = broken, 0

    def _use_graphs(self, W1):
        return self.graphs

    def _capture(self, W1, U1, mask, scale, zero, spec):
        self.captures += 1
        inputs = [None if t is None else t.clone() for t in (W1, U1, mask, scale, zero)]
        outputs = (torch.empty_like(W1), torch.empty_like(W1))
        return inputs, FakeGraph(inputs, outputs, spec, self.broken), outputs


def test_graph_path_captures_once_per_block_shape_and_matches_eager():
    W, X = problem(11, cols=96)
    U = factor(X)
    eager, graphed = W.t().contiguous(), W.t().contiguous()
    sweep(eager, U, [(0, ROWS)], sparsity=Sparsity(0.5, (2, 4)), grid=Grid(4, 16), block=32)
    runner = CpuGraphRunner()
    sweep(graphed, U, [(0, ROWS)], sparsity=Sparsity(0.5, (2, 4)), grid=Grid(4, 16), block=32, runner=runner)
    assert runner.captures == 1 and runner.failure is None and runner.graphs
    torch.testing.assert_close(graphed, eager)


def test_a_graph_that_disagrees_with_eager_turns_graphs_off():
    W, X = problem(12)
    U = factor(X)
    eager, graphed = W.t().contiguous(), W.t().contiguous()
    sweep(eager, U, [(0, ROWS)], sparsity=Sparsity(0.5), block=32)
    runner = CpuGraphRunner(broken=True)
    sweep(graphed, U, [(0, ROWS)], sparsity=Sparsity(0.5), block=32, runner=runner)
    assert not runner.graphs and "differs from the eager loop" in runner.failure
    assert torch.equal(graphed, eager)
