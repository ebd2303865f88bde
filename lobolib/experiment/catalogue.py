"""What a run's parameters point at, made real: the benchmark records (built in or declared),
their items, the models' load specs, and the embedded miniature they may name (built once, on
first use)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from lobolib import benchmarks
from lobolib.benchmarks import Benchmark
from lobolib.errors import LoboError
from lobolib.experiment.config import RunConfig
from lobolib.records import Item


def embedded_paths(config: RunConfig) -> dict:
    """The embedded models and benchmark files, built on first use in `config.cache_dir`."""
    from lobolib.experiment.embedded import ensure_embedded

    return ensure_embedded(config.cache_dir)


def benchmark(config: RunConfig, name: str) -> Benchmark:
    """The Benchmark record of `name` in this run: built in, or declared in the parameters."""
    bench = config.benchmarks[name]
    if bench.declared:
        return benchmarks.declare(name, bench.declaration())
    record = benchmarks.get(name)
    windows = {k: getattr(bench, k) for k in ("seq_len", "max_windows") if getattr(bench, k) is not None}
    return dataclasses.replace(record, **windows) if windows else record


def benchmark_records(config: RunConfig) -> dict[str, Benchmark]:
    """{name: Benchmark} of every enabled benchmark."""
    return {name: benchmark(config, name) for name in config.enabled_benchmarks}


def benchmark_source(config: RunConfig, name: str) -> str | None:
    """The `source` argument of the benchmark's loader: a path, or None for the hub."""
    source = config.benchmarks[name].source
    if source == "embedded":
        return str(embedded_paths(config)[name])
    return None if source == "hub" else source


def load_items(config: RunConfig, name: str, record: Benchmark | None = None) -> list[Item]:
    """The items of one benchmark, as the parameters choose them."""
    bench = config.benchmarks[name]
    record = record or benchmark(config, name)
    options = bench.loader_options()
    if bench.source == "embedded" and "subjects" in record.options:
        options.setdefault("subjects", list(record.options["subjects"]))
    items = record.loader(benchmark_source(config, name), bench.split, **options)
    if not items:
        raise LoboError(f"benchmarks.{name}: the source holds no items for these parameters")
    return list(items)


def load_all_items(config: RunConfig, records: Mapping[str, Benchmark] | None = None) -> dict[str, list[Item]]:
    """{benchmark: [Item, ...]} for every enabled benchmark."""
    records = records or benchmark_records(config)
    return {name: load_items(config, name, records[name]) for name in config.enabled_benchmarks}


def model_spec(config: RunConfig, name: str) -> dict:
    """The models.load_model spec of model `name`, with embedded:* resolved to its folder."""
    by_name = {m.name: m for m in config.models}
    if name not in by_name:
        raise LoboError(f"no model named {name!r}; the parameters list {', '.join(by_name) or 'none'}")
    spec = by_name[name].spec()
    if by_name[name].embedded is not None:
        spec["model"] = str(embedded_paths(config)[by_name[name].embedded])
    elif by_name[name].packaged:
        from lobolib.models import smollm2_gguf

        spec["model"] = str(smollm2_gguf())
    return spec


def eval_options(config: RunConfig, items: Mapping[str, list[Item]], records: Mapping[str, Benchmark]) -> dict:
    """`evaluate`'s options for the enabled benchmarks: template and max_new_tokens per benchmark,
    batch_size, the benchmark records, and the solved examples per subject where shots > 0."""
    options: dict = {
        "template": {name: config.benchmarks[name].template for name in items},
        "max_new_tokens": {name: config.benchmarks[name].max_new_tokens or records[name].max_new_tokens
                           for name in items},  # fmt: skip
        "batch_size": config.evaluation.batch_size,
        "benchmarks": dict(records),
    }
    shots = {}
    for name, batch in items.items():
        k = config.benchmarks[name].shots
        if k:
            source = benchmark_source(config, name)
            for subject in dict.fromkeys(item.subject for item in batch):
                shots[(name, subject)] = benchmarks.load_shots(records[name], source, subject, k)
    if shots:
        options["shots"] = shots
    return options
