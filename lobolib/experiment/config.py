"""Experiment parameters: parameters/*.yaml -> a validated `RunConfig`. Schema and checks only:
nothing here reads anything but the parameters file (`preflight` resolves paths, models and
datasets before any work).

Every key is checked: an unknown key (with the closest known key suggested), a value of the
wrong type, NaN or infinity, a level grid outside [0, 1), not ascending or of more than 1,000
levels, a duplicate key in the file, a file that is not UTF-8 or refers to itself. Each problem
raises one `LoboError` naming the key and what to write instead.

Schema (every key optional except where noted; shown with its default)::

    run: default                # name of the run: results go to <outputs>/<run>/
    outputs: outputs            # folder holding the runs (relative paths: from the working directory)
    seed: 0                     # seeds bootstrap resampling and example sampling
    mode: evaluate              # evaluate: run the models | reference_logs: analyse published logs
    logs_dir: null              # required in reference_logs mode: the reference study's data/ folder
    models:                     # evaluate mode: at least one; keys are models.load_model's
      - name: base              # short label used in records, tables and figures (letters, digits, . _ -)
        model: embedded:base    # embedded:base | embedded:specialist | smollm2:135m-instruct | hub id |
                                # local folder | a .gguf file
        gguf_file: null         # a GGUF file inside `model`'s folder
        revision: null          # hub commit, branch or tag
        dtype: auto             # auto | bfloat16 | float16 | float32
        device_map: null        # null | auto | cpu | cuda | {module: device}
        max_memory: null        # e.g. {0: 14GiB, 1: 14GiB}
        trust_remote_code: false
        allow_pickle_weights: false
        local_files_only: false
    sparsity: {start: 0.0, stop: 0.95, step: 0.05}   # stop included; or {levels: [0, 0.5, 0.9]}
                                                      # or a plain list [0, 0.5, 0.9]
    prune: {scope: layer, include_lm_head: false}    # the one magnitude setting when `compression` is absent
    compression:                # the settings to compare; each is swept through its levels
      - method: magnitude       # magnitude (more as lobolib.compress adds them)
        name: null              # label in tables and figures (default: the canonical description)
        scope: layer            # magnitude: layer (per matrix) | global
        include_lm_head: false
        pattern: null           # N:M, e.g. "2:4"
        calibration: null       # {source: wikitext2, n_samples: 128, seq_len: 2048, seed: 0}; source c4 |
                                # wikitext2 | pubmed (general/medical, hub) | pubmedqa-train (with
                                # data_dir: PQA-L outside its test split) | a .txt / .jsonl file
        group_size: 128         # quantization: weights per scale (null: one per output channel)
        symmetric: false
        quantize_bits: null     # sparsegpt only: also GPTQ-quantize the kept weights to these bits
                                # in the same sweep (the SparseGPT paper's joint 50% + 4-bit)
        levels: null            # default: the sparsity grid (or the bit widths for quantization)
    benchmarks:                 # default: pubmedqa and mmlu from the embedded mini benchmark
      pubmedqa:                 # a built-in benchmark (pubmedqa, mmlu, medqa, medmcqa) ...
        enabled: true
        source: null            # hub | embedded (pubmedqa, mmlu) | a local copy of the official files;
                                # null: embedded for pubmedqa and mmlu, hub for the others
        split: null             # the benchmark's default split when null (PubMedQA: all 1,000; test: 500)
        max_items: null         # first N items
        max_new_tokens: null    # null: the benchmark's (PubMedQA 10, multiple choice 5)
        template: reference     # reference | harness
        shots: 0                # solved examples before each question (from the benchmark's shot split)
        subjects: null          # MMLU: subject names or groups (benchmarks.SUBJECT_GROUPS); default [medical, logic]
        max_items_per_subject: null   # MMLU: first N per subject (the reference study: 200)
      wikitext2:                # held-out text (perplexity): wikitext2, pubmed_abstracts
        source: hub             # hub | a local text file (wikitext2) or ori_pqal.json folder (pubmed_abstracts)
        seq_len: 512            # tokens per window
        max_windows: null       # at most this many windows (null: all the text gives)
      my_exam:                  # ... or one declared here (see lobolib.benchmarks.declared)
        kind: multiple_choice
        source: data/my_exam.jsonl
        question: question
        options: [opa, opb, opc, opd]
        answer: cop
        answer_index_base: 1
        group: subject_name
    evaluation: {batch_size: null}   # null: automatic, halved on out-of-memory
    analysis:
      bootstrap: 1000           # bootstrap resamples for confidence intervals (0: none; at most 100,000)
      confidence: 0.95
      cliff_fraction: 0.5       # the cliff: first level where the score falls below this fraction of dense
      example_levels: [0.5, 0.75, 0.8]   # levels shown in the qualitative examples
      compare_level: 0.5        # level at which items where the models diverge are listed
      examples_per_level: 3
      groups: []                # subject groups to report even when only some of their
                                # subjects were evaluated (fully covered groups always are)
      retention: 0.95           # notebook 05: the most compression keeping this share of dense accuracy
      costs: null               # notebook 05: a `python -m lobolib bench compress --out F.json` file

`embedded:*` models and `source: embedded` are lobolib's own miniature (lobolib.experiment.embedded),
built on first use in $LOBOTOMY_CACHE or <outputs>/.cache/embedded. A Hugging Face token is never
a parameter: models.py reads HF_TOKEN from the environment, and a value that looks like a token is
refused here so it cannot end up in an output.

`--set key=value` overrides (see `apply_overrides`) use dotted keys (`models.0.dtype=float16`) and
YAML values (`--set sparsity=[0,0.5,0.9]`, `--set sparsity.step=1e-3`); `--set
sparsity.levels=[...]` replaces a start/stop/step range (and setting start, stop or step replaces
explicit levels).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from lobolib.benchmarks import BUILT_IN, KINDS, PERPLEXITY, SUBJECT_GROUPS, expand_subjects
from lobolib.benchmarks.declared import FIELD_KEYS, SOURCE_KEYS
from lobolib.benchmarks.prompts import MULTIPLE_CHOICE_TEMPLATES
from lobolib.errors import LoboError
from lobolib.experiment.embedded import EMBEDDED_BENCHMARKS, EMBEDDED_MODELS
from lobolib.compress.methods import QUANT_BITS
from lobolib.experiment.setting import Calibration, Setting, check_levels, check_method
from lobolib.experiment.suggest import closest
from lobolib.models import DTYPES

MODES = ("evaluate", "reference_logs")
PACKAGED_MODELS = ("smollm2:135m-instruct",)  # shipped inside a PyPI package (lobolib.models.smollm2_gguf)
MAX_LEVELS = 1000
MAX_BOOTSTRAP = 100_000
MAX_NEW_TOKENS = 512
MAX_SHOTS = 25
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BENCHMARK = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_TOKEN = re.compile(r"^hf_[A-Za-z0-9]{20,}$")


# ----------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class ModelConfig:
    """One model to compress: a `name` label plus models.load_model's spec keys."""

    name: str
    model: str
    gguf_file: str | None = None
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

    @property
    def packaged(self) -> bool:
        """Whether the model ships inside a Python package (smollm2:135m-instruct)."""
        return self.model in PACKAGED_MODELS

    def spec(self) -> dict:
        """The models.load_model spec (embedded:* still to be resolved to its folder)."""
        spec = dataclasses.asdict(self)
        spec.pop("name")
        if spec["gguf_file"] is None:
            spec.pop("gguf_file")
        return spec


@dataclass(frozen=True)
class SparsityConfig:
    """The sparsity grid, either as start/stop/step (stop included) or as explicit levels."""

    start: float | None = None
    stop: float | None = None
    step: float | None = None
    levels: list[float] | None = None


@dataclass(frozen=True)
class PruneConfig:
    """The magnitude setting of a run that lists no `compression`."""

    scope: str = "layer"
    include_lm_head: bool = False


@dataclass(frozen=True)
class CalibrationConfig:
    source: str = "wikitext2"  # c4 | wikitext2 | pubmed | pubmedqa-train | a .txt or .jsonl file
    n_samples: int = 128
    seq_len: int = 2048
    seed: int = 0
    data_dir: str | None = None  # pubmedqa-train: the folder of ori_pqal.json and test_ground_truth.json


@dataclass(frozen=True)
class SettingConfig:
    """One compression setting (see lobolib.experiment.setting)."""

    method: str = "magnitude"
    name: str | None = None
    scope: str = "layer"
    include_lm_head: bool = False
    pattern: str | None = None
    calibration: CalibrationConfig | None = None
    group_size: int | None = 128
    symmetric: bool = False
    quantize_bits: int | None = None
    levels: list[float] | None = None


@dataclass(frozen=True)
class BenchmarkConfig:
    """Which items of one benchmark and how they are asked; a declared benchmark also says where
    its items are and how its rows read (kind, source, question, options, answer, ...)."""

    enabled: bool = True
    source: str | None = None  # None: "embedded" for pubmedqa and mmlu (as before), else "hub"
    split: str | None = None
    max_items: int | None = None
    max_new_tokens: int | None = None
    template: str = "reference"
    shots: int = 0
    subjects: list[str] | None = None
    max_items_per_subject: int | None = None
    seq_len: int | None = None
    max_windows: int | None = None
    kind: str | None = None
    config: str | None = None
    question: str | None = None
    options: str | list[str] | None = None
    answer: str | None = None
    answer_index_base: int | None = None
    group: str | None = None
    context: str | None = None
    id: str | None = None

    @property
    def declared(self) -> bool:
        return self.kind is not None

    def declaration(self) -> dict:
        """The keys `benchmarks.declare` reads."""
        return {k: getattr(self, k) for k in (*SOURCE_KEYS, *FIELD_KEYS) if getattr(self, k) is not None}

    def loader_options(self) -> dict:
        """The keyword options of the benchmark's loader."""
        keys = ("subjects", "max_items_per_subject", "max_items")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


DEFAULT_BENCHMARKS = {"pubmedqa": {"source": "embedded"}, "mmlu": {"source": "embedded"}}


@dataclass(frozen=True)
class EvaluationConfig:
    batch_size: int | None = None


@dataclass(frozen=True)
class AnalysisConfig:
    """Knobs of the analysis notebooks (02-05)."""

    bootstrap: int = 1000
    confidence: float = 0.95
    cliff_fraction: float = 0.5
    example_levels: list[float] = field(default_factory=lambda: [0.5, 0.75, 0.8])
    compare_level: float = 0.5
    examples_per_level: int = 3
    groups: list[str] = field(default_factory=list)
    retention: float = 0.95
    costs: str | None = None


@dataclass(frozen=True)
class RunConfig:
    """A validated experiment. `levels` is the resolved sparsity grid."""

    run: str = "default"
    outputs: str = "outputs"
    seed: int = 0
    mode: str = "evaluate"
    logs_dir: str | None = None
    models: list[ModelConfig] = field(default_factory=list)
    sparsity: SparsityConfig = field(default_factory=lambda: SparsityConfig(0.0, 0.95, 0.05))
    prune: PruneConfig = field(default_factory=PruneConfig)
    compression: list[SettingConfig] = field(default_factory=list)
    benchmarks: dict[str, BenchmarkConfig] = field(default_factory=dict)
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
    def settings(self) -> list[Setting]:
        """The compression settings, in the order given (one magnitude setting from `prune`
        when `compression` is empty)."""
        listed = self.compression or [SettingConfig("magnitude", scope=self.prune.scope,
                                                    include_lm_head=self.prune.include_lm_head)]  # fmt: skip
        return [_setting(s, self.levels) for s in listed]

    @property
    def enabled_benchmarks(self) -> list[str]:
        """Benchmark names switched on, in the order given."""
        return [name for name, bench in self.benchmarks.items() if bench.enabled]

    @property
    def report_groups(self) -> list[str]:
        """Subject groups to report: the groups asked for in `subjects`, plus analysis.groups."""
        asked = [s for bench in self.benchmarks.values() for s in (bench.subjects or []) if s in SUBJECT_GROUPS]
        return list(dict.fromkeys([*asked, *self.analysis.groups]))

    def to_dict(self) -> dict:
        """Plain data (YAML/JSON-able) that `from_dict` turns back into the same config; the
        sparsity grid is written out as explicit levels, unset keys are left out."""
        data = dataclasses.asdict(self)
        data["sparsity"] = {"levels": self.levels}
        data["benchmarks"] = {name: _without_none(b) for name, b in data["benchmarks"].items()}
        data["compression"] = [_without_none(s) for s in data["compression"]]
        return data


def _without_none(data: dict) -> dict:
    return {k: v for k, v in data.items() if v is not None}


def _setting(s: SettingConfig, grid: list[float]) -> Setting:
    calibration = Calibration(**dataclasses.asdict(s.calibration)) if s.calibration is not None else None
    setting = Setting(name="", method=s.method, levels=(), scope=s.scope, include_lm_head=s.include_lm_head,
                      pattern=s.pattern, calibration=calibration, group_size=s.group_size, symmetric=s.symmetric,
                      quantize_bits=s.quantize_bits)
    levels = s.levels if s.levels is not None else _default_levels(setting, grid)
    return dataclasses.replace(setting, name=s.name or setting.description,
                               levels=check_levels(levels, setting.unit, "compression"))  # fmt: skip


def _default_levels(setting: Setting, grid: list[float]) -> list[float]:
    from lobolib.compress.methods import QUANT_BITS

    if setting.unit == "bits":
        return [16, *QUANT_BITS]
    if setting.pattern:
        n, m = (int(x) for x in setting.pattern.split(":"))
        return [0.0, n / m]
    return grid


# ----------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """YAML 1.1 as safe_load reads it, but a duplicate key is an error and `1e-3` is a number."""


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise LoboError(f"duplicate key {key!r} at line {line} (first at line {seen[key]}): keep one")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_FLOAT = re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_yaml(text: str, where: str):
    """Parse YAML text with `_Loader`; one LoboError naming the line on a syntax error."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise LoboError(f"{where}: cannot parse YAML{at}: {problem}") from None
    except RecursionError:
        raise LoboError(f"{where}: the YAML refers to itself (an alias inside its own anchor); write the values out") from None


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read parameters/X.yaml (default parameters/default.yaml), apply `--set` overrides, validate."""
    path = Path(path) if path is not None else Path("parameters") / "default.yaml"
    if not path.is_file():
        raise LoboError(f"parameters file not found: {path} (give a path such as parameters/default.yaml)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise LoboError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise LoboError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    return from_dict(apply_overrides(raw, overrides))


def apply_overrides(raw: Mapping, overrides: Sequence[str]) -> dict:
    """Apply `key=value` overrides to a copy of `raw`.

    Keys are dotted paths (`benchmarks.mmlu.shots`); a number addresses a list element
    (`models.0.dtype`). Values are parsed as YAML, so `0.1`, `1e-3`, `true`, `null`, `[0, 0.5]`
    and `{a: 1}` become numbers, booleans, None, lists and mappings.
    """
    data = _plain(raw, "the parameters")
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LoboError(f"--set {override!r}: expected key=value, e.g. --set sparsity.step=0.1")
        try:
            value = _plain(parse_yaml(text, f"--set {override!r}"), f"--set {override!r}")
        except LoboError:
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


def _plain(value, where: str, _seen: frozenset = frozenset()):
    """A deep copy of parsed YAML; LoboError for a structure that contains itself."""
    if isinstance(value, (Mapping, list)):
        if id(value) in _seen:
            raise LoboError(f"{where}: the YAML refers to itself (an alias inside its own anchor); write the values out")
        inner = _seen | {id(value)}
        if isinstance(value, Mapping):
            return {k: _plain(v, where, inner) for k, v in value.items()}
        return [_plain(v, where, inner) for v in value]
    return value


def _set_path(data: Any, parts: list[str], value: Any, override: str) -> None:
    node = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise LoboError(f"--set {override!r}: {where} is not an element of a list of {len(node)}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
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
    raw = _plain(raw, "the parameters")
    _refuse_tokens_and_nan(raw, "")
    raw = dict(raw)
    raw["benchmarks"] = _benchmarks_raw(raw.get("benchmarks", DEFAULT_BENCHMARKS))
    config = _build(RunConfig, raw, "")
    if config.mode not in MODES:
        raise LoboError(f"mode: {config.mode!r} is not one of {', '.join(MODES)}")
    if not _NAME.match(config.run):
        raise LoboError(f"run: {config.run!r} must be a folder name (letters, digits, '.', '_', '-')")
    levels = sparsity_levels(config.sparsity)
    _check_models(config)
    _check_settings(config)
    _check_benchmarks(config)
    _check_analysis(config.analysis)
    if config.evaluation.batch_size is not None and config.evaluation.batch_size < 1:
        raise LoboError(f"evaluation.batch_size: {config.evaluation.batch_size} must be at least 1 (or null: automatic)")
    return dataclasses.replace(
        config,
        compression=[_absolute_calibration(c) for c in config.compression],
        benchmarks={name: _default_source(name, bench) for name, bench in config.benchmarks.items()},
        outputs=os.path.abspath(os.path.expanduser(config.outputs)),
        logs_dir=os.path.abspath(os.path.expanduser(config.logs_dir)) if config.logs_dir is not None else None,
        sparsity=SparsityConfig(levels=levels),
    )


def _absolute_calibration(setting: SettingConfig) -> SettingConfig:
    """A calibration file or folder as an absolute path (it names the setting's cells)."""
    c = setting.calibration
    if c is None:
        return setting
    from lobolib.compress.calibration import SOURCES  # torch: only for a calibrated setting

    source = c.source if c.source in SOURCES else os.path.abspath(os.path.expanduser(c.source))
    data_dir = os.path.abspath(os.path.expanduser(c.data_dir)) if c.data_dir is not None else None
    return dataclasses.replace(setting, calibration=dataclasses.replace(c, source=source, data_dir=data_dir))


def _default_source(name: str, bench: BenchmarkConfig) -> BenchmarkConfig:
    if bench.source is not None:
        return bench
    return dataclasses.replace(bench, source="embedded" if name in EMBEDDED_BENCHMARKS else "hub")


def _benchmarks_raw(value) -> Any:
    if isinstance(value, Mapping):
        for name in value:
            if not isinstance(name, str) or not _BENCHMARK.match(name):
                raise LoboError(f"benchmarks: {name!r} is not a benchmark name (lower-case letters, digits, '_')")
    return value


def sparsity_levels(grid: SparsityConfig) -> list[float]:
    """The levels of a grid; start/stop/step includes stop (0, 0.95, 0.05 gives 20 levels)."""
    from lobolib.experiment.setting import check_sparsity

    ranged = [grid.start, grid.stop, grid.step]
    if grid.levels is not None:
        if any(v is not None for v in ranged):
            raise LoboError("sparsity: give either levels or start/stop/step, not both")
        levels = [float(v) for v in grid.levels]
    else:
        if any(v is None for v in ranged):
            raise LoboError("sparsity: give start, stop and step (or levels: [...])")
        start, stop, step = (float(v) for v in ranged)
        if not step > 0:
            raise LoboError(f"sparsity.step: {step} must be positive")
        if stop < start:
            raise LoboError(f"sparsity: stop {stop} is below start {start}")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        if count > MAX_LEVELS:
            raise LoboError(f"sparsity: step {step} gives {count:,} levels, more than {MAX_LEVELS:,}; use a larger step")
        check_sparsity(start, "sparsity.start")
        check_sparsity(stop, "sparsity.stop")
        levels = [round(start + i * step, 10) for i in range(count)]
    if not levels:
        raise LoboError("sparsity: the grid has no levels")
    if len(levels) > MAX_LEVELS:
        raise LoboError(f"sparsity: {len(levels):,} levels, more than {MAX_LEVELS:,}")
    for level in levels:
        check_sparsity(level, "sparsity")
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
            close = closest(str(key), list(fields))
            hint = f" — did you mean {close!r}?" if close else f" (known keys: {', '.join(fields)})"
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
    """Check `value` against a type hint (dataclass, list[X], dict[str, X], X | None, scalars)."""
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
    if origin is dict:
        _, inner = typing.get_args(hint)
        if not isinstance(value, dict):
            raise LoboError(f"{path}: expected a mapping, got {_describe(value)}")
        return {k: _convert(inner, v, f"{path}.{k}") for k, v in value.items()}
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


def _refuse_tokens_and_nan(value, where: str) -> None:
    """A Hugging Face token belongs in the environment (HF_TOKEN), never in a parameters file;
    NaN and infinity are never a parameter."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _refuse_tokens_and_nan(inner, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _refuse_tokens_and_nan(inner, f"{where}.{i}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise LoboError(f"{where}: {value} is not a usable number; give a finite value")
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
        raise LoboError("models: list at least one model to compress (name and model)")
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


def _check_settings(config: RunConfig) -> None:
    names = set()
    listed = config.compression or [SettingConfig("magnitude", scope=config.prune.scope)]
    for i, s in enumerate(listed):
        where = f"compression.{i}" if config.compression else "prune"
        check_method(s.method, s.pattern, s.scope, where)
        if s.calibration is not None:
            c = s.calibration
            if c.n_samples < 1 or c.seq_len < 2:
                raise LoboError(f"{where}.calibration: n_samples must be at least 1 and seq_len at least 2")
            if c.source == "pubmedqa-train":
                _check_pubmedqa_train(config, c, where)
        if s.quantize_bits is not None and (s.method != "sparsegpt" or s.quantize_bits not in QUANT_BITS):
            raise LoboError(f"{where}.quantize_bits: joint quantization is SparseGPT's, at one of "
                            f"{', '.join(map(str, QUANT_BITS))} bits")
        if s.group_size is not None and s.group_size < 1:
            raise LoboError(f"{where}.group_size: {s.group_size} must be at least 1 (or null: per output channel)")
        setting = _checked_setting(s, config, where)
        if setting.name in names:
            raise LoboError(f"{where}.name: {setting.name!r} names two settings; give each its own name")
        names.add(setting.name)


def _check_pubmedqa_train(config: RunConfig, c: CalibrationConfig, where: str) -> None:
    """Calibrating on PQA-L's non-test items means evaluating PubMedQA on its test split only."""
    if c.data_dir is None:
        raise LoboError(f"{where}.calibration.data_dir: pubmedqa-train needs the folder of ori_pqal.json "
                        "and test_ground_truth.json")
    pubmedqa = config.benchmarks.get("pubmedqa")
    if pubmedqa is not None and pubmedqa.enabled and pubmedqa.split != "test":
        raise LoboError(f"{where}.calibration: pubmedqa-train calibrates on PubMedQA items that benchmarks.pubmedqa "
                        "would evaluate; set benchmarks.pubmedqa.split: test (its 500 held-out items)")


def _checked_setting(s: SettingConfig, config: RunConfig, where: str) -> Setting:
    from lobolib.compress.methods import METHODS

    try:
        setting = _setting(s, sparsity_levels(config.sparsity))
    except LoboError as err:
        raise LoboError(f"{where}.levels: {str(err).removeprefix('compression: ')}") from None
    info = METHODS[s.method]
    if info.calibrated and s.calibration is None:
        raise LoboError(f"{where}.calibration: {s.method} needs calibration data, e.g. calibration: {{source: wikitext2}}")
    if setting.pattern:
        n, m = (int(x) for x in setting.pattern.split(":"))
        wrong = [level for level in setting.levels if level not in (0.0, n / m)]
        if wrong:
            raise LoboError(f"{where}.levels: pattern {setting.pattern} zeroes exactly {n / m:g} of the weights; "
                            f"level {wrong[0]} cannot be reached (use levels [0, {n / m:g}])")  # fmt: skip
    return setting


def _check_benchmarks(config: RunConfig) -> None:
    if config.mode == "evaluate" and not config.enabled_benchmarks:
        raise LoboError("benchmarks: none is enabled; enable at least one")
    for name, bench in config.benchmarks.items():
        where = f"benchmarks.{name}"
        bench = _default_source(name, bench)
        builtin = BUILT_IN.get(name)
        if builtin is None and not bench.declared:
            known = ", ".join(BUILT_IN)
            raise LoboError(f"{where}: not a built-in benchmark ({known}); to declare one, give its kind "
                            "(multiple_choice or yes_no_maybe), source, question, options and answer")  # fmt: skip
        if builtin is not None:
            _check_builtin(name, bench, builtin, where)
        elif bench.kind not in KINDS:
            raise LoboError(f"{where}.kind: {bench.kind!r} is not one of {', '.join(KINDS)}")
        elif config.benchmarks[name].source in (None, "hub", "embedded"):
            raise LoboError(f"{where}.source: give the declared benchmark's file or hub dataset id")
        perplexity = builtin is not None and builtin.kind == PERPLEXITY
        for key in ("seq_len", "max_windows"):
            value = getattr(bench, key)
            if value is not None and not perplexity:
                raise LoboError(f"{where}.{key}: only a perplexity benchmark (wikitext2, pubmed_abstracts) has windows")
            if value is not None and value < (2 if key == "seq_len" else 1):
                raise LoboError(f"{where}.{key}: {value} is too small")
        templates = builtin.templates if builtin is not None else MULTIPLE_CHOICE_TEMPLATES
        if not perplexity and bench.template not in templates:
            raise LoboError(f"{where}.template: {bench.template!r} is not one of {', '.join(templates)}")
        if bench.max_new_tokens is not None and not 1 <= bench.max_new_tokens <= MAX_NEW_TOKENS:
            raise LoboError(f"{where}.max_new_tokens: {bench.max_new_tokens} must be between 1 and {MAX_NEW_TOKENS}")
        if not 0 <= bench.shots <= MAX_SHOTS:
            raise LoboError(f"{where}.shots: {bench.shots} must be between 0 and {MAX_SHOTS}")
        for key in ("max_items", "max_items_per_subject"):
            value = getattr(bench, key)
            if value is not None and value < 1:
                raise LoboError(f"{where}.{key}: must be at least 1 (or null for all)")


def _check_builtin(name: str, bench: BenchmarkConfig, builtin, where: str) -> None:
    declared_keys = [k for k in (*SOURCE_KEYS, *FIELD_KEYS) if k != "source" and getattr(bench, k) is not None]
    if declared_keys and not (declared_keys == ["split"]):
        key = next(k for k in declared_keys if k != "split")
        raise LoboError(f"{where}.{key}: the built-in {name} takes no {key}; to declare another benchmark, "
                        "give it a name of its own")  # fmt: skip
    for key in ("subjects", "max_items_per_subject"):
        if getattr(bench, key) is not None and key not in builtin.options:
            raise LoboError(f"{where}.{key}: {name} has no subjects to choose (only {', '.join(builtin.options) or 'none'})")
    if bench.split not in builtin.splits and bench.split is not None:
        raise LoboError(f"{where}.split: {bench.split!r} is not one of {', '.join(str(s) for s in builtin.splits if s)}")
    if bench.source == "embedded" and name not in EMBEDDED_BENCHMARKS:
        raise LoboError(f"{where}.source: the embedded mini benchmark has only {', '.join(EMBEDDED_BENCHMARKS)}")
    if bench.shots and builtin.shot_split is None:
        raise LoboError(f"{where}.shots: {name} has no solved examples to show; use shots: 0")
    if bench.subjects is not None:
        if not bench.subjects:
            raise LoboError(f"{where}.subjects: list at least one subject or group")
        try:
            expand_subjects(bench.subjects, extra_subjects=_embedded_subjects(bench))
        except LoboError as exc:
            raise LoboError(f"{where}.subjects: {exc}") from None


def _embedded_subjects(bench: BenchmarkConfig) -> tuple[str, ...]:
    from lobolib.experiment.embedded import MMLU_SUBJECTS

    return tuple(MMLU_SUBJECTS) if bench.source == "embedded" else ()


def _check_analysis(analysis: AnalysisConfig) -> None:
    if not 0 <= analysis.bootstrap <= MAX_BOOTSTRAP:
        raise LoboError(f"analysis.bootstrap: {analysis.bootstrap} must be between 0 (no intervals) and {MAX_BOOTSTRAP:,}")
    if not 0.0 < analysis.confidence < 1.0:
        raise LoboError(f"analysis.confidence: {analysis.confidence} must be between 0 and 1, e.g. 0.95")
    if not 0.0 < analysis.cliff_fraction < 1.0:
        raise LoboError(f"analysis.cliff_fraction: {analysis.cliff_fraction} must be between 0 and 1")
    for level in [*analysis.example_levels, analysis.compare_level]:
        if not 0.0 <= level < 1.0:
            raise LoboError(f"analysis: level {level} is outside [0, 1)")
    if not 0 <= analysis.examples_per_level <= 100:
        raise LoboError("analysis.examples_per_level: must be between 0 and 100")
    if not 0.0 < analysis.retention <= 1.0:
        raise LoboError(f"analysis.retention: {analysis.retention} must be in (0, 1], e.g. 0.95")
    unknown = [g for g in analysis.groups if g not in SUBJECT_GROUPS]
    if unknown:
        raise LoboError(f"analysis.groups: {unknown[0]!r} is not a subject group; use {', '.join(SUBJECT_GROUPS)}")
