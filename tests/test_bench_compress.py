"""`python -m lobolib bench compress` on a CPU: each weight format's module computes the product of
the weight it stands for, stores what the format promises, and the bench reports every figure
for every format (or why a format cannot run here)."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lobolib.compress import prune
from lobolib.perf import formats as fmts
from lobolib.perf.compress import RATIO_KEYS, ROW_KEYS, _Calls, _Decoding, bench_compress
from lobolib.perf.energy import EnergyCounter
from lobolib.perf.shapes import build_model, fill

SMALL = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 128}
QUICK = {"decode_steps": 2, "reps": 1, "min_s": 0.0, "max_s": 1.0, "most_blocks": 2}


def _linear(out_features=96, in_features=512, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    layer = nn.Linear(in_features, out_features, bias=False, dtype=dtype)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.02)
    return layer


def _relative(got, want):
    return float((got.float() - want.float()).norm() / want.float().norm())


@pytest.mark.parametrize("module, dequantized, quantization_error", [
    (fmts.Int8Linear, lambda w: fmts.dequantize_int8(*fmts.quantize_int8(w)), 0.02),
    (fmts.Int4Linear, lambda w: fmts.dequantize_int4(*fmts.quantize_int4(w)), 0.15),
])
def test_quantized_modules_compute_their_own_dequantized_product(module, dequantized, quantization_error):
    layer = _linear()
    x = torch.randn(5, 3, 512)
    with torch.no_grad():
        got = module(layer)(x)
        own = F.linear(x, dequantized(layer.weight))
        dense = layer(x)
    assert got.shape == dense.shape
    assert _relative(got, own) < 1e-5  # float32: the kernel multiplies by exactly the grid values
    assert 1e-4 < _relative(got, dense) < quantization_error  # and those differ from the weight by the grid's step


def test_quantized_modules_match_in_bf16_too():
    layer = _linear(dtype=torch.bfloat16)
    x = torch.randn(7, 512, dtype=torch.bfloat16)
    with torch.no_grad():
        for module, grid in ((fmts.Int8Linear, fmts.dequantize_int8(*fmts.quantize_int8(layer.weight))),
                             (fmts.Int4Linear, fmts.dequantize_int4(*fmts.quantize_int4(layer.weight)))):
            assert _relative(module(layer)(x), x.float() @ grid.t()) < 1e-2  # bf16 output rounding


def test_int4_grid_is_tinygemms():
    weight = _linear().weight.detach()
    codes, scales, zeros = fmts.quantize_int4(weight)
    assert codes.dtype == torch.int32 and int(codes.min()) >= 0 and int(codes.max()) <= 15
    assert scales.shape == zeros.shape == (96, 512 // fmts.INT4_GROUP)
    grouped = weight.reshape(96, -1, fmts.INT4_GROUP)
    # value = (q - 8) * scale + zero: codes 0 and 15 land on each group's min and max, within half a step
    step = scales[..., None]
    low = fmts.dequantize_int4(torch.zeros_like(codes), scales, zeros).reshape(grouped.shape)[..., 0]
    assert torch.all((low - grouped.amin(-1)).abs() <= step[..., 0] / 2 + 1e-6)
    error = (fmts.dequantize_int4(codes, scales, zeros) - weight).reshape(grouped.shape).abs()
    assert torch.all(error <= step / 2 + 1e-6)


def test_two_four_mask_keeps_the_two_largest_of_every_four():
    weight = _linear().weight.detach()
    mask = fmts.two_four_mask(weight)
    groups, kept = weight.abs().reshape(96, -1, 4), mask.reshape(96, -1, 4)
    assert torch.all(kept.sum(-1) == 2)
    smallest_kept = torch.where(kept, groups, torch.inf).amin(-1)
    largest_dropped = torch.where(kept, -torch.inf, groups).amax(-1)
    assert torch.all(smallest_kept >= largest_dropped)


def test_unstructured_format_is_a_dense_linear_with_half_its_weights_zero():
    layer = _linear()
    form = dict(zip(fmts.FORMAT_NAMES, fmts.FORMATS))["unstructured50"]
    pruned = form.build(layer)
    assert type(pruned) is nn.Linear and pruned.weight is not layer.weight
    assert int((pruned.weight == 0).sum()) == layer.weight.numel() // 2
    assert int((layer.weight == 0).sum()) == 0  # the original layer is left as it was
    assert torch.equal(pruned.weight, form.effective(layer.weight))


def test_storage_is_what_each_format_holds():
    layer = _linear(dtype=torch.bfloat16)
    out_features, in_features = layer.weight.shape
    assert fmts.storage_bytes(layer) == 2 * out_features * in_features
    assert fmts.storage_bytes(fmts.Int8Linear(layer)) == out_features * in_features + 2 * out_features
    int4 = fmts.storage_bytes(fmts.Int4Linear(layer))  # half a byte per weight, bf16 scale and zero per group
    assert int4 == out_features * in_features // 2 + (in_features // fmts.INT4_GROUP) * out_features * 2 * 2


def test_swapped_puts_the_original_layers_back():
    model = build_model(SMALL, torch.device("cpu"), torch.float32)
    before = [module for _, module in prune.prunable_linears(model)]
    with fmts.swapped(model, fmts.Int8Linear) as modules:
        assert all(isinstance(m, fmts.Int8Linear) for m in modules) and len(modules) == len(before)
        assert model.model.layers[0].self_attn.q_proj is modules[0]
    assert [module for _, module in prune.prunable_linears(model)] == before


def test_semi_structured_formats_say_they_need_cuda():
    for name in ("sparse24_cusparselt", "sparse24_cutlass"):
        form = dict(zip(fmts.FORMAT_NAMES, fmts.FORMATS))[name]
        assert "CUDA only" in form.unavailable(torch.device("cpu"), torch.bfloat16)


def test_decode_steps_are_greedy_decoding_and_never_wait_on_the_host():
    from torch.utils._python_dispatch import TorchDispatchMode

    model = build_model({**SMALL, "sliding_window": None}, torch.device("cpu"), torch.float32)
    fill(model, 0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(5)  # sharper logits: the greedy choice has no near-ties
        ids = torch.randint(0, SMALL["vocab_size"], (3, 9), generator=torch.Generator().manual_seed(1))
        decoding = _Decoding(model, ids, 32, _Calls(model))
        tokens = [decoding.token.clone()]
        for _ in range(5):
            decoding.run(decoding.step, 1)
            tokens.append(decoding.token.clone())
        greedy = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)[:, 9:]
    assert torch.equal(torch.cat(tokens, dim=1), greedy)

    class HostReads(TorchDispatchMode):  # the ops that make CUDA wait for the host (and break graph capture)
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero"}:
                self.seen.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), HostReads() as reads:
        decoding.step()
    assert reads.seen == []
    with pytest.raises(RuntimeError, match="cache slots"):
        decoding.run(decoding.step, 100)


def test_bench_compress_on_cpu_reports_every_figure_for_every_format(tmp_path):
    out = tmp_path / "compress.json"
    result = bench_compress(device="cpu", shape=SMALL, batch=2, prompt_tokens=16, plan=QUICK, out=out)
    saved = json.loads(out.read_text())
    assert saved["device"].startswith("cpu") and "CPU" in saved["note"]
    assert set(saved["formats"]) == set(fmts.FORMAT_NAMES)
    assert saved["batch"] == 2 and saved["prompt_tokens"] == 16 and saved["new_tokens"] == 10
    assert "CPU" in saved["energy"]
    for name, row in saved["formats"].items():
        assert set(row) == set(ROW_KEYS), name
        assert set(row["ratios"]) == set(RATIO_KEYS)
        if name.startswith("sparse24"):
            assert "CUDA only" in row["unavailable"] and row["weight_gib"] is None
            continue
        assert row["unavailable"] is None and row["error"] is None, name
        for key in ("weight_gib", "prefill_ms_per_question", "decode_ms_per_token", "decode_ms_per_token_batch1"):
            assert row[key] > 0, (name, key)
        assert row["joules_per_question"] is None
        assert row["decode_ms_per_token"] == pytest.approx(row["decode_ms_per_step"] / 2)
        assert row["ms_per_question"] == pytest.approx(row["prefill_ms_per_question"] + 10 * row["decode_ms_per_token"])
        assert row["kernel_rel_error"] < 1e-2
        for key in ("weight_gib", "prefill_ms_per_question", "decode_ms_per_token_batch1"):
            assert row["ratios"][key] == pytest.approx(row[key] / saved["formats"]["dense"][key])
    rows = result["formats"]
    assert rows["dense"]["error_vs_dense"] == pytest.approx(rows["dense"]["kernel_rel_error"])  # dense is itself
    assert rows["unstructured50"]["weight_gib"] == pytest.approx(rows["dense"]["weight_gib"])  # zeros cost storage
    linears = [(n, k) for n, k in ((128, 128), (64, 128), (64, 128), (128, 128), (256, 128), (256, 128), (128, 256))]
    dense_bytes = sum(2 * n * k for n, k in linears)
    int4_bytes = sum(n * k // 2 + (k // 128) * n * 4 for n, k in linears)
    assert rows["int4"]["ratios"]["linear_weight_gib"] == pytest.approx(int4_bytes / dense_bytes)  # ~ 1/4 + scales
    assert rows["int8"]["ratios"]["linear_weight_gib"] == pytest.approx(
        sum(n * k + 2 * n for n, k in linears) / dense_bytes)


def test_bench_compress_refuses_unknown_formats_and_missing_devices_before_any_work():
    from lobolib.errors import LoboError

    with pytest.raises(LoboError, match="unknown format.*int3.*choose from dense"):
        bench_compress(device="cpu", shape=SMALL, formats=["int3"])
    with pytest.raises(LoboError, match="not a device"):
        bench_compress(device="gpu", shape=SMALL)
    if not torch.cuda.is_available():
        with pytest.raises(LoboError, match="no CUDA GPU"):
            bench_compress(device="cuda", shape=SMALL)


def test_cli_bench_compress_writes_the_json(tmp_path, capsys):
    from lobolib.__main__ import main

    out = tmp_path / "c.json"
    assert main(["bench", "compress", "--device", "cpu", "--only", "int4", "--batch", "1", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert list(saved["formats"]) == ["dense", "int4"] and saved["batch"] == 1
    assert "int4" in capsys.readouterr().out
    assert main(["bench", "compress", "--device", "cpu", "--eval-seconds", "3"]) == 2  # a methods option


class _FakeNvml(types.ModuleType):
    """pynvml's calls the counter uses, over two cards, the second one ours."""

    class NVMLError(Exception):
        pass

    def __init__(self, energy_mj=None):
        super().__init__("pynvml")
        self.energy_mj = energy_mj

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetUUID(self, handle):
        return ["GPU-0000-other", b"GPU-ABCD-ours"][handle]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if self.energy_mj is None:
            raise self.NVMLError("Not Supported")
        return self.energy_mj[handle]


def test_energy_counter_reads_the_card_of_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(uuid="abcd-ours"))
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml(energy_mj=[5_000, 123_456]))
    counter = EnergyCounter(torch.device("cuda", 0))
    assert counter.why_not is None and counter.joules() == pytest.approx(123.456)
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml(energy_mj=None))
    counter = EnergyCounter(torch.device("cuda", 0))
    assert counter.joules() is None and "Not Supported" in counter.why_not
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    assert "nvidia-ml-py" in EnergyCounter(torch.device("cuda", 0)).why_not
    assert EnergyCounter(torch.device("cpu")).joules() is None


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("name", [name for name in fmts.FORMAT_NAMES if name != "dense"])
def test_formats_on_cuda_compute_the_product_of_their_weight(name):
    """On the GPU: the packed layouts (int4 nibble order, scales, 2:4 compression) are right."""
    device = torch.device("cuda")
    form = dict(zip(fmts.FORMAT_NAMES, fmts.FORMATS))[name]
    why = form.unavailable(device, torch.bfloat16)
    if why:
        pytest.skip(why)
    layer = nn.Linear(4096, 1024, bias=False, device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.02)
        x = torch.randn(37, 4096, device=device, dtype=torch.bfloat16)
        got = form.build(layer)(x)
        want = F.linear(x.float(), form.effective(layer.weight).float())
    assert _relative(got, want) < 1e-2


@needs_cuda
def test_decode_step_replays_as_a_cuda_graph_with_the_same_tokens():
    from lobolib.perf.compress import _replayable

    device = torch.device("cuda")
    model = build_model({**SMALL, "sliding_window": None}, device, torch.float32)
    fill(model, 0)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 9), device=device, generator=torch.Generator(device).manual_seed(1))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(5)
        eager = _Decoding(model, ids, 64, _Calls(model))
        replayed = _Decoding(model, ids, 64, _Calls(model))
        step, mode = _replayable(replayed, device)  # runs 3 eager steps itself (sync check, warm-up)
        eager.run(eager.step, 3)
        assert mode == "cuda graph"
        for _ in range(4):
            eager.run(eager.step, 1)
            replayed.run(step, 1)
            assert torch.equal(eager.token, replayed.token)
