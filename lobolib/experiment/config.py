"""Experiment parameters: parameters/*.yaml -> a validated `RunConfig`.

Every key is checked before any work starts: an unknown key (with the closest known key
suggested), a value of the wrong type, a sparsity grid outside [0, 1) or not strictly ascending,
a path that does not exist, a reference-logs run without `logs_dir`. Each problem raises one
`LoboError` naming the key and what to write instead.

Schema (every key optional except where noted; shown with its default)::

    run: default                # name of the run: results go to <outputs>/<run>/
    outputs: outputs            # folder holding the runs (relative paths: from the working directory)
    seed: 0                     # seeds bootstrap resampling and example sampling
    mode: evaluate              # evaluate: run the models | reference_logs: analyse published logs
    logs_dir: null              # required in reference_logs mode: the reference study's data/ folder
    models:                     # evaluate mode: at least one; keys are models.load_model's
      - name: base              # short label used in records, tables and figures (letters, digits, . _ -)
        model: embedded:base    # embedded:base | embedded:specialist | hub id | local folder
        revision: null          # hub commit, branch or tag
        dtype: auto             # auto | bfloat16 | float16 | float32
        device_map: null        # null | auto | cpu | cuda | {module: device}
        max_memory: null        # e.g. {0: 14GiB, 1: 14GiB}
        trust_remote_code: false
        allow_pickle_weights: false
        local_files_only: false
    sparsity: {start: 0.0, stop: 0.95, step: 0.05}   # stop included; or {levels: [0, 0.5, 0.9]}
                                                      # or a plain list [0, 0.5, 0.9]
    prune: {scope: layer, include_lm_head: false}    # scope: layer (per matrix) | global
    benchmarks:
      pubmedqa:
        enabled: true
        source: embedded        # embedded | hub | path to ori_pqal.json or its folder
        split: null             # null: all 1,000 PQA-L items | test (the official 500)
        max_items: null         # first N items
        max_new_tokens: 10
        template: reference     # reference | harness
      mmlu:
        enabled: true
        source: embedded        # embedded | hub | folder with test/ dev/ val/ CSVs
        split: test
        subjects: [medical, logic]   # subject names or groups (benchmarks.SUBJECT_GROUPS)
        max_items_per_subject: null  # first N per subject (the reference study: 200)
        shots: 0                # few-shot examples from the dev split
        max_new_tokens: 5
        template: reference
    evaluation: {batch_size: null}   # null: automatic, halved on out-of-memory
    analysis:
      bootstrap: 1000           # bootstrap resamples for confidence intervals (0: none)
      confidence: 0.95
      cliff_fraction: 0.5       # the cliff: first level where the score falls below this fraction of dense
      example_levels: [0.5, 0.75, 0.8]   # levels shown in the qualitative examples
      compare_level: 0.5        # level at which items where the models diverge are listed
      examples_per_level: 3
      groups: []                # MMLU subject groups to report even when only some of their
                                # subjects were evaluated (fully covered groups always are)

`embedded:*` models and `source: embedded` come from lobolib.embedded.ensure_embedded, cached in
$LOBOTOMY_CACHE or <outputs>/.cache/embedded. A Hugging Face token is never a parameter: models.py
reads HF_TOKEN from the environment, and a value that looks like a token is refused here so it
cannot end up in an output.

`--set key=value` overrides (see `apply_overrides`) use dotted keys (`models.0.dtype=float16`) and
YAML values (`--set sparsity=[0,0.5,0.9]`); `--set sparsity.levels=[...]` replaces a
start/stop/step range (and setting start, stop or step replaces explicit levels).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from lobolib.errors import LoboError

MODES = ("evaluate", "reference_logs")
DTYPES = ("auto", "bfloat16", "float16", "float32")
TEMPLATES = ("reference", "harness")
SCOPES = ("layer", "global")
EMBEDDED_MODELS = ("base", "specialist")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TOKEN = re.compile(r"^hf_[A-Za-z0-9]{20,}$")


# ----------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class ModelConfig:
    """One model to prune: a `name` label plus models.load_model's spec keys."""

    name: str
    model: str
    revision: str | None = None
    dtype: str = "auto"
    device_map: str | dict | None = None
    max_memory: dict | None = None
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    local_files_only: bool = False

    @property
    def embedded(self) -> str | None:
        """"base"/"specialist" for an embedded model, else None."""
        return self.model.split(":", 1)[1] if self.model.startswith("embedded:") else None


@dataclass(frozen=True)
class SparsityConfig:
    """The sparsity grid, either as start/stop/step (stop included) or as explicit levels."""

    start: float | None = None
    stop: float | None = None
    step: float | None = None
    levels: list[float] | None = None


@dataclass(frozen=True)
class PruneConfig:
    """prune.magnitude_prune's options."""

    scope: str = "layer"
    include_lm_head: bool = False


@dataclass(frozen=True)
class PubMedQAConfig:
    """Which PubMedQA items and how they are asked."""

    enabled: bool = True
    source: str = "embedded"
    split: str | None = None
    max_items: int | None = None
    max_new_tokens: int = 10
    template: str = "reference"


@dataclass(frozen=True)
class MMLUConfig:
    """Which MMLU subjects and how they are asked."""

    enabled: bool = True
    source: str = "embedded"
    split: str = "test"
    subjects: list[str] = field(default_factory=lambda: ["medical", "logic"])
    max_items_per_subject: int | None = None
    shots: int = 0
    max_new_tokens: int = 5
    template: str = "reference"


@dataclass(frozen=True)
class BenchmarksConfig:
    pubmedqa: PubMedQAConfig = field(default_factory=PubMedQAConfig)
    mmlu: MMLUConfig = field(default_factory=MMLUConfig)


@dataclass(frozen=True)
class EvaluationConfig:
    batch_size: int | None = None


@dataclass(frozen=True)
class AnalysisConfig:
    """Knobs of the analysis notebooks (02-04)."""

    bootstrap: int = 1000
    confidence: float = 0.95
    cliff_fraction: float = 0.5
    example_levels: list[float] = field(default_factory=lambda: [0.5, 0.75, 0.8])
    compare_level: float = 0.5
    examples_per_level: int = 3
    groups: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunConfig:
    """A validated experiment. `levels` is the resolved sparsity grid; paths are absolute."""

    run: str = "default"
    outputs: str = "outputs"
    seed: int = 0
    mode: str = "evaluate"
    logs_dir: str | None = None
    models: list[ModelConfig] = field(default_factory=list)
    sparsity: SparsityConfig = field(default_factory=lambda: SparsityConfig(0.0, 0.95, 0.05))
    prune: PruneConfig = field(default_factory=PruneConfig)
    benchmarks: BenchmarksConfig = field(default_factory=BenchmarksConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    @property
    def levels(self) -> list[float]:
        """The sparsity levels, ascending."""
        return sparsity_levels(self.sparsity)

    @property
    def output_dir(self) -> Path:
        """<outputs>/<run>/."""
        return Path(self.outputs) / self.run

    @property
    def cache_dir(self) -> Path:
        """Where the embedded models and benchmark live: $LOBOTOMY_CACHE or <outputs>/.cache/embedded."""
        return Path(os.environ.get("LOBOTOMY_CACHE") or Path(self.outputs) / ".cache" / "embedded")

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def report_groups(self) -> list[str]:
        """MMLU names to report as groups: the subjects/groups asked for plus analysis.groups."""
        return list(dict.fromkeys([*self.benchmarks.mmlu.subjects, *self.analysis.groups]))

    @property
    def enabled_benchmarks(self) -> list[str]:
        """Benchmark names switched on, in a fixed order."""
        return [name for name in ("pubmedqa", "mmlu") if getattr(self.benchmarks, name).enabled]

    def to_dict(self) -> dict:
        """Plain data (YAML/JSON-able) that `from_dict` turns back into the same config; the
        sparsity grid is written out as explicit levels."""
        data = dataclasses.asdict(self)
        data["sparsity"] = {"levels": self.levels}
        return data


# ----------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read parameters/X.yaml (default parameters/default.yaml), apply `--set` overrides, validate."""
    path = Path(path) if path is not None else Path("parameters") / "default.yaml"
    if not path.is_file():
        raise LoboError(f"parameters file not found: {path} (give a path such as parameters/default.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise LoboError(f"{path}: cannot parse YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise LoboError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    return from_dict(apply_overrides(raw, overrides))


def apply_overrides(raw: Mapping, overrides: Sequence[str]) -> dict:
    """Apply `key=value` overrides to a copy of `raw`.

    Keys are dotted paths (`benchmarks.mmlu.shots`); a number addresses a list element
    (`models.0.dtype`). Values are parsed as YAML, so `0.1`, `true`, `null`, `[0, 0.5]` and
    `{a: 1}` become numbers, booleans, None, lists and mappings.
    """
    data = _deep_copy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LoboError(f"--set {override!r}: expected key=value, e.g. --set sparsity.step=0.1")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise LoboError(f"--set {override!r}: the value is not valid YAML; quote it") from None
        _set_path(data, key.split("."), value, override)
        _one_grid_form(data, key)
    return data


def _one_grid_form(data: dict, key: str) -> None:
    """An override of sparsity.levels replaces a start/stop/step range, and the other way round."""
    grid = data.get("sparsity")
    if not isinstance(grid, dict):
        return
    if key == "sparsity.levels":
        for name in ("start", "stop", "step"):
            grid.pop(name, None)
    elif key in ("sparsity.start", "sparsity.stop", "sparsity.step"):
        grid.pop("levels", None)


def _deep_copy(value):
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _set_path(data: Any, parts: list[str], value: Any, override: str) -> None:
    node = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise LoboError(f"--set {override!r}: {where} is not an element of a list of {len(node)}")
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise LoboError(f"--set {override!r}: {'.'.join(parts[:depth])} is a value, not a section")


# ----------------------------------------------------------------------------- validation


def from_dict(raw: Mapping) -> RunConfig:
    """Validate plain data (parsed YAML) into a RunConfig, or raise one LoboError."""
    _refuse_tokens(raw, "")
    config = _build(RunConfig, raw, "")
    if config.mode not in MODES:
        raise LoboError(f"mode: {config.mode!r} is not one of {', '.join(MODES)}")
    if not _NAME.match(config.run):
        raise LoboError(f"run: {config.run!r} must be a folder name (letters, digits, '.', '_', '-')")
    sparsity_levels(config.sparsity)  # raises on a bad grid
    _check_models(config)
    _check_benchmarks(config)
    _check_analysis(config.analysis)
    return dataclasses.replace(
        config,
        outputs=str(Path(config.outputs).expanduser().resolve()),
        logs_dir=_existing_path(config.logs_dir, "logs_dir") if config.logs_dir is not None else None,
        sparsity=SparsityConfig(levels=sparsity_levels(config.sparsity)),
        models=[_resolved_model(m, i) for i, m in enumerate(config.models)],
        benchmarks=_resolved_benchmarks(config.benchmarks),
    )


def sparsity_levels(grid: SparsityConfig) -> list[float]:
    """The levels of a grid; start/stop/step includes stop (0, 0.95, 0.05 gives 20 levels)."""
    ranged = [grid.start, grid.stop, grid.step]
    if grid.levels is not None:
        if any(v is not None for v in ranged):
            raise LoboError("sparsity: give either levels or start/stop/step, not both")
        levels = [float(v) for v in grid.levels]
    else:
        if any(v is None for v in ranged):
            raise LoboError("sparsity: give start, stop and step (or levels: [...])")
        start, stop, step = (float(v) for v in ranged)
        if step <= 0:
            raise LoboError(f"sparsity.step: {step} must be positive")
        if stop < start:
            raise LoboError(f"sparsity: stop {stop} is below start {start}")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        levels = [round(start + i * step, 10) for i in range(count)]
    if not levels:
        raise LoboError("sparsity: the grid has no levels")
    for level in levels:
        if not 0.0 <= level < 1.0:
            raise LoboError(f"sparsity: level {level} is outside [0, 1) (1.0 would remove every weight)")
    for low, high in zip(levels, levels[1:]):
        if not high > low:
            raise LoboError(f"sparsity: levels must be strictly ascending, but {high} follows {low}")
    return levels


def _build(cls, raw: Any, where: str):
    """Instantiate dataclass `cls` from a mapping, checking keys and value types."""
    label = where or "the parameters file"
    if raw is None:
        raw = {}
    if cls is SparsityConfig and isinstance(raw, list):
        raw = {"levels": raw}
    if not isinstance(raw, Mapping):
        raise LoboError(f"{label}: expected a mapping of keys, got {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    values = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" — did you mean {close[0]!r}?" if close else f" (known keys: {', '.join(fields)})"
            raise LoboError(f"unknown key {path!r}{hint}")
        values[key] = _convert(hints[key], value, path)
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise LoboError(f"{where + '.' if where else ''}{name} is required")
    return cls(**values)


def _hints(cls) -> dict:
    import typing

    return typing.get_type_hints(cls)


def _convert(hint, value, path: str):
    """Check `value` against a type hint (dataclass, list[X], X | None, dict, scalars)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path)
            except LoboError as exc:
                errors.append(exc)
        names = " or ".join("null" if o is type(None) else _type_name(o) for o in options)
        if len(errors) == 1:
            raise errors[0]
        raise LoboError(f"{path}: expected {names}, got {_describe(value)}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise LoboError(f"{path}: expected a list of {_type_name(inner)}, got {_describe(value)}")
        return [_convert(inner, v, f"{path}.{i}") for i, v in enumerate(value)]
    if hint is dict:
        if not isinstance(value, dict):
            raise LoboError(f"{path}: expected a mapping, got {_describe(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise LoboError(f"{path}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LoboError(f"{path}: expected a whole number, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LoboError(f"{path}: expected a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise LoboError(f"{path}: expected text, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported type hint {hint!r} at {path}")  # a bug in this module, not user input


def _type_name(hint) -> str:
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {bool: "true/false", int: "whole number", float: "number", str: "text", dict: "mapping"}.get(
        hint, str(hint)
    )


def _describe(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (true/false)"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return f"{value!r} ({type(value).__name__})"


def _refuse_tokens(value, where: str) -> None:
    """A Hugging Face token belongs in the environment (HF_TOKEN), never in a parameters file."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _refuse_tokens(inner, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _refuse_tokens(inner, f"{where}.{i}")
    elif isinstance(value, str) and _TOKEN.match(value.strip()):
        raise LoboError(
            f"{where}: looks like a Hugging Face token; remove it and set HF_TOKEN in the environment instead"
        )


def _check_models(config: RunConfig) -> None:
    if config.mode == "reference_logs":
        if config.logs_dir is None:
            raise LoboError(
                "logs_dir is required in reference_logs mode: --set logs_dir=<the reference study's data folder>"
            )
        return
    if not config.models:
        raise LoboError("models: list at least one model to prune (name and model)")
    seen = set()
    for i, m in enumerate(config.models):
        where = f"models.{i}"
        if not _NAME.match(m.name):
            raise LoboError(f"{where}.name: {m.name!r} must be a short label (letters, digits, '.', '_', '-')")
        if m.name in seen:
            raise LoboError(f"{where}.name: {m.name!r} is used twice; give each model its own name")
        seen.add(m.name)
        if m.dtype not in DTYPES:
            raise LoboError(f"{where}.dtype: {m.dtype!r} is not one of {', '.join(DTYPES)}")
        if m.embedded is not None and m.embedded not in EMBEDDED_MODELS:
            raise LoboError(
                f"{where}.model: {m.model!r} — the embedded models are "
                + ", ".join(f"embedded:{n}" for n in EMBEDDED_MODELS)
            )
    if config.prune.scope not in SCOPES:
        raise LoboError(f"prune.scope: {config.prune.scope!r} is not one of {', '.join(SCOPES)}")


def _check_benchmarks(config: RunConfig) -> None:
    b = config.benchmarks
    if config.mode == "evaluate" and not (b.pubmedqa.enabled or b.mmlu.enabled):
        raise LoboError("benchmarks: both pubmedqa and mmlu are disabled; enable at least one")
    for name in ("pubmedqa", "mmlu"):
        bench = getattr(b, name)
        where = f"benchmarks.{name}"
        if bench.template not in TEMPLATES:
            raise LoboError(f"{where}.template: {bench.template!r} is not one of {', '.join(TEMPLATES)}")
        if bench.max_new_tokens < 1:
            raise LoboError(f"{where}.max_new_tokens: must be at least 1")
    if b.pubmedqa.split not in (None, "test"):
        raise LoboError(f"benchmarks.pubmedqa.split: {b.pubmedqa.split!r} — use null (all 1,000 items) or test")
    if b.pubmedqa.max_items is not None and b.pubmedqa.max_items < 1:
        raise LoboError("benchmarks.pubmedqa.max_items: must be at least 1 (or null for all)")
    if b.mmlu.split not in ("test", "val", "dev"):
        raise LoboError(f"benchmarks.mmlu.split: {b.mmlu.split!r} is not one of test, val, dev")
    if b.mmlu.max_items_per_subject is not None and b.mmlu.max_items_per_subject < 1:
        raise LoboError("benchmarks.mmlu.max_items_per_subject: must be at least 1 (or null for all)")
    if b.mmlu.shots < 0:
        raise LoboError("benchmarks.mmlu.shots: must be 0 or more")
    if b.mmlu.enabled:
        if not b.mmlu.subjects:
            raise LoboError("benchmarks.mmlu.subjects: list at least one subject or group")
        _check_subjects(b.mmlu.subjects)


def _check_subjects(subjects: list[str]) -> None:
    """Unknown subject names are caught by benchmarks.expand_subjects."""
    from lobolib.benchmarks import expand_subjects

    try:
        expand_subjects(subjects)
    except LoboError as exc:
        raise LoboError(f"benchmarks.mmlu.subjects: {exc}") from None


def _check_analysis(analysis: AnalysisConfig) -> None:
    if analysis.bootstrap < 0:
        raise LoboError("analysis.bootstrap: must be 0 (no intervals) or more")
    if not 0.0 < analysis.confidence < 1.0:
        raise LoboError(f"analysis.confidence: {analysis.confidence} must be between 0 and 1, e.g. 0.95")
    if not 0.0 < analysis.cliff_fraction < 1.0:
        raise LoboError(f"analysis.cliff_fraction: {analysis.cliff_fraction} must be between 0 and 1")
    for level in [*analysis.example_levels, analysis.compare_level]:
        if not 0.0 <= level < 1.0:
            raise LoboError(f"analysis: level {level} is outside [0, 1)")
    if analysis.examples_per_level < 0:
        raise LoboError("analysis.examples_per_level: must be 0 or more")
    from lobolib.benchmarks import SUBJECT_GROUPS

    unknown = [g for g in analysis.groups if g not in SUBJECT_GROUPS]
    if unknown:
        raise LoboError(f"analysis.groups: {unknown[0]!r} is not a subject group; use {', '.join(SUBJECT_GROUPS)}")


def _is_path_like(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", "..") or Path(text).exists()


def _existing_path(text: str, where: str) -> str:
    path = Path(text).expanduser()
    if not path.exists():
        raise LoboError(f"{where}: path not found: {text}")
    return str(path.resolve())


def _resolved_model(m: ModelConfig, index: int) -> ModelConfig:
    """Local model folders must exist (absolute path kept); anything else must look like a hub id."""
    if m.embedded is not None:
        return m
    if _is_path_like(m.model):
        return dataclasses.replace(m, model=_existing_path(m.model, f"models.{index}.model"))
    if not _HUB_ID.match(m.model):
        raise LoboError(
            f"models.{index}.model: {m.model!r} is neither an existing folder nor a hub id like org/name"
        )
    return m


def _resolved_benchmarks(b: BenchmarksConfig) -> BenchmarksConfig:
    def source(bench, name):
        if not bench.enabled or bench.source in ("embedded", "hub"):
            return bench
        return dataclasses.replace(bench, source=_existing_path(bench.source, f"benchmarks.{name}.source"))

    return BenchmarksConfig(pubmedqa=source(b.pubmedqa, "pubmedqa"), mmlu=source(b.mmlu, "mmlu"))


# ----------------------------------------------------------------------------- resolving


def embedded_paths(config: RunConfig) -> dict:
    """The embedded models and benchmark files (built on first use in `config.cache_dir`)."""
    from lobolib.experiment.embedded import ensure_embedded

    return ensure_embedded(config.cache_dir)


def model_spec(config: RunConfig, name: str) -> dict:
    """The models.load_model spec of model `name`, with embedded:* resolved to its folder."""
    by_name = {m.name: m for m in config.models}
    if name not in by_name:
        raise LoboError(f"no model named {name!r}; the parameters list {', '.join(by_name) or 'none'}")
    spec = dataclasses.asdict(by_name[name])
    spec.pop("name")
    if by_name[name].embedded is not None:
        spec["model"] = str(embedded_paths(config)[by_name[name].embedded])
    return spec


def benchmark_source(config: RunConfig, benchmark: str) -> str | None:
    """The `source` argument for benchmarks.load_<benchmark>: a path, or None for the hub."""
    source = getattr(config.benchmarks, benchmark).source
    if source == "embedded":
        return str(embedded_paths(config)[benchmark])
    return None if source == "hub" else source


def load_items(config: RunConfig) -> dict:
    """{benchmark: [Item, ...]} for every enabled benchmark, capped as the parameters say."""
    from lobolib import benchmarks

    items = {}
    if config.benchmarks.pubmedqa.enabled:
        pq = config.benchmarks.pubmedqa
        loaded = benchmarks.load_pubmedqa(benchmark_source(config, "pubmedqa"), split=pq.split)
        items["pubmedqa"] = list(loaded)[: pq.max_items] if pq.max_items else list(loaded)
    if config.benchmarks.mmlu.enabled:
        mm = config.benchmarks.mmlu
        items["mmlu"] = list(
            benchmarks.load_mmlu(
                benchmark_source(config, "mmlu"),
                subjects=tuple(mm.subjects),
                split=mm.split,
                max_items_per_subject=mm.max_items_per_subject,
            )
        )
    return items


def eval_options(config: RunConfig, items: Mapping | None = None) -> dict:
    """sweep.run_sweep's `eval_options` for the enabled benchmarks: template and max_new_tokens per
    benchmark, batch_size, and (MMLU shots > 0) the few-shot examples per subject of `items["mmlu"]`."""
    enabled = {name: getattr(config.benchmarks, name) for name in config.enabled_benchmarks}
    options: dict = {
        "template": {name: bench.template for name, bench in enabled.items()},
        "max_new_tokens": {name: bench.max_new_tokens for name, bench in enabled.items()},
        "batch_size": config.evaluation.batch_size,
    }
    mmlu = config.benchmarks.mmlu
    if mmlu.enabled and mmlu.shots > 0:
        from lobolib.benchmarks import load_mmlu_shots

        subjects = dict.fromkeys(item.subject for item in (items or {}).get("mmlu", []))
        source = benchmark_source(config, "mmlu")
        options["shots"] = {subject: load_mmlu_shots(source, subject, mmlu.shots) for subject in subjects}
    return options


def for_notebook(config: Mapping | None, parameters_file: str | None, overrides: Sequence[str] = ()) -> RunConfig:
    """The RunConfig of a notebook: the resolved dict the runner injected, or, when the notebook
    is opened by hand, the parameters file with its overrides."""
    if config:
        return from_dict(config)
    return load_config(parameters_file, overrides)
