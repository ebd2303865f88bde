"""Token-weighted perplexity over fixed-length windows of held-out text (e.g. WikiText-2 test).

``text_windows(text, tokenizer, seq_len, max_windows)`` cuts the tokenized text (no special
tokens) into consecutive non-overlapping windows of ``seq_len`` tokens, from the start, as the
SparseGPT/GPTQ/Wanda evaluations do (their windows are 2048 tokens of the test split joined by
blank lines). ``perplexity(model, windows)`` scores every token of a window but its first from
the tokens before it in the same window: ``ppl = exp(nll_sum / tokens)``, tokens = n·(L - 1).
The per-window sums are returned too, so a sweep can store one record per window and a table
can re-aggregate (or bootstrap) them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lobolib.errors import LoboError

BATCH_TOKENS = 8192
"""Default tokens per forward (batch size = this // seq_len): bounds the logits' memory."""


def text_windows(text: str, tokenizer, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
    """LongTensor [n, seq_len]: consecutive windows of the tokenized text (at most max_windows)."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise LoboError(f"seq_len must be an integer of at least 2 tokens, got {seq_len!r}")
    if max_windows is not None and (isinstance(max_windows, bool) or not isinstance(max_windows, int)
                                    or max_windows < 1):
        raise LoboError(f"max_windows must be a positive integer or None, got {max_windows!r}")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    count = len(ids) // seq_len
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise LoboError(f"the text has {len(ids)} tokens, fewer than one window of {seq_len}: "
                        "use a longer text or a shorter seq_len")
    return torch.tensor(ids[:count * seq_len], dtype=torch.int64).reshape(count, seq_len)


@torch.no_grad()
def perplexity(model, token_windows: torch.Tensor, batch_size: int | None = None) -> dict:
    """Perplexity of `model` on `token_windows` [n, L]: {"nll_sum", "tokens", "ppl",
    "window_nll" (n sums), "window_tokens" (L - 1 each)}. Log-probabilities in fp32."""
    if not isinstance(token_windows, torch.Tensor) or token_windows.dim() != 2 \
            or token_windows.is_floating_point() or token_windows.shape[1] < 2:
        raise LoboError("token_windows must be a LongTensor [n_windows, seq_len] with seq_len >= 2 "
                        "(text_windows makes one)")
    vocab = model.get_input_embeddings().num_embeddings
    if int(token_windows.min()) < 0 or int(token_windows.max()) >= vocab:
        raise LoboError(f"token ids outside the model's vocabulary of {vocab}: were the windows made "
                        "with another model's tokenizer?")
    n, length = token_windows.shape
    batch = batch_size or max(1, BATCH_TOKENS // length)
    device = model.get_input_embeddings().weight.device
    training = model.training
    model.eval()
    sums = []
    try:
        for start in range(0, n, batch):
            ids = token_windows[start:start + batch].to(device)
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
            sums.extend(nll.reshape(ids.shape[0], -1).sum(1).double().tolist())
    finally:
        model.train(training)
    nll_sum = math.fsum(sums)
    tokens = n * (length - 1)
    return {"nll_sum": nll_sum, "tokens": tokens, "ppl": math.exp(nll_sum / tokens),
            "window_nll": sums, "window_tokens": length - 1}
