"""lobolib.forward: the fused decoder forward equals transformers' for every family it accepts,
sees pruning done in place, keeps transformers' rounding in half precision, and runs eagerly when
compiling fails (tiny random models, CPU; the compiled kernels themselves on CUDA only)."""

from __future__ import annotations

import pytest
import torch

from lobolib.evaluation import decode
from lobolib.evaluation import forward
from lobolib.compress import prune

torch.set_num_threads(1)

PAD = 3
SMALL = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=PAD,
             tie_word_embeddings=False)


def _model(family: str, seed: int = 0):
    import transformers

    configs = {
        "mistral": lambda: transformers.MistralConfig(**SMALL),
        "llama": lambda: transformers.LlamaConfig(**SMALL, attention_bias=True, mlp_bias=True, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64}),
        "qwen2": lambda: transformers.Qwen2Config(**SMALL),
        "qwen3": lambda: transformers.Qwen3Config(**SMALL, head_dim=16),
    }
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(configs[family]()).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # peaked next-token distributions: a wrong position changes the argmax
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.004)  # biases that matter without drowning the tokens' own signal
            elif "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def _rows(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [[1] + torch.randint(4, 96, (n - 1,), generator=generator).tolist() for n in lengths]


def _hf_last_hidden(model, row):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([row]), output_hidden_states=True).hidden_states[-1][0, -1]


@pytest.mark.parametrize("family", ["mistral", "llama", "qwen2", "qwen3"])
def test_prefill_equals_transformers_at_each_rows_last_position(family):
    model = _model(family)
    assert decode.supports(model, 64) is None
    rows = _rows([7, 23, 4, 15])
    ids, lengths = decode._right_pad(rows, PAD, torch.device("cpu"))
    with torch.inference_mode():
        hidden = forward.Stack(model, len(rows), ids.shape[1] + 1).prefill(ids, lengths)
    for row, got in zip(rows, hidden):
        assert torch.allclose(got, _hf_last_hidden(model, row), atol=1e-5)


@pytest.mark.parametrize("family", ["mistral", "llama", "qwen2", "qwen3"])
def test_greedy_tokens_and_scores_equal_generate(family):
    from lobolib.evaluation.evaluate import _generate

    model = _model(family, seed=2)
    rows = _rows([5, 17, 9, 30], seed=4)
    with torch.inference_mode():
        tokens, logprobs = decode.greedy(model, rows, pad_id=PAD, eos_ids=[2], new_tokens=6, label_ids=[10, 11, 12],
                                         device=torch.device("cpu"))
        expected, expected_lp = _generate(model, rows, pad_id=PAD, eos_ids=[2], new_tokens=6, label_ids=[10, 11, 12])
    assert torch.equal(tokens, expected)
    assert torch.allclose(logprobs, expected_lp, atol=1e-4)
    assert len(set(tokens.flatten().tolist())) > 3  # the tokens vary: the comparison has teeth


def test_pruning_in_place_is_seen_by_the_next_call():
    model = _model("mistral", seed=5)
    rows = _rows([12, 8])
    ids, lengths = decode._right_pad(rows, PAD, torch.device("cpu"))
    with torch.inference_mode():
        before = forward.Stack(model, 2, 13).prefill(ids, lengths)
    prune.magnitude_prune(model, 0.6)
    with torch.inference_mode():
        after = forward.Stack(model, 2, 13).prefill(ids, lengths)
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after[0], _hf_last_hidden(model, rows[0]), atol=1e-5)


def test_glue_keeps_transformers_rounding_in_bfloat16():
    from transformers.models.mistral.modeling_mistral import MistralRMSNorm, apply_rotary_pos_emb

    torch.manual_seed(0)
    x = torch.randn(3, 5, 64).bfloat16()
    norm = MistralRMSNorm(64, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64))
    norm = norm.bfloat16()
    assert torch.equal(forward.rms_norm(x, norm.weight, 1e-5), norm(x))
    q, k = torch.randn(3, 5, 4, 16).bfloat16(), torch.randn(3, 5, 2, 16).bfloat16()  # batch, positions, heads, dim
    cos, sin = torch.randn(3, 5, 16).bfloat16(), torch.randn(3, 5, 16).bfloat16()
    expected_q, expected_k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    got_q, got_k = forward.rotary(q.flatten(0, 1), k.flatten(0, 1), cos.flatten(0, 1), sin.flatten(0, 1))
    assert torch.equal(got_q, expected_q.transpose(1, 2).flatten(0, 1))
    assert torch.equal(got_k, expected_k.transpose(1, 2).flatten(0, 1))


def test_a_failed_compile_warns_once_and_runs_eagerly(monkeypatch):
    glue = forward._Glue(forward.silu_mul, 2)
    monkeypatch.setattr(forward._Glue, "active", lambda self, tensor: self.failed is None)

    def broken(*args, **kwargs):
        def run(*a):
            raise RuntimeError("no working C compiler\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    gate, up = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.warns(UserWarning, match="torch.compile failed .RuntimeError: no working C compiler."):
        out = glue(gate, up)
    assert torch.equal(out, forward.silu_mul(gate, up))
    assert glue(gate, up) is not None and glue.failed.startswith("RuntimeError")  # no second warning, eager


def test_compiling_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("LOBOLIB_COMPILE", "0")
    assert not forward.compiled(torch.device("cuda"))
    monkeypatch.setenv("LOBOLIB_COMPILE", "1")
    assert not forward.compiled(torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled glue runs on CUDA only")
def test_compiled_glue_equals_eager_glue_on_cuda():
    torch.manual_seed(0)
    device = torch.device("cuda")
    x, d = torch.randn(231, 4096, device=device).bfloat16(), torch.randn(231, 4096, device=device).bfloat16()
    w = torch.randn(4096, device=device).bfloat16()
    q, k = torch.randn(231, 32, 128, device=device).bfloat16(), torch.randn(231, 8, 128, device=device).bfloat16()
    cos, sin = torch.randn(231, 128, device=device).bfloat16(), torch.randn(231, 128, device=device).bfloat16()
    g, u = torch.randn(231, 512, device=device).bfloat16(), torch.randn(231, 512, device=device).bfloat16()
    cases = {"rms_norm": (x, w, 1e-5), "add_rms_norm": (x, d, w, 1e-5), "rotary": (q, k, cos, sin),
             "silu_mul": (g, u)}
    for name, args in cases.items():
        got, expected = forward.GLUE[name](*args), forward.GLUE[name].fn(*args)
        assert forward.GLUE[name].failed is None, forward.GLUE[name].failed
        for a, b in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,)):
            mismatch = (a.float() - b.float()).abs() > 1e-2 * b.float().abs() + 1e-2
            assert mismatch.float().mean() < 1e-3, name  # rounding of float sums may differ, not values


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device beside the CPU")
def test_a_model_split_over_devices_decodes_as_on_one():
    """Layers on different devices (as device_map places them over two cards): the hidden state,
    rotary angles, masks and cache slot follow each layer to its device."""
    model = _model("llama", seed=6)
    rows = _rows([5, 17, 9, 30], seed=8)
    with torch.inference_mode():
        expected = decode.greedy(model, rows, pad_id=PAD, eos_ids=[2], new_tokens=6, label_ids=[10, 11, 12],
                                 device=torch.device("cpu"))
    for module in (model.model.embed_tokens, model.model.layers[0], model.model.layers[2]):
        module.to("cuda")
    assert decode.supports(model, 64) is None
    assert not forward.Stack(model, 1, 8).on_one_cuda_device()  # eager steps: no CUDA graph
    with torch.inference_mode():
        tokens, logprobs = decode.greedy(model, rows, pad_id=PAD, eos_ids=[2], new_tokens=6, label_ids=[10, 11, 12],
                                         device=torch.device("cuda"))
    assert torch.equal(tokens, expected[0])
    assert torch.allclose(logprobs, expected[1], atol=1e-4)


def test_packing_drops_the_pads():
    packing = forward.Packing.of(torch.tensor([3, 1, 2]), 3)
    assert packing.rows.tolist() == [0, 0, 0, 1, 2, 2]
    assert packing.cols.tolist() == [0, 1, 2, 0, 0, 1]
    assert packing.starts.tolist() == [0, 3, 4, 6] and packing.starts.dtype == torch.int32
    assert packing.longest == 3


def _per_prompt_attention(calls, causal_keyword):
    """A stand-in for torch's flash varlen kernel on the CPU: each packed prompt's causal
    attention by SDPA, recording how it was called."""
    def kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, scale, **spelled):
        calls.append((cu_q.dtype, max_q, k.shape[1] == q.shape[1], spelled))
        assert causal_keyword in spelled and torch.equal(cu_q, cu_k) and max_q == max_k
        out = torch.empty_like(q)
        for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
            out[a:b] = torch.nn.functional.scaled_dot_product_attention(
                q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1), is_causal=True,
                scale=scale, enable_gqa=spelled.get("enable_gqa", False)).transpose(0, 1)
        return out
    return kernel


@pytest.mark.parametrize("spelling", [({"window_size": (-1, 0)}, True), ({"is_causal": True}, False)])
def test_attention_over_packed_prompts_equals_attention_over_the_padded_cache(monkeypatch, spelling):
    """The packed path's plumbing (cumulative starts, longest prompt, shared key/value heads or
    repeated ones, as the torch version takes them) gives what the padded-cache path gives."""
    model = _model("qwen3", seed=9)
    rows = _rows([7, 23, 4, 15], seed=3)
    ids, lengths = decode._right_pad(rows, PAD, torch.device("cpu"))
    with torch.inference_mode():
        padded = forward.Stack(model, len(rows), ids.shape[1] + 1).prefill(ids, lengths)
    calls = []
    causal, shares_heads = spelling
    monkeypatch.setattr(forward._Varlen, "kernel", (_per_prompt_attention(calls, next(iter(causal))), causal, shares_heads))
    monkeypatch.setattr(forward._Varlen, "usable", classmethod(lambda cls, q: cls.failed is None))
    monkeypatch.setattr(forward._Varlen, "failed", None)
    with torch.inference_mode():
        packed = forward.Stack(model, len(rows), ids.shape[1] + 1).prefill(ids, lengths)
    assert len(calls) == model.config.num_hidden_layers - 1  # the last layer attends from last positions only
    assert calls[0][:2] == (torch.int32, 23)
    assert calls[0][2] is not shares_heads  # key/value heads repeated only where the kernel can't share them
    assert calls[0][3].get("enable_gqa", False) is shares_heads
    assert torch.allclose(packed, padded, atol=1e-5)
    for row, got in zip(rows, packed):
        assert torch.allclose(got, _hf_last_hidden(model, row), atol=1e-5)


def test_a_failed_varlen_kernel_warns_once_and_attends_over_the_cache(monkeypatch):
    model = _model("mistral", seed=4)
    rows = _rows([9, 3, 12])
    ids, lengths = decode._right_pad(rows, PAD, torch.device("cpu"))
    with torch.inference_mode():
        expected = forward.Stack(model, 3, 13).prefill(ids, lengths)

    def broken(*args, **kwargs):
        raise RuntimeError("FlashAttention only supports Ampere GPUs or newer.\ndetail")

    monkeypatch.setattr(forward._Varlen, "kernel", (broken, {"window_size": (-1, 0)}, True))
    monkeypatch.setattr(forward._Varlen, "usable", classmethod(lambda cls, q: cls.failed is None))
    monkeypatch.setattr(forward._Varlen, "failed", None)
    with pytest.warns(UserWarning, match="varlen attention failed .RuntimeError: FlashAttention only supports"):
        with torch.inference_mode():
            got = forward.Stack(model, 3, 13).prefill(ids, lengths)
    assert torch.equal(got, expected)
    assert forward._Varlen.failed.startswith("RuntimeError")


def test_varlen_attention_is_for_half_precision_on_cuda_only(monkeypatch):
    assert not forward._Varlen.usable(torch.zeros(2, 4, 8, dtype=torch.bfloat16))  # CPU: the padded cache
    monkeypatch.setenv("LOBOLIB_VARLEN", "0")
    assert not forward._Varlen.usable(torch.zeros(2, 4, 8, dtype=torch.bfloat16))


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
                    reason="flash attention over packed prompts needs a CUDA card of compute capability 8.0+")
def test_flash_over_packed_prompts_equals_attention_over_the_padded_cache_on_cuda(monkeypatch):
    import transformers

    torch.manual_seed(0)
    config = transformers.MistralConfig(**{**SMALL, "hidden_size": 256, "intermediate_size": 512})  # head dim 64
    model = transformers.AutoModelForCausalLM.from_config(config).eval().to("cuda", torch.bfloat16)
    rows = _rows([7, 23, 4, 15, 40, 1], seed=5)
    ids, lengths = decode._right_pad(rows, PAD, torch.device("cuda"))
    assert forward._Varlen.usable(torch.zeros(2, 4, 64, dtype=torch.bfloat16, device="cuda"))
    with torch.inference_mode():
        packed = forward.Stack(model, len(rows), ids.shape[1] + 1).prefill(ids, lengths)
        assert forward._Varlen.failed is None, forward._Varlen.failed
        monkeypatch.setenv("LOBOLIB_VARLEN", "0")
        padded = forward.Stack(model, len(rows), ids.shape[1] + 1).prefill(ids, lengths)
    assert torch.allclose(packed.float(), padded.float(), atol=3e-2, rtol=3e-2)
