"""Storage formulas (bits per weight with metadata) and model bytes."""

import pytest
import torch
from conftest import build_tiny_model

from lobolib.compress import bits
from lobolib.prune import prunable_linears, prune
from lobolib.quantize import quantize


def test_formulas():
    assert bits.dense() == 16
    assert bits.unstructured(0.5) == 9 and bits.unstructured(0.0) == 17
    assert bits.nm(2, 4) == 9 and bits.nm(4, 8) == 9.5
    assert bits.heads(0.75) == 12
    assert bits.quantized(4, 128) == 4.25 and bits.quantized(8, 4096) == 8 + 32 / 4096
    assert bits.sparse_quantized(0.5, 4, 128) == 3.25
    assert bits.nm_quantized(2, 4, 4, 128) == 0.5 * (4 + 2) + 0.25


def test_model_bytes_counts_compressed_matrices_at_their_bits_and_the_rest_at_their_dtype():
    model = build_tiny_model(97)  # fp32
    matrices = sum(m.weight.numel() for _, m in prunable_linears(model))
    others = sum(p.numel() for p in model.parameters()) - matrices
    assert bits.model_bytes(model, 16) == matrices * 2 + others * 4
    assert bits.model_bytes(model, 4.25) == pytest.approx(matrices * 4.25 / 8 + others * 4, abs=1)


def test_reports_carry_bits_per_weight():
    assert prune(build_tiny_model(97), 0.5)["bits_per_weight"] == 9
    assert prune(build_tiny_model(97), 0.5, pattern="2:4")["bits_per_weight"] == 9
    assert quantize(build_tiny_model(97), 4, group_size=16)["bits_per_weight"] == 6
    per_channel = quantize(build_tiny_model(97), 8, group_size=None)["bits_per_weight"]
    model = build_tiny_model(97)
    sizes = [(m.weight.numel(), m.in_features) for _, m in prunable_linears(model)]
    assert per_channel == pytest.approx(sum(n * (8 + 32 / i) for n, i in sizes) / sum(n for n, _ in sizes))
    joint = prune(build_tiny_model(97), 0.5, method="sparsegpt", quantize_bits=4, group_size=32,
                  calibration=torch.randint(0, 97, (2, 8)))
    assert joint["bits_per_weight"] == pytest.approx(bits.sparse_quantized(joint["achieved_total"], 4, 32))
