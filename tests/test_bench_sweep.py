"""`python -m lobolib bench` on a CPU: a small shape, the reference loop against lobolib's sweep
step, and the figures the JSON must carry."""

import json

from lobolib.perf.sweep import MEASURED_PROMPT_TOKENS, bench_sweep, synthetic_items, synthetic_tokenizer
from lobolib.benchmarks import build_prompt


def test_synthetic_prompts_follow_the_measured_lengths():
    tokenizer = synthetic_tokenizer(512)
    items = synthetic_items(tokenizer, "pubmedqa", 200, seed=1)
    lengths = [len(tokenizer(build_prompt(item))["input_ids"]) for item in items]
    low, high = MEASURED_PROMPT_TOKENS["pubmedqa"][0], MEASURED_PROMPT_TOKENS["pubmedqa"][-1]
    assert all(low - 1 <= n <= high + 1 for n in lengths)
    assert abs(sum(lengths) / len(lengths) - 391) < 25  # the real prompts' mean under Mistral's tokenizer


def test_bench_sweep_on_cpu_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = bench_sweep(device="cpu", reference_items=3, out=out)
    saved = json.loads(out.read_text())
    for key in ("device", "questions_per_s", "reference_questions_per_s", "speedup_vs_reference",
                "flop_bound_ratio", "peak_memory_gib", "seconds_per_level", "projected_paper_sweep_minutes"):
        assert key in saved
    assert result["questions_per_s"] > 0 and result["reference_questions_per_s"] > 0
    assert result["note"] and "CPU" in result["note"]
    assert saved["items"] == {"pubmedqa": 24, "mmlu": 24}
