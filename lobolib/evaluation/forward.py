"""The decoder's forward pass, fused, over the model's own weights, with a static KV cache.

`decode.greedy` runs its prefill and decode steps through this module instead of transformers'
decoder layers. The matrix products are the same (`F.linear` on the layers' own weight tensors,
read at every call, so pruning in place is always seen); what changes is the glue between them.
Measured on an H100 (128 x 400-token prefill of a random-weight Mistral-7B, bf16): the layer's
matrix products alone run at 730 TFLOP/s, transformers' eager decoder at 481. The difference is
memory traffic of small elementwise kernels — RMSNorm in float32 (about seven kernels), rotary
embeddings built from `cat`, SiLU·up, residual adds, the cache's `cat` — each reading and writing
activations as large as the matrix products' outputs.

Here, on CUDA, each piece of glue is one kernel compiled by `torch.compile` (inductor):
`rms_norm`, `add_rms_norm` (residual add fused with the next norm), `rotary`, `silu_mul`. They
keep transformers' rounding (float32 norm, a cast to the model dtype before the weight,
`emulate_precision_casts`), so results equal transformers' forward up to the order of float
sums. The cache is allocated once per batch and written in place. Elsewhere (CPU) and when
compiling is switched off (`LOBOLIB_COMPILE=0`) or fails, the same functions run eagerly.

The prefill drops the batch's pads before the first layer: the matrix products run over the
prompts' real tokens only, packed one after another, and each token's keys and values are
written to its row and position of the cache. Attention within each packed prompt is flash
attention over variable-length sequences (`torch.nn.attention.varlen`, CUDA cards of compute
capability 8.0+, fp16/bf16); elsewhere the queries are spread back to the padded layout and
attend over the cache. The prefill's last layer finishes only each row's last position: every
position's keys and values are cached, but the attention output, output projection and MLP of
the other positions would feed nothing.

`supports(model)` says whether a model has the structure this module computes (Mistral, Llama,
Qwen2/Qwen3 decoder layers: pre-norm RMSNorm, rotary attention with optional biases and
per-head q/k norms, SiLU-gated MLP, plain `nn.Linear` weights on real devices).
"""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

COMPILE_OPTIONS = {"emulate_precision_casts": True}
"""Inductor options: round intermediates where eager code rounds them (bf16 casts)."""


# --------------------------------------------------------------------------------------------
# Glue: elementwise pieces between the matrix products
# --------------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' RMSNorm: normalise in float32, cast back, then scale by the weight."""
    dtype = x.dtype
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(dtype)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float):
    """(x + delta, rms_norm(x + delta)): a residual add and the next layer norm."""
    total = x + delta
    return total, rms_norm(total, weight, eps)


def rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotary position embedding of q (tokens, heads, dim) and k (tokens, kv heads, dim) with
    cos/sin (tokens, dim), rotating halves as transformers' `rotate_half` does."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def turn(x):
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    return turn(q), turn(k)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) · up, the gated MLP's activation."""
    return F.silu(gate) * up


def failure(error: BaseException) -> str:
    """Why a fast path was given up, for its one warning: the error's type and first line."""
    message = str(error)
    return f"{type(error).__name__}: {message.splitlines()[0] if message else ''}"


class _Glue:
    """A glue function, compiled by inductor at its first CUDA call; eager on other devices, when
    `LOBOLIB_COMPILE=0`, or after compiling failed once (with a warning saying why).

    Every glue function takes token-major tensors (tokens first) and the layer's weights. Only the
    token count varies between calls (batch x width in a prefill, batch in a decode step), so
    only that dimension is compiled as symbolic: feature sizes (hidden, heads, head dim) stay
    constants the kernels are specialised for. One graph serves every layer and every batch."""

    def __init__(self, fn, token_args: int):
        self.fn = fn
        self.token_args = token_args  # the first `token_args` arguments are token-major
        self.compiled = None
        self.failed = None

    @staticmethod
    def wanted() -> bool:
        return os.environ.get("LOBOLIB_COMPILE", "1") != "0"

    def active(self, tensor: torch.Tensor) -> bool:
        return tensor.is_cuda and self.failed is None and self.wanted()

    def __call__(self, *args):
        if not self.active(args[0]):
            return self.fn(*args)
        if self.compiled is None:
            self.compiled = torch.compile(self.fn, dynamic=False, options=COMPILE_OPTIONS)
        for tensor in args[:self.token_args]:
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
        try:
            return self.compiled(*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # no Triton, no C compiler, an unsupported card: run eagerly
            self.failed = failure(error)
            warnings.warn(f"lobolib.forward: torch.compile failed ({self.failed}); using eager kernels",
                          stacklevel=2)
            return self.fn(*args)


GLUE = {fn.__name__: _Glue(fn, token_args) for fn, token_args in
        ((rms_norm, 1), (add_rms_norm, 2), (rotary, 4), (silu_mul, 2))}


def compiled(device: torch.device) -> bool:
    """Whether the glue runs compiled on `device` (CUDA, compiling on and not failed)."""
    return device.type == "cuda" and _Glue.wanted() and not any(g.failed for g in GLUE.values())


# --------------------------------------------------------------------------------------------
# Causal attention over packed prompts
# --------------------------------------------------------------------------------------------


@dataclass
class Packing:
    """Where each prompt of a right-padded batch lies once its pads are dropped: token i of the
    packed stream is row `rows[i]`, position `cols[i]`; prompt r spans [starts[r], starts[r + 1])."""

    rows: torch.Tensor
    cols: torch.Tensor
    starts: torch.Tensor  # int32, (batch + 1,), on the prompts' device
    longest: int

    @classmethod
    def of(cls, lengths: torch.Tensor, width: int) -> "Packing":
        valid = torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]
        rows, cols = valid.nonzero(as_tuple=True)  # row-major: prompt after prompt
        starts = F.pad(torch.cumsum(lengths, 0), (1, 0)).to(torch.int32)
        return cls(rows, cols, starts, int(lengths.max()))

    def to(self, device: torch.device) -> "Packing":
        return Packing(self.rows.to(device), self.cols.to(device), self.starts.to(device), self.longest)


def _varlen_kernel():
    """(torch's flash attention over packed sequences, the keywords this torch version spells
    causal with, whether it shares key/value heads itself), or None before torch 2.10."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    return varlen_attn, causal, "enable_gqa" in params


class _Varlen:
    """Flash attention straight over the packed prompts, where the card and dtype have it (CUDA,
    compute capability 8.0 or later, fp16/bf16) and `LOBOLIB_VARLEN` is not 0; elsewhere, and
    after it failed once (with a warning saying why), attention runs over the padded cache."""

    kernel = _varlen_kernel()
    failed: str | None = None

    @classmethod
    def usable(cls, q: torch.Tensor) -> bool:
        return (cls.kernel is not None and cls.failed is None and q.is_cuda
                and os.environ.get("LOBOLIB_VARLEN", "1") != "0"
                and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] % 8 == 0 and q.shape[-1] <= 256
                and torch.cuda.get_device_capability(q.device) >= (8, 0))

    @classmethod
    def attend(cls, q, k, v, packing: Packing, scale: float) -> torch.Tensor | None:
        """(tokens, heads, dim) causal attention of each packed prompt, or None if it failed."""
        fn, causal, shares_heads = cls.kernel
        if not shares_heads and k.shape[1] != q.shape[1]:
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
        gqa = {"enable_gqa": k.shape[1] != q.shape[1]} if shares_heads else {}
        try:
            return fn(q, k, v, packing.starts, packing.starts, packing.longest, packing.longest,
                      scale=scale, **causal, **gqa)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # an unsupported shape or build: attend over the padded cache
            cls.failed = failure(error)
            warnings.warn(f"lobolib.forward: varlen attention failed ({cls.failed}); attending over the "
                          "padded cache", stacklevel=2)
            return None


# --------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------


@dataclass
class _Layer:
    """One decoder layer's weights, as the layer holds them now."""

    input_norm: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    q_norm: nn.Module | None
    k_norm: nn.Module | None
    post_norm: nn.Module
    gate: nn.Linear
    up: nn.Linear
    down: nn.Linear
    head_dim: int
    scaling: float

    @property
    def device(self) -> torch.device:
        return self.q.weight.device


def _norm_ok(module) -> bool:
    return (module is not None and isinstance(getattr(module, "weight", None), torch.Tensor)
            and hasattr(module, "variance_epsilon") and getattr(module, "bias", None) is None
            and type(module).__name__.endswith("RMSNorm"))


def _layer(module) -> _Layer | str:
    """A `_Layer` view of a decoder layer, or why it does not have the structure computed here."""
    attn, mlp = getattr(module, "self_attn", None), getattr(module, "mlp", None)
    if attn is None or mlp is None:
        return "a decoder layer without self_attn/mlp"
    linears = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    linears += [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    if any(type(m) is not nn.Linear for m in linears):
        return "projections that are not plain nn.Linear (quantised or missing)"
    if any(m.weight.device.type == "meta" for m in linears):
        return "offloaded weights (meta device)"
    norms = [getattr(module, "input_layernorm", None), getattr(module, "post_attention_layernorm", None)]
    if not all(_norm_ok(n) for n in norms):
        return "layer norms that are not RMSNorm"
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    if (q_norm is None) != (k_norm is None) or (q_norm is not None and not (_norm_ok(q_norm) and _norm_ok(k_norm))):
        return "query/key norms that are not RMSNorm"
    act = getattr(mlp, "act_fn", None)
    if not isinstance(act, nn.SiLU) and type(act).__name__ != "SiLUActivation":
        return f"an MLP activation {type(act).__name__}, not SiLU"
    head_dim = getattr(attn, "head_dim", None)
    scaling = getattr(attn, "scaling", None)
    if not head_dim or scaling is None:
        return "attention without head_dim/scaling"
    return _Layer(norms[0], *linears[:4], q_norm, k_norm, norms[1], *linears[4:], head_dim, scaling)


def supports(model) -> str | None:
    """None when this module can compute `model`'s decoder; otherwise why not."""
    decoder = model.get_decoder()
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if getattr(decoder, name, None) is None:
            return f"the decoder has no {name}"
    if not _norm_ok(decoder.norm):
        return "the final norm is not RMSNorm"
    for module in decoder.layers:
        found = _layer(module)
        if isinstance(found, str):
            return found
    return None


# --------------------------------------------------------------------------------------------
# Forward passes
# --------------------------------------------------------------------------------------------


class Stack:
    """The decoder of `model` as this module computes it, for one batch: its layers' weights and
    a static KV cache of (batch, kv heads, `slots`, head dim) per layer on the layer's device."""

    def __init__(self, model, batch: int, slots: int):
        decoder = model.get_decoder()
        self.embed, self.final_norm, self.rotary_emb = decoder.embed_tokens, decoder.norm, decoder.rotary_emb
        self.layers = [_layer(m) for m in decoder.layers]
        self.keys, self.values = [], []
        for layer in self.layers:
            kv_heads = layer.k.weight.shape[0] // layer.head_dim
            shape = (batch, kv_heads, slots, layer.head_dim)
            # zeros: slots no token has written stay masked and must not be NaN (0 x NaN = NaN)
            self.keys.append(torch.zeros(shape, dtype=layer.k.weight.dtype, device=layer.device))
            self.values.append(torch.zeros(shape, dtype=layer.v.weight.dtype, device=layer.device))

    def _angles(self, x: torch.Tensor, positions: torch.Tensor) -> dict:
        """{device: (cos, sin)}, token-major (tokens, head dim), for `positions` (batch, positions),
        from the model's own rotary module (so every rope scaling it knows applies)."""
        cos, sin = self.rotary_emb(x, positions)  # (batch, positions, head dim), where the module lives
        return {cos.device: (cos.reshape(-1, cos.shape[-1]), sin.reshape(-1, sin.shape[-1]))}

    @staticmethod
    def _on(table: dict, device: torch.device):
        """`table`'s value for `device`, copied there from the first device the first time."""
        if device not in table:
            first = next(iter(table.values()))
            table[device] = tuple(t.to(device) for t in first) if isinstance(first, tuple) else first.to(device)
        return table[device]

    def _qkv(self, layer: _Layer, h: torch.Tensor, angles):
        """Query, key, value of normed hidden states h (tokens, hidden), rotated:
        (tokens, heads, head dim)."""
        q = F.linear(h, layer.q.weight, layer.q.bias).view(h.shape[0], -1, layer.head_dim)
        k = F.linear(h, layer.k.weight, layer.k.bias).view(h.shape[0], -1, layer.head_dim)
        v = F.linear(h, layer.v.weight, layer.v.bias).view(h.shape[0], -1, layer.head_dim)
        if layer.q_norm is not None:
            q = GLUE["rms_norm"](q, layer.q_norm.weight, layer.q_norm.variance_epsilon)
            k = GLUE["rms_norm"](k, layer.k_norm.weight, layer.k_norm.variance_epsilon)
        q, k = GLUE["rotary"](q, k, *angles)
        return q, k, v

    def _norm_in(self, layer: _Layer, x: torch.Tensor, delta: torch.Tensor | None):
        """(residual, normed input) of a layer: the previous layer's output added, then its norm."""
        x = x.to(layer.device)
        weight, eps = layer.input_norm.weight, layer.input_norm.variance_epsilon
        if delta is None:
            return x, GLUE["rms_norm"](x, weight, eps)
        return GLUE["add_rms_norm"](x, delta.to(layer.device), weight, eps)

    def _mlp(self, layer: _Layer, x: torch.Tensor, attended: torch.Tensor):
        """(residual after attention, MLP output): x + o_proj(attended), and MLP(norm(that))."""
        x, h = GLUE["add_rms_norm"](x, F.linear(attended, layer.o.weight, layer.o.bias),
                                     layer.post_norm.weight, layer.post_norm.variance_epsilon)
        gated = GLUE["silu_mul"](F.linear(h, layer.gate.weight, layer.gate.bias),
                                 F.linear(h, layer.up.weight, layer.up.bias))
        return x, F.linear(gated, layer.down.weight, layer.down.bias)

    def _finish(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The final norm of the last layer's residual plus its MLP output, on the norm's device."""
        norm = self.final_norm
        device = norm.weight.device
        return GLUE["add_rms_norm"](x.to(device), delta.to(device), norm.weight, norm.variance_epsilon)[1]

    def prefill(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Run right-padded prompts `ids` (batch, width) through the decoder, caching each prompt
        token's keys and values in its slot in [0, width). Returns the final-normed hidden state at
        each row's last prompt position (batch, hidden), on the final norm's device.

        The pads are dropped first, so every matrix product runs over real tokens only: padding a
        batch costs cache memory, not FLOPs. Attention is flash attention over the packed prompts
        (`_Varlen`) or, where that is not available, causal attention over the padded cache."""
        batch, width = ids.shape
        packing = Packing.of(lengths, width)
        x = self.embed(ids[packing.rows, packing.cols])
        angles = self._angles(x, packing.cols[None, :])
        packings = {packing.rows.device: packing}
        delta = None
        for index, layer in enumerate(self.layers):
            x, h = self._norm_in(layer, x, delta)
            q, k, v = self._qkv(layer, h, self._on(angles, layer.device))
            at = self._on(packings, layer.device)
            self.keys[index][at.rows, :, at.cols] = k
            self.values[index][at.rows, :, at.cols] = v
            if index == len(self.layers) - 1:  # only each row's last position feeds the logits
                last = at.starts[1:].long() - 1
                mask = (torch.arange(width, device=layer.device)[None, :] < (at.starts[1:] - at.starts[:-1])[:, None])
                attended = self._attend_one(layer, index, q[last], mask[:, None, None, :], width)
                x = x[last]
            else:
                attended = self._attend_prompts(layer, index, q, k, v, at, width)
            x, delta = self._mlp(layer, x, attended)
        return self._finish(x, delta)

    def _attend_prompts(self, layer: _Layer, index: int, q, k, v, at: Packing, width: int) -> torch.Tensor:
        """Causal attention of every packed prompt token, q/k/v (tokens, heads, dim), within its
        own prompt: (tokens, heads · dim). Without flash over the packed prompts, the queries are
        spread to the padded layout and attend over the cache: right padding puts pads only after
        real tokens, so causality alone keeps them out of view, and the flash or memory-efficient
        kernel shares key/value heads among query heads inside itself."""
        if _Varlen.usable(q):
            out = _Varlen.attend(q, k, v, at, layer.scaling)
            if out is not None:
                return out.reshape(q.shape[0], -1)
        padded = q.new_zeros(self.keys[index].shape[0], width, *q.shape[1:])
        padded[at.rows, at.cols] = q
        out = F.scaled_dot_product_attention(
            padded.transpose(1, 2), self.keys[index][:, :, :width], self.values[index][:, :, :width],
            is_causal=True, scale=layer.scaling, enable_gqa=q.shape[1] != k.shape[1])
        return out.transpose(1, 2)[at.rows, at.cols].reshape(q.shape[0], -1)

    def _attend_one(self, layer: _Layer, index: int, q: torch.Tensor, mask: torch.Tensor, slots: int):
        """Attention of one query per row, q (batch, heads, dim), over cache slots [0, slots) where
        `mask` (batch, 1, 1, slots) allows. The query heads of each key/value group are laid out
        as the rows of one query block, so the cache is read as stored, not copied per head.
        Returns (batch, heads · dim)."""
        batch, heads, dim = q.shape
        kv_heads = self.keys[index].shape[1]
        packed = q.reshape(batch, kv_heads, heads // kv_heads, dim)
        out = F.scaled_dot_product_attention(packed, self.keys[index][:, :, :slots], self.values[index][:, :, :slots],
                                             attn_mask=mask, scale=layer.scaling)
        return out.reshape(batch, heads * dim)

    def step(self, token: torch.Tensor, positions: torch.Tensor, slot: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """One decode step: `token` (batch,) at rotary `positions` (batch,), its keys and values
        written into cache slot `slot` (a one-element long tensor), attending to every cache slot
        where `visible` (batch, 1, 1, slots) allows. Returns the final-normed hidden state (batch,
        hidden). Nothing here reads a value back to the host, so a step can be captured in a CUDA
        graph and replayed with new values in the same tensors."""
        x = self.embed(token)
        angles = self._angles(x, positions[:, None])
        masks, slots = {visible.device: visible}, {slot.device: slot}
        delta = None
        for index, layer in enumerate(self.layers):
            x, h = self._norm_in(layer, x, delta)
            q, k, v = self._qkv(layer, h, self._on(angles, layer.device))
            where = self._on(slots, layer.device)
            self.keys[index].index_copy_(2, where, k.unsqueeze(2))
            self.values[index].index_copy_(2, where, v.unsqueeze(2))
            attended = self._attend_one(layer, index, q, self._on(masks, layer.device), self.keys[index].shape[2])
            x, delta = self._mlp(layer, x, attended)
        return self._finish(x, delta)

    def signature(self) -> tuple:
        """What the compiled kernels of a step depend on: weight shapes, dtype, devices, norms."""
        first = self.layers[0]
        return (len(self.layers), tuple(first.q.weight.shape), tuple(first.k.weight.shape),
                tuple(first.gate.weight.shape), first.q.weight.dtype, first.q_norm is not None,
                tuple(sorted({str(layer.device) for layer in self.layers})))

    def on_one_cuda_device(self) -> bool:
        """Whether every layer and the cache live on one CUDA device (what a CUDA graph needs)."""
        return len({layer.device for layer in self.layers}) == 1 and self.layers[0].device.type == "cuda"
