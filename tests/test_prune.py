"""lobolib.prune.prune: one entry point for every method, exact counts, N:M, the report, LoboErrors."""

import copy

import pytest
import torch
from conftest import build_tiny_model

from lobolib import LoboError
from lobolib.compress.patterns import nm_groups_exact
from lobolib.prune import SCOPES, magnitude_prune, prunable_linears, prune, sparsity_report


def tiny(dtype=torch.float32, seed=0):
    return build_tiny_model(vocab_size=97, seed=seed, dtype=dtype)


def weights(model, include_lm_head=False):
    return [m.weight.detach() for _, m in prunable_linears(model, include_lm_head=include_lm_head)]


def test_lobolib_prune_keeps_the_sweep_names():
    assert SCOPES == ("layer", "global") and callable(magnitude_prune) and callable(sparsity_report)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_through_prune_equals_magnitude_prune(scope):
    model, reference = tiny(torch.bfloat16), tiny(torch.bfloat16)
    report = prune(model, 0.37, scope=scope)
    magnitude_prune(reference, 0.37, scope=scope)
    for got, want in zip(weights(model), weights(reference)):
        assert torch.equal(got, want)
    assert report["method"] == "magnitude" and report["pattern"] is None and report["scope"] == scope
    assert report["total_zeros"] == sum(int((w == 0).sum()) for w in weights(model))
    if scope == "layer":
        assert report["zeros"] == {f"{n}.weight": round(0.37 * m.weight.numel()) for n, m in prunable_linears(model)}


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_magnitude_nm_is_exact_in_every_group_and_drops_the_smallest(pattern, dtype):
    n, m = map(int, pattern.split(":"))
    model = tiny(dtype)
    dense = [w.clone() for w in weights(model)]
    report = prune(model, 0.5, pattern=pattern)
    for before, after in zip(dense, weights(model)):
        assert nm_groups_exact(after, n, m)
        gone = (after == 0).reshape(after.shape[0], -1, m)
        mags = before.abs().float().reshape(after.shape[0], -1, m)
        high = torch.where(gone, mags, torch.full_like(mags, -1)).amax(-1)
        low = torch.where(gone, torch.full_like(mags, 1e9), mags).amin(-1)
        assert bool((high <= low).all())
    assert report["pattern"] == pattern and report["achieved_total"] == 0.5


def test_report_describes_the_level():
    model = tiny()
    report = prune(model, 0.5)
    assert report["matrices"] == 14 and report["weights"] == sum(w.numel() for w in weights(model))
    assert set(report["achieved"].values()) == {0.5} and report["achieved_total"] == 0.5
    assert report["seconds"] >= 0 and report["include_lm_head"] is False


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "random"}, "unknown pruning method"),
    ({"pattern": "3:4"}, "unknown sparsity pattern"),
    ({"pattern": "2:4", "sparsity": 0.6}, "sparsity 0.5"),
    ({"method": "wanda"}, "needs calibration"),
    ({"method": "sparsegpt", "pattern": "2:4"}, "needs calibration"),
    ({"include_lm_head": "yes"}, "include_lm_head"),
])
def test_bad_requests_are_lobo_errors_before_any_weight_changes(kwargs, message):
    model = tiny()
    dense = [w.clone() for w in weights(model)]
    kwargs = {"sparsity": 0.5} | kwargs
    with pytest.raises(LoboError, match=message):
        prune(model, kwargs.pop("sparsity"), **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(dense, weights(model)))


def test_pattern_needs_whole_groups():
    model = torch.nn.Sequential(torch.nn.Linear(12, 4))
    with pytest.raises(LoboError, match="multiple of 8"):
        prune(model, 0.5, pattern="4:8")
    prune(copy.deepcopy(model), 0.5, pattern="2:4")
