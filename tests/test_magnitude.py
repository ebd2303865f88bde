"""Magnitude pruning kernel (lobolib.compress.magnitude): exact counts under ties, nesting, cumulative == one-shot, scope, safety."""

import copy
import math

import pytest
import torch
from conftest import build_tiny_model
from torch import nn

from lobolib import LoboError
from lobolib.compress import magnitude as prune
from lobolib.compress.magnitude import magnitude_prune, prunable_linears, sparsity_report

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
LEVELS = [0.0, 0.1, 0.33, 0.5, 0.75, 0.95]


def tiny(dtype=torch.float32, seed=0):
    return build_tiny_model(vocab_size=97, seed=seed, dtype=dtype)


def linear_stack(dtype=torch.float32, seed=0):
    """Plain linear layers of awkward sizes (round() matters, rows are not powers of two)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(37, 53), nn.ReLU(), nn.Linear(53, 29), nn.Linear(29, 7)).to(dtype)


@torch.no_grad()
def set_heavy_ties(model, *, zeros=False, seed=0, include_lm_head=False):
    """Weights taking only a handful of magnitudes (k * 0.125), so ties are everywhere;
    with zeros=True about a sixth of them are exact zeros already."""
    generator = torch.Generator().manual_seed(seed)
    for _, module in prunable_linears(model, include_lm_head=include_lm_head):
        shape = module.weight.shape
        magnitudes = torch.randint(0 if zeros else 1, 6, shape, generator=generator)
        signs = torch.randint(0, 2, shape, generator=generator) * 2 - 1
        module.weight.copy_((magnitudes * signs * 0.125).to(module.weight.dtype))
    return model


def weights(model, include_lm_head=False):
    return [m.weight.detach() for _, m in prunable_linears(model, include_lm_head=include_lm_head)]


def masks(model, include_lm_head=False):
    return [w == 0 for w in weights(model, include_lm_head)]


def stable_sort_masks(model, sparsity, scope):
    """Independent reference: rank |w| (as float64) by a stable sort over the flat weights,
    matrices in prunable_linears order, and mark the first k."""
    flats = [w.double().abs().reshape(-1) for w in weights(model)]
    if scope == "layer":
        out = []
        for flat, w in zip(flats, weights(model)):
            mask = torch.zeros(flat.numel(), dtype=torch.bool)
            mask[torch.argsort(flat, stable=True)[: round(sparsity * flat.numel())]] = True
            out.append(mask.reshape(w.shape))
        return out
    joined = torch.cat(flats)
    mask = torch.zeros(joined.numel(), dtype=torch.bool)
    mask[torch.argsort(joined, stable=True)[: round(sparsity * joined.numel())]] = True
    return [part.reshape(w.shape) for part, w in zip(mask.split([f.numel() for f in flats]), weights(model))]


# --- exact counts ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_scope_prunes_exactly_round_s_n_per_matrix_under_heavy_ties(dtype):
    dense = set_heavy_ties(tiny(dtype))
    for sparsity in LEVELS:
        model = copy.deepcopy(dense)
        summary = magnitude_prune(model, sparsity, scope="layer")
        for (name, _), w in zip(prunable_linears(model), weights(model)):
            expected = round(sparsity * w.numel())
            assert int((w == 0).sum()) == expected, (name, sparsity)
            assert summary["zeros"][f"{name}.weight"] == expected


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_scope_prunes_exactly_round_s_n_in_total_under_heavy_ties(dtype):
    dense = set_heavy_ties(tiny(dtype), seed=3)
    total = sum(w.numel() for w in weights(dense))
    for sparsity in LEVELS:
        model = copy.deepcopy(dense)
        summary = magnitude_prune(model, sparsity, scope="global")
        zeros = sum(int((w == 0).sum()) for w in weights(model))
        assert zeros == round(sparsity * total) == summary["total_zeros"], sparsity


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pruned_weights_are_the_smallest_and_ties_go_in_flat_order(scope, dtype):
    for model in (set_heavy_ties(tiny(dtype), seed=5), tiny(dtype, seed=5), linear_stack(dtype)):
        for sparsity in (0.3, 0.5, 0.83):
            expected = stable_sort_masks(model, sparsity, scope)
            pruned = copy.deepcopy(model)
            magnitude_prune(pruned, sparsity, scope=scope)
            for got, want in zip(masks(pruned), expected):
                assert torch.equal(got, want), (scope, dtype, sparsity)


def test_all_equal_magnitudes_prune_the_first_positions_in_row_major_order():
    layer = nn.Linear(6, 5, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, -1.0]).repeat(15).reshape(5, 6))
    model = nn.Sequential(layer)
    magnitude_prune(model, 0.4)
    assert torch.equal(layer.weight.reshape(-1) == 0, torch.arange(30) < 12)


def test_global_ties_fill_matrices_in_prunable_order():
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    with torch.no_grad():
        for module in model:
            module.weight.fill_(0.5)
    magnitude_prune(model, 0.75, scope="global")  # 24 of 32: all of the first, 8 of the second
    assert int((model[0].weight == 0).sum()) == 16
    assert torch.equal(model[1].weight.reshape(-1) == 0, torch.arange(16) < 8)


# --- nesting and cumulative pruning ------------------------------------------------------------


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cumulative_pruning_equals_one_shot_and_masks_nest(scope, dtype):
    # Original zeros + heavy ties: the hard case for nesting (zeros rank first, ties by position).
    dense = set_heavy_ties(tiny(dtype), zeros=True, seed=7)
    cumulative = copy.deepcopy(dense)
    previous = masks(cumulative)
    for sparsity in LEVELS:
        magnitude_prune(cumulative, sparsity, scope=scope)
        one_shot = copy.deepcopy(dense)
        magnitude_prune(one_shot, sparsity, scope=scope)
        for got, want in zip(weights(cumulative), weights(one_shot)):
            assert torch.equal(got, want), (scope, sparsity)
        current = masks(cumulative)
        for before, after in zip(previous, current):
            assert bool((before & ~after).sum() == 0), "a pruned weight came back"
        previous = current


def test_original_zeros_beyond_the_share_are_kept_and_counted():
    model = nn.Sequential(nn.Linear(10, 10, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(100, dtype=torch.float32).reshape(10, 10) % 3)  # 34 zeros
    summary = magnitude_prune(model, 0.2)
    assert int((model[0].weight == 0).sum()) == 34
    assert summary["zeros"]["0.weight"] == 34
    assert summary["pruned"]["0.weight"] == 20


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_small_chunks_give_the_same_mask(monkeypatch, scope):
    dense = set_heavy_ties(tiny(torch.bfloat16), zeros=True, seed=11)
    whole = copy.deepcopy(dense)
    magnitude_prune(whole, 0.45, scope=scope)
    monkeypatch.setattr(prune, "CHUNK_ELEMENTS", 40)  # ties now straddle many row chunks
    chunked = copy.deepcopy(dense)
    magnitude_prune(chunked, 0.45, scope=scope)
    for got, want in zip(weights(chunked), weights(whole)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_spread_histogram_copies_give_the_same_mask(monkeypatch, dtype):
    # The CUDA speed-up (several histogram copies) must not change a single count.
    dense = set_heavy_ties(tiny(dtype), zeros=True, seed=13)
    plain = copy.deepcopy(dense)
    magnitude_prune(plain, 0.55, scope="global")
    monkeypatch.setattr(prune, "HISTOGRAM_COPIES", {"cpu": 5})
    monkeypatch.setattr(prune, "CHUNK_ELEMENTS", 96)
    spread = copy.deepcopy(dense)
    magnitude_prune(spread, 0.55, scope="global")
    for got, want in zip(weights(spread), weights(plain)):
        assert torch.equal(got, want)


# --- what is pruned ----------------------------------------------------------------------------


def test_prunable_linears_are_the_block_projections_in_model_order():
    names = [name for name, _ in prunable_linears(tiny())]
    block = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert names == [f"model.layers.{i}.{p}" for i in range(2) for p in block]
    assert [name for name, _ in prunable_linears(tiny(), include_lm_head=True)][-1] == "lm_head"


def test_embeddings_norms_and_lm_head_are_untouched():
    model = tiny()
    untouched = {name: p.detach().clone() for name, p in model.named_parameters()
                 if "proj" not in name}
    assert any("embed_tokens" in n for n in untouched) and any("norm" in n for n in untouched)
    assert "lm_head.weight" in untouched
    magnitude_prune(model, 0.9, scope="global")
    for name, parameter in model.named_parameters():
        if name in untouched:
            assert torch.equal(parameter, untouched[name]), name


def test_lm_head_pruned_when_asked():
    model = tiny()
    embedding = model.get_input_embeddings().weight.detach().clone()
    magnitude_prune(model, 0.5, include_lm_head=True)
    head = model.lm_head.weight
    assert int((head == 0).sum()) == round(0.5 * head.numel())
    assert torch.equal(model.get_input_embeddings().weight, embedding)


def test_tied_lm_head_is_refused_and_embeddings_stay_intact():
    model = tiny()
    model.lm_head.weight = model.get_input_embeddings().weight  # tie_word_embeddings
    embedding = model.lm_head.weight.detach().clone()
    with pytest.raises(LoboError, match="tied"):
        magnitude_prune(model, 0.5, include_lm_head=True)
    magnitude_prune(model, 0.5)
    assert torch.equal(model.get_input_embeddings().weight, embedding)


def test_plain_linear_stack_summary_counts_every_layer():
    summary = magnitude_prune(linear_stack(torch.float16), 0.5)
    assert summary["matrices"] == 3 and summary["weights"] == 37 * 53 + 53 * 29 + 29 * 7
    assert summary["pruned"] == {"0.weight": round(0.5 * 37 * 53), "2.weight": round(0.5 * 53 * 29),
                                 "3.weight": round(0.5 * 29 * 7)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_infinite_weights_rank_largest(dtype):
    model = linear_stack(dtype)
    with torch.no_grad():
        model[0].weight[0, :3] = float("inf")
        model[0].weight[1, :2] = float("-inf")
    magnitude_prune(model, 0.9)
    assert torch.isinf(model[0].weight[:2]).sum() == 5


def test_float64_supported():
    model = linear_stack(torch.float64)
    magnitude_prune(model, 0.37)
    for w in weights(model):
        assert int((w == 0).sum()) == round(0.37 * w.numel())


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.5", None, True])
def test_bad_sparsity_is_a_lobo_error(sparsity):
    with pytest.raises(LoboError, match="sparsity"):
        magnitude_prune(tiny(), sparsity)


def test_unknown_scope_is_a_lobo_error():
    with pytest.raises(LoboError, match="scope"):
        magnitude_prune(tiny(), 0.5, scope="block")


def test_model_without_linear_layers_is_a_lobo_error():
    with pytest.raises(LoboError, match="no prunable linear"):
        magnitude_prune(nn.Sequential(nn.LayerNorm(4), nn.Embedding(3, 4)), 0.5)


def test_lm_head_asked_of_a_model_without_one_is_a_lobo_error():
    with pytest.raises(LoboError, match="lm_head"):
        magnitude_prune(linear_stack(), 0.5, include_lm_head=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_weights_are_refused_before_anything_is_pruned(dtype):
    model = tiny(dtype)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 4] = float("nan")
    before = [w.clone() for w in weights(model)]
    for scope in ("layer", "global"):
        with pytest.raises(LoboError, match="NaN"):
            magnitude_prune(model, 0.5, scope=scope)
    for got, want in zip(weights(model), before):
        assert torch.equal(got.isnan(), want.isnan())
        assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))


def test_offloaded_weights_are_a_lobo_error():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(LoboError, match="offloaded"):
        magnitude_prune(model, 0.5)


def test_mixed_dtypes_refused_for_global_but_fine_per_layer():
    model = linear_stack()
    model[2].to(torch.bfloat16)
    with pytest.raises(LoboError, match="dtype"):
        magnitude_prune(model, 0.5, scope="global")
    magnitude_prune(model, 0.5, scope="layer")
    assert int((model[2].weight == 0).sum()) == round(0.5 * 53 * 29)


def test_integer_weights_are_a_lobo_error():
    model = linear_stack()
    model[0].weight = nn.Parameter(torch.ones(53, 37, dtype=torch.int8), requires_grad=False)
    with pytest.raises(LoboError, match="not a float"):
        magnitude_prune(model, 0.5)


# --- summary and report ------------------------------------------------------------------------


def test_summary_describes_the_level():
    model = tiny(torch.bfloat16)
    summary = magnitude_prune(model, 0.3, scope="global")
    assert summary["scope"] == "global" and summary["sparsity"] == 0.3
    assert summary["matrices"] == 14 and summary["weights"] == sum(w.numel() for w in weights(model))
    assert summary["zeros"] == {f"{n}.weight": int((m.weight == 0).sum()) for n, m in prunable_linears(model)}
    assert summary["seconds"] >= 0


def test_sparsity_report_figures():
    model = tiny()
    dense = sparsity_report(model)
    assert dense["pruned"] == 0.0 and set(dense["per_matrix"].values()) == {0.0}
    magnitude_prune(model, 0.5)
    report = sparsity_report(model)
    assert len(report["per_matrix"]) == 14
    assert all(value == 0.5 for value in report["per_matrix"].values())
    assert report["pruned"] == 0.5
    all_params = sum(p.numel() for p in model.parameters())
    all_zeros = sum(int((p == 0).sum()) for p in model.parameters())
    assert report["overall_weights"] == all_params
    assert math.isclose(report["overall"], all_zeros / all_params)
    assert report["overall"] < report["pruned"]  # embeddings, norms and lm_head stay dense
    with_head = sparsity_report(model, include_lm_head=True)
    assert with_head["per_matrix"]["lm_head.weight"] == 0.0 and with_head["pruned"] < 0.5


def test_sparsity_report_counts_a_tied_parameter_once():
    model = tiny()
    model.lm_head.weight = model.get_input_embeddings().weight
    report = sparsity_report(model)
    assert report["overall_weights"] == sum(p.numel() for p in model.parameters())
