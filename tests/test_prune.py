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


# --- wanda ---------------------------------------------------------------------------------------


def calibration(n=6, length=12, seed=0):
    return torch.randint(0, 97, (n, length), generator=torch.Generator().manual_seed(seed))


def q_proj_input_norms(model, tokens):
    """||x_j||_2 of every layer's q_proj input in a forward of `model` (these inputs depend only on
    the layers before, so they are what Wanda observed if those were already pruned)."""
    norms, handles = {}, []
    for index, layer in enumerate(model.model.layers):
        def keep(module, args, out, index=index):
            norms[index] = args[0].reshape(-1, args[0].shape[-1]).float().square().sum(0).sqrt()
        handles.append(layer.self_attn.q_proj.register_forward_hook(keep))
    with torch.no_grad():
        model(input_ids=tokens, use_cache=False)
    for handle in handles:
        handle.remove()
    return norms


@pytest.mark.parametrize("sparsity", [0.37, 0.5, 0.9])
def test_wanda_zeros_exactly_round_s_n_per_matrix(sparsity):
    model = tiny()
    report = prune(model, sparsity, method="wanda", calibration=calibration())
    for name, module in prunable_linears(model):
        assert int((module.weight == 0).sum()) == round(sparsity * module.weight.numel()), name
    assert report["calibration"]["samples"] == 6 and report["calibration_pass"]["layers"] == 2


def test_wanda_drops_the_lowest_weight_times_input_norm_in_every_row():
    dense, tokens = tiny(seed=3), calibration(seed=3)
    model = copy.deepcopy(dense)
    prune(model, 0.5, method="wanda", calibration=tokens)
    norms = q_proj_input_norms(model, tokens)
    for index, layer in enumerate(model.model.layers):
        before = dense.model.layers[index].self_attn.q_proj.weight
        gone = layer.self_attn.q_proj.weight == 0
        score = before.abs() * norms[index]
        assert bool((gone.sum(1) == before.shape[1] // 2).all())
        high = torch.where(gone, score, torch.full_like(score, -1)).amax(1)
        low = torch.where(gone, torch.full_like(score, 1e9), score).amin(1)
        assert bool((high <= low * (1 + 1e-5)).all())
        kept = ~gone
        assert torch.equal(layer.self_attn.q_proj.weight[kept], before[kept])  # no update


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_wanda_nm_is_exact_in_every_group(pattern):
    model = tiny()
    prune(model, 0.5, method="wanda", pattern=pattern, calibration=calibration())
    n, m = map(int, pattern.split(":"))
    assert all(nm_groups_exact(w, n, m) for w in weights(model))


def test_wanda_is_deterministic_and_differs_from_magnitude():
    tokens = calibration(seed=5)
    first, second, magnitude = tiny(seed=5), tiny(seed=5), tiny(seed=5)
    prune(first, 0.5, method="wanda", calibration=tokens)
    prune(second, 0.5, method="wanda", calibration=tokens)
    prune(magnitude, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(weights(first), weights(second)))
    assert not all(torch.equal(a == 0, b == 0) for a, b in zip(weights(first), weights(magnitude)))


def test_calibrated_methods_refuse_the_lm_head_and_foreign_token_ids():
    with pytest.raises(LoboError, match="magnitude pruning only"):
        prune(tiny(), 0.5, method="wanda", calibration=calibration(), include_lm_head=True)
    with pytest.raises(LoboError, match="vocabulary"):
        prune(tiny(), 0.5, method="wanda", calibration=calibration() + 97)


# --- sparsegpt -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.37, 0.5])
def test_sparsegpt_zeros_exactly_round_s_n_per_matrix_and_updates_the_kept_weights(sparsity):
    dense = tiny()
    model = copy.deepcopy(dense)
    report = prune(model, sparsity, method="sparsegpt", calibration=calibration())
    for (name, module), before in zip(prunable_linears(model), weights(dense)):
        w = module.weight
        assert int((w == 0).sum()) == round(sparsity * w.numel()), name
        assert not torch.equal(w[w != 0], before[w != 0])  # OBS moved the survivors
    assert report["sparsegpt"]["block"] == 128 and report["sparsegpt"]["dampening"] == 0.01
    assert set(report["sparsegpt"]["obs_error"]) == {f"{i}.{n.split('layers.')[1][2:]}" for i in range(2)
                                                    for n, _ in prunable_linears(model) if f"layers.{i}." in n}


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_sparsegpt_nm_is_exact_in_every_group(pattern):
    model = tiny(torch.bfloat16)
    prune(model, 0.5, method="sparsegpt", pattern=pattern, calibration=calibration())
    n, m = map(int, pattern.split(":"))
    assert all(nm_groups_exact(w, n, m) for w in weights(model))
    assert all(w.dtype == torch.bfloat16 for w in weights(model))


def test_joint_sparsegpt_and_4_bit_groups():
    model = tiny()
    report = prune(model, 0.5, method="sparsegpt", pattern="2:4", calibration=calibration(),
                   quantize_bits=4, group_size=16)
    for w in weights(model):
        assert bool(((w == 0).reshape(w.shape[0], -1, 4).sum(-1) >= 2).all())
        for group in w.reshape(-1, 16):
            assert group.unique().numel() <= 16
    assert report["quantization"] == {"bits": 4, "group_size": 16, "symmetric": False}


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "wanda", "quantize_bits": 4}, "method='sparsegpt'"),
    ({"method": "sparsegpt", "quantize_bits": 7}, "bits"),
    ({"method": "sparsegpt", "quantize_bits": 4, "group_size": 24}, "dividing 128"),
    ({"method": "sparsegpt", "quantize_bits": 4, "group_size": 64}, "does not divide the 32"),
    ({"method": "sparsegpt", "dampening": 0}, "dampening"),
])
def test_bad_sparsegpt_options_are_lobo_errors(kwargs, message):
    with pytest.raises(LoboError, match=message):
        prune(tiny(), 0.5, calibration=calibration(), **kwargs)
