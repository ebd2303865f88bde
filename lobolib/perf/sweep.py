"""`python -m lobolib bench [sweep]`: sweep throughput — the reference study's loop (one question
at a time through `generate`) against lobolib's sweep step, side by side on one random-weight
model of the real architecture; and the benchmark inputs the other benches share (synthetic
prompts with the real benchmarks' measured token lengths, or the real items)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lobolib.compress import prune
from lobolib.perf.prune import reference_prune
from lobolib.perf.shapes import (GIB, build_model, device_name, fill, fmt, matmul_flops, resolve_device, timed,
                                  write_json)

MEASURED_PROMPT_TOKENS = {
    # Token counts (BOS included) of the reference study's own prompts under the Mistral-7B-v0.1
    # tokenizer, percentiles 0, 5, ..., 100 — measured once from its logs (PubMedQA 1,000 prompts,
    # mean 391; MMLU 762 prompts, mean 97). Used when no local data or tokenizer is given.
    "pubmedqa": (96, 224, 258, 278, 298, 315, 333, 345, 359, 372, 384, 400, 415, 427, 440, 457,
                 477, 498, 531, 585, 949),
    "mmlu": (41, 50, 54, 57, 60, 63, 65, 68, 71, 74, 78, 84, 88, 95, 101, 110, 118, 130, 145, 167,
             1138),
}
MEASURED_MEAN_TOKENS = {"pubmedqa": 391, "mmlu": 97}  # the means of those same measured prompts
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


def sample_lengths(percentiles, n: int, rng) -> list[int]:
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
    for i, length in enumerate(sample_lengths(MEASURED_PROMPT_TOKENS[benchmark], n, rng)):
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
    from lobolib.benchmarks import get as get_benchmark
    from lobolib.evaluation.evaluate import decoding_path, evaluate

    device = resolve_device(device)
    on_gpu = device.type == "cuda"
    shape = dict(shape if shape is not None else ({} if on_gpu else CPU_SWEEP_SHAPE))
    if data_dir and tokenizer_dir and "vocab_size" in shape:  # a small shape must still embed every token id
        from transformers import AutoTokenizer

        shape["vocab_size"] = max(shape["vocab_size"], len(AutoTokenizer.from_pretrained(tokenizer_dir)))
    dtype = torch.bfloat16 if on_gpu else torch.float32
    model = build_model(shape, device, dtype)
    fill(model, seed)
    tokenizer, item_sets, prompts = bench_inputs(model, data_dir, tokenizer_dir, seed)

    def run_lobolib(sets, progress=False):
        for benchmark, items in sets.items():
            evaluate(model, tokenizer, items, model_name="bench", sparsity=level, batch_size=batch_size,
                     progress=progress)

    # A first, dense level: compiles the glue kernels and fills the per-process caches (tokenised
    # prompts, cuBLAS handles), as a sweep's first level does; the timed level is like its others.
    first_level_s = timed(lambda: run_lobolib(item_sets), device)
    reference_loop(model, tokenizer, item_sets["pubmedqa"][:1], 2)

    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    prune_s = timed(lambda: prune.magnitude_prune(model, level), device)
    eval_s = {}
    for benchmark, items in item_sets.items():
        eval_s[benchmark] = timed(lambda: run_lobolib({benchmark: items}, progress=True), device)
    peak_gib = torch.cuda.max_memory_allocated(device) / GIB if on_gpu else None

    reference_per_q = {}
    for benchmark, items in item_sets.items():
        sample = _spread(items, reference_items)
        seconds = timed(lambda: reference_loop(model, tokenizer, sample, get_benchmark(benchmark).max_new_tokens), device)
        reference_per_q[benchmark] = seconds / len(sample)
    fill(model, seed)
    reference_prune_s = timed(lambda: reference_prune(model, level, "layer"), device)

    n_items = {b: len(items) for b, items in item_sets.items()}
    total = sum(n_items.values())
    level_s = prune_s + sum(eval_s.values())
    reference_level_s = reference_prune_s + sum(reference_per_q[b] * n for b, n in n_items.items())
    tokens = {b: [len(r) + get_benchmark(b).max_new_tokens for r in tokenizer([build_prompt(i) for i in items])["input_ids"]]
              for b, items in item_sets.items()}
    matmul_params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    peak = matmul_flops(device) if on_gpu else None
    datasheet = next((v for k, v in DATASHEET_BF16_FLOPS.items() if k in name), None)
    flop_s = 2 * matmul_params * sum(sum(t) for t in tokens.values())
    per_q_paper = {b: eval_s[b] / n_items[b] for b in n_items}
    paper_level_s = prune_s + sum(per_q_paper[b] * PAPER_ITEMS[b] for b in PAPER_ITEMS)
    result = {
        "device": device_name(device),
        "date": time.strftime("%Y-%m-%d"),
        "dtype": str(dtype).replace("torch.", ""),
        "shape": shape or "MistralConfig() defaults (Mistral-7B)",
        "matmul_parameters": matmul_params,
        "decoder": decoding_path(model, max(max(t) for t in tokens.values())),
        "prompts": prompts,
        "items": n_items,
        "mean_prompt_tokens": {b: sum(t) / len(t) - get_benchmark(b).max_new_tokens for b, t in tokens.items()},
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
    write_json(result, out)
    return result


def format_sweep_table(result: dict) -> str:
    """The bench_sweep result as plain text."""
    lines = [f"bench sweep: {result['device']}, {result['dtype']}, {result['prompts']}, items {result['items']}"]
    if result["note"]:
        lines.append(f"note: {result['note']}")
    for key in ("questions_per_s", "reference_questions_per_s", "speedup_vs_reference", "flop_bound_ratio",
                "flop_bound_ratio_datasheet", "seconds_per_level", "reference_seconds_per_level", "prune_s",
                "first_level_s", "peak_memory_gib", "projected_paper_sweep_minutes", "projected_reference_sweep_minutes"):
        lines.append(f"  {key:<36} {fmt(result[key], '.4g')}")
    for key in ("mean_prompt_tokens", "seconds_per_question", "reference_seconds_per_question"):
        lines.append(f"  {key:<36} " + ", ".join(f"{b} {v:.4g}" for b, v in result[key].items()))
    return "\n".join(lines)
