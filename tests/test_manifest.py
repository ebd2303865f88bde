"""lobolib.experiment.manifest: manifests merge and never hold a secret."""

from __future__ import annotations

import json
import re

from lobolib.experiment.manifest import MANIFEST, manifest_base, read_manifest, write_manifest

MODEL = "BioMistral/BioMistral-7B"



def test_manifest_merges_and_never_holds_tokens(tmp_path):
    secret = "hf_" + "A1b2C3d4" * 5
    write_manifest(tmp_path, {**manifest_base(), "parameters": {
        "models": [MODEL], "hf_token": secret, "HF_TOKEN": secret, "Use_Auth_Token": True,
        "max_new_tokens": 10, "tokenizer_revision": "main", "token": secret,
        "nested": {"access_token": secret, "note": f"login with {secret}", "seed": 0},
    }, "datasets": {"pubmedqa": "abc"}})
    first = read_manifest(tmp_path)
    write_manifest(tmp_path, {"parameters": {"sparsities": [0.0, 0.5]}, "datasets": {"mmlu": "def"},
                          "model_revisions": {MODEL: "1234"}})
    text = (tmp_path / MANIFEST).read_text(encoding="utf-8")
    manifest = json.loads(text)
    assert secret not in text and "hf_token" not in text.lower() and "auth_token" not in text.lower()
    assert manifest["parameters"] == {"models": [MODEL], "max_new_tokens": 10, "tokenizer_revision": "main",
                                      "nested": {"seed": 0}, "sparsities": [0.0, 0.5]}
    assert manifest["datasets"] == {"pubmedqa": "abc", "mmlu": "def"}
    assert manifest["created"] == first["created"] and "updated" in manifest
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_manifest_base_names_versions_and_commit():
    base = manifest_base()
    import lobolib

    assert base["lobolib"] == lobolib.__version__
    assert base["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", base["git_commit"])
    assert base["packages"]["torch"] and base["packages"]["transformers"] and base["python"]


