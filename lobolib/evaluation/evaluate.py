"""Evaluate a model on benchmark items: batched greedy generation and first-token option scores
in one pass.

For every item, one greedy decoding pass over a batch of prompts yields two things at once:

* the generated answer text (the new tokens, decoded), which `lobolib.parsing` turns into an
  answer and a tier — what the model *says*;
* the log-probability of each option label's first token (" yes"/" no"/" maybe" for PubMedQA,
  " A".." D" for MMLU) at the first decode step — the logits at the last prompt position, which
  decoding computes anyway. Their argmax is the log-likelihood answer — what the model *knows*.

Telling the two apart item by item is what separates generation collapse from knowledge loss.

Design decisions (see also `evaluate`'s docstring):

* Batching: prompts are tokenised once, sorted by token length (longest first, so an
  out-of-memory error shows up in the first batches) and cut into the batches of least
  estimated cost (padding against a fixed cost per batch, `plan_batches`); each batch is padded
  by hand (whatever the tokenizer's `padding_side`) and decoded in one call of
  `lobolib.decode.greedy` (right padding, a fused forward pass over the real tokens only with a
  static cache, no host sync per token: the fast path for Mistral/Llama/Qwen-style models, where
  a pad costs little, `PACKED_PAD_COST`) or, for other models,
  `model.generate` (left padding). Both give the same tokens and scores. Records come back in
  the input order.
* Batch size: `batch_size=None` sizes batches from a memory budget (free GPU memory, or a fixed
  budget on CPU) and a per-token cost estimated from the model config. On
  `torch.OutOfMemoryError` the batch limit is halved (for the rest of the call too) and the same
  batch is retried; no item is dropped. An out-of-memory error at one prompt per batch is a
  `LoboError`: the model does not fit.
* Stopping: generation stops per row at the model's end-of-sequence token and ends when every row
  has stopped or `max_new_tokens` (10 PubMedQA, 5 MMLU: the reference study's) is reached. No
  newline stop: the reference study's parser reads the whole 10/5-token response ("contains
  yes"), so cutting it short would change what its compatible mode sees; and at these lengths the
  decode steps are a small share of a batch's cost next to the prompt's forward pass (the fast
  path always runs all `max_new_tokens` steps, padding rows that ended, rather than wait on the
  host to learn that every row has).
* Truncation: a prompt that with `max_new_tokens` exceeds the model's maximum positions raises
  `LoboError` (naming the items); prompts are never truncated silently, since cutting a PubMedQA
  context changes the question.
* Mixed benchmarks in one call are allowed: items are grouped by benchmark (each has its own
  labels and default `max_new_tokens`).
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.attention import sdpa_kernel

from lobolib.benchmarks import PERPLEXITY, Benchmark, build_prompt
from lobolib.benchmarks import get as get_benchmark
from lobolib.errors import LoboError
from lobolib.evaluation import decode, forward, parsing
from lobolib.records import DENSE, Item, Record, prompt_hash

CPU_BUDGET_BYTES = 2 * 2**30  # memory a CPU batch may use
GPU_FREE_FRACTION = 0.7  # share of free GPU memory a batch may use
MAX_AUTO_BATCH = {"cpu": 64, "cuda": 1024}  # beyond this, bigger batches buy no speed
STEP_COST_TOKENS = 600
"""What one decode step of a batch costs, in prompt tokens of its prefill. A step reads every
weight once whatever the batch size, so its floor is a card's FLOP/s over its memory bytes/s
(about 300 on an H100 in bf16); with the cache reads, the step's compute and the graph capture,
a PubMedQA batch's decode measured 110-190 ms on an H100 against 21 us per prefill token: 500
to 900 tokens a step. Batch planning weighs padding against this per-batch cost."""
UNSPECIFIED = "unspecified"  # the method of records whose caller did not name the compression
PACKED_PAD_COST = 0.05
"""What a pad token costs, in prompt tokens, where `decode.greedy` decodes: its prefill drops the
pads before the matrix products, so a pad only takes a zeroed cache slot that every decode step
reads (about 0.4 us for Mistral-7B's 11 steps on an H100, against 21 us a prompt token: 0.02),
plus, without flash attention over packed prompts, a place in the padded attention. Through
`generate` a pad costs what a prompt token does (1). Measured on an H100 (random-weight
Mistral-7B, bf16, 3 alternated rounds): planning with 0.05 instead of 1 put PubMedQA in 5
batches, not 7 (9.51-9.61 s against 9.75-9.85 s), and MMLU in 2, not 6 (1.90-1.96 s against
2.12-2.18 s)."""


# --------------------------------------------------------------------------------------------
# Option labels -> token ids
# --------------------------------------------------------------------------------------------


def option_token_ids(tokenizer, labels: Sequence[str], prompt_end: str = "Answer:") -> dict[str, int] | None:
    """The token id of each option label's first token as it follows `prompt_end`.

    The label is appended after a space (no space where `prompt_end` already ends in whitespace),
    and the first token where "prompt_end + label" departs from "prompt_end" alone is the label's
    first token — "Ġyes" for byte-level BPE, "▁yes" for SentencePiece (Llama, Mistral) — with no
    BOS (`add_special_tokens=False`). Returns None, with a warning, when no such token exists (the
    label merges into the prompt's last token) or when two labels share their first token: then
    the first-token scores could not tell the options apart and records carry no log-likelihood
    answer.
    """
    sep = "" if prompt_end[-1:].isspace() else " "
    base = tokenizer(prompt_end, add_special_tokens=False)["input_ids"]
    ids: dict[str, int] = {}
    for label in labels:
        full = tokenizer(prompt_end + sep + label, add_special_tokens=False)["input_ids"]
        k = next((i for i, (a, b) in enumerate(zip(base, full)) if a != b), min(len(base), len(full)))
        if k != len(base) or k >= len(full):
            warnings.warn(
                f"option label {label!r} does not start a new token after {prompt_end!r} with this "
                "tokenizer; first-token option scores are skipped (loglik_answer None).",
                stacklevel=3,
            )
            return None
        ids[label] = full[k]
    if len(set(ids.values())) < len(ids):
        warnings.warn(
            f"option labels {list(labels)} share a first token with this tokenizer "
            f"({ids}); first-token option scores are skipped (loglik_answer None).",
            stacklevel=3,
        )
        return None
    return ids


# --------------------------------------------------------------------------------------------
# Batch planning
# --------------------------------------------------------------------------------------------


@dataclass
class BatchBudget:
    """How large a batch may be: at most `max_batch` prompts and at most `bytes` of estimated
    memory, where a batch costs `count * (tokens * per_token + per_sequence + attention)`."""

    max_batch: int
    bytes: float
    per_token: float
    per_sequence: float
    attention_per_token2: float

    def cost(self, count: int, padded_len: int, new_tokens: int) -> float:
        """Estimated bytes for `count` prompts of `padded_len` tokens generating `new_tokens`."""
        total = padded_len + new_tokens
        return count * (total * self.per_token + self.per_sequence + total * total * self.attention_per_token2)

    def max_count(self, padded_len: int, new_tokens: int) -> int:
        """The most prompts of `padded_len` tokens a batch may hold (at least one)."""
        per_prompt = self.cost(1, padded_len, new_tokens)
        room = self.max_batch if per_prompt <= 0 or not math.isfinite(self.bytes) else int(self.bytes // per_prompt)
        return max(1, min(self.max_batch, room))

    def halve(self, failed_count: int) -> None:
        """Shrink after an out-of-memory error on a batch of `failed_count` prompts."""
        self.max_batch = max(1, failed_count // 2)
        if math.isfinite(self.bytes):
            self.bytes /= 2


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _memory_costs(model, vocab_size: int, new_tokens: int) -> tuple[float, float, float]:
    """(per token, per sequence, attention per token²) bytes of a generate call, estimated from
    the config: the KV cache and one layer's transient activations per token (twice, as margin),
    the stored first/next-token logits per sequence, and one layer's attention scores."""
    cfg = _text_config(model)
    hidden = getattr(cfg, "hidden_size", 1024)
    layers = getattr(cfg, "num_hidden_layers", 24)
    heads = getattr(cfg, "num_attention_heads", 16)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    inter = getattr(cfg, "intermediate_size", None) or 4 * hidden
    elt = next(model.parameters()).element_size()
    per_token = 2 * layers * kv_heads * head_dim * elt + 2 * (4 * hidden + 3 * inter) * elt
    per_sequence = 4 * vocab_size * (new_tokens + 3)
    attention = heads * 4 * 2
    return float(per_token), float(per_sequence), float(attention)


def _devices(model) -> list[torch.device]:
    """The devices the model's weights live on."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        names = {v for v in device_map.values() if v not in ("disk",)}
        out = []
        for name in names:
            if isinstance(name, int):
                out.append(torch.device("cuda", name))
            else:
                out.append(torch.device(name))
        return out
    return list({p.device for p in model.parameters()})


def input_device(model) -> torch.device:
    """Where the prompt tokens go: the input embedding's device (right for device_map models)."""
    device = model.get_input_embeddings().weight.device
    if device.type == "meta":  # offloaded weights: accelerate's hooks move the inputs
        return torch.device("cpu")
    return device


def _free_bytes(device: torch.device) -> int:
    """Memory a batch can take on a CUDA device: what the driver has free plus what PyTorch's
    allocator holds cached but unused (earlier batches' blocks, which it hands out again)."""
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return torch.cuda.mem_get_info(device)[0] + cached


def auto_budget(model, vocab_size: int, new_tokens: int) -> BatchBudget:
    """The automatic batch budget: a share of the free memory of the model's GPUs (the least free
    one), or a fixed CPU budget."""
    per_token, per_sequence, attention = _memory_costs(model, vocab_size, new_tokens)
    cuda = [d for d in _devices(model) if d.type == "cuda"]
    if cuda:
        free = min(_free_bytes(d) for d in cuda)
        return BatchBudget(MAX_AUTO_BATCH["cuda"], GPU_FREE_FRACTION * free, per_token, per_sequence, attention)
    return BatchBudget(MAX_AUTO_BATCH["cpu"], CPU_BUDGET_BYTES, per_token, per_sequence, attention)


def fixed_budget(batch_size: int) -> BatchBudget:
    """A budget of exactly `batch_size` prompts per batch (halved on out-of-memory)."""
    return BatchBudget(batch_size, math.inf, 0.0, 0.0, 0.0)


def plan_batches(lengths: Sequence[int], order: Sequence[int], start: int, budget: BatchBudget,
                 new_tokens: int, pad_cost: float = 1.0) -> list[int]:
    """How many prompts from `order[start:]` (sorted longest first) go into each batch, in order:
    the cheapest split of them into batches the budget allows.

    A batch costs its prompt tokens, plus `pad_cost` per pad (what padding to its longest prompt
    adds), plus `(new_tokens + 1) * STEP_COST_TOKENS` for its decode steps and launch — so where
    padding costs compute, a few very long prompts are not padded into a big batch of short ones,
    and a handful of short ones left at the end do not become a batch of their own when padding
    them into the last batch costs less. Solved exactly by dynamic programming over the sorted
    lengths, once per benchmark (tens of milliseconds for 1,000 prompts) and again only after an
    out-of-memory error shrinks the budget."""
    widths = np.asarray([lengths[i] for i in order[start:]], dtype=np.float64)
    n = len(widths)
    per_batch = (new_tokens + 1) * STEP_COST_TOKENS
    tokens_from = np.concatenate([np.cumsum(widths[::-1])[::-1], [0.0]])  # prompt tokens of [i, n)
    best = np.zeros(n + 1)
    first = np.ones(n, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        most = min(n - i, budget.max_count(int(widths[i]), new_tokens))
        counts = np.arange(1, most + 1)
        tokens = tokens_from[i] - tokens_from[i + counts]
        costs = tokens + pad_cost * (widths[i] * counts - tokens) + per_batch + best[i + 1:i + most + 1]
        pick = int(np.argmin(costs))
        best[i], first[i] = costs[pick], counts[pick]
    plan, i = [], 0
    while i < n:
        plan.append(int(first[i]))
        i += plan[-1]
    return plan


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into input_ids and attention_mask tensors."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def _pad_id(model, tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if model.generation_config.pad_token_id is not None:
        return model.generation_config.pad_token_id
    eos = _eos_ids(model, tokenizer)
    if not eos:
        raise LoboError("the tokenizer has neither a pad nor an end-of-sequence token; set tokenizer.pad_token.")
    return eos[0]


def _eos_ids(model, tokenizer) -> list[int]:
    """The end-of-sequence token ids generation stops at: the generation config's, else the
    tokenizer's (none: rows never stop early)."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


def _generate(model, rows, *, pad_id, eos_ids, new_tokens, label_ids):
    """The same contract as `decode.greedy`, through `model.generate` (left padding): the path for
    models `decode.supports` turns away."""
    input_ids, attention_mask = _left_pad(rows, pad_id, input_device(model))
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=new_tokens,
        do_sample=False,
        num_beams=1,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=pad_id,
        eos_token_id=eos_ids or None,
        output_logits=True,
        return_dict_in_generate=True,
    )
    tokens = out.sequences[:, input_ids.shape[1]:].cpu()
    logprobs = None
    if label_ids is not None:
        first = out.logits[0].float()  # logits at the last prompt position: the first decode step
        logprobs = torch.log_softmax(first, dim=-1)[:, label_ids].cpu()
    return tokens, logprobs


def decoding_path(model, total_length: int = 512) -> str:
    """Which decoder `evaluate` uses for `model`: "lobolib greedy (<glue>)" (`lobolib.decode` over
    `lobolib.forward`, its glue kernels compiled or eager) or "transformers generate (<why>)"."""
    reason = decode.supports(model, total_length)
    if reason is not None:
        return f"transformers generate ({reason})"
    glue = "compiled glue" if forward.compiled(input_device(model)) else "eager glue"
    return f"lobolib greedy ({glue})"


def generate_batch(model, tokenizer, rows, *, pad_id: int, new_tokens: int, label_ids: list[int] | None):
    """Greedy generation for a batch of tokenised prompts: `decode.greedy` where the model allows,
    else `model.generate`.

    Returns (texts, logprobs): the decoded new tokens of each row (special tokens skipped,
    surrounding whitespace stripped) and a (rows, labels) float tensor of the labels' first-token
    log-probabilities at the first decode step (None when `label_ids` is None).
    """
    eos_ids = _eos_ids(model, tokenizer)
    total = max(len(r) for r in rows) + new_tokens
    if decode.supports(model, total) is None:
        tokens, logprobs = decode.greedy(model, rows, pad_id=pad_id, eos_ids=eos_ids, new_tokens=new_tokens,
                                         label_ids=label_ids, device=input_device(model))
    else:
        with sdpa_kernel(list(decode.SDPA_BACKENDS)):
            tokens, logprobs = _generate(model, rows, pad_id=pad_id, eos_ids=eos_ids, new_tokens=new_tokens,
                                         label_ids=label_ids)
    texts = [t.strip() for t in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    return texts, logprobs


def _pad_cost(model, total_length: int) -> float:
    """What a pad token costs the decoder `model` goes through, in prompt tokens."""
    return PACKED_PAD_COST if decode.supports(model, total_length) is None else 1.0


def _run_batches(model, tokenizer, group_rows, budget, *, pad_id, new_tokens, label_ids, bar):
    """Generate for every row of `group_rows`, batch by batch, halving the budget on
    out-of-memory. Returns texts and log-prob rows in `group_rows` order."""
    lengths = [len(r) for r in group_rows]
    order = sorted(range(len(group_rows)), key=lambda i: -lengths[i])
    texts: list[str | None] = [None] * len(group_rows)
    logprobs: list[list[float] | None] = [None] * len(group_rows)
    start = 0
    pad_cost = _pad_cost(model, max(lengths, default=0) + new_tokens)
    plan = plan_batches(lengths, order, start, budget, new_tokens, pad_cost)
    while start < len(order):
        count = plan[0]
        batch = order[start:start + count]
        out_of_memory = False
        try:
            batch_texts, batch_lp = generate_batch(
                model, tokenizer, [group_rows[i] for i in batch],
                pad_id=pad_id, new_tokens=new_tokens, label_ids=label_ids,
            )
        except torch.OutOfMemoryError:
            out_of_memory = True  # retry outside the handler, so the traceback's tensors are freed
        if out_of_memory:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if count == 1:
                raise LoboError(
                    "the model does not fit: out of GPU memory on a single prompt of "
                    f"{lengths[batch[0]]} tokens. Use a smaller dtype, more devices (device_map/max_memory) "
                    "or a smaller model."
                )
            budget.halve(count)
            plan = plan_batches(lengths, order, start, budget, new_tokens, pad_cost)
            continue
        for j, i in enumerate(batch):
            texts[i] = batch_texts[j]
            logprobs[i] = None if batch_lp is None else batch_lp[j].tolist()
        start += count
        plan.pop(0)
        bar.update(count)
    return texts, logprobs


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _max_positions(model) -> int | None:
    cfg = _text_config(model)
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _shots_for(item: Item, shots: Mapping | None) -> Sequence[Item]:
    """The solved examples shown before `item`: shots[(benchmark, subject)]; none for a benchmark
    without entries; an error for a subject missing where its benchmark has some."""
    key = (item.benchmark, item.subject)
    if not shots or key in shots:
        return shots[key] if shots else ()
    if any(benchmark == item.benchmark for benchmark, _ in shots):
        raise LoboError(f"shots has no examples for {item.benchmark} subject {item.subject!r}; add "
                        f"shots[({item.benchmark!r}, {item.subject!r})] (an empty list for zero-shot)")  # fmt: skip
    return ()


def per_benchmark(value, benchmark: str, default):
    """`value` for one benchmark: a Mapping is looked up by benchmark name (`default` when the
    benchmark is absent or maps to None), anything else applies to every benchmark."""
    if isinstance(value, Mapping):
        value = value.get(benchmark)
    return default if value is None else value


def _records_of(items, declared: Mapping[str, Benchmark] | None) -> dict[str, Benchmark]:
    """The Benchmark record of every benchmark the items come from."""
    return {name: get_benchmark(name, declared) for name in dict.fromkeys(it.benchmark for it in items)}


def _validate(records: Mapping[str, Benchmark], max_new_tokens, batch_size, template) -> None:
    for name, record in records.items():
        if record.kind == PERPLEXITY:
            continue
        steps = per_benchmark(max_new_tokens, name, record.max_new_tokens)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise LoboError(
                f"max_new_tokens must be a positive integer, a dict benchmark -> positive integer, or None; "
                f"got {steps!r} for {name}."
            )
        chosen = per_benchmark(template, name, "reference")
        if not isinstance(chosen, str):
            raise LoboError(f"template must be a name or a dict benchmark -> name, got {template!r}.")
        record.template(chosen)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise LoboError(f"batch_size must be a positive integer or None (automatic), got {batch_size!r}.")


def _label(method: str | None, level: float | None, sparsity: float) -> tuple[str, float, float]:
    """(method, level, sparsity) of the records, checked for agreement."""
    import math

    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise LoboError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    level = sparsity if level is None else level
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not math.isfinite(level) or level < 0:
        raise LoboError(f"level must be a finite number >= 0, got {level!r}")
    if method is None:
        method = DENSE if sparsity == 0 and level == 0 else UNSPECIFIED
    return method, round(float(level), 4), round(float(sparsity), 4)


def evaluate(
    model,
    tokenizer,
    items: Sequence[Item],
    *,
    model_name: str,
    sparsity: float = 0.0,
    method: str | None = None,
    level: float | None = None,
    max_new_tokens: int | Mapping[str, int] | None = None,
    batch_size: int | None = None,
    template: str | Mapping[str, str] = "reference",
    shots: Mapping | None = None,
    benchmarks: Mapping[str, Benchmark] | None = None,
    progress: bool = True,
) -> list[Record]:
    """Evaluate `items` with greedy generation and first-token option scores; one Record per item,
    in the order of `items`.

    Each item's benchmark (`benchmarks`, else the built-in of its name) gives its prompt template,
    labels, generation length and parser. Prompts come from `benchmarks.build_prompt(item,
    template, shots[(benchmark, subject)])` (`shots`: None, or solved examples per benchmark and
    subject). Responses are the new tokens decoded with special tokens skipped and surrounding
    whitespace stripped, parsed by `parsing.parse_answer` with the item's options and question.
    `option_logprobs` holds log_softmax over the vocabulary of each label's first token at the
    first decode step; `loglik_answer` is its argmax (both empty/None when the tokenizer cannot
    tell the labels apart by their first token — a warning says so).

    `max_new_tokens` and `template` may be one value for all items or a dict benchmark -> value
    (a benchmark left out, or None, gets its default: PubMedQA 10, multiple choice 5).
    `batch_size` None: automatic from free memory; out-of-memory halves the batch and retries it.
    Items of several benchmarks may be mixed. The model is evaluated in `torch.inference_mode()`
    with its weights as they are (the caller compresses); `model_name`, `method` (default: "dense"
    at level 0, else "unspecified"), `level` (default: `sparsity`) and `sparsity` only label the
    records.
    """
    from tqdm.auto import tqdm

    items = list(items)
    records = _records_of(items, benchmarks)
    _validate(records, max_new_tokens, batch_size, template)
    method, level, sparsity = _label(method, level, sparsity)
    label = {"model": model_name, "method": method, "level": level, "sparsity": sparsity}
    text = [it for it in items if records[it.benchmark].kind == PERPLEXITY]
    if text:
        if len(text) != len(items):
            raise LoboError("perplexity benchmarks are evaluated on their own: pass their documents alone")
        return _perplexity_records(model, tokenizer, text, records, label, batch_size)
    if not items:
        return []
    prompts = [
        build_prompt(it, per_benchmark(template, it.benchmark, "reference"), _shots_for(it, shots),
                                       benchmark=records[it.benchmark])
        for it in items
    ]  # fmt: skip
    rows = tokenize(tokenizer, prompts)
    pad_id = _pad_id(model, tokenizer)
    limit = _max_positions(model)

    texts: list[str | None] = [None] * len(items)
    logprobs: list[list[float] | None] = [None] * len(items)
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.benchmark, []).append(i)

    with torch.inference_mode(), tqdm(total=len(items), desc=f"{model_name} {method} @ {level:g}",
                                      disable=not progress, unit="item", leave=False) as bar:
        for name, index in groups.items():
            new_tokens = per_benchmark(max_new_tokens, name, records[name].max_new_tokens)
            if limit is not None:
                too_long = [items[i].id for i in index if len(rows[i]) + new_tokens > limit]
                if too_long:
                    raise LoboError(
                        f"{len(too_long)} {name} prompt(s) (first: item {too_long[0]!r}) plus "
                        f"{new_tokens} new tokens exceed the model's {limit} positions; drop those items "
                        "or use a model with a longer context."
                    )
            labels = records[name].labels
            ids = option_token_ids(tokenizer, labels, prompts[index[0]][-32:])
            label_ids = None if ids is None else [ids[label] for label in labels]
            budget = fixed_budget(batch_size) if batch_size else auto_budget(model, len(tokenizer), new_tokens)
            group_texts, group_lp = _run_batches(
                model, tokenizer, [rows[i] for i in index], budget,
                pad_id=pad_id, new_tokens=new_tokens, label_ids=label_ids, bar=bar,
            )
            for j, i in enumerate(index):
                texts[i], logprobs[i] = group_texts[j], group_lp[j]

    return [_record(it, records[it.benchmark], prompt, text, lp, label)
            for it, prompt, text, lp in zip(items, prompts, texts, logprobs)]  # fmt: skip


def _perplexity_records(model, tokenizer, items, records, label, batch_size) -> list[Record]:
    """One Record per window of a perplexity benchmark's text (its documents joined by blank
    lines, cut into `seq_len`-token windows): the window's summed negative log-likelihood and
    the tokens it predicts."""
    from lobolib.evaluation.perplexity import perplexity, text_windows

    out = []
    for name in dict.fromkeys(it.benchmark for it in items):
        record = records[name]
        text = "\n\n".join(it.context for it in items if it.benchmark == name)
        windows = text_windows(text, tokenizer, record.seq_len, record.max_windows)
        with torch.inference_mode():
            scored = perplexity(model, windows, batch_size=batch_size)
        for index, (row, nll) in enumerate(zip(windows.tolist(), scored["window_nll"])):
            out.append(Record(**label, benchmark=name, subject=name, item_id=f"window/{index}", gold="",
                              prompt_hash=prompt_hash(" ".join(map(str, row))), raw_response="", answer=None,
                              tier="perplexity", invalid_reason=None, option_logprobs={}, loglik_answer=None,
                              nll=float(nll), tokens=int(scored["window_tokens"])))  # fmt: skip
    return out


_TOKENIZED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
TOKENIZED_KEEP = 4  # prompt lists remembered per tokenizer


def tokenize(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of `prompts` (special tokens added), remembered for the last few prompt lists of
    each tokenizer: a sweep evaluates the same prompts at every level, and tokenising 1,000
    PubMedQA prompts costs a few tenths of a second of every level's GPU time. The returned
    lists are shared between calls: read them, do not change them."""
    key = (len(tokenizer), tuple(prompts))
    try:
        remembered = _TOKENIZED.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no memory
        return tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    if key not in remembered:
        if len(remembered) >= TOKENIZED_KEEP:
            remembered.pop(next(iter(remembered)))
        remembered[key] = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    return remembered[key]


def _record(item: Item, record: Benchmark, prompt: str, text: str, lp, label: dict) -> Record:
    """Build one Record from a response and its option log-probs."""
    parsed = parsing.parse_answer(record.kind, text, item.options, question=item.question)
    option_logprobs = {} if lp is None else dict(zip(record.labels, lp))
    loglik = max(option_logprobs, key=option_logprobs.get) if option_logprobs else None
    return Record(
        **label,
        benchmark=item.benchmark,
        subject=item.subject,
        item_id=item.id,
        gold=item.answer,
        prompt_hash=prompt_hash(prompt),
        raw_response=text,
        answer=parsed.answer,
        tier=parsed.tier,
        invalid_reason=parsed.reason,
        option_logprobs=option_logprobs,
        loglik_answer=loglik,
    )
