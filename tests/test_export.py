"""Export: a compressed model written with save_pretrained loads with plain transformers, with
the same weights and logits as the compressed model in memory, and a README saying what was done."""

from __future__ import annotations

import json
import re

import pytest
import torch

from lobolib import LoboError
from lobolib.experiment import catalogue
from lobolib.experiment.compression import Compressor
from lobolib.experiment.config import from_dict
from lobolib.experiment.export import REPORT_FILE, export
from lobolib.models import load_model


@pytest.fixture
def config(tmp_path, embedded_cache, monkeypatch):
    monkeypatch.setenv("LOBOTOMY_CACHE", str(embedded_cache))
    return from_dict({"run": "x", "outputs": str(tmp_path / "outputs"), "models": [{"name": "base", "model": "embedded:base"}],
                      "compression": [{"method": "magnitude", "name": "mag"}], "sparsity": [0.0, 0.5]})


def test_exported_model_equals_the_compressed_model_in_memory(config, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = export(config, "base", "mag", 0.5, tmp_path / "export")
    reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model, _ = load_model(catalogue.model_spec(config, "base"))
    Compressor()(model, config.settings[0], 0.5)
    mine, theirs = model.state_dict(), reloaded.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    ids = tokenizer(["Question: which organ pumps blood?\nAnswer:"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)
    q = reloaded.model.layers[0].self_attn.q_proj.weight
    assert (q == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3)
    readme = (folder / "README.md").read_text()
    assert "magnitude/layer at level 0.5" in readme and "50.00% of their weights are zero" in readme
    report = json.loads((folder / REPORT_FILE).read_text())
    assert report["method"] == "magnitude/layer" and report["report"]["pruned"] == pytest.approx(0.5, abs=1e-3)
    assert list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin"))


@pytest.mark.parametrize("args, fragment", [
    (("base", "wanda", 0.5), "no compression setting 'wanda'"),
    (("base", "mag", 1.5), "outside [0, 1)"),
    (("large", "mag", 0.5), "no model named 'large'"),
])
def test_bad_export_requests_are_one_error(config, tmp_path, args, fragment):
    with pytest.raises(LoboError, match=re.escape(fragment)):
        export(config, *args, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_never_overwrites(config, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(LoboError, match="not an empty folder"):
        export(config, "base", "mag", 0.5, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_the_cli_exports_and_refuses_in_one_line(tmp_path, embedded_cache, monkeypatch, capsys):
    from lobolib.__main__ import main

    monkeypatch.setenv("LOBOTOMY_CACHE", str(embedded_cache))
    base = ["export", "default", "--set", f"outputs={tmp_path / 'outputs'}"]
    assert main([*base, str(tmp_path / "m"), "--model", "base", "--setting", "rtn", "--level", "8"]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file() and "rtn" in (tmp_path / "m" / "README.md").read_text()
    capsys.readouterr()
    assert main([*base, str(tmp_path / "n"), "--model", "base", "--setting", "rtn", "--level", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --level for rtn: 7.0 bits is not one of")
    assert not (tmp_path / "n").exists()
