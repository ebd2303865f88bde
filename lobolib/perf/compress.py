"""`python -m lobolib bench compress`: what each compression format buys, with the kernels that
format runs on, every format against dense in one run.

One random-weight model of the real architecture (Mistral-7B's shape from `MistralConfig()` on
a GPU, a small shape on the CPU), bf16. For each format of `lobolib.perf.formats`, every decoder
linear layer is swapped for the format's module and the whole model is timed through
transformers' forward, the same code for every format:

* prefill: a batch of prompts of the measured PubMedQA mean length (391 tokens under Mistral's
  tokenizer), at the sweep's batching (the batch `evaluate` plans for the paper's 1,000
  PubMedQA prompts on this card), into a fresh dynamic cache, keeping only the last logits;
* decode: greedy one-token steps over a static KV cache after the same prompts, at that batch
  and at batch 1 (`decode_ms_per_step`; `decode_ms_per_token` is a step over the batch, the
  time per generated token; `decode_ms_per_token_batch1` a step at batch 1, the latency). A
  step reads and writes fixed tensors only (explicit 4-D attention mask), so on CUDA it is
  replayed as a CUDA graph where it captures — otherwise launch overhead, not the weights,
  would set the batch-1 figure — and run eagerly, saying why, where not;
* energy: NVML's cumulative counter around the timed prefill and batch decode loops
  (`lobolib.perf.energy`); a question is one prompt plus 10 decode steps (PubMedQA's length);
* storage: the bytes of every parameter and buffer of the model in that format (packed
  tensors and their scales or metadata), and of the decoder linear layers alone;
* a check of the kernel: one layer's output against `F.linear` with the weight the format
  stands for (dequantized or pruned), and against the dense weight.

Each timing is a median after a warm-up call. A format whose kernel is missing on the device
gets a row saying why; one that fails while measured gets a row with the error.
"""

from __future__ import annotations

import inspect
import math
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lobolib.compress import prune
from lobolib.errors import LoboError
from lobolib.perf import formats as fmts
from lobolib.perf.energy import EnergyCounter
from lobolib.perf.shapes import CPU_SHAPE, GIB, build_model, device_name, fill, fmt, resolve_device, timed, write_json
from lobolib.perf.sweep import MEASURED_MEAN_TOKENS, MEASURED_PROMPT_TOKENS, PAPER_ITEMS, sample_lengths

NEW_TOKENS = 10  # decode steps of a PubMedQA answer: the reference study's generation length, as the sweep's
PREFILL_ESTIMATE_LIMIT_S = 60.0  # a format whose layers alone would take longer per prefill is not prefilled
RATIO_KEYS = ("weight_gib", "linear_weight_gib", "prefill_ms_per_question", "decode_ms_per_token",
              "decode_ms_per_token_batch1", "ms_per_question", "joules_per_question")
ROW_KEYS = ("kernel", "backend", "unavailable", "error", "weight_gib", "linear_weight_gib",
            "prefill_ms_per_question", "prefill_linear_s_estimate", "decode_ms_per_step", "decode_ms_per_token",
            "decode_ms_per_token_batch1", "decode_mode", "decode_mode_batch1", "ms_per_question",
            "joules_per_question", "kernel_rel_error", "error_vs_dense", "ratios")


@dataclass
class Plan:
    """What is timed: `batch` prompts of `prompt_tokens` tokens; decode in blocks of
    `decode_steps` steps; each measurement repeated at least `reps` times and for `min_s`
    seconds, but no longer than `max_s` seconds (and at most `most_blocks` decode blocks)."""

    prompt_tokens: int
    batch: int
    batch_source: str
    decode_steps: int
    reps: int
    min_s: float
    max_s: float
    most_blocks: int


GPU_PLAN = {"decode_steps": 16, "reps": 5, "min_s": 2.0, "max_s": 30.0, "most_blocks": 10}
CPU_PLAN = {"prompt_tokens": 64, "batch": 2, "decode_steps": 4, "reps": 2, "min_s": 0.0, "max_s": 5.0, "most_blocks": 3}


# ---------------------------------------------------------------------------------------------
# Inputs


def sweep_batch(model) -> tuple[int, str]:
    """(batch, how it was found): the mean batch of the plan `evaluate` makes for the paper's
    1,000 PubMedQA prompts (lengths drawn from the measured distribution) with the automatic
    memory budget of this model on this device and the packed prefill's pad cost."""
    import numpy as np

    from lobolib.evaluation.evaluate import PACKED_PAD_COST, auto_budget, plan_batches

    n = PAPER_ITEMS["pubmedqa"]
    lengths = sorted(sample_lengths(MEASURED_PROMPT_TOKENS["pubmedqa"], n, np.random.default_rng(0)), reverse=True)
    budget = auto_budget(model, model.config.vocab_size, NEW_TOKENS)
    plan = plan_batches(lengths, list(range(n)), 0, budget, NEW_TOKENS, PACKED_PAD_COST)
    return max(1, round(n / len(plan))), f"the sweep's plan for {n} PubMedQA prompts on this device: {len(plan)} batches"


class _Calls:
    """How this transformers version's causal-LM forward takes the cache (`cache` or
    `past_key_values`), the logits to keep, and cache positions (older versions)."""

    def __init__(self, model):
        params = inspect.signature(model.forward).parameters
        self.cache = "cache" if "cache" in params else "past_key_values"
        keep = next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in params), None)
        self.keep = {keep: 1} if keep else {}
        self.positions = "cache_position" in params


def _static_cache(model, batch: int, slots: int):
    """A transformers StaticCache of `slots` positions for `batch` rows (whatever this version's
    constructor asks for)."""
    from transformers import StaticCache

    params = inspect.signature(StaticCache.__init__).parameters
    offered = {"max_batch_size": batch, "batch_size": batch, "device": model.device, "dtype": model.dtype}
    return StaticCache(config=model.config, max_cache_len=slots, **{k: v for k, v in offered.items() if k in params})


# ---------------------------------------------------------------------------------------------
# Timing


def _repeat(run, device: torch.device, energy: EnergyCounter, plan: Plan, most: int | None = None):
    """(median seconds of `run()`, joules per call or None): one warm-up call, then as many
    timed calls as `plan` asks (at least `reps` and `min_s` seconds, at most `max_s` seconds and
    `most` calls, at least one), the energy counter read around them."""
    warm = timed(run, device)
    wanted = max(plan.reps, math.ceil(plan.min_s / max(warm, 1e-9)))
    allowed = max(1, math.floor(plan.max_s / max(warm, 1e-9)))
    calls = max(1, min(wanted, allowed, most or wanted))
    start = energy.joules()
    seconds = [timed(run, device) for _ in range(calls)]
    end = energy.joules()
    joules = None if start is None or end is None else (end - start) / calls
    return statistics.median(seconds), joules


class _Decoding:
    """Greedy decode steps after a batch of prompts, over a static KV cache of `slots` positions:
    the prompts `ids` (batch, length) are prefilled into the cache, then each `step()` feeds every
    row's last greedy token at the next position. A step reads and writes only tensors made here
    and passes its own 4-D mask over the cache slots, so it never waits on the host."""

    def __init__(self, model, ids: torch.Tensor, slots: int, calls: _Calls):
        batch, length = ids.shape
        self.model, self.calls, self.slots, self.used = model, calls, slots, length
        self.cache = _static_cache(model, batch, slots)
        self.slot_index = torch.arange(slots, device=ids.device)
        positions = torch.arange(length, device=ids.device)
        out = self._forward(ids, positions.expand(batch, -1), self.slot_index[None, :] <= positions[:, None], positions)
        self.token = out.logits[:, -1:].argmax(-1)
        self.position = torch.full((batch, 1), length, device=ids.device)
        self.cache_position = torch.full((1,), length, device=ids.device)

    def _forward(self, ids, position_ids, visible, cache_position):
        mask = torch.zeros(visible.shape, dtype=self.model.dtype, device=ids.device)
        mask = mask.masked_fill(~visible, torch.finfo(self.model.dtype).min)[None, None]
        kwargs = {self.calls.cache: self.cache, **self.calls.keep}
        if self.calls.positions:
            kwargs["cache_position"] = cache_position
        return self.model(input_ids=ids, position_ids=position_ids, attention_mask=mask, use_cache=True, **kwargs)

    def step(self) -> None:
        out = self._forward(self.token, self.position, self.slot_index[None, :] <= self.cache_position, self.cache_position)
        self.token.copy_(out.logits[:, -1:].argmax(-1))
        self.position.add_(1)
        self.cache_position.add_(1)

    def run(self, step, count: int) -> None:
        """`count` calls of `step` (this object's step or a replay of it), refused before they
        would write past the cache."""
        if self.used + count > self.slots:
            raise RuntimeError(f"decode would pass the {self.slots} cache slots")
        for _ in range(count):
            step()
        self.used += count


def _replayable(decoding: _Decoding, device: torch.device):
    """(step, how it runs): on CUDA a CUDA-graph replay of `decoding.step` (checked first for host
    syncs, warmed up on a side stream), else the eager step and why."""
    if device.type != "cuda":
        return decoding.step, "eager (CPU)"
    try:
        torch.cuda.set_sync_debug_mode("error")
        try:
            decoding.run(decoding.step, 1)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            decoding.run(decoding.step, 2)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            decoding.step()
    except RuntimeError as error:
        torch.cuda.synchronize(device)
        return decoding.step, f"eager (no CUDA graph: {type(error).__name__}: {str(error).splitlines()[0][:160]})"
    return graph.replay, "cuda graph"


def _decode(model, ids, calls, device, energy, plan: Plan):
    """(seconds per step, joules per step or None, how steps ran) at the batch of `ids`."""
    needed = ids.shape[1] + 8 + plan.decode_steps * (plan.most_blocks + 1)  # 8: slack for a step cut short
    slots = -(-needed // 16) * 16  # a mask row of whole 16-element blocks, as fused attention kernels read it
    decoding = _Decoding(model, ids, slots, calls)
    step, mode = _replayable(decoding, device)
    seconds, joules = _repeat(lambda: decoding.run(step, plan.decode_steps), device, energy, plan, plan.most_blocks)
    steps = plan.decode_steps
    del step, decoding
    return seconds / steps, None if joules is None else joules / steps, mode


def _linear_seconds(model, modules, tokens: int, device, dtype) -> float:
    """Seconds all decoder linear layers take over `tokens` tokens, estimated from one timed call
    (after a warm-up) of each module of the first layer, times the layer count."""
    layers = model.config.num_hidden_layers
    total = 0.0
    for module in modules[: len(modules) // layers]:
        x = torch.randn(tokens, module.in_features, device=device, dtype=dtype)
        module(x)
        total += timed(lambda: module(x), device)
        del x
    return total * layers


# ---------------------------------------------------------------------------------------------
# One format


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm().clamp(min=1e-30))


def _kernel_errors(form: fmts.Format, original, module, device, dtype) -> dict:
    """The module's output on 16 random tokens against F.linear with the format's effective
    weight (kernel_rel_error) and with the dense weight (error_vs_dense), relative norms."""
    x = torch.randn(16, original.in_features, device=device, dtype=dtype)
    got = module(x)
    want = F.linear(x.float(), form.effective(original.weight.detach()).float())
    return {"kernel_rel_error": _relative(got, want),
            "error_vs_dense": _relative(got, F.linear(x.float(), original.weight.float()))}


def _empty_row(form: fmts.Format) -> dict:
    row = dict.fromkeys(ROW_KEYS)
    row.update(kernel=form.kernel, ratios={})
    return row


def _prefill(model, modules, ids, calls, device, energy, plan: Plan) -> tuple[dict, float | None]:
    """(figures, joules per batch or None) of the prefill: the linear layers' estimated time, then
    the whole model's ms per question, unless that estimate passes PREFILL_ESTIMATE_LIMIT_S."""
    batch, length = ids.shape
    figures = {"prefill_linear_s_estimate": _linear_seconds(model, modules, batch * length, device, model.dtype)}
    if figures["prefill_linear_s_estimate"] > PREFILL_ESTIMATE_LIMIT_S:
        figures["error"] = (f"prefill skipped: its linear layers alone would take about "
                            f"{figures['prefill_linear_s_estimate']:.0f} s per batch of {batch}; pass a smaller --batch")
        return figures, None
    seconds, joules = _repeat(lambda: model(input_ids=ids, use_cache=True, **calls.keep), device, energy, plan)
    figures["prefill_ms_per_question"] = 1000 * seconds / batch
    return figures, joules


def _per_question(row: dict, prefill_j, step_j, batch: int) -> None:
    """A question's ms and joules: its share of a prefill plus NEW_TOKENS decode steps."""
    if row["prefill_ms_per_question"] is None:
        return
    row["ms_per_question"] = row["prefill_ms_per_question"] + NEW_TOKENS * row["decode_ms_per_token"]
    if prefill_j is not None and step_j is not None:
        row["joules_per_question"] = (prefill_j + NEW_TOKENS * step_j) / batch


def _measure_format(model, form: fmts.Format, ids, calls, device, energy, plan: Plan) -> dict:
    """The row of one format: storage, kernel check, prefill, decode at the batch and at 1."""
    row = _empty_row(form)
    row["unavailable"] = form.unavailable(device, model.dtype)
    if row["unavailable"]:
        return row
    original = prune.prunable_linears(model)[0][1]
    batch = ids.shape[0]
    stage = "building"
    try:
        with fmts.swapped(model, form.build) as modules:
            row["backend"] = getattr(modules[0], "backend_used", None)
            row["weight_gib"] = fmts.storage_bytes(model) / GIB
            row["linear_weight_gib"] = fmts.storage_bytes(*modules) / GIB
            stage = "checking the kernel"
            row.update(_kernel_errors(form, original, modules[0], device, model.dtype))
            stage = "prefill"
            figures, prefill_j = _prefill(model, modules, ids, calls, device, energy, plan)
            row.update(figures)
            stage = f"decode at batch {batch}"
            step_s, step_j, row["decode_mode"] = _decode(model, ids, calls, device, energy, plan)
            row["decode_ms_per_step"] = 1000 * step_s
            row["decode_ms_per_token"] = row["decode_ms_per_step"] / batch
            stage = "decode at batch 1"
            single_s, _, row["decode_mode_batch1"] = _decode(model, ids[:1], calls, device, energy, plan)
            row["decode_ms_per_token_batch1"] = 1000 * single_s
            _per_question(row, prefill_j, step_j, batch)
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as error:  # OOM is a RuntimeError
        row["error"] = f"{stage}: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
    return row


def _add_ratios(rows: dict) -> None:
    """Each row's `ratios`: its figures over dense's (None where either is missing)."""
    dense = rows["dense"]
    for row in rows.values():
        row["ratios"] = {key: (row[key] / dense[key] if row[key] is not None and dense[key] else None)
                         for key in RATIO_KEYS}


# ---------------------------------------------------------------------------------------------
# Entry point


def _chosen(names) -> list[fmts.Format]:
    """The formats to run, dense always first (the ratios are to it); LoboError on unknown names."""
    if names is None:
        return list(fmts.FORMATS)
    unknown = [name for name in names if name not in fmts.FORMAT_NAMES]
    if unknown:
        raise LoboError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(fmts.FORMAT_NAMES)}")
    return [form for form in fmts.FORMATS if form.name == "dense" or form.name in names]


def _backends() -> dict:
    from torch.sparse import SparseSemiStructuredTensor

    available = torch.backends.cusparselt.is_available()
    return {
        "cusparselt_available": available,
        "cusparselt_version": torch.backends.cusparselt.version() if available else None,
        "force_cutlass_default": SparseSemiStructuredTensor._FORCE_CUTLASS,
        "int4_group_size": fmts.INT4_GROUP,
        "int4_inner_k_tiles": fmts.INT4_INNER_K_TILES,
    }


def _plan(model, on_gpu: bool, batch, prompt_tokens, overrides) -> Plan:
    """The run's Plan: GPU_PLAN or CPU_PLAN with `overrides`; the prompts PubMedQA's measured
    mean length and the batch the sweep's (on CUDA) unless given."""
    settings = {**(GPU_PLAN if on_gpu else CPU_PLAN), **(overrides or {})}
    settings.setdefault("prompt_tokens", MEASURED_MEAN_TOKENS["pubmedqa"])
    if prompt_tokens is not None:
        settings["prompt_tokens"] = prompt_tokens
    if batch is not None:
        settings.update(batch=batch, batch_source="given")
    elif "batch" in settings:
        settings["batch_source"] = "the CPU default"
    else:
        settings["batch"], settings["batch_source"] = sweep_batch(model)
    return Plan(**settings)


@torch.no_grad()
def bench_compress(device=None, shape=None, *, batch: int | None = None, prompt_tokens: int | None = None,
                   formats=None, seed: int = 0, plan: dict | None = None, out=None) -> dict:
    """Weight storage, prefill and decode time, and energy of a model in each compressed format
    against dense, in one run (see the module docstring for what is timed and how).

    device None: CUDA when available (Mistral-7B's shape, `MistralConfig()` defaults), else the
    CPU with a small shape (the figures then say nothing about GPUs). batch: prompts per prefill
    and batch decode (None: the sweep's batching on CUDA, 2 on the CPU); prompt_tokens (None:
    the measured PubMedQA mean, 391, on CUDA; 64 on the CPU); formats: names from
    `formats.FORMAT_NAMES` (dense is always run); plan: overrides of the repetition settings
    (`Plan` fields). Prints a table; returns {device, date, torch, transformers, dtype, shape,
    note, prompt_tokens, batch, batch_source, new_tokens, decode_steps_per_block, energy,
    backends, formats: {name: row}}, each row with the keys of `ROW_KEYS`; writes it to `out`
    (JSON) when given."""
    import transformers

    chosen = _chosen(formats)
    device = resolve_device(device)
    on_gpu = device.type == "cuda"
    shape = dict(shape if shape is not None else ({} if on_gpu else CPU_SHAPE))
    if (batch is not None and batch < 1) or (prompt_tokens is not None and prompt_tokens < 2):
        raise LoboError(f"bench compress needs --batch >= 1 and prompt tokens >= 2, got {batch} and {prompt_tokens}")
    # sliding_window None: a plain static cache; at these lengths Mistral's 4,096 window changes nothing
    model = build_model({**shape, "sliding_window": None}, device, torch.bfloat16)
    fill(model, seed)
    run_plan = _plan(model, on_gpu, batch, prompt_tokens, plan)
    generator = torch.Generator(device=device).manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (run_plan.batch, run_plan.prompt_tokens), device=device,
                        generator=generator)
    energy = EnergyCounter(device)
    calls = _Calls(model)
    rows = {}
    for form in chosen:
        print(f"bench compress: {form.name} ...", flush=True)
        rows[form.name] = _measure_format(model, form, ids, calls, device, energy, run_plan)
    _add_ratios(rows)
    result = {
        "device": device_name(device),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": "bfloat16",
        "shape": shape or "MistralConfig() defaults (Mistral-7B)",
        "note": None if on_gpu else "CPU run with a small shape: exercises the code, says nothing about GPU speed",
        "prompt_tokens": run_plan.prompt_tokens,
        "batch": run_plan.batch,
        "batch_source": run_plan.batch_source,
        "new_tokens": NEW_TOKENS,
        "decode_steps_per_block": run_plan.decode_steps,
        "energy": energy.why_not or "NVML total energy counter (whole board, idle power included)",
        "backends": _backends(),
        "formats": rows,
    }
    print(format_compress_table(result))
    write_json(result, out)
    del model
    if on_gpu:
        torch.cuda.empty_cache()
    return result


def format_compress_table(result: dict) -> str:
    """The bench_compress result as a plain-text table: each figure and its ratio to dense."""
    lines = [
        f"bench compress: {result['device']}, {result['dtype']}, shape {result['shape']}, batch {result['batch']} "
        f"x {result['prompt_tokens']} tokens ({result['batch_source']}), energy: {result['energy']}",
    ]
    if result["note"]:
        lines.append(f"note: {result['note']}")
    columns = (("weight_gib", "GiB", ".3g"), ("prefill_ms_per_question", "prefill ms/q", ".3g"),
               ("decode_ms_per_token", "decode ms/tok", ".3g"), ("decode_ms_per_token_batch1", "b1 ms/tok", ".3g"),
               ("joules_per_question", "J/q", ".3g"))
    lines.append(f"{'format':<20}" + "".join(f" {title:>13} {'x':>5}" for _, title, _ in columns)
                 + f" {'kernel err':>10}  decode")
    for name, row in result["formats"].items():
        if row["unavailable"]:
            lines.append(f"{name:<20} unavailable: {row['unavailable']}")
            continue
        cells = "".join(f" {fmt(row[key], spec):>13} {fmt(row['ratios'].get(key), '.2f'):>5}"
                        for key, _, spec in columns)
        lines.append(f"{name:<20}{cells} {fmt(row['kernel_rel_error'], '.1e'):>10}  "
                     f"{row['decode_mode'] or ''}; batch 1: {row['decode_mode_batch1'] or ''}")
        if row["error"]:
            lines.append(f"{'':<20} {row['error']}")
    return "\n".join(lines)
