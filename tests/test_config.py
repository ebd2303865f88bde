"""Parameters files: every mistake is one LoboError before any work starts; --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lobolib.experiment.catalogue import model_spec
from lobolib.experiment.config import apply_overrides, from_dict, load_config, sparsity_levels, SparsityConfig
from lobolib.experiment.preflight import check
from lobolib.errors import LoboError

ROOT = Path(__file__).resolve().parents[1]
MODELS = [{"name": "base", "model": "embedded:base"}, {"name": "specialist", "model": "embedded:specialist"}]


def valid(**changes) -> dict:
    data = {"run": "t", "models": [dict(m) for m in MODELS], "sparsity": {"levels": [0.0, 0.5, 0.9]}}
    data.update(changes)
    return data


def error_of(data) -> str:
    with pytest.raises(LoboError) as caught:
        from_dict(data)
    return str(caught.value)


@pytest.mark.parametrize("name", ["default", "biomistral_vs_mistral", "kaggle_dual_t4"])
def test_shipped_parameters_files_validate(name):
    config = load_config(ROOT / "parameters" / f"{name}.yaml")
    assert config.run == name
    assert config.levels[0] == 0.0 and config.levels[-1] == 0.95 and len(config.levels) == 20
    assert len(config.models) == 2


def test_reference_logs_file_needs_logs_dir(tmp_path):
    with pytest.raises(LoboError, match="logs_dir is required"):
        load_config(ROOT / "parameters" / "reference_logs.yaml")
    config = load_config(ROOT / "parameters" / "reference_logs.yaml", [f"logs_dir={tmp_path}"])
    assert config.mode == "reference_logs" and config.logs_dir == str(tmp_path.resolve())


def test_unknown_key_suggests_the_closest():
    assert "did you mean 'models'" in error_of({**valid(), "modles": []})
    message = error_of(valid(models=[{"name": "a", "model": "embedded:base", "dtpye": "float16"}]))
    assert "models.0.dtpye" in message and "did you mean 'dtype'" in message
    assert "did you mean 'max_items_per_subject'" in error_of(valid(benchmarks={"mmlu": {"max_item_per_subject": 3}}))


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"seed": "zero"}, "seed: expected a whole number"),
        ({"seed": True}, "seed: expected a whole number"),
        ({"analysis": {"bootstrap": 1.5}}, "analysis.bootstrap: expected a whole number"),
        ({"benchmarks": {"mmlu": {"subjects": "medical"}}}, "benchmarks.mmlu.subjects: expected a list"),
        ({"prune": {"include_lm_head": "yes"}}, "prune.include_lm_head: expected true or false"),
        ({"models": {"name": "a"}}, "models: expected a list"),
    ],
)
def test_wrong_type_names_the_key(changes, fragment):
    assert fragment in error_of(valid(**changes))


@pytest.mark.parametrize(
    "sparsity, fragment",
    [
        ({"levels": [0.0, 1.0]}, "outside [0, 1)"),
        ({"levels": [-0.1, 0.5]}, "outside [0, 1)"),
        ({"start": 0.0, "stop": 1.0, "step": 0.25}, "outside [0, 1)"),
        ({"levels": [0.0, 0.5, 0.5]}, "strictly ascending"),
        ({"levels": [0.5, 0.2]}, "strictly ascending"),
        ({"start": 0.0, "stop": 0.5, "step": 0}, "must be positive"),
        ({"start": 0.0, "stop": 0.5, "step": 1e-12}, "more than 1,000"),
        ({"start": 0.0, "stop": 1.5, "step": 0.5}, "sparsity.stop: 1.5 is outside [0, 1)"),
        ({"start": 0.0, "step": 0.1}, "give start, stop and step"),
        ({"start": 0.0, "stop": 0.5, "step": 0.1, "levels": [0.1]}, "either levels or start/stop/step"),
    ],
)
def test_bad_sparsity_grid(sparsity, fragment):
    assert fragment in error_of(valid(sparsity=sparsity))


def test_grid_includes_stop_and_plain_list_form():
    assert sparsity_levels(SparsityConfig(0.0, 0.95, 0.05))[-1] == 0.95
    assert sparsity_levels(SparsityConfig(0.0, 0.95, 0.05))[7] == 0.35  # no float drift
    assert from_dict(valid(sparsity=[0, 0.3, 0.6])).levels == [0.0, 0.3, 0.6]


def preflight_error_of(data) -> str:
    with pytest.raises(LoboError) as caught:
        check(from_dict(data))
    return str(caught.value)


def test_missing_paths_are_found_by_preflight_not_by_the_schema(tmp_path):
    assert "path not found" in preflight_error_of(valid(logs_dir=str(tmp_path / "nope")))
    assert "models.0.model: path not found" in preflight_error_of(valid(models=[{"name": "a", "model": "./no/such/model"}]))
    missing = valid(benchmarks={"pubmedqa": {"source": str(tmp_path / "x.json")}})
    from_dict(missing)  # the schema reads nothing but the parameters
    assert "benchmarks.pubmedqa.source: path not found" in preflight_error_of(missing)


def test_reference_mode_requires_logs_dir():
    assert "logs_dir is required" in error_of({"mode": "reference_logs"})
    assert "mode: 'replay'" in error_of(valid(mode="replay"))


def test_other_semantic_errors():
    assert "used twice" in error_of(valid(models=[MODELS[0], {**MODELS[1], "name": "base"}]))
    assert "embedded:base, embedded:specialist" in error_of(valid(models=[{"name": "a", "model": "embedded:large"}]))
    assert "unknown MMLU subject or group 'medicine'" in error_of(valid(benchmarks={"mmlu": {"subjects": ["medicine"]}}))
    assert "at least one model" in error_of(valid(models=[]))
    assert "looks like a Hugging Face token" in error_of(valid(models=[{**MODELS[0], "revision": "hf_" + "a" * 30}]))


def test_local_model_folder_and_hub_ids(tiny_model_dir):
    config = check(from_dict(valid(models=[{"name": "local", "model": str(tiny_model_dir)}])))
    assert config.models[0].model == str(tiny_model_dir.resolve())
    config = from_dict(valid(models=[{"name": "hub", "model": "org/model-7B", "local_files_only": True}]))
    assert model_spec(config, "hub") == {
        "model": "org/model-7B", "revision": None, "dtype": "auto", "device_map": None, "max_memory": None,
        "trust_remote_code": False, "allow_pickle_weights": False, "local_files_only": True,
    }


def test_overrides_parse_yaml_values_and_dotted_keys():
    data = apply_overrides(valid(), ["models.0.dtype=float16", "analysis.bootstrap=10", "sparsity=[0, 0.25]",
                                     "benchmarks.mmlu.subjects=[logic]", "prune.include_lm_head=true"])
    config = from_dict(data)
    assert config.models[0].dtype == "float16"
    assert config.analysis.bootstrap == 10
    assert config.levels == [0.0, 0.25]
    assert config.benchmarks["mmlu"].subjects == ["logic"]
    assert config.prune.include_lm_head is True
    assert config.settings[0].description == "magnitude/layer/lm_head"


def test_bad_overrides():
    with pytest.raises(LoboError, match="expected key=value"):
        apply_overrides(valid(), ["seed"])
    with pytest.raises(LoboError, match="models.5"):
        apply_overrides(valid(), ["models.5.dtype=float16"])
    with pytest.raises(LoboError, match="did you mean 'seed'"):
        from_dict(apply_overrides(valid(), ["sed=1"]))


def test_resolved_dict_round_trips(tmp_path):
    config = from_dict(valid(outputs=str(tmp_path)))
    again = from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again == config
    assert config.output_dir == tmp_path / "t"


def test_unreadable_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run: [unclosed\n")
    with pytest.raises(LoboError, match="cannot parse YAML at line"):
        load_config(path)
    with pytest.raises(LoboError, match="parameters file not found"):
        load_config(tmp_path / "missing.yaml")


def test_levels_override_replaces_a_range():
    data = apply_overrides(valid(sparsity={"start": 0.0, "stop": 0.9, "step": 0.1}), ["sparsity.levels=[0, 0.4]"])
    assert from_dict(data).levels == [0.0, 0.4]
    data = apply_overrides(valid(), ["sparsity.start=0", "sparsity.stop=0.2", "sparsity.step=0.1"])
    assert from_dict(data).levels == [0.0, 0.1, 0.2]


# ----------------------------------------------------------------------------- hostile and careless input


@pytest.mark.parametrize("text, fragment", [
    ("sparsity: {start: 0, stop: 0.5, step: .nan}\n", "not a usable number"),
    ("seed: 0\nanalysis: {confidence: .inf}\n", "not a usable number"),
    ("a: &a [*a]\n", "refers to itself"),
    ("run: x\nrun: y\n", "duplicate key 'run' at line 2 (first at line 1)"),
    ("analysis: {bootstrap: 100000000000000}\n", "between 0 (no intervals) and 100,000"),
    ("evaluation: {batch_size: 0}\n", "evaluation.batch_size"),
    ("benchmarks: {pubmedqa: {max_new_tokens: 100000}}\n", "max_new_tokens: 100000 must be between 1 and 512"),
    ("benchmarks: {mmlu: {shots: 1000}}\n", "shots: 1000 must be between 0 and 25"),
])
def test_hostile_files_are_one_error(tmp_path, text, fragment):
    path = tmp_path / "p.yaml"
    path.write_text("models: [{name: a, model: 'embedded:base'}]\n" + text if "run: x" not in text and "&a" not in text else text)
    with pytest.raises(LoboError) as caught:
        load_config(path)
    assert fragment in str(caught.value)


def test_a_file_that_is_not_utf8_is_one_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"run: caf\xe9\n")
    with pytest.raises(LoboError, match="not UTF-8"):
        load_config(path)


def test_set_reads_exponents_as_numbers():
    data = apply_overrides(valid(sparsity={"start": 0.0, "stop": 0.003, "step": 0.05}), ["sparsity.step=1e-3"])
    assert data["sparsity"]["step"] == 0.001
    assert from_dict(data).levels == [0.0, 0.001, 0.002, 0.003]


@pytest.mark.parametrize("typo", ["sparsity.stpe=0.1", "sparsity.setp=0.1"])
def test_typos_suggest_the_key_meant(typo):
    assert "did you mean 'step'" in error_of(apply_overrides(valid(sparsity={"start": 0, "stop": 0.5, "step": 0.1}), [typo]))


# ----------------------------------------------------------------------------- settings and benchmarks


def test_compression_settings_have_canonical_descriptions():
    config = from_dict(valid(compression=[{"method": "magnitude"}, {"method": "magnitude", "scope": "global", "name": "global"},
                                          {"method": "magnitude", "pattern": "2:4"}]))
    assert [s.description for s in config.settings] == ["magnitude/layer", "magnitude/global", "magnitude/layer/2:4"]
    assert [s.name for s in config.settings] == ["magnitude/layer", "global", "magnitude/layer/2:4"]
    assert config.settings[2].levels == (0.0, 0.5)
    assert config.settings[0].method_at(0.0) == "dense" and config.settings[0].method_at(0.5) == "magnitude/layer"
    assert all(s.nests for s in config.settings)


@pytest.mark.parametrize("setting, fragment", [
    ({"method": "pruning"}, "compression.0.method: 'pruning' is not one of"),
    ({"method": "magnitude", "pattern": "3:7"}, "pattern: '3:7' does not apply"),
    ({"method": "magnitude", "pattern": "2:4", "levels": [0, 0.3]}, "level 0.3 cannot be reached"),
    ({"method": "magnitude", "levels": [0.5, 0.2]}, "strictly ascending"),
    ({"method": "magnitude", "scope": "row"}, "scope: 'row' is not one of"),
])
def test_bad_settings(setting, fragment):
    assert fragment in error_of(valid(compression=[setting]))


def test_two_settings_cannot_share_a_name():
    assert "names two settings" in error_of(valid(compression=[{"method": "magnitude"}, {"method": "magnitude"}]))


def test_benchmarks_listed_are_the_ones_run_and_declared_ones_need_a_kind():
    config = from_dict(valid(benchmarks={"medqa": {"source": "hub"}}))
    assert config.enabled_benchmarks == ["medqa"]
    assert "not a built-in benchmark" in error_of(valid(benchmarks={"my_exam": {"source": "x.jsonl"}}))
    assert "benchmarks.my_exam.kind: 'essay' is not one of" in error_of(valid(benchmarks={"my_exam": {"kind": "essay", "source": "x.jsonl"}}))
    assert "the built-in mmlu takes no kind" in error_of(valid(benchmarks={"mmlu": {"kind": "multiple_choice"}}))
    assert "pubmedqa has no subjects" in error_of(valid(benchmarks={"pubmedqa": {"subjects": ["anatomy"]}}))
    assert "embedded mini benchmark has only" in error_of(valid(benchmarks={"medqa": {"source": "embedded"}}))
    assert "Benchmark" not in error_of(valid(benchmarks={"Bad-Name": {"source": "hub"}}))


def test_shipped_files_keep_their_meaning():
    config = load_config(ROOT / "parameters" / "biomistral_vs_mistral.yaml")
    assert [s.description for s in config.settings] == ["magnitude/layer"]
    assert config.enabled_benchmarks == ["pubmedqa", "mmlu"]
    assert config.benchmarks["mmlu"].max_items_per_subject == 200
