"""Compressed weight formats as drop-in replacements of a decoder's `nn.Linear`, each calling the
kernel that format runs on, so that a whole model can be timed in that format.

* `int8`: weight-only int8, one symmetric scale per output channel (absmax / 127), computed by
  `torch._weight_int8pack_mm` (x @ (q · s)ᵀ, the int8 weight read as such).
* `int4`: weight-only 4-bit, asymmetric per group of 128 inputs, bf16 scale and zero per group,
  in the layout of the tinygemm kernel (`torch._weight_int4pack_mm` on CUDA, packed by
  `torch._convert_weight_to_int4pack`; `torch._weight_int4pack_mm_for_cpu` on the CPU). The
  kernel dequantizes a code q in [0, 15] as (q - 8) · scale + zero.
* `sparse24_cusparselt` / `sparse24_cutlass`: 2:4 semi-structured sparsity (of every 4
  consecutive inputs of an output, the 2 of largest magnitude kept; Mishra et al. 2021, "Accelerating
  Sparse Deep Neural Networks"), compressed by `torch.sparse.to_sparse_semi_structured` for
  cuSPARSELt or for CUTLASS (`SparseSemiStructuredTensor._FORCE_CUTLASS`). CUDA only.
* `unstructured50`: half of each matrix's weights zeroed by magnitude (lobolib's pruning), still
  a dense `nn.Linear`: what a sweep level holds.
* `dense`: the layers as they are (`F.linear`).

Each format says what its product must equal (`Format.effective`: the dequantized or pruned
weight, in dense layout) so its kernel can be checked against `F.linear`, and why it cannot run
on a device (`Format.unavailable`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from lobolib.compress import prune

INT4_GROUP = 128
INT4_INNER_K_TILES = 8  # tinygemm's tiling of the packed weight along the inputs (2, 4 or 8)


# ---------------------------------------------------------------------------------------------
# Quantization grids (plain tensor code: the reference the kernels are checked against)


@torch.no_grad()
def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes int8 (out, in), scales (out,) in the weight's dtype): symmetric per output channel,
    scale = absmax / 127 rounded to the weight's dtype (as the kernel reads it), codes rounded
    against that scale."""
    scales = (weight.float().abs().amax(dim=1).clamp(min=1e-12) / 127).to(weight.dtype)
    codes = torch.round(weight.float() / scales.float()[:, None]).clamp(-127, 127).to(torch.int8)
    return codes, scales


def dequantize_int8(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The float32 weight the int8 kernel multiplies by: codes · scale."""
    return codes.float() * scales.float()[:, None]


@torch.no_grad()
def quantize_int4(weight: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes int32 in [0, 15] (out, in), scales, zeros (out, in / group) in the weight's dtype):
    per group of `group` inputs, scale = (max - min) / 15 and zero = min + 8 · scale (tinygemm's
    convention, value = (q - 8) · scale + zero), both rounded to the weight's dtype first and the
    codes rounded against them."""
    out_features, in_features = weight.shape
    grouped = weight.float().reshape(out_features, in_features // group, group)
    low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
    scales = ((high - low).clamp(min=1e-6) / 15).to(weight.dtype)
    zeros = (low + 8 * scales.float()).to(weight.dtype)
    codes = torch.round((grouped - zeros.float()[..., None]) / scales.float()[..., None]) + 8
    return codes.clamp(0, 15).to(torch.int32).reshape(out_features, in_features), scales, zeros


def dequantize_int4(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """The float32 weight the int4 kernel multiplies by: (q - 8) · scale + zero per group."""
    out_features, in_features = codes.shape
    grouped = codes.float().reshape(out_features, scales.shape[1], -1)
    return ((grouped - 8) * scales.float()[..., None] + zeros.float()[..., None]).reshape(out_features, in_features)


@torch.no_grad()
def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Boolean mask keeping, of every 4 consecutive inputs of each output, the 2 of largest
    magnitude (ties to the lower index): the 2:4 pattern sparse tensor cores read."""
    out_features, in_features = weight.shape
    groups = weight.abs().reshape(out_features, in_features // 4, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(2, dim=-1).indices, True)
    return keep.reshape(out_features, in_features)


@torch.no_grad()
def half_pruned(weight: torch.Tensor) -> torch.Tensor:
    """A copy of `weight` with half its entries zeroed by magnitude (lobolib's exact per-matrix
    magnitude pruning)."""
    holder = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    holder.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    prune.magnitude_prune(nn.Sequential(holder), 0.5, scope="layer")
    return holder.weight.detach()


# ---------------------------------------------------------------------------------------------
# Modules


class _Packed(nn.Module):
    """A linear layer held in a packed format: `forward` flattens the leading dimensions, calls
    `_product` on (tokens, in features) and adds the bias."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._product(x.reshape(-1, self.in_features))
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)


class Int8Linear(_Packed):
    """Weight-only int8 linear layer (`quantize_int8`), computed by `torch._weight_int8pack_mm`.
    Holds the int8 codes (out, in) and one scale per output in the layer's dtype."""

    def __init__(self, linear: nn.Linear):
        super().__init__(linear)
        codes, scales = quantize_int8(linear.weight.detach())
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(x, self.codes, self.scales)


class Int4Linear(_Packed):
    """Weight-only 4-bit linear layer (`quantize_int4`, groups of `INT4_GROUP` inputs), packed for
    tinygemm and computed by `torch._weight_int4pack_mm` on CUDA (codes two per byte, the even
    input in the high nibble, then `torch._convert_weight_to_int4pack`: an int32 tensor of
    (out / 8, in / (16 · inner k tiles), 32, inner k tiles / 2)) or by
    `torch._weight_int4pack_mm_for_cpu` on the CPU (`torch._convert_weight_to_int4pack_for_cpu`:
    uint8 (out, in / 2)). Scales and zeros are stored interleaved, (in / group, out, 2)."""

    def __init__(self, linear: nn.Linear, group: int = INT4_GROUP):
        super().__init__(linear)
        weight = linear.weight.detach()
        self.group = group
        codes, scales, zeros = quantize_int4(weight, group)
        if weight.device.type == "cpu":
            packed = torch._convert_weight_to_int4pack_for_cpu(codes, INT4_INNER_K_TILES)
        else:
            pairs = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)
            packed = torch._convert_weight_to_int4pack(pairs.contiguous(), INT4_INNER_K_TILES)
        del codes
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous())

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            return torch._weight_int4pack_mm_for_cpu(x.contiguous(), self.packed, self.group, self.scales_and_zeros)
        return torch._weight_int4pack_mm(x.contiguous(), self.packed, self.group, self.scales_and_zeros)


@contextlib.contextmanager
def _semi_structured_backend(backend: str) -> Iterator[None]:
    """Within: `to_sparse_semi_structured` builds for `backend` ("cusparselt" or "cutlass")."""
    from torch.sparse import SparseSemiStructuredTensor

    before = SparseSemiStructuredTensor._FORCE_CUTLASS
    SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
    try:
        yield
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = before


class SemiStructuredLinear(_Packed):
    """A 2:4 sparse linear layer (`two_four_mask` applied, then compressed by
    `torch.sparse.to_sparse_semi_structured` for `backend`); `F.linear` on the compressed weight
    dispatches to cuSPARSELt (`torch._cslt_sparse_mm`) or CUTLASS
    (`torch._sparse_semi_structured_linear`). `backend_used` is the subclass's own `BACKEND`."""

    def __init__(self, linear: nn.Linear, backend: str):
        super().__init__(linear)
        weight = linear.weight.detach()
        pruned = weight * two_four_mask(weight)
        with _semi_structured_backend(backend):
            sparse = torch.sparse.to_sparse_semi_structured(pruned)
        del pruned
        self.backend_used = type(sparse).BACKEND
        self.register_buffer("weight", sparse)

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


def _half_pruned_linear(linear: nn.Linear) -> nn.Linear:
    """A dense nn.Linear holding `half_pruned` of the layer's weight (and its bias)."""
    copy = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    copy.weight = nn.Parameter(half_pruned(linear.weight), requires_grad=False)
    if linear.bias is not None:
        copy.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    return copy


# ---------------------------------------------------------------------------------------------
# The formats


def _needs_cuda(what: str, capability: tuple[int, int] = (8, 0)) -> Callable[[torch.device], str | None]:
    def why_not(device: torch.device) -> str | None:
        if device.type != "cuda":
            return f"{what} runs on CUDA only"
        if torch.cuda.get_device_capability(device) < capability:
            return f"{what} needs compute capability {capability[0]}.{capability[1]}+"
        return None
    return why_not


def _cusparselt_missing(device: torch.device) -> str | None:
    if not torch.backends.cusparselt.is_available():
        return "this torch build has no cuSPARSELt (torch.backends.cusparselt.is_available() is False)"
    return None


@dataclass(frozen=True)
class Format:
    """One weight format: `build` turns a decoder nn.Linear into the module that replaces it;
    `effective` gives the (out, in) weight its product must equal; `requirement` says why the
    format cannot run on a device (None when it may: `unavailable` then tries its kernel)."""

    name: str
    kernel: str
    build: Callable[[nn.Linear], nn.Module]
    effective: Callable[[torch.Tensor], torch.Tensor]
    requirement: Callable[[torch.device], str | None] = lambda device: None

    def unavailable(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why this format cannot run on `device` (None when it can): its stated requirement, or
        the error its kernel raises on a small layer."""
        why = self.requirement(device)
        if why is not None:
            return why
        probe = nn.Linear(256, 64, bias=False, device=device, dtype=dtype)
        try:
            with torch.no_grad():
                probe.weight.normal_(0.0, 0.02)
                self.build(probe)(torch.randn(8, 256, device=device, dtype=dtype))
        except (RuntimeError, NotImplementedError, ValueError, TypeError, AttributeError) as error:
            return f"{self.kernel} failed here: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        return None


def _sparse24(backend: str, kernel: str, *extra) -> Format:
    needs = [_needs_cuda("2:4 semi-structured sparsity (to_sparse_semi_structured)"), *extra]
    return Format(
        f"sparse24_{backend}", kernel, lambda linear: SemiStructuredLinear(linear, backend),
        lambda weight: weight * two_four_mask(weight),
        lambda device: next((why for why in (need(device) for need in needs) if why), None),
    )


FORMATS = (
    Format("dense", "F.linear (dense)", lambda linear: linear, lambda weight: weight),
    Format("int8", "torch._weight_int8pack_mm", Int8Linear, lambda weight: dequantize_int8(*quantize_int8(weight))),
    Format("int4", "torch._weight_int4pack_mm (tinygemm; _for_cpu on the CPU)", Int4Linear,
           lambda weight: dequantize_int4(*quantize_int4(weight))),
    _sparse24("cusparselt", "to_sparse_semi_structured + cuSPARSELt", _cusparselt_missing),
    _sparse24("cutlass", "to_sparse_semi_structured + CUTLASS (_FORCE_CUTLASS)"),
    Format("unstructured50", "F.linear (dense) on 50% magnitude-pruned weights", _half_pruned_linear, half_pruned),
)
FORMAT_NAMES = tuple(f.name for f in FORMATS)


# ---------------------------------------------------------------------------------------------
# Swapping and storage


@contextlib.contextmanager
def swapped(model: nn.Module, build: Callable[[nn.Linear], nn.Module]) -> Iterator[list[nn.Module]]:
    """Within: every decoder linear layer of `model` (`prune.prunable_linears`: all but the
    lm_head) replaced by `build(layer)`, built one at a time; yields the new modules. The
    original layers are put back on exit."""
    originals = prune.prunable_linears(model)
    replaced = []
    try:
        for name, linear in originals:
            parent, _, attr = name.rpartition(".")
            new = build(linear)
            setattr(model.get_submodule(parent), attr, new)
            replaced.append(new)
        yield replaced
    finally:
        for (name, linear), _ in zip(originals, replaced):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, linear)


def _storages(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """The plain tensors holding `tensor`'s data (the inner tensors of a wrapper subclass such as
    a SparseSemiStructuredTensor: values and metadata)."""
    if is_traceable_wrapper_subclass(tensor):
        names, _ = tensor.__tensor_flatten__()
        for name in names:
            yield from _storages(getattr(tensor, name))
    else:
        yield tensor


def storage_bytes(*modules: nn.Module) -> int:
    """Bytes of the storage behind the parameters and buffers of `modules`, each storage once."""
    seen, total = set(), 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            for plain in _storages(tensor):
                storage = plain.untyped_storage()
                key = (plain.device, storage.data_ptr())
                if key not in seen:
                    seen.add(key)
                    total += storage.nbytes()
    return total
