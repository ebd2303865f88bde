"""Exact masks from scores: N:M groups, per-row counts with an exact total, smallest-k blocks."""

import pytest
import torch

from lobolib import LoboError
from lobolib.compress import patterns
from lobolib.compress.patterns import check_groups, nm_groups_exact, nm_mask, prune_nm, prune_rows, smallest_mask


def scorer(scores):
    return lambda a, b: scores[a:b]


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_mask_zeros_the_lowest_n_of_every_group(n, m):
    scores = torch.rand(7, 48, generator=torch.Generator().manual_seed(0))
    mask = nm_mask(scores, n, m)
    groups, chosen = scores.reshape(7, -1, m), mask.reshape(7, -1, m)
    assert bool((chosen.sum(-1) == n).all())
    # every chosen score is below every kept score of its group
    high = torch.where(chosen, groups, torch.full_like(groups, -1)).amax(-1)
    low = torch.where(chosen, torch.full_like(groups, 2), groups).amin(-1)
    assert bool((high < low).all())


def test_nm_ties_go_to_the_lower_column():
    mask = nm_mask(torch.ones(3, 8), 2, 4)
    assert torch.equal(mask[0], torch.tensor([True, True, False, False] * 2))


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_prune_nm_is_exact_in_every_group_across_row_chunks(monkeypatch, n, m):
    monkeypatch.setattr(patterns, "CHUNK_ELEMENTS", 64)  # several row chunks
    weight = torch.randn(33, 40, generator=torch.Generator().manual_seed(1))
    zeroed = prune_nm(weight, lambda a, b: weight[a:b].abs(), n, m)
    assert zeroed == int((weight == 0).sum()) == 33 * 40 * n // m
    assert nm_groups_exact(weight, n, m)


def test_nm_groups_exact_detects_a_wrong_group():
    weight = torch.ones(2, 8)
    weight[:, ::2] = 0
    assert nm_groups_exact(weight, 4, 8) and nm_groups_exact(weight, 2, 4)
    weight[1, 0] = 1.0
    assert not nm_groups_exact(weight, 4, 8) and not nm_groups_exact(weight, 2, 4)


def test_columns_not_in_whole_groups_are_a_lobo_error():
    with pytest.raises(LoboError, match="multiple of 8"):
        check_groups("layer.q_proj", torch.zeros(4, 12), 8)


@pytest.mark.parametrize("k", [0, 40, 41, 97, 119])
def test_prune_rows_zeros_exactly_k_compared_within_rows(monkeypatch, k):
    monkeypatch.setattr(patterns, "CHUNK_ELEMENTS", 30)
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(8, 15, generator=generator) + 5  # no zeros to start with
    scores = torch.rand(8, 15, generator=generator)
    prune_rows(weight, scorer(scores), k)
    zeros = weight == 0
    assert int(zeros.sum()) == k
    per_row = zeros.sum(1)
    assert set(per_row.tolist()) <= {k // 8, k // 8 + 1}
    for row in range(8):  # within a row, the lowest scores go
        kept, gone = scores[row][~zeros[row]], scores[row][zeros[row]]
        if len(gone) and len(kept):
            assert gone.max() < kept.min()
    if k % 8:  # the rows losing one more are those whose next-lowest score is lowest
        nxt = torch.sort(scores, dim=1).values[:, k // 8]
        extra_rows = torch.nonzero(per_row == k // 8 + 1).squeeze(1)
        assert set(extra_rows.tolist()) == set(torch.argsort(nxt)[: k % 8].tolist())


def test_prune_rows_ties_go_by_column_then_row():
    weight = torch.ones(4, 6)
    prune_rows(weight, scorer(torch.zeros(4, 6)), 10)  # 2 per row, the first 2 rows get a third
    assert torch.equal((weight == 0).sum(1), torch.tensor([3, 3, 2, 2]))
    assert bool((weight[:, :2] == 0).all()) and bool((weight[2:, 2:] == 1).all())


def test_smallest_mask_takes_k_in_row_major_order_on_ties():
    scores = torch.tensor([[0.5, 0.1, 0.5], [0.5, 0.9, 0.1]])
    assert torch.equal(smallest_mask(scores, 3), torch.tensor([[True, True, False], [False, False, True]]))
    assert int(smallest_mask(scores, 0).sum()) == 0


@pytest.mark.parametrize("shape,k", [((5, 40), 13), ((3, 7, 8), 4), ((200,), 77), ((4, 6), 0), ((4, 6), 6)])
def test_selection_and_sorting_paths_give_the_same_mask(shape, k):
    generator = torch.Generator().manual_seed(k)
    scores = torch.randint(0, 5, shape, generator=generator).float()  # heavy ties
    got = patterns.lowest_k(scores, k)
    want = patterns._lowest_k_sorted(scores, k) if 0 < k < shape[-1] else got
    assert torch.equal(got, want)
    assert bool((got.sum(-1) == min(k, shape[-1])).all())
