"""Batched greedy decoding for the evaluator, built for throughput on a GPU.

`greedy` does what `model.generate(do_sample=False)` does for a batch of prompts — the first
decode step's logits, then `new_tokens` greedy tokens with rows stopping at end-of-sequence — in a
loop over `lobolib.forward.Stack`, the decoder's fused forward pass with a static KV cache:

* Right padding in, pads dropped in the prefill. Each prompt starts at position 0; the prefill
  packs the real tokens one prompt after another and attends within each prompt (see
  `lobolib.forward`), so pads cost no matrix products. The first token's logits are read at each
  row's own last prompt position (the only position the prefill's last layer finishes).
* Decode steps write each new token's keys and values into the next cache slot and attend to the
  prompt's real slots and the generated ones through a mask built once per batch.
* No host synchronisation per token. Finished rows are tracked on the device; every step is
  queued at once and the tokens come back in one copy at the end. A step costs the GPU a few
  milliseconds but Python more than that to launch, so queuing them behind the prompt's forward
  pass hides their launch cost. The price: a batch always runs `new_tokens` steps, even when every
  row has ended early — at most 9 cheap steps.

`supports(model, total_length)` says whether a model can take this path (decoder-only families
with the structure `lobolib.forward` computes, a greedy generation config, and lengths inside any
sliding window); the evaluator falls back to `generate` otherwise. Both paths give the same tokens
and first-token log-probabilities (tested against `generate`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from lobolib.evaluation import forward

FAMILIES = frozenset({"mistral", "llama", "qwen2", "qwen3"})
"""Model types whose causal LM is `lm_head(norm(decoder(embed(ids))))` with nothing between the
decoder layers that `lobolib.forward` would miss (no embedding scale, no logit soft-capping)."""

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
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True) and total_length > window:
        return f"{total_length} positions exceed the sliding window of {window}"
    generation = model.generation_config
    for field, neutral in _GREEDY_NEUTRAL.items():
        if getattr(generation, field, None) not in neutral:
            return f"generation_config.{field} = {getattr(generation, field)!r} changes greedy decoding"
    return forward.supports(model)


def _right_pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists: (input_ids on `device`, lengths on `device`)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return ids.to(device), lengths.to(device)


class _Decoding:
    """The decode loop's state, all on the device, and one step that advances it in place: feed
    `token`, write the next one back into `token`, mark rows that ended, move to the next slot.
    Every tensor keeps its storage from step to step, which is what lets `greedy` capture one
    step in a CUDA graph and replay it for the rest."""

    def __init__(self, stack: forward.Stack, head, first: torch.Tensor, lengths: torch.Tensor, width: int,
                 new_tokens: int, pad_id: int, eos: torch.Tensor):
        self.stack, self.head, self.pad_id, self.eos = stack, head, pad_id, eos
        self.token = first
        self.done = self._ended(first)
        self.positions = lengths.clone()  # rotary position of the token being fed
        self.slot = torch.full((1,), width, dtype=torch.long, device=first.device)  # where its keys go
        self.slots = torch.arange(width + new_tokens, device=first.device)
        self.prompt_or_new = ((self.slots[None, :] < lengths[:, None]) | (self.slots[None, :] >= width))[:, None, None, :]

    def _ended(self, token: torch.Tensor) -> torch.Tensor:
        return (token[:, None] == self.eos[None, :]).any(dim=1)

    def step(self) -> None:
        visible = self.prompt_or_new & (self.slots <= self.slot)
        hidden = self.stack.step(self.token, self.positions, self.slot, visible)
        chosen = self.head(hidden).argmax(dim=-1).to(self.token.device)
        self.token.copy_(torch.where(self.done, self.pad_id, chosen))
        self.done |= self._ended(self.token)
        self.positions += 1
        self.slot += 1


class _Replay:
    """A batch's decode steps as one CUDA graph: a step is captured once and every step after it
    is a replay — one launch instead of hundreds (a step's kernels take about 5 ms of an H100,
    their launches about 25 ms of Python). The first batch of a process runs its first step
    eagerly, which compiles and warms up every kernel a step uses; later batches of two rows or
    more of a decoder of the same shapes capture their first step directly. Off with
    `LOBOLIB_CUDA_GRAPHS=0`; after a failed capture (with a warning saying why) steps run eagerly
    for the rest of the process. (Seen with torch 2.11: a capture that fails inside
    `capture_begin` leaves the card's random generator marked as capturing, and later
    `torch.randn` calls on it fail; decoding itself draws no random numbers.)

    Each graph has its own memory pool, which PyTorch keeps reserved after the graph is gone
    (it frees it when an allocation needs the room); `evaluate`'s batch budget counts such
    cached memory as free. Sharing one pool between the batches' graphs fails in torch 2.11
    (an internal use-count assertion once the first graph is freed), so they do not."""

    failed: str | None = None
    warmed: set = set()  # signatures of stacks whose step was captured: their kernels exist

    @classmethod
    def wanted(cls, stack: forward.Stack) -> bool:
        return (cls.failed is None and os.environ.get("LOBOLIB_CUDA_GRAPHS", "1") != "0"
                and stack.on_one_cuda_device())

    def __init__(self, decoding: _Decoding):
        self.decoding = decoding
        self.graph = None

    def capture(self) -> bool:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.stream(stream):
                graph.capture_begin()
                try:
                    self.decoding.step()
                finally:
                    graph.capture_end()
        except Exception as error:  # an op that syncs or allocates on the host: step eagerly
            _Replay.failed = forward.failure(error)
            warnings.warn(f"lobolib.decode: CUDA graph capture failed ({_Replay.failed}); decoding eagerly",
                          stacklevel=3)
            torch.cuda.synchronize()
            return False
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = graph
        _Replay.warmed.add(self.decoding.stack.signature())
        return True

    def first_step(self, batch: int) -> int:
        """The decode step to capture: 1 once warmed up (batch size 1 would need kernels
        specialised for one row), else 2 after an eager warm-up step."""
        return 1 if self.decoding.stack.signature() in _Replay.warmed and batch > 1 else 2


def greedy(model, rows: Sequence[Sequence[int]], *, pad_id: int, eos_ids: Sequence[int], new_tokens: int,
           label_ids: Sequence[int] | None, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Greedy-decode `new_tokens` tokens after each prompt in `rows` (token id lists).

    Returns (tokens, logprobs) on the CPU: a (rows, new_tokens) long tensor, `pad_id` after a row's
    end-of-sequence token (as `generate` pads), and the log-probabilities over the vocabulary of
    `label_ids` at the first decode step, (rows, labels) float, or None without `label_ids`.
    `device` is where the prompt tokens go (the input embedding's device)."""
    head = model.get_output_embeddings()
    ids, lengths = _right_pad(rows, pad_id, device)
    batch, width = ids.shape
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device)
    with sdpa_kernel(list(SDPA_BACKENDS)):
        stack = forward.Stack(model, batch, width + new_tokens)
        logits = head(stack.prefill(ids, lengths)).float()
        logprobs = None if label_ids is None else torch.log_softmax(logits, dim=-1)[:, list(label_ids)]
        decoding = _Decoding(stack, head, logits.argmax(dim=-1).to(device), lengths, width, new_tokens, pad_id, eos)
        tokens = [decoding.token.clone()]
        replay = _Replay(decoding) if _Replay.wanted(stack) else None
        capture_at = replay.first_step(batch) if replay is not None else None
        for step in range(1, new_tokens):
            if step == capture_at and not replay.capture():
                replay = None
            if replay is not None and replay.graph is not None:
                replay.graph.replay()
            else:
                decoding.step()
            tokens.append(decoding.token.clone())
    result = torch.stack(tokens, dim=1).cpu()
    return result, None if logprobs is None else logprobs.cpu()
