"""Benchmarks behind `python -m lobolib bench ...`.

`bench_prune`: one pruning level of a model of the real architecture (random weights), lobolib's
radix-select kernel against a sort-based reference, side by side: seconds, extra peak memory,
exactness of the zero counts, and whether both give the same mask.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import torch

from lobolib.compress import prune

BENCH_SPARSITY = 0.5
CPU_SHAPE = {
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
}
"""Small enough for CI to run in seconds on a CPU; on CUDA the default is Mistral-7B's shape."""

GIB = 1024**3


# ---------------------------------------------------------------------------------------------
# Model and weights


def _build_model(shape: dict, device: torch.device, dtype: torch.dtype):
    """A MistralForCausalLM of the given shape, allocated on `device` without weight init."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(**shape)
    with torch.device("meta"):
        model = MistralForCausalLM(config)
    model = model.to(dtype=dtype).to_empty(device=device)
    _rebuild_rotary(model, device)
    return model.eval()


def _rebuild_rotary(model, device) -> None:
    """`to_empty` leaves buffers uninitialised: rebuild the rotary embedding's frequencies."""
    rotary = model.model.rotary_emb
    with torch.device("cpu"):
        fresh = type(rotary)(config=model.config)  # the constructor's signature differs across versions
    model.model.rotary_emb = fresh.to(device)


@torch.no_grad()
def _fill(model, seed: int) -> None:
    """Random weights N(0, 0.02), the same for a given seed (init scale of Mistral)."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for parameter in model.parameters():
        parameter.normal_(0.0, 0.02, generator=generator)


# ---------------------------------------------------------------------------------------------
# Reference implementations (sort / kthvalue), exact, with the same tie-break as lobolib


@torch.no_grad()
def reference_prune(model, sparsity: float, scope: str) -> None:
    """Sort-based magnitude pruning, the usual way: layer = stable argsort of each matrix's |w|;
    global = concatenate every |w|, take the k-th smallest with kthvalue, then zero ties in
    matrix and flat order. Same mask as lobolib's, at the cost of full-size temporaries."""
    weights = [module.weight.detach() for _, module in prune.prunable_linears(model)]
    if scope == "layer":
        for weight in weights:
            flat = weight.view(-1)
            order = torch.argsort(flat.abs(), stable=True)
            flat[order[: round(sparsity * flat.numel())]] = 0
            del order
        return
    magnitudes = torch.cat([weight.abs().view(-1) for weight in weights])
    k = round(sparsity * magnitudes.numel())
    if k == 0:
        return
    threshold = torch.kthvalue(magnitudes, k).values
    ties = k - int((magnitudes < threshold).sum())
    del magnitudes
    for weight in weights:
        flat = weight.view(-1)
        equal = (flat.abs() == threshold).nonzero().squeeze(1)
        flat[flat.abs() < threshold] = 0
        flat[equal[:ties]] = 0
        ties -= min(ties, equal.numel())


# ---------------------------------------------------------------------------------------------
# Measurement


class _RssPeak:
    """Peak resident memory of this process above its level at start, sampled from /proc (Linux).

    Coarse (1 ms sampling, allocator caching), but torch's CPU allocations are invisible to
    tracemalloc. `extra_gib` is None where /proc/self/statm does not exist."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.path = Path("/proc/self/statm")
        import resource  # Unix only, like /proc

        self.page = resource.getpagesize()
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self):
        try:
            return int(self.path.read_text().split()[1]) * self.page
        except (OSError, IndexError, ValueError):
            return None

    def _run(self):
        while not self._stop.is_set():
            rss = self._rss()
            if rss is not None:
                self.peak = max(self.peak, rss)
            time.sleep(self.interval)

    def __enter__(self):
        if self.start is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.start is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss() or 0)

    @property
    def extra_gib(self):
        return None if self.start is None else (self.peak - self.start) / GIB


def _timed(run, device: torch.device) -> float:
    """Seconds of `run()`, the device's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def _measure(run, device: torch.device) -> tuple[float, float | None]:
    """(seconds, extra peak GiB) of `run()`; CUDA: max_memory_allocated above the start."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        seconds = _timed(run, device)
        return seconds, (torch.cuda.max_memory_allocated(device) - base) / GIB
    with _RssPeak() as peak:
        seconds = _timed(run, device)
    return seconds, peak.extra_gib


@torch.no_grad()
def _mask_fingerprint(model) -> tuple[list[int], int]:
    """Zeros per matrix and a checksum of their positions (wrapping int64 sums of index and
    index squared), computed in chunks: equal fingerprints mean, with near certainty, equal masks."""
    counts, checksum = [], 0
    for _, module in prune.prunable_linears(model):
        flat = module.weight.detach().view(-1)
        zeros = 0
        for start in range(0, flat.numel(), prune.CHUNK_ELEMENTS):
            where = (flat[start:start + prune.CHUNK_ELEMENTS] == 0).nonzero().squeeze(1) + start
            zeros += where.numel()
            checksum = (checksum + int(where.sum()) + 7 * int((where * where).sum())) % (1 << 63)
        counts.append(zeros)
    return counts, checksum


def _exact(counts: list[int], sizes: list[int], sparsity: float, scope: str) -> bool:
    if scope == "layer":
        return all(c == round(sparsity * n) for c, n in zip(counts, sizes))
    return sum(counts) == round(sparsity * sum(sizes))


def _warm_up(device: torch.device, dtype: torch.dtype) -> None:
    """Load the kernels both methods use, on a throwaway model, so timings exclude it."""
    stack = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 64)).to(device, dtype)
    for scope in prune.SCOPES:
        prune.magnitude_prune(stack, 0.3, scope=scope)
        reference_prune(stack, 0.4, scope)


# ---------------------------------------------------------------------------------------------
# Entry point


def bench_prune(device=None, shape=None, *, sparsity: float = BENCH_SPARSITY, seed: int = 0,
                dtype: torch.dtype = torch.bfloat16) -> dict:
    """Time and peak memory of one pruning level, lobolib vs a sort-based reference, per scope.

    device: None = CUDA when available, else CPU. shape: MistralConfig fields; None = the
    defaults of MistralConfig (Mistral-7B) on CUDA, CPU_SHAPE on CPU. Random N(0, 0.02) bf16
    weights, the same seed for every run. Prints a table and returns {device, dtype, shape,
    weights, sparsity, scopes: {layer|global: {lobolib_s, reference_s, lobolib_extra_gib,
    reference_extra_gib, zeros_exact, reference_zeros_exact, masks_match, reference_error}}}.
    Extra memory is CUDA max_memory_allocated above the start, or sampled RSS on CPU (coarse).
    """
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if shape is None:
        shape = {} if device.type == "cuda" else dict(CPU_SHAPE)
    model = _build_model(shape, device, dtype)
    sizes = [module.weight.numel() for _, module in prune.prunable_linears(model)]
    _warm_up(device, dtype)
    scopes = {}
    for scope in prune.SCOPES:
        _fill(model, seed)
        lobolib_s, lobolib_gib = _measure(lambda: prune.magnitude_prune(model, sparsity, scope=scope), device)
        counts, checksum = _mask_fingerprint(model)
        row = {
            "lobolib_s": lobolib_s,
            "lobolib_extra_gib": lobolib_gib,
            "zeros_exact": _exact(counts, sizes, sparsity, scope),
            "reference_s": None,
            "reference_extra_gib": None,
            "reference_zeros_exact": None,
            "masks_match": None,
            "reference_error": None,
        }
        _fill(model, seed)
        try:
            reference_s, reference_gib = _measure(lambda: reference_prune(model, sparsity, scope), device)
        except (torch.OutOfMemoryError, RuntimeError) as error:  # report it, keep benchmarking
            row["reference_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            ref_counts, ref_checksum = _mask_fingerprint(model)
            row.update(
                reference_s=reference_s,
                reference_extra_gib=reference_gib,
                reference_zeros_exact=_exact(ref_counts, sizes, sparsity, scope),
                masks_match=(ref_counts, ref_checksum) == (counts, checksum),
            )
        scopes[scope] = row
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "device": f"{device} ({name})",
        "dtype": str(dtype).replace("torch.", ""),
        "shape": dict(shape),
        "weights": sum(sizes),
        "sparsity": sparsity,
        "scopes": scopes,
    }
    print(format_prune_table(result))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _fmt(value, spec: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def format_prune_table(result: dict) -> str:
    """The bench_prune result as a plain-text table."""
    lines = [
        f"bench prune: {result['device']}, {result['dtype']}, shape {result['shape'] or 'Mistral-7B'}, "
        f"{result['weights']:,} prunable weights, one level at sparsity {result['sparsity']}",
        f"{'scope':<7} {'method':<10} {'seconds':>9} {'extra GiB':>10} {'exact zeros':>12} {'same mask':>10}",
    ]
    for scope, row in result["scopes"].items():
        lines.append(
            f"{scope:<7} {'lobolib':<10} {_fmt(row['lobolib_s'], '.3f'):>9} "
            f"{_fmt(row['lobolib_extra_gib'], '.3f'):>10} {_fmt(row['zeros_exact'], ''):>12} {'':>10}"
        )
        lines.append(
            f"{'':<7} {'reference':<10} {_fmt(row['reference_s'], '.3f'):>9} "
            f"{_fmt(row['reference_extra_gib'], '.3f'):>10} {_fmt(row['reference_zeros_exact'], ''):>12} "
            f"{_fmt(row['masks_match'], ''):>10}"
        )
        if row["reference_error"]:
            lines.append(f"{'':<7} reference failed: {row['reference_error']}")
    return "\n".join(lines)


# =============================================================================================
# Sweep throughput: `python -m lobolib bench` — the reference study's loop against lobolib's
# sweep step, side by side on one random-weight model of the real architecture.

MEASURED_PROMPT_TOKENS = {
    # Token counts (BOS included) of the reference study's own prompts under the Mistral-7B-v0.1
    # tokenizer, percentiles 0, 5, ..., 100 — measured once from its logs (PubMedQA 1,000 prompts,
    # mean 391; MMLU 762 prompts, mean 97). Used when no local data or tokenizer is given.
    "pubmedqa": (96, 224, 258, 278, 298, 315, 333, 345, 359, 372, 384, 400, 415, 427, 440, 457,
                 477, 498, 531, 585, 949),
    "mmlu": (41, 50, 54, 57, 60, 63, 65, 68, 71, 74, 78, 84, 88, 95, 101, 110, 118, 130, 145, 167,
             1138),
}
PAPER_ITEMS = {"pubmedqa": 1000, "mmlu": 762}  # the reference study's items per level
PAPER_RUNS = 2 * 20  # two models x twenty sparsity levels
CPU_SWEEP_SHAPE = {
    "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 2048,
}
CPU_SWEEP_ITEMS = {"pubmedqa": 24, "mmlu": 24}
DATASHEET_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "T4": 65e12}
TEMPLATE_WORDS = ("Context:", "Question:", "Answer", "(yes/no/maybe):", "Options:", "A.", "B.", "C.",
                  "D.", "Answer:", "yes", "no", "maybe", "A", "B", "C", "D")


def synthetic_tokenizer(vocab_size: int):
    """A whitespace word-level tokenizer of `vocab_size` words ("w0", "w1", ... plus the template
    words), so that a synthetic prompt of n words is exactly n tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    words = specials + list(TEMPLATE_WORDS)
    words += [f"w{i}" for i in range(max(0, vocab_size - len(words)))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", padding_side="left")


def _sample_lengths(percentiles, n: int, rng) -> list[int]:
    """n token counts drawn from a distribution given by its 0, 5, ..., 100 percentiles."""
    import numpy as np

    grid = np.linspace(0.0, 1.0, len(percentiles))
    return [int(round(x)) for x in np.interp(rng.random(n), grid, percentiles)]


def synthetic_items(tokenizer, benchmark: str, n: int, seed: int = 0):
    """n Items whose reference-template prompts have token counts drawn from the measured
    distribution of the real benchmark (MEASURED_PROMPT_TOKENS)."""
    import numpy as np

    from lobolib.benchmarks import Item, build_prompt

    rng = np.random.default_rng(seed)
    vocab = [w for w in tokenizer.get_vocab() if w.startswith("w")]
    words = lambda k: " ".join(vocab[j] for j in rng.integers(0, len(vocab), max(1, k)))  # noqa: E731
    items = []
    for i, length in enumerate(_sample_lengths(MEASURED_PROMPT_TOKENS[benchmark], n, rng)):
        if benchmark == "pubmedqa":
            item = Item(str(i), "pubmedqa", "pubmedqa", words(12), words(1), ("yes", "no", "maybe"), "yes")
        else:
            item = Item(f"bench/{i}", "mmlu", "bench", words(1), "", tuple(words(3) for _ in range(4)), "A")
        overhead = len(tokenizer(build_prompt(item))["input_ids"]) - 1
        fill = words(max(1, length - overhead))
        item = (Item(item.id, item.benchmark, item.subject, item.question, fill, item.options, item.answer)
                if benchmark == "pubmedqa" else
                Item(item.id, item.benchmark, item.subject, fill, "", item.options, item.answer))
        items.append(item)
    return items


def real_items(data_dir):
    """The reference study's items from a local data folder (pubmedqa/ori_pqal.json and
    mmlu/test/*.csv): PQA-L's 1,000 and the first 200 per subject of its five MMLU subjects."""
    from lobolib.benchmarks import load_mmlu, load_pubmedqa

    data_dir = Path(data_dir)
    return {
        "pubmedqa": load_pubmedqa(data_dir / "pubmedqa"),
        "mmlu": load_mmlu(data_dir / "mmlu", ["reference_medical", "reference_logic"], max_items_per_subject=200),
    }


def bench_inputs(model, data_dir=None, tokenizer_dir=None, seed: int = 0):
    """(tokenizer, {benchmark: items}, description): the real items from `data_dir` with the
    tokenizer in `tokenizer_dir` when both are given, else synthetic prompts with the measured
    token-length distribution (the paper's item counts on a GPU, a few on the CPU)."""
    if data_dir and tokenizer_dir:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
        item_sets, prompts = real_items(data_dir), "real items, real tokenizer"
    else:
        tokenizer = synthetic_tokenizer(model.config.vocab_size)
        counts = PAPER_ITEMS if next(model.parameters()).is_cuda else CPU_SWEEP_ITEMS
        item_sets = {b: synthetic_items(tokenizer, b, n, seed) for b, n in counts.items()}
        prompts = "synthetic prompts, measured token-length distribution"
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, item_sets, prompts


def reference_loop(model, tokenizer, items, max_new_tokens: int) -> None:
    """The reference study's evaluation loop: one question at a time through `generate`, then its
    own answer rule. Kept only as the baseline of the benchmark."""
    from lobolib.benchmarks import build_prompt
    from lobolib.evaluation.parsing import parse_reference

    device = model.get_input_embeddings().weight.device
    for item in items:
        inputs = tokenizer(build_prompt(item), return_tensors="pt").to(device)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                             top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        parse_reference(item.benchmark, text, item.options)


def _spread(items, n: int):
    """n items spread evenly over the list (so the sample keeps its length mix)."""
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def matmul_flops(device: torch.device, dtype=torch.bfloat16, size: int = 8192, reps: int = 10) -> float:
    """Achieved FLOP/s of a large square matrix product: the card's practical peak."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * size**3 * reps / (time.perf_counter() - started)


def bench_sweep(device=None, shape=None, *, data_dir=None, tokenizer_dir=None, level: float = 0.5,
                reference_items: int = 24, batch_size=None, seed: int = 0, out=None) -> dict:
    """Questions per second of one sweep step (prune one level + evaluate both benchmarks, answers
    and first-token scores in one pass), lobolib against the reference study's loop.

    device None: CUDA when available (Mistral-7B's shape from `MistralConfig()`, bf16), else the
    CPU with a small shape (so CI exercises it; the figures then say nothing about GPUs).
    Prompts: the real items from `data_dir` with the tokenizer in `tokenizer_dir` when both are
    given, else synthetic prompts with the real benchmarks' measured token-length distribution.
    The reference loop runs on `reference_items` questions per benchmark spread over the items;
    its per-question time is extrapolated to the full item count. Writes the result to `out`
    (JSON) when given.
    """
    from lobolib.benchmarks import build_prompt
    from lobolib.evaluation.evaluate import DEFAULT_MAX_NEW_TOKENS, decoding_path, evaluate

    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    shape = dict(shape if shape is not None else ({} if on_gpu else CPU_SWEEP_SHAPE))
    dtype = torch.bfloat16 if on_gpu else torch.float32
    model = _build_model(shape, device, dtype)
    _fill(model, seed)
    tokenizer, item_sets, prompts = bench_inputs(model, data_dir, tokenizer_dir, seed)

    def run_lobolib(sets, progress=False):
        for benchmark, items in sets.items():
            evaluate(model, tokenizer, items, model_name="bench", sparsity=level, batch_size=batch_size,
                     progress=progress)

    # A first, dense level: compiles the glue kernels and fills the per-process caches (tokenised
    # prompts, cuBLAS handles), as a sweep's first level does; the timed level is like its others.
    first_level_s = _timed(lambda: run_lobolib(item_sets), device)
    reference_loop(model, tokenizer, item_sets["pubmedqa"][:1], 2)

    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    prune_s = _timed(lambda: prune.magnitude_prune(model, level), device)
    eval_s = {}
    for benchmark, items in item_sets.items():
        eval_s[benchmark] = _timed(lambda: run_lobolib({benchmark: items}, progress=True), device)
    peak_gib = torch.cuda.max_memory_allocated(device) / GIB if on_gpu else None

    reference_per_q = {}
    for benchmark, items in item_sets.items():
        sample = _spread(items, reference_items)
        seconds = _timed(lambda: reference_loop(model, tokenizer, sample, DEFAULT_MAX_NEW_TOKENS[benchmark]), device)
        reference_per_q[benchmark] = seconds / len(sample)
    _fill(model, seed)
    reference_prune_s = _timed(lambda: reference_prune(model, level, "layer"), device)

    n_items = {b: len(items) for b, items in item_sets.items()}
    total = sum(n_items.values())
    level_s = prune_s + sum(eval_s.values())
    reference_level_s = reference_prune_s + sum(reference_per_q[b] * n for b, n in n_items.items())
    tokens = {b: [len(r) + DEFAULT_MAX_NEW_TOKENS[b] for r in tokenizer([build_prompt(i) for i in items])["input_ids"]]
              for b, items in item_sets.items()}
    matmul_params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    peak = matmul_flops(device) if on_gpu else None
    datasheet = next((v for k, v in DATASHEET_BF16_FLOPS.items() if k in name), None)
    flop_s = 2 * matmul_params * sum(sum(t) for t in tokens.values())
    per_q_paper = {b: eval_s[b] / n_items[b] for b in n_items}
    paper_level_s = prune_s + sum(per_q_paper[b] * PAPER_ITEMS[b] for b in PAPER_ITEMS)
    result = {
        "device": f"{device} ({name})",
        "date": time.strftime("%Y-%m-%d"),
        "dtype": str(dtype).replace("torch.", ""),
        "shape": shape or "MistralConfig() defaults (Mistral-7B)",
        "matmul_parameters": matmul_params,
        "decoder": decoding_path(model, max(max(t) for t in tokens.values())),
        "prompts": prompts,
        "items": n_items,
        "mean_prompt_tokens": {b: sum(t) / len(t) - DEFAULT_MAX_NEW_TOKENS[b] for b, t in tokens.items()},
        "questions_per_s": total / level_s,
        "reference_questions_per_s": total / reference_level_s,
        "speedup_vs_reference": reference_level_s / level_s,
        "seconds_per_question": {b: eval_s[b] / n_items[b] for b in n_items},
        "reference_seconds_per_question": reference_per_q,
        "reference_items_timed": {b: min(reference_items, n) for b, n in n_items.items()},
        "prune_s": prune_s,
        "reference_prune_s": reference_prune_s,
        "seconds_per_level": level_s,
        "reference_seconds_per_level": reference_level_s,
        "peak_bf16_flops_measured": peak,
        "peak_bf16_flops_datasheet": datasheet,
        "flop_bound_ratio": (sum(eval_s.values()) * peak / flop_s) if peak else None,
        "flop_bound_ratio_datasheet": (sum(eval_s.values()) * datasheet / flop_s) if datasheet else None,
        "peak_memory_gib": peak_gib,
        "first_level_s": first_level_s,
        "projected_paper_sweep_minutes": (first_level_s + prune_s + (PAPER_RUNS - 1) * paper_level_s) / 60,
        "projected_reference_sweep_minutes": PAPER_RUNS * (reference_prune_s + sum(
            reference_per_q[b] * PAPER_ITEMS[b] for b in PAPER_ITEMS)) / 60,
        "note": None if on_gpu else "CPU run with a small shape: exercises the code, says nothing about GPU speed",
    }
    print(format_sweep_table(result))
    if out:
        Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def format_sweep_table(result: dict) -> str:
    """The bench_sweep result as plain text."""
    lines = [f"bench sweep: {result['device']}, {result['dtype']}, {result['prompts']}, items {result['items']}"]
    if result["note"]:
        lines.append(f"note: {result['note']}")
    for key in ("questions_per_s", "reference_questions_per_s", "speedup_vs_reference", "flop_bound_ratio",
                "flop_bound_ratio_datasheet", "seconds_per_level", "reference_seconds_per_level", "prune_s",
                "first_level_s", "peak_memory_gib", "projected_paper_sweep_minutes", "projected_reference_sweep_minutes"):
        lines.append(f"  {key:<36} {_fmt(result[key], '.4g')}")
    for key in ("mean_prompt_tokens", "seconds_per_question", "reference_seconds_per_question"):
        lines.append(f"  {key:<36} " + ", ".join(f"{b} {v:.4g}" for b, v in result[key].items()))
    return "\n".join(lines)



# =============================================================================================
# Several GPUs: data-parallel throughput, and a 7B model sharded under a dual-T4 memory budget.


def _need_gpus(count: int, what: str) -> None:
    if not torch.cuda.is_available() or torch.cuda.device_count() < count:
        from lobolib.errors import LoboError

        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise LoboError(f"{what} needs {count} CUDA GPU(s), found {found}; run it on a GPU machine")


DATA_PARALLEL_LEVELS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)


def bench_data_parallel(*, data_dir=None, tokenizer_dir=None, seed: int = 0, store_dir=None, out=None) -> dict | None:
    """Data-parallel sweep against one GPU, in one launch (`accelerate launch --num_processes N -m
    lobolib bench data-parallel`). The same work both ways: `sweep.run_sweep` over N levels
    (N = processes) into a scratch store, first by the main process alone (`Shard()`, the others
    waiting), then by all N processes (one level each), each time from the same random weights.
    The parallel store is then checked: every item of every cell once, nothing lost or duplicated.
    Returns the result on the main process (None elsewhere)."""
    import shutil
    import tempfile

    from lobolib.experiment.distributed import Shard, barrier, current_shard
    from lobolib.evaluation.evaluate import evaluate
    from lobolib.experiment.store import RecordStore
    from lobolib.experiment.sweep import run_sweep

    _need_gpus(1, "bench data-parallel")
    shard = current_shard()
    levels = list(DATA_PARALLEL_LEVELS[:max(shard.world, 2)])
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    model = _build_model({}, device, torch.bfloat16)
    _fill(model, seed)
    tokenizer, item_sets, prompts = bench_inputs(model, data_dir, tokenizer_dir, seed)
    for benchmark, items in item_sets.items():  # warm-up on every GPU
        evaluate(model, tokenizer, items[:4], model_name="bench", sparsity=0.0, progress=False)
    root = Path(store_dir or Path(tempfile.gettempdir()) / "lobolib-bench-data-parallel")
    if shard.is_main:
        shutil.rmtree(root, ignore_errors=True)

    def sweep(store, on):
        return _timed(lambda: run_sweep(model, tokenizer, model_name="bench", levels=levels, item_sets=item_sets,
                                        store=store, progress=False, shard=on), device)

    barrier(shard)
    single_s = sweep(RecordStore(root / "single"), Shard()) if shard.is_main else None
    _fill(model, seed)  # unpruned again, identical on every GPU
    barrier(shard)
    store = RecordStore(root / "parallel")
    parallel_s = sweep(store, shard)
    barrier(shard)
    if not shard.is_main:
        return None
    frame = store.read()
    expected = {(level, b, it.id) for level in levels for b, items in item_sets.items() for it in items}
    stored = list(zip(frame["sparsity"], frame["benchmark"], frame["item_id"]))
    questions = len(expected)
    result = {
        "device": f"{shard.world} x {torch.cuda.get_device_name(device)}",
        "date": time.strftime("%Y-%m-%d"),
        "prompts": prompts,
        "items": {b: len(items) for b, items in item_sets.items()},
        "levels": levels,
        "processes": shard.world,
        "single_gpu_questions_per_s": questions / single_s,
        "data_parallel_questions_per_s": questions / parallel_s,
        "data_parallel_speedup": single_s / parallel_s,
        "records_complete": set(stored) == expected and len(stored) == len(expected),
    }
    print("bench data-parallel: " + ", ".join(f"{k} {_fmt(v, '.4g') if isinstance(v, float) else v}"
                                               for k, v in result.items()))
    if out:
        Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def bench_sharded(*, max_memory=None, card_gib: float = 15.0, dtype=torch.float16, level: float = 0.5,
                  data_dir=None, tokenizer_dir=None, seed: int = 0, out=None) -> dict:
    """The dual-T4 budget: Mistral-7B sharded over two GPUs by an accelerate device map with
    max_memory 14 GiB each, every GPU left with `card_gib` (a T4's 15 GiB) free by a ballast
    allocation (so the automatic batch size sees a T4's free memory), fp16 (T4s have no bf16). The
    layers are spread evenly over the cards, as `device_map: auto` does in `models.load_model`
    (accelerate's balanced memory), not packed onto the first card. Runs the whole sweep step
    — global pruning, then both benchmarks — and reports peak memory per card."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory
    from transformers import MistralConfig, MistralForCausalLM

    from lobolib.evaluation.evaluate import evaluate

    max_memory = max_memory or {0: "14GiB", 1: "14GiB"}
    cards = sorted(k for k in max_memory if isinstance(k, int))
    _need_gpus(len(cards), "bench sharded")
    ballast = []  # what a T4 lacks, held so that free memory looks like a T4's to the batch sizer
    for card in cards:
        free, _ = torch.cuda.mem_get_info(card)
        if free > card_gib * GIB:
            ballast.append(torch.empty(int(free - card_gib * GIB), dtype=torch.uint8, device=card))
    base_gib = {card: torch.cuda.memory_allocated(card) / GIB for card in cards}
    with torch.device("meta"):
        model = MistralForCausalLM(MistralConfig())
    model = model.to(dtype)
    no_split = list(model._no_split_modules)
    balanced = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)
    device_map = infer_auto_device_map(model, max_memory=balanced, dtype=dtype, no_split_module_classes=no_split)
    for name, where in device_map.items():
        module = model.get_submodule(name) if name else model
        module.to_empty(device=torch.device("cuda", where) if isinstance(where, int) else where)
    _fill(model, seed)
    _rebuild_rotary(model, torch.device("cuda", device_map.get("model.rotary_emb", cards[0])))
    model = dispatch_model(model, device_map=device_map)
    model.eval()
    tokenizer, item_sets, prompts = bench_inputs(model, data_dir, tokenizer_dir, seed)
    print(f"bench sharded: model dispatched over cards {cards}; pruning, then evaluating", flush=True)
    for card in cards:
        torch.cuda.reset_peak_memory_stats(card)
    weights_gib = {card: torch.cuda.memory_allocated(card) / GIB - base_gib[card] for card in cards}
    first = torch.device("cuda", cards[0])
    prune_s = _timed(lambda: prune.magnitude_prune(model, level, scope="global"), first)
    prune_peak = {card: torch.cuda.max_memory_allocated(card) / GIB - base_gib[card] for card in cards}
    eval_s = {b: _timed(lambda: evaluate(model, tokenizer, items, model_name="bench", sparsity=level,
                                         progress=False), first) for b, items in item_sets.items()}
    result = {
        "device": f"{len(cards)} x {torch.cuda.get_device_name(first)} capped at {card_gib} GiB each",
        "date": time.strftime("%Y-%m-%d"),
        "dtype": str(dtype).replace("torch.", ""),
        "max_memory": {str(k): v for k, v in max_memory.items()},
        "device_map_cards": {str(c): sum(1 for v in device_map.values() if v == c) for c in cards},
        "prompts": prompts,
        "items": {b: len(items) for b, items in item_sets.items()},
        "weights_gib": weights_gib,
        "global_prune_s": prune_s,
        "global_prune_peak_gib": prune_peak,
        "eval_s": eval_s,
        "peak_gib": {card: torch.cuda.max_memory_allocated(card) / GIB - base_gib[card] for card in cards},
        "sparsity_pruned": prune.sparsity_report(model)["pruned"],
    }
    print("bench sharded: " + json.dumps(result, default=str))
    if out:
        Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result
