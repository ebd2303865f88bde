"""lobolib.models: a model spec loads a ready-to-generate model safely, or fails with one clear LoboError."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from conftest import build_tiny_model, build_tiny_tokenizer

from lobolib import LoboError
from lobolib import models
from lobolib.models import describe_model, load_model, model_revision, normalise_max_memory, resolve_dtype

FAKE_TOKEN = "hf_FakeSecretToken0123456789"


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
    with pytest.raises(LoboError, match="allow_pickle_weights: true"):
        load_model({"model": str(path)})


def test_pickle_weights_load_with_opt_in_and_a_warning(pickle_only_dir):
    path, saved = pickle_only_dir
    with pytest.warns(UserWarning, match="can run arbitrary code"):
        model, _ = load_model({"model": str(path), "allow_pickle_weights": True, "device_map": "cpu"})
    assert torch.equal(model.lm_head.weight, saved.lm_head.weight)


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
