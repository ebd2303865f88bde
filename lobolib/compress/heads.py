"""Structured pruning of whole attention heads, scored on calibration activations.

Unit: one query head (with grouped-query attention, a KV group serves several query heads; its
key/value rows go only once every query head of the group is gone). Each decoder layer loses
``round(fraction * n_heads)`` query heads.

Importance of query head h: the energy of its output through the output projection over the
calibration tokens, ``sum_t ||W_o[:, h] a_h(t)||² = trace(W_h G_h W_hᵀ)``, with a_h the head's
attention output (the input of o_proj in the head's slice), W_h that slice of o_proj's columns
and ``G_h = sum_t a_h a_hᵀ`` accumulated in fp32. It is what the head adds to the residual
stream (the activation-norm criterion for structured units, in the spirit of Wanda's
|W|·||X||; Michel et al. 2019 prune heads by a gradient score instead). Layers are scored one at
a time through lobolib.compress.layerwise, each on the outputs of the layers before it with
their heads already removed; ties go to the lower head index.

Removal zeros the head's rows of q_proj (and bias) and its columns of o_proj — the latter is what
silences it: a head whose queries are zero still attends, uniformly — plus the k_proj/v_proj rows
(and biases) of a KV group left without query heads. Shapes stay, so every decoder and exporter
still works; storage counts only what remains (lobolib.compress.bits.heads).
"""

from __future__ import annotations

import torch
from torch import nn

from lobolib.errors import LoboError

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


class HeadGrams:
    """Per-head Gram matrices ``G_h = sum_t a_h a_hᵀ`` of o_proj's input [tokens, heads * head_dim]."""

    def __init__(self, heads: int, head_dim: int, device):
        self.heads, self.head_dim = heads, head_dim
        self.grams = torch.zeros(heads, head_dim, head_dim, dtype=torch.float32, device=device)

    def add(self, x: torch.Tensor) -> None:
        for chunk in x.split(4096):
            a = chunk.float().reshape(chunk.shape[0], self.heads, self.head_dim)
            self.grams += torch.einsum("thd,the->hde", a, a)


def attention_of(layer: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the layer's attention: the submodule holding q/k/v/o projections."""
    for name, module in layer.named_modules():
        if all(isinstance(getattr(module, p, None), nn.Linear) for p in PROJECTIONS):
            return name, module
    raise LoboError(f"{type(layer).__name__} has no attention with separate q_proj/k_proj/v_proj/o_proj "
                    "linear layers; method='heads' needs Llama/Mistral/Qwen-style attention")


def head_layout(model: nn.Module, attention: nn.Module) -> tuple[int, int, int]:
    """(query heads, key/value heads, head_dim) of one attention module."""
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    kv = getattr(config, "num_key_value_heads", None) or heads
    if not heads:
        raise LoboError(f"{type(model).__name__}'s config gives no num_attention_heads; method='heads' "
                        "needs it to find the heads")
    head_dim = getattr(attention, "head_dim", None) or attention.q_proj.out_features // heads
    if attention.q_proj.out_features != heads * head_dim or attention.o_proj.in_features != heads * head_dim \
            or attention.k_proj.out_features != kv * head_dim or heads % kv:
        raise LoboError(f"attention shapes do not match {heads} query heads, {kv} key/value heads of "
                        f"{head_dim}: cannot locate the heads")
    return heads, kv, head_dim


def head_scores(o_proj: nn.Linear, grams: HeadGrams) -> torch.Tensor:
    """Output energy of each query head through o_proj: trace(W_h G_h W_hᵀ) [heads]."""
    W = o_proj.weight.detach().float().reshape(o_proj.out_features, grams.heads, grams.head_dim)
    products = torch.einsum("ohd,ohe->hde", W, W)  # W_hᵀ W_h
    return (products * grams.grams).sum((1, 2))


@torch.no_grad()
def remove_heads(attention: nn.Module, heads: list[int], layout: tuple[int, int, int]) -> list[int]:
    """Zero the given query heads (q rows, o columns) and the KV groups left empty; returns those groups."""
    n_heads, n_kv, head_dim = layout
    per_group = n_heads // n_kv
    gone = set(heads)
    for h in heads:
        rows = slice(h * head_dim, (h + 1) * head_dim)
        attention.q_proj.weight[rows] = 0
        if attention.q_proj.bias is not None:
            attention.q_proj.bias[rows] = 0
        attention.o_proj.weight[:, rows] = 0
    groups = [g for g in range(n_kv) if all(g * per_group + i in gone for i in range(per_group))]
    for g in groups:
        rows = slice(g * head_dim, (g + 1) * head_dim)
        for projection in (attention.k_proj, attention.v_proj):
            projection.weight[rows] = 0
            if projection.bias is not None:
                projection.bias[rows] = 0
    return groups


class HeadPruning:
    """The layer step of method='heads' for lobolib.compress.layerwise."""

    def __init__(self, model: nn.Module, fraction: float):
        self.model, self.fraction = model, fraction
        self.removed: dict[int, list[int]] = {}
        self.kv_groups: dict[int, list[int]] = {}
        self.layouts: dict[int, tuple[int, int, int]] = {}

    def observers(self, index: int, layer: nn.Module) -> dict:
        name, attention = attention_of(layer)
        layout = self.layouts[index] = head_layout(self.model, attention)
        prefix = f"{name}." if name else ""
        return {f"{prefix}o_proj": HeadGrams(layout[0], layout[2], attention.o_proj.weight.device)}

    def compress(self, index: int, layer: nn.Module, observed: dict) -> None:
        _, attention = attention_of(layer)
        (grams,) = observed.values()
        scores = head_scores(attention.o_proj, grams)
        count = round(self.fraction * self.layouts[index][0])
        chosen = sorted(torch.sort(scores.cpu(), stable=True).indices[:count].tolist())
        self.removed[index] = chosen
        self.kv_groups[index] = remove_heads(attention, chosen, self.layouts[index])

    def summary(self, prunable_weights: int) -> dict:
        """Heads removed, as a fraction of heads and of the prunable weights."""
        heads = sum(layout[0] for layout in self.layouts.values())
        removed = sum(len(h) for h in self.removed.values())
        zeroed = 0
        for index, chosen in self.removed.items():
            n_heads, n_kv, head_dim = self.layouts[index]
            attention = attention_of(self._layer(index))[1]
            zeroed += len(chosen) * head_dim * (attention.q_proj.in_features + attention.o_proj.out_features)
            zeroed += len(self.kv_groups[index]) * head_dim * (attention.k_proj.in_features + attention.v_proj.in_features)
        return {"unit": "query head", "removed": self.removed, "kv_groups_removed": self.kv_groups,
                "heads_fraction": removed / heads if heads else 0.0,
                "weights_fraction": zeroed / prunable_weights if prunable_weights else 0.0}

    def _layer(self, index: int) -> nn.Module:
        from lobolib.compress.layerwise import decoder_layers

        return decoder_layers(self.model)[index]
