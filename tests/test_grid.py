"""The quantization grid: GPTQ's scale/zero rule, fp16 scales, zeros stay zero, at most 2^b values."""

import pytest
import torch

from lobolib.compress.grid import Grid, fake_quantize, grid_params


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_values_lie_on_at_most_2_to_the_b_levels_and_zero_is_exact(bits, symmetric):
    grid = Grid(bits, 16, symmetric)
    x = torch.randn(5, 4, 16, generator=torch.Generator().manual_seed(bits))
    x[0, 0, :3] = 0
    scale, zero = grid_params(x, grid)
    q = fake_quantize(x.clone(), scale, zero, grid)
    for row in q.reshape(-1, 16):
        assert row.unique().numel() <= 2 ** bits
    assert bool((q[0, 0, :3] == 0).all())
    levels = (q / scale + zero)
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert bool((levels.round() >= 0).all()) and bool((levels.round() <= 2 ** bits - 1).all())


def test_asymmetric_grid_spans_min_to_max_with_fp16_scale():
    x = torch.tensor([[-0.3, 0.1, 0.9, 0.2]])
    scale, zero = grid_params(x, Grid(4, 4))
    assert scale.item() == torch.tensor(1.2 / 15).half().float().item()
    assert zero.item() == round(0.3 / scale.item())
    q = fake_quantize(x.clone(), scale, zero, Grid(4, 4))
    assert torch.allclose(q, x, atol=scale.item() / 2 + 1e-7)


def test_symmetric_grid_is_centred():
    x = torch.tensor([[-0.5, 0.25, 0.1, 0.0]])
    scale, zero = grid_params(x, Grid(4, 4, symmetric=True))
    assert zero.item() == 8 and scale.item() == torch.tensor(1.0 / 15).half().float().item()


def test_an_all_zero_group_stays_zero():
    x = torch.zeros(2, 8)
    scale, zero = grid_params(x, Grid(3, 8))
    assert bool((fake_quantize(x.clone(), scale, zero, Grid(3, 8)) == 0).all())


def test_tiny_ranges_keep_a_positive_fp16_scale():
    x = torch.full((1, 4), 1e-12)
    scale, _ = grid_params(x, Grid(8, 4))
    assert scale.item() > 0 and scale.half().float().item() == scale.item()
