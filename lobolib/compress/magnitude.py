"""Magnitude pruning of a transformer's linear layers, exact and in place (the radix-select kernel).

Method: unstructured magnitude pruning (Han et al., 2015, "Learning both Weights and Connections
for Efficient Neural Networks"): the weights of smallest absolute value are set to zero.
Two scopes, as in the baselines of Zhu & Gupta (2017, "To prune, or not to prune") and Wanda
(Sun et al., 2023, "A Simple and Effective Pruning Approach for Large Language Models"):

- ``scope="layer"``: every weight matrix loses the same fraction, ``round(sparsity * n)`` weights.
- ``scope="global"``: one ranking over all prunable matrices together, ``round(sparsity * N)``
  weights in total; matrices lose different fractions.

Exactness. Weights are ranked by the key ``(|w|, position)``: magnitude first, then, among equal
magnitudes, the matrix order of :func:`prunable_linears` and the row-major (flat) index inside a
matrix. The first ``k`` keys are zeroed, so exactly ``k`` weights are pruned even when bf16/fp16
weights tie by the thousand (the common rule ``w[|w| < t] = 0`` prunes too few at a tied threshold).

Nesting. Zeros have the smallest magnitude, so they rank first. Pruning at level ``s2`` a model
already pruned at ``s1 <= s2`` therefore yields exactly the mask that one-shot pruning of the dense
model at ``s2`` yields: the weights zeroed at ``s1`` were the first ``k1`` keys of the dense
ranking; after zeroing they are still ahead of every other weight (original zeros included, which
were ahead of them already or are among them), and the remaining weights keep their dense order.
A sweep can thus prune one loaded model cumulatively, level after level.

Memory. No sort and no copy of a weight matrix: the k-th smallest magnitude is found by radix
selection over the IEEE bit patterns. For a non-NaN float, the bit pattern with the sign bit
cleared, read as an integer, is monotonic in ``|w|``. bf16/fp16 have 2**15 such patterns, counted in
one histogram (``torch.bincount``); fp32 (and fp64) take one histogram per 15/16-bit digit, each
pass restricted to the prefix found so far. Rows are processed in chunks of at most
``CHUNK_ELEMENTS`` weights, so temporaries stay at a few tens of MB whatever the matrix size,
and every matrix is handled on the device it lives on (models spread by ``device_map`` work).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from lobolib.compress.methods import SCOPES, check_sparsity
from lobolib.errors import LoboError

CHUNK_ELEMENTS = 1 << 23
"""Most weights processed at once; bounds the temporaries (about 13 bytes per weight at most)."""

HISTOGRAM_COPIES = {"cuda": 32}
"""Histogram copies per device type (see _digit_histogram); 1 elsewhere (a CPU has no atomics)."""



@dataclass(frozen=True)
class _BitLayout:
    """How a float dtype's magnitude reads as an integer key, and the radix digits of that key."""

    int_dtype: torch.dtype
    magnitude_mask: int  # clears the sign bit
    nan_above: int  # keys greater than this are NaN (this one is +inf)
    digits: tuple[tuple[int, int], ...]  # (shift, width), most significant first


_LAYOUTS = {
    torch.bfloat16: _BitLayout(torch.int16, 0x7FFF, 0x7F80, ((0, 15),)),
    torch.float16: _BitLayout(torch.int16, 0x7FFF, 0x7C00, ((0, 15),)),
    torch.float32: _BitLayout(torch.int32, 0x7FFF_FFFF, 0x7F80_0000, ((16, 15), (0, 16))),
    torch.float64: _BitLayout(
        torch.int64, 0x7FFF_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000,
        ((48, 15), (32, 16), (16, 16), (0, 16)),
    ),
}


@dataclass(frozen=True)
class _Cut:
    """Where one matrix is cut: zero every key below `threshold`, then the first `ties` (in flat
    order) of the `equal` weights whose key equals `threshold`."""

    threshold: int
    ties: int
    equal: int
    below: int

    @property
    def pruned(self) -> int:
        return self.below + self.ties


# ---------------------------------------------------------------------------------------------
# Which matrices


def synchronize(tensors) -> None:
    """Wait for the CUDA devices these tensors live on (so a timing or a report reads finished work)."""
    for device in {tensor.device for tensor in tensors}:
        if device.type == "cuda":
            torch.cuda.synchronize(device)


def _is_linear(module: nn.Module) -> bool:
    """nn.Linear, and transformers' Conv1D (GPT-2 style, a linear layer with transposed weight)."""
    if isinstance(module, nn.Linear):
        return True
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(module, Conv1D)


def _output_embedding(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_output_embeddings", None)
    return getter() if callable(getter) else None


def _input_embedding_weight(model: nn.Module) -> torch.Tensor | None:
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    return getattr(embedding, "weight", None)


def _same_tensor(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    if b is None:
        return False
    if a is b:
        return True
    return a.device == b.device and a.device.type != "meta" and a.data_ptr() == b.data_ptr()


def prunable_linears(model: nn.Module, include_lm_head: bool = False) -> list[tuple[str, nn.Module]]:
    """The linear layers magnitude pruning acts on, in a fixed order: `(name, module)` pairs.

    Every ``nn.Linear`` (and transformers ``Conv1D``) of the model except the output embedding
    (``model.get_output_embeddings()``, the lm_head), in ``named_modules`` order: for a decoder
    such as Mistral these are the attention q/k/v/o and MLP gate/up/down projections of every
    block. Embeddings and norms are never linear layers, so never pruned. With
    ``include_lm_head=True`` the lm_head is appended last; a lm_head tied to the input embedding
    (``tie_word_embeddings``) is refused with LoboError, since pruning it would prune the
    embeddings too.
    """
    if not isinstance(include_lm_head, bool):
        raise LoboError(f"include_lm_head must be True or False, got {include_lm_head!r}")
    head = _output_embedding(model)
    found = [
        (name, module)
        for name, module in model.named_modules()
        if module is not head and _is_linear(module)
    ]
    if include_lm_head:
        if head is None:
            raise LoboError(
                "include_lm_head=True but the model has no output embedding (lm_head); "
                "set include_lm_head to False"
            )
        if _same_tensor(head.weight, _input_embedding_weight(model)):
            raise LoboError(
                "the lm_head is tied to the input embeddings (tie_word_embeddings=True): pruning it "
                "would also prune the embeddings; set include_lm_head to False for this model"
            )
        head_name = next(name for name, module in model.named_modules() if module is head)
        found.append((head_name, head))
    return found


def _checked_weights(named: list[tuple[str, nn.Module]]) -> list[tuple[str, torch.Tensor]]:
    """The 2-D weights of the named modules (detached views: writes reach the model)."""
    weights = []
    for name, module in named:
        weight = module.weight.detach()
        if weight.dtype not in _LAYOUTS:
            raise LoboError(
                f"cannot magnitude-prune {name}: weight dtype {weight.dtype} is not a float type "
                "(float32, bfloat16, float16 or float64); load the model unquantized"
            )
        if weight.device.type == "meta":
            raise LoboError(
                f"cannot prune {name}: its weight is offloaded (on the meta device); load the model "
                "fully into CPU/GPU memory (raise max_memory or drop disk offload)"
            )
        if weight.dim() != 2:
            raise LoboError(f"cannot prune {name}: expected a 2-D weight, got shape {tuple(weight.shape)}")
        weights.append((f"{name}.weight", weight))
    return weights


# ---------------------------------------------------------------------------------------------
# Radix selection over bit patterns


def _row_chunks(weight: torch.Tensor):
    """Views of consecutive row blocks of a 2-D tensor, each at most CHUNK_ELEMENTS weights."""
    rows, cols = weight.shape
    step = max(1, CHUNK_ELEMENTS // max(cols, 1))
    for start in range(0, rows, step):
        yield weight[start:start + step]


def _keys(chunk: torch.Tensor, layout: _BitLayout) -> torch.Tensor:
    """Integer magnitude keys of a chunk (sign bit cleared), monotonic in |w| for non-NaN."""
    return chunk.view(layout.int_dtype) & layout.magnitude_mask


def _digit_histogram(weight, layout, shift, width, prefix_shift, prefix) -> torch.Tensor:
    """Counts of one radix digit over the weights whose higher bits equal `prefix` (on their device).

    On CUDA, bincount's atomic adds collide on the few bins where most weights fall; giving
    neighbouring weights different copies of the histogram (HISTOGRAM_COPIES, summed at the
    end) spreads the collisions and makes the count about three times faster on an H200.
    """
    bins = 1 << width
    copies = HISTOGRAM_COPIES.get(weight.device.type, 1)
    on_gpu = weight.device.type == "cuda"
    counts = torch.zeros(copies * bins, dtype=torch.int64, device=weight.device)
    spread = None
    if copies > 1:
        cols = max(weight.shape[1], 1)
        per_chunk = min(weight.numel(), max(1, CHUNK_ELEMENTS // cols) * cols)
        spread = torch.arange(per_chunk, dtype=torch.int32, device=weight.device) % copies * bins
    for chunk in _row_chunks(weight):
        keys = _keys(chunk, layout).reshape(-1)
        digits = keys >> shift if shift else keys
        outside = None
        if prefix is not None:  # (the first digit needs no mask: the sign bit is cleared)
            digits = digits & (bins - 1)
            outside = (keys >> prefix_shift) != prefix
            if on_gpu:  # stream compaction is fast on a GPU; on a CPU an overflow bin is cheaper
                digits, outside = digits[~outside], None
        if spread is not None:
            digits = spread[: digits.numel()] + digits
        if outside is not None:
            digits.masked_fill_(outside, copies * bins)
        counts += torch.bincount(digits, minlength=copies * bins + 1)[: copies * bins]
    return counts.view(copies, bins).sum(0) if copies > 1 else counts


def _check_nan(name: str, weight: torch.Tensor, layout: _BitLayout, top_counts, shift: int) -> None:
    """Refuse NaN weights: their magnitude has no rank. `top_counts` is the first-digit histogram."""
    inf_digit = layout.nan_above >> shift
    suspicious = int(top_counts[inf_digit + 1:].sum())
    if not suspicious and shift and int(top_counts[inf_digit]):
        suspicious = int(torch.isnan(weight).any())
    if suspicious:
        raise LoboError(
            f"{name} holds NaN weights; magnitude pruning cannot rank them. The checkpoint or an "
            "earlier step is broken: reload the model"
        )


def _select(named_weights: list[tuple[str, torch.Tensor]], k: int) -> list[_Cut]:
    """Exact cut of the k smallest keys over the given matrices, ranked by (|w|, matrix, index).

    Radix select: a histogram of the most significant digit of every key locates the digit of
    the k-th key; the next digit is counted only among keys with that prefix; and so on. The
    weights whose key equals the k-th key are split in matrix order, then flat order.
    """
    layout = _LAYOUTS[named_weights[0][1].dtype]
    below = torch.zeros(len(named_weights), dtype=torch.int64)
    remaining = k
    prefix, prefix_shift, digit = None, 0, 0
    for shift, width in layout.digits:
        table = torch.empty(len(named_weights), 1 << width, dtype=torch.int64)  # one row a matrix
        for row, (_, weight) in zip(table, named_weights):
            row.copy_(_digit_histogram(weight, layout, shift, width, prefix_shift, prefix))
        if prefix is None:
            for (name, weight), row in zip(named_weights, table):
                _check_nan(name, weight, layout, row, shift)
        cumulative = table.sum(0).cumsum(0)
        digit = int(torch.searchsorted(cumulative, remaining))  # first digit reaching `remaining`
        if digit:
            remaining -= int(cumulative[digit - 1])
            below += table[:, :digit].sum(1)
        prefix = digit if prefix is None else (prefix << width) | digit
        prefix_shift = shift
    cuts = []
    for below_i, equal in zip(below.tolist(), table[:, digit].tolist()):
        ties = min(remaining, equal)
        remaining -= ties
        cuts.append(_Cut(threshold=prefix, ties=ties, equal=equal, below=below_i))
    return cuts


def _apply(weight: torch.Tensor, cut: _Cut, layout: _BitLayout) -> None:
    """Zero, in place, the keys below the cut and the first `cut.ties` keys equal to it."""
    threshold, ties_left, equal_left = cut.threshold, cut.ties, cut.equal
    cols = weight.shape[1]
    for chunk in _row_chunks(weight):
        keys = _keys(chunk, layout)
        if ties_left == 0:
            chunk.masked_fill_(keys < threshold, 0)
        elif ties_left == equal_left:  # every remaining tie goes
            chunk.masked_fill_(keys <= threshold, 0)
        else:
            chunk.masked_fill_(keys < threshold, 0)
            where = (keys == threshold).reshape(-1).nonzero().squeeze(1)
            take = where[:ties_left]
            chunk.index_put_((take // cols, take % cols), chunk.new_zeros(()))
            ties_left -= take.numel()
            equal_left -= where.numel()


# ---------------------------------------------------------------------------------------------
# Public API


@torch.no_grad()
def magnitude_prune(model: nn.Module, sparsity: float, *, scope: str = "layer",
                    include_lm_head: bool = False) -> dict:
    """Zero, in place, the smallest-magnitude weights of the model's linear layers.

    Magnitude pruning (Han et al., 2015). ``scope="layer"`` prunes ``round(sparsity * n)``
    weights of each matrix of ``n`` weights; ``scope="global"`` ranks all matrices together
    and prunes ``round(sparsity * N)`` of their ``N`` weights (layer-wise vs global as in
    Zhu & Gupta 2017 and the magnitude baseline of Wanda, Sun et al. 2023). ``round`` is
    Python's (half to even). Ties in magnitude are broken by matrix order, then row-major
    index, so the counts are exact in bf16/fp16 too, and calling this at ascending levels on one
    model gives at each level the same mask as one-shot pruning of the dense model. A matrix
    that already holds more zeros than its share keeps them (zeros are never restored).

    Prunes the matrices of :func:`prunable_linears` (attention and MLP projections; the lm_head
    only with ``include_lm_head=True``, refused when tied to the embeddings). Each matrix is
    processed on its own device in row chunks: no sort, no weight copy. Weights must be
    float32/bfloat16/float16/float64 and free of NaN (LoboError otherwise; inf ranks largest).

    Returns a summary: ``method``, ``scope``, ``sparsity``, ``include_lm_head``, ``matrices``
    (count), ``weights`` (their total size), ``pruned`` ({matrix: weights ranked into the
    pruned set}), ``zeros`` ({matrix: zeros after pruning}), ``total_zeros`` and ``seconds``.
    """
    started = time.perf_counter()
    level = check_sparsity(sparsity)
    if scope not in SCOPES:
        raise LoboError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    named_weights = _checked_weights(prunable_linears(model, include_lm_head=include_lm_head))
    if not named_weights:
        raise LoboError(
            f"{type(model).__name__} has no prunable linear layers (nn.Linear outside the lm_head); "
            "magnitude pruning needs a transformer with linear projections"
        )
    if scope == "layer":
        cuts = [_cut(named_weights[i:i + 1], level)[0] for i in range(len(named_weights))]
    else:
        dtypes = {weight.dtype for _, weight in named_weights}
        if len(dtypes) > 1:
            raise LoboError(
                f"global pruning needs one weight dtype across matrices, found {sorted(map(str, dtypes))}; "
                "load the model in a single dtype or use scope='layer'"
            )
        cuts = _cut(named_weights, level)
    for (_, weight), cut in zip(named_weights, cuts):
        if cut.pruned:
            _apply(weight, cut, _LAYOUTS[weight.dtype])
    synchronize(weight for _, weight in named_weights)
    zeros = {name: cut.pruned if cut.threshold > 0 else max(cut.pruned, cut.equal)
             for (name, _), cut in zip(named_weights, cuts)}
    return {
        "method": "magnitude",
        "scope": scope,
        "sparsity": level,
        "include_lm_head": include_lm_head,
        "matrices": len(named_weights),
        "weights": sum(weight.numel() for _, weight in named_weights),
        "pruned": {name: cut.pruned for (name, _), cut in zip(named_weights, cuts)},
        "zeros": zeros,
        "total_zeros": sum(zeros.values()),
        "seconds": time.perf_counter() - started,
    }


def _cut(named_weights: list[tuple[str, torch.Tensor]], level: float) -> list[_Cut]:
    """Cuts for pruning `level` of the weights of these matrices taken together."""
    k = round(level * sum(weight.numel() for _, weight in named_weights))
    if k == 0:  # nothing to prune; `equal` holds the zeros already there, for the summary
        return [_Cut(threshold=0, ties=0, equal=_count_zeros(weight), below=0)
                for _, weight in named_weights]
    return _select(named_weights, k)


def _count_zeros(tensor: torch.Tensor) -> int:
    """Exact zeros of a tensor, counted in chunks (no full-size temporary)."""
    if tensor.dim() == 0:
        return int(tensor == 0)
    rows = tensor.shape[0]
    per_row = max(1, tensor[0].numel())
    step = max(1, CHUNK_ELEMENTS // per_row)
    nonzero = sum(int(torch.count_nonzero(tensor[s:s + step])) for s in range(0, rows, step))
    return tensor.numel() - nonzero


@torch.no_grad()
def sparsity_report(model: nn.Module, include_lm_head: bool = False) -> dict:
    """Achieved sparsity (fraction of exact zeros).

    ``per_matrix``: {matrix name: fraction} over the prunable matrices of
    :func:`prunable_linears`; ``pruned``: over those matrices together; ``overall``: over all the
    model's parameters (each tied parameter once); plus the counts behind them
    (``pruned_zeros``, ``pruned_weights``, ``overall_zeros``, ``overall_weights``).
    """
    named_weights = _checked_weights(prunable_linears(model, include_lm_head=include_lm_head))
    per_matrix, pruned_zeros, pruned_weights = {}, 0, 0
    for name, weight in named_weights:
        zeros = _count_zeros(weight)
        per_matrix[name] = zeros / weight.numel() if weight.numel() else 0.0
        pruned_zeros += zeros
        pruned_weights += weight.numel()
    overall_zeros, overall_weights = 0, 0
    for name, parameter in model.named_parameters():
        if parameter.device.type == "meta":
            raise LoboError(f"cannot count zeros of {name}: it is offloaded (meta device)")
        overall_zeros += _count_zeros(parameter.detach())
        overall_weights += parameter.numel()
    return {
        "per_matrix": per_matrix,
        "pruned": pruned_zeros / pruned_weights if pruned_weights else 0.0,
        "overall": overall_zeros / overall_weights if overall_weights else 0.0,
        "pruned_zeros": pruned_zeros,
        "pruned_weights": pruned_weights,
        "overall_zeros": overall_zeros,
        "overall_weights": overall_weights,
    }
