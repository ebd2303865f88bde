"""Batched greedy decoding for the evaluator, built for throughput on a GPU.

`greedy` does what `model.generate(do_sample=False)` does for a batch of prompts — the first
decode step's logits, then `new_tokens` greedy tokens with rows stopping at end-of-sequence — in a
loop of plain forward calls shaped for speed:

* Right padding in the prefill. Each prompt starts at position 0 and pad tokens only follow real
  ones, so causal attention alone keeps them out of every real token's view: the prefill needs no
  attention mask, which lets scaled-dot-product attention take its flash kernel and share the
  key/value heads among query heads (grouped-query attention) without copying them. The first
  token's logits are read at each row's own last prompt position.
* Decode steps see the pad slots of the cache through a 4-D mask built once per batch. For the
  single query of a decode step, the query heads of each key/value group are laid out as rows of
  one query block (`_attention`), so the cache is read once per group rather than copied per head.
* No host synchronisation per token. Finished rows are tracked on the device; every step is
  queued at once and the tokens come back in one copy at the end. A step costs the GPU a few
  milliseconds but Python more than that to launch, so queuing them behind the prompt's forward
  pass hides their launch cost. The price: a batch always runs `new_tokens` steps, even when every
  row has ended early — at most 9 cheap steps.

`supports(model, total_length)` says whether a model can take this path (decoder-only families
whose attention runs through transformers' attention interface, a greedy generation config, and
lengths inside any sliding window); the evaluator falls back to `generate` otherwise. Both paths
give the same tokens and first-token log-probabilities (tested against `generate`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

ATTENTION_NAME = "lobolib_sdpa"
FAMILIES = frozenset({"mistral", "llama", "qwen2", "qwen3"})
"""Model types whose causal LM is `lm_head(norm(decoder(...)))` with attention dispatched through
transformers' attention interface by `config._attn_implementation`."""

SDPA_BACKENDS = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)
"""Attention kernels decoding may use. Not cuDNN's: it builds an execution plan for every new
shape, and decoding brings a new shape at every step and every batch — profiled on an H100
(torch 2.11), its attention calls cost 2.3 ms of CPU each (through `generate`) and held a bare
decode step of a 16-prompt batch at over 100 ms."""

_GREEDY_NEUTRAL = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
}
"""Generation-config fields that `generate` would turn into logits processors changing the greedy
choice; a model whose config sets any of them goes through `generate`."""


def supports(model, total_length: int) -> str | None:
    """None when `greedy` can decode for `model` with prompts plus new tokens up to `total_length`
    positions; otherwise the reason it cannot (the caller then uses `generate`)."""
    config = model.config
    if getattr(config, "model_type", None) not in FAMILIES:
        return f"model type {getattr(config, 'model_type', None)!r} is not one of {sorted(FAMILIES)}"
    if getattr(config, "_attn_implementation", None) not in ("sdpa", ATTENTION_NAME):
        return f"attention implementation {config._attn_implementation!r} is not sdpa"
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True) and total_length > window:
        return f"{total_length} positions exceed the sliding window of {window}"
    generation = model.generation_config
    for field, neutral in _GREEDY_NEUTRAL.items():
        if getattr(generation, field, None) not in neutral:
            return f"generation_config.{field} = {getattr(generation, field)!r} changes greedy decoding"
    if _register() is None:
        return "this transformers version has no attention interface"
    return None


def _register():
    """Register `_attention` with transformers under ATTENTION_NAME (once); None when the installed
    transformers has no attention interface."""
    try:
        from transformers import AttentionInterface
    except ImportError:
        return None
    AttentionInterface.register(ATTENTION_NAME, _attention)
    return ATTENTION_NAME


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """Scaled-dot-product attention for `greedy`'s two calls (query, key, value: batch, heads,
    positions, head dim; returns batch, positions, heads, head dim):

    * no mask (the right-padded prefill): causal attention, key/value heads shared by their query
      groups inside the kernel;
    * one query position with a mask (a decode step): the query heads of each key/value group
      become the rows of one query block, so the mask (the same for every head) broadcasts and the
      cache is read as it is stored.
    Anything else goes to transformers' own SDPA attention."""
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, length, dim = query.shape
    if attention_mask is None:
        causal = length > 1 and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
        out = F.scaled_dot_product_attention(query, key, value, is_causal=causal, scale=scaling,
                                             enable_gqa=groups > 1)
        return out.transpose(1, 2).contiguous(), None
    if length == 1 and attention_mask.dim() == 4 and attention_mask.shape[1] == 1:
        packed = query.reshape(batch, heads // groups, groups, dim)
        out = F.scaled_dot_product_attention(packed, key, value, attn_mask=attention_mask, scale=scaling)
        return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


@contextmanager
def _lobolib_attention(model):
    """Route the model's attention through `_attention` for the duration (restored after)."""
    if _register() is None:
        raise RuntimeError("decode.greedy needs transformers' AttentionInterface; check decode.supports first")
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = before


def _cache_argument(decoder) -> str:
    """The decoder's keyword for the KV cache: "cache" from transformers 5.24 on, "past_key_values"
    before."""
    return "cache" if "cache" in inspect.signature(type(decoder).forward).parameters else "past_key_values"


def _right_pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists: (input_ids on `device`, lengths on `device`)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return ids.to(device), lengths.to(device)


def greedy(model, rows: Sequence[Sequence[int]], *, pad_id: int, eos_ids: Sequence[int], new_tokens: int,
           label_ids: Sequence[int] | None, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Greedy-decode `new_tokens` tokens after each prompt in `rows` (token id lists).

    Returns (tokens, logprobs) on the CPU: a (rows, new_tokens) long tensor, `pad_id` after a row's
    end-of-sequence token (as `generate` pads), and the log-probabilities over the vocabulary of
    `label_ids` at the first decode step, (rows, labels) float, or None without `label_ids`.
    `device` is where the prompt tokens go (the input embedding's device)."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    ids, lengths = _right_pad(rows, pad_id, device)
    batch, width = ids.shape
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device)
    with _lobolib_attention(model), sdpa_kernel(list(SDPA_BACKENDS)):
        cache_argument = _cache_argument(decoder)
        out = decoder(input_ids=ids, use_cache=True)
        hidden = out.last_hidden_state  # on the last layer's card when the model spans several
        last = hidden[torch.arange(batch, device=hidden.device), (lengths - 1).to(hidden.device)]
        logits = head(last).float()
        logprobs = None if label_ids is None else torch.log_softmax(logits, dim=-1)[:, list(label_ids)]
        token = logits.argmax(dim=-1).to(device)
        done = torch.isin(token, eos)
        tokens = [token]
        cache = out[cache_argument]
        slots = torch.arange(width + new_tokens, device=device)
        visible = ((slots[None, :] < lengths[:, None]) | (slots[None, :] >= width))[:, None, None, :]
        for step in range(1, new_tokens):
            out = decoder(input_ids=token[:, None], attention_mask=visible[..., :width + step],
                          position_ids=(lengths + step - 1)[:, None], use_cache=True, **{cache_argument: cache})
            step_logits = head(out.last_hidden_state[:, -1])
            token = torch.where(done, pad_id, step_logits.argmax(dim=-1).to(device))
            done = done | torch.isin(token, eos)
            tokens.append(token)
    result = torch.stack(tokens, dim=1).cpu()
    return result, None if logprobs is None else logprobs.cpu()
