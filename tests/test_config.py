"""Parameters files: every mistake is one LoboError before any work starts; --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lobolib.experiment.config import apply_overrides, from_dict, load_config, model_spec, sparsity_levels, SparsityConfig
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


def test_missing_paths(tmp_path):
    assert "path not found" in error_of(valid(logs_dir=str(tmp_path / "nope")))
    assert "models.0.model: path not found" in error_of(valid(models=[{"name": "a", "model": "./no/such/model"}]))
    assert "benchmarks.pubmedqa.source: path not found" in error_of(valid(benchmarks={"pubmedqa": {"source": str(tmp_path / "x.json")}}))


def test_reference_mode_requires_logs_dir():
    assert "logs_dir is required" in error_of({"mode": "reference_logs"})
    assert "mode: 'replay'" in error_of(valid(mode="replay"))


def test_other_semantic_errors():
    assert "used twice" in error_of(valid(models=[MODELS[0], {**MODELS[1], "name": "base"}]))
    assert "embedded:base, embedded:specialist" in error_of(valid(models=[{"name": "a", "model": "embedded:large"}]))
    assert "unknown MMLU subject or group 'medicine'" in error_of(valid(benchmarks={"mmlu": {"subjects": ["medicine"]}}))
    assert "at least one model" in error_of(valid(models=[]))
    assert "looks like a Hugging Face token" in error_of(valid(models=[{**MODELS[0], "revision": "hf_" + "a" * 30}]))


def test_local_model_folder_and_hub_ids(tmp_path):
    config = from_dict(valid(models=[{"name": "local", "model": str(tmp_path)}, {"name": "hub", "model": "org/model-7B"}]))
    assert config.models[0].model == str(tmp_path.resolve())
    assert model_spec(config, "hub") == {
        "model": "org/model-7B", "revision": None, "dtype": "auto", "device_map": None, "max_memory": None,
        "trust_remote_code": False, "allow_pickle_weights": False, "local_files_only": False,
    }


def test_overrides_parse_yaml_values_and_dotted_keys():
    data = apply_overrides(valid(), ["models.0.dtype=float16", "analysis.bootstrap=10", "sparsity=[0, 0.25]",
                                     "benchmarks.mmlu.subjects=[logic]", "prune.include_lm_head=true"])
    config = from_dict(data)
    assert config.models[0].dtype == "float16"
    assert config.analysis.bootstrap == 10
    assert config.levels == [0.0, 0.25]
    assert config.benchmarks.mmlu.subjects == ["logic"]
    assert config.prune.include_lm_head is True


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
    assert config.output_dir == tmp_path.resolve() / "t"


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
