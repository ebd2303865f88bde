"""The shared calibration pass: layers called as the model calls them, sequential propagation of
compressed outputs, shared observers for shared inputs, offload placement, token checks."""

import pytest
import torch
from conftest import build_tiny_model

from lobolib import LoboError
from lobolib.compress import layerwise
from lobolib.compress.layerwise import check_tokens, decoder_layers, layer_linears, storage_device


def tiny_model(kind="mistral", attn="sdpa", seed=0):
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  tie_word_embeddings=False, attn_implementation=attn)
    config = {"mistral": transformers.MistralConfig, "llama": transformers.LlamaConfig,
              "qwen2": transformers.Qwen2Config}[kind](**common)
    model = {"mistral": transformers.MistralForCausalLM, "llama": transformers.LlamaForCausalLM,
             "qwen2": transformers.Qwen2ForCausalLM}[kind](config)
    return model.eval()


class Recorder:
    """Observer keeping every input it sees."""

    def __init__(self):
        self.seen = []

    def add(self, x):
        self.seen.append(x.clone())

    def all(self):
        return torch.cat(self.seen)


class Record:
    """A method that observes every linear with a Recorder and optionally changes the layer."""

    def __init__(self, change=None):
        self.observed, self.change = {}, change

    def observers(self, index, layer):
        return {name: Recorder() for name, _ in layer_linears(layer)}

    def compress(self, index, layer, observed):
        self.observed[index] = observed
        if self.change:
            self.change(index, layer)


def full_forward_inputs(model, tokens):
    """Every linear's input in a plain forward of the whole model: {(layer, name): [tokens, in]}."""
    found, handles = {}, []

    def keep(key, x):
        found[key] = x.reshape(-1, x.shape[-1])

    for index, layer in enumerate(decoder_layers(model)):
        for name, module in layer_linears(layer):
            handles.append(module.register_forward_hook(lambda m, args, out, key=(index, name): keep(key, args[0])))
    with torch.no_grad():
        model(input_ids=tokens, use_cache=False)
    for handle in handles:
        handle.remove()
    return found


@pytest.mark.parametrize("kind,attn", [("mistral", "sdpa"), ("mistral", "eager"), ("llama", "sdpa"), ("qwen2", "eager")])
def test_layers_see_what_the_whole_model_feeds_them(kind, attn):
    model = tiny_model(kind, attn)
    tokens = torch.randint(0, 97, (5, 12), generator=torch.Generator().manual_seed(0))
    method = Record()
    info = layerwise.run(model, tokens, method, batch_size=2)  # batches of 2, 2 and 1 sample
    assert info["layers"] == 3 and info["batch_size"] == 2
    expected = full_forward_inputs(model, tokens)
    for (index, name), want in expected.items():
        got = method.observed[index][name]
        if name in ("self_attn.k_proj", "self_attn.v_proj", "mlp.up_proj"):
            assert got is method.observed[index]["self_attn.q_proj" if "attn" in name else "mlp.gate_proj"]
            continue
        torch.testing.assert_close(got.all(), want, rtol=1e-5, atol=1e-5)


def test_each_layer_is_calibrated_on_the_compressed_outputs_before_it():
    model = tiny_model()
    tokens = torch.randint(0, 97, (4, 10), generator=torch.Generator().manual_seed(1))

    def silence_first_layer(index, layer):  # its attention and MLP then add nothing: output = input
        if index == 0:
            layer.self_attn.o_proj.weight.data.zero_()
            layer.mlp.down_proj.weight.data.zero_()

    method = Record(silence_first_layer)
    layerwise.run(model, tokens, method)
    embedded = model.get_input_embeddings()(tokens)
    second = decoder_layers(model)[1]
    want = second.input_layernorm(embedded).reshape(-1, 32)
    torch.testing.assert_close(method.observed[1]["self_attn.q_proj"].all(), want)


def test_offload_to_cpu_and_on_device_give_identical_results():
    tokens = torch.randint(0, 97, (6, 8), generator=torch.Generator().manual_seed(2))
    results = []
    for offload in ("cpu", "device", "auto"):
        method = Record()
        info = layerwise.run(tiny_model(), tokens, method, offload=offload, batch_size=4)
        assert info["offload"] == "cpu"  # the model is on the CPU, so are its activations
        results.append(method.observed[2]["mlp.down_proj"].all())
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_auto_offload_keeps_activations_on_the_gpu_only_when_they_fit():
    gpu0, gpu1 = torch.device("cuda", 0), torch.device("cuda", 1)
    free = {gpu0: 40 << 30, gpu1: 10 << 30}.__getitem__
    assert storage_device("auto", [gpu0, gpu1], 1 << 30, free) == gpu0  # 2 GiB <= 25% of 10 GiB
    assert storage_device("auto", [gpu0, gpu1], 2 << 30, free) == torch.device("cpu")
    assert storage_device("device", [gpu0], 100 << 30, free) == gpu0
    assert storage_device("cpu", [gpu0], 1, free) == torch.device("cpu")
    assert storage_device("auto", [torch.device("cpu")], 1, free) == torch.device("cpu")


def test_layer_arguments_move_to_each_layers_device():
    nested = {"position_embeddings": (torch.ones(2), torch.zeros(2)), "mask": None, "ids": [torch.ones(1)]}
    moved = layerwise._to(nested, torch.device("meta"))
    assert moved["position_embeddings"][0].device.type == "meta" and moved["mask"] is None
    assert moved["ids"][0].device.type == "meta"


@pytest.mark.parametrize("tokens,message", [
    (torch.rand(2, 4), "LongTensor"),
    (torch.ones(8, dtype=torch.int64), "LongTensor"),
    ([[1, 2]], "LongTensor"),
    (torch.tensor([[1, 97]]), "vocabulary has 97"),
    (torch.tensor([[-1, 3]]), "span -1"),
])
def test_bad_calibration_tokens_are_lobo_errors(tokens, message):
    with pytest.raises(LoboError, match=message):
        check_tokens(build_tiny_model(97), tokens)


@pytest.mark.parametrize("kwargs,message", [({"offload": "disk"}, "offload"), ({"batch_size": 0}, "batch_size")])
def test_bad_pass_options_are_lobo_errors(kwargs, message):
    with pytest.raises(LoboError, match=message):
        layerwise.run(build_tiny_model(97), torch.ones(2, 4, dtype=torch.int64), Record(), **kwargs)


def test_training_mode_is_restored():
    model = tiny_model().train()
    layerwise.run(model, torch.ones(2, 4, dtype=torch.int64), Record())
    assert model.training


def test_observing_stops_before_the_last_linears_product():
    """After the first batch, a layer's observe forward ends at the down projection's input: its
    product runs once to learn the call order, then only in the propagate forwards."""
    model = tiny_model()
    tokens = torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(0))
    calls = {}
    for index, layer in enumerate(decoder_layers(model)):
        layer.mlp.down_proj.register_forward_hook(lambda m, a, o, i=index: calls.__setitem__(i, calls.get(i, 0) + 1))
    method = Record()
    layerwise.run(model, tokens, method, batch_size=1)
    assert calls == {0: 1 + 4, 1: 1 + 4, 2: 1}  # observe: first batch only; propagate: every batch but the last layer's
    full = full_forward_inputs(model, tokens)
    for index, observed in method.observed.items():  # every input still observed, down_proj's included
        assert torch.allclose(observed["mlp.down_proj"].all(), full[(index, "mlp.down_proj")], atol=1e-6)
