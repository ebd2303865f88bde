"""Snapshots restore the dense compressible weights bit for bit, in memory or from the files."""

import pytest
import torch
from conftest import build_tiny_model

from lobolib import LoboError
from lobolib.compress.snapshot import Snapshot
from lobolib.prune import prunable_linears, prune
from lobolib.quantize import quantize


def state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_identical(model, saved):
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, saved[name]), name
        assert parameter.dtype == saved[name].dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_restore_after_each_method_gives_bit_identical_weights(dtype):
    model = build_tiny_model(97, dtype=dtype)
    dense = state(model)
    snapshot = Snapshot.take(model)
    tokens = torch.randint(0, 97, (3, 8))
    steps = [lambda: prune(model, 0.5), lambda: prune(model, 0.5, method="sparsegpt", calibration=tokens),
             lambda: prune(model, 0.5, method="heads", calibration=tokens), lambda: quantize(model, 2, group_size=16)]
    for compress in steps:
        compress()
        assert not all(torch.equal(p, dense[n]) for n, p in model.named_parameters())
        snapshot.restore(model)
        assert_identical(model, dense)


def test_snapshot_holds_the_weights_and_biases_of_the_compressible_matrices():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))  # q/k/v have biases
    snapshot = Snapshot.take(model)
    expected = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for _, m in prunable_linears(model))
    assert snapshot.nbytes == expected * 4
    assert "model.layers.0.self_attn.q_proj.bias" in snapshot.source


def test_restore_from_the_safetensors_files(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    dense = state(model)
    snapshot = Snapshot.from_files(model, tiny_model_dir)
    assert snapshot.nbytes == 0
    quantize(model, 3, group_size=16)
    snapshot.restore(model)
    assert_identical(model, dense)


def test_a_snapshot_of_another_model_or_folder_is_refused(tmp_path):
    snapshot = Snapshot.take(build_tiny_model(97))
    with pytest.raises(LoboError, match="another model"):
        snapshot.restore(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    with pytest.raises(LoboError, match="no safetensors"):
        Snapshot.from_files(build_tiny_model(97), tmp_path)
