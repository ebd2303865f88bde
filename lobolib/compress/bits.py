"""Effective storage of compressed weight matrices, metadata included: bits per original weight.

One function per format, the formula in its docstring; 16-bit values (bf16/fp16) unless told.
``model_bytes`` turns bits per weight of the compressed matrices into the size of the whole model
(every other parameter at its own dtype). The reports of lobolib.prune.prune and
lobolib.quantize.quantize carry ``bits_per_weight`` computed with these (16-bit values assumed,
whatever dtype the model was compressed in).
"""

from __future__ import annotations

import math

DENSE_BITS = 16
SCALE_BITS = 32
"""Per quantization group: an fp16 scale and an fp16 zero point."""


def dense(value_bits: int = DENSE_BITS) -> float:
    """A dense matrix: ``value_bits`` (16 for bf16/fp16)."""
    return float(value_bits)


def unstructured(sparsity: float, value_bits: int = DENSE_BITS) -> float:
    """Unstructured sparsity s with a bitmask: ``value_bits * (1 - s) + 1`` (one mask bit per weight)."""
    return value_bits * (1 - sparsity) + 1


def nm(n: int, m: int, value_bits: int = DENSE_BITS) -> float:
    """N:M (n zeros in every m): the kept values plus each one's position in its group,
    ``(m - n) / m * (value_bits + ceil(log2 m))``; 2:4 gives 16 * 0.5 + 0.5 * 2 = 9."""
    return (m - n) / m * (value_bits + math.ceil(math.log2(m)))


def heads(kept_fraction: float, value_bits: int = DENSE_BITS) -> float:
    """Whole heads removed: what remains is dense and needs no index, ``value_bits * kept``
    (per weight of the original matrices)."""
    return value_bits * kept_fraction


def quantized(bits: int, group_size: int) -> float:
    """Integers of ``bits`` with an fp16 scale and zero point per group of ``group_size``:
    ``bits + 32 / group_size``. Per output channel, group_size = in_features."""
    return bits + SCALE_BITS / group_size


def sparse_quantized(sparsity: float, bits: int, group_size: int) -> float:
    """Joint unstructured sparsity s + quantization: bitmask, kept integers, scales per group of
    ``group_size`` original weights: ``bits * (1 - s) + 1 + 32 / group_size``."""
    return bits * (1 - sparsity) + 1 + SCALE_BITS / group_size


def nm_quantized(n: int, m: int, bits: int, group_size: int) -> float:
    """Joint N:M + quantization: ``(m - n) / m * (bits + ceil(log2 m)) + 32 / group_size``."""
    return nm(n, m, bits) + SCALE_BITS / group_size


def model_bytes(model, bits_per_weight: float, include_lm_head: bool = False) -> int:
    """Bytes of the whole model: the compressible matrices (lobolib.prune.prunable_linears) at
    ``bits_per_weight``, every other parameter (embeddings, norms, biases; tied ones once) at its
    dtype's size."""
    from lobolib.compress.magnitude import prunable_linears

    compressed = {id(module.weight) for _, module in prunable_linears(model, include_lm_head=include_lm_head)}
    bits = 0.0
    for parameter in model.parameters():
        if id(parameter) in compressed:
            bits += parameter.numel() * bits_per_weight
        else:
            bits += parameter.numel() * parameter.element_size() * 8
    return math.ceil(bits / 8)
