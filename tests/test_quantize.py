"""lobolib.quantize.quantize: RTN on the fp16-scale grid, GPTQ through the calibration pass, errors."""

import copy

import pytest
import torch
from conftest import build_tiny_model

import lobolib.quantize as quantize_alias
from lobolib import LoboError
from lobolib.prune import prunable_linears
from lobolib.quantize import quantize


def tiny(dtype=torch.float32, seed=0):
    return build_tiny_model(vocab_size=97, seed=seed, dtype=dtype)


def weights(model):
    return [m.weight.detach() for _, m in prunable_linears(model)]


def calibration(seed=0):
    return torch.randint(0, 97, (6, 12), generator=torch.Generator().manual_seed(seed))


def reference_rtn(w, bits, group):
    """Independent RTN: asymmetric grid over [min(x,0), max(x,0)], fp16 scale, per row group."""
    groups = w.float().reshape(w.shape[0], -1, group)
    low, high = groups.amin(-1, keepdim=True).clamp(max=0), groups.amax(-1, keepdim=True).clamp(min=0)
    scale = ((high - low) / (2 ** bits - 1)).half().float()
    zero = torch.round(-low / scale)
    q = torch.clamp(torch.round(groups / scale) + zero, 0, 2 ** bits - 1)
    return ((q - zero) * scale).reshape(w.shape)


def test_alias_is_the_module():
    from lobolib.compress import quantize as module
    assert quantize_alias is module


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("group", [16, None])
def test_rtn_puts_each_group_on_its_grid(bits, group):
    dense = tiny()
    model = copy.deepcopy(dense)
    report = quantize(model, bits, group_size=group)
    for before, after in zip(weights(dense), weights(model)):
        size = group or before.shape[1]
        assert torch.equal(after, reference_rtn(before, bits, size))
        for row in after.reshape(-1, size):
            assert row.unique().numel() <= 2 ** bits
    assert report["method"] == "rtn" and report["bits"] == bits and report["group_size"] == group


def test_rtn_keeps_the_dtype_and_8_bits_barely_move_the_weights():
    dense = tiny(torch.bfloat16)
    model = copy.deepcopy(dense)
    quantize(model, 8, group_size=16)
    for before, after in zip(weights(dense), weights(model)):
        assert after.dtype == torch.bfloat16
        spread = before.float().reshape(-1, 16).abs().amax(-1, keepdim=True)
        assert bool(((after.float() - before.float()).reshape(-1, 16).abs() <= spread / 255 + 1e-2 * spread).all())


def test_symmetric_rtn_is_centred_on_zero():
    model = tiny()
    quantize(model, 4, group_size=16, symmetric=True)
    for w in weights(model):
        for row in w.reshape(-1, 16):
            values = row.unique()
            step = (values[1:] - values[:-1]).min()
            assert torch.allclose(values / step, (values / step).round(), atol=1e-3)  # 0 on the grid


@pytest.mark.parametrize("bits", [4, 3])
def test_gptq_stays_on_a_grid_of_at_most_2_to_the_b_values_per_group(bits):
    model = tiny()
    report = quantize(model, bits, method="gptq", group_size=16, calibration=calibration())
    for w in weights(model):
        for row in w.reshape(-1, 16):
            assert row.unique().numel() <= 2 ** bits
    assert report["gptq"]["block"] == 128 and report["calibration"]["samples"] == 6
    assert report["bits_per_weight"] == bits + 2


def test_gptq_differs_from_rtn_and_is_deterministic():
    first, second, rtn = tiny(), tiny(), tiny()
    quantize(first, 3, method="gptq", group_size=16, calibration=calibration())
    quantize(second, 3, method="gptq", group_size=16, calibration=calibration())
    quantize(rtn, 3, group_size=16)
    assert all(torch.equal(a, b) for a, b in zip(weights(first), weights(second)))
    assert not all(torch.equal(a, b) for a, b in zip(weights(first), weights(rtn)))


@pytest.mark.parametrize("args,kwargs,message", [
    ((7,), {}, "bits must be one of"),
    ((4,), {"method": "awq"}, "unknown quantization"),
    ((4,), {"group_size": 24}, "does not divide the 32 input features"),
    ((4,), {"method": "gptq"}, "needs calibration"),
    ((4,), {"method": "gptq", "calibration": torch.ones(2, 3), "group_size": 16}, "LongTensor"),
    ((4,), {"method": "gptq", "calibration": torch.ones(2, 3, dtype=torch.int64), "group_size": 16,
            "include_lm_head": True}, "for method='rtn' only"),
    ((4,), {"symmetric": "yes", "group_size": 16}, "symmetric"),
])
def test_bad_requests_are_lobo_errors_before_any_change(args, kwargs, message):
    model = tiny()
    dense = [w.clone() for w in weights(model)]
    with pytest.raises(LoboError, match=message):
        quantize(model, *args, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(dense, weights(model)))


def test_group_size_error_suggests_one_that_fits():
    with pytest.raises(LoboError, match="e.g. 32"):
        quantize(tiny(), 4, group_size=128)
