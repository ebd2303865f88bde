"""Attention-head pruning: counts as heads and as weights, GQA units, the output-energy score."""

import copy

import pytest
import torch
from torch import nn

from lobolib import LoboError
from lobolib.compress.heads import HeadGrams, attention_of, head_scores
from lobolib.prune import prunable_linears, prune


def gqa_model(heads=8, kv=2, layers=2, seed=0):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                           num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=64,
                           tie_word_embeddings=False)
    return MistralForCausalLM(config).eval()


def calibration(seed=0):
    return torch.randint(0, 97, (4, 10), generator=torch.Generator().manual_seed(seed))


def o_proj_input(model, layer, tokens):
    seen = {}

    def keep(module, args, out):
        seen["x"] = args[0].reshape(-1, args[0].shape[-1])

    handle = model.model.layers[layer].self_attn.o_proj.register_forward_hook(keep)
    with torch.no_grad():
        model(input_ids=tokens, use_cache=False)
    handle.remove()
    return seen["x"]


@pytest.mark.parametrize("fraction,per_layer", [(0.25, 2), (0.5, 4), (0.3, 2), (0.0, 0)])
def test_each_layer_loses_round_fraction_of_its_query_heads(fraction, per_layer):
    model = gqa_model()
    report = prune(model, fraction, method="heads", calibration=calibration())
    heads = report["heads"]
    assert heads["unit"] == "query head"
    assert all(len(chosen) == per_layer for chosen in heads["removed"].values())
    assert heads["heads_fraction"] == per_layer / 8
    zeros = sum(int((m.weight == 0).sum()) for _, m in prunable_linears(model))
    total = sum(m.weight.numel() for _, m in prunable_linears(model))
    assert heads["weights_fraction"] == zeros / total == report["achieved_total"]


def test_a_kv_group_goes_only_with_all_its_query_heads():
    model = gqa_model(heads=8, kv=2, layers=3, seed=1)
    report = prune(model, 0.5, method="heads", calibration=calibration(1))
    for index, layer in enumerate(model.model.layers):
        attention = layer.self_attn
        removed = set(report["heads"]["removed"][index])
        for head in range(8):
            rows = slice(head * 8, head * 8 + 8)
            gone = head in removed
            assert bool((attention.q_proj.weight[rows] == 0).all()) == gone
            assert bool((attention.o_proj.weight[:, rows] == 0).all()) == gone
        for group in range(2):
            rows = slice(group * 8, group * 8 + 8)
            empty = set(range(group * 4, group * 4 + 4)) <= removed
            assert (group in report["heads"]["kv_groups_removed"][index]) == empty
            assert bool((attention.k_proj.weight[rows] == 0).all()) == empty
            assert bool((attention.v_proj.weight[rows] == 0).all()) == empty


def test_score_is_each_heads_output_energy_through_o_proj():
    model = gqa_model(seed=2)
    x = o_proj_input(model, 0, calibration(2))
    o_proj = model.model.layers[0].self_attn.o_proj
    grams = HeadGrams(8, 8, "cpu")
    grams.add(x)
    scores = head_scores(o_proj, grams)
    for head in range(8):
        alone = torch.zeros_like(x)
        alone[:, head * 8:(head + 1) * 8] = x[:, head * 8:(head + 1) * 8]
        with torch.no_grad():
            energy = float((o_proj(alone) ** 2).sum())
        assert scores[head].item() == pytest.approx(energy, rel=1e-4)


def test_the_first_layer_loses_its_lowest_energy_heads():
    dense, tokens = gqa_model(seed=3), calibration(3)
    x = o_proj_input(dense, 0, tokens)
    grams = HeadGrams(8, 8, "cpu")
    grams.add(x)
    expected = sorted(torch.argsort(head_scores(dense.model.layers[0].self_attn.o_proj, grams))[:2].tolist())
    report = prune(copy.deepcopy(dense), 0.25, method="heads", calibration=tokens)
    assert report["heads"]["removed"][0] == expected


def test_shapes_stay_and_the_model_still_runs():
    model = gqa_model(seed=4)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    prune(model, 0.5, method="heads", calibration=calibration(4))
    assert {n: p.shape for n, p in model.named_parameters()} == shapes
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=calibration(5)).logits).all()


def test_bits_count_what_remains():
    report = prune(gqa_model(), 0.5, method="heads", calibration=calibration())
    assert report["bits_per_weight"] == pytest.approx(16 * (1 - report["heads"]["weights_fraction"]))


def test_layers_without_separate_projections_are_a_lobo_error():
    with pytest.raises(LoboError, match="q_proj"):
        attention_of(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(LoboError, match="no N:M pattern"):
        prune(gqa_model(), 0.5, method="heads", pattern="2:4", calibration=calibration())
