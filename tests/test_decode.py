"""decode.greedy: the evaluator's fast greedy decoder gives what transformers' generate gives, and
models it cannot serve go to generate (tiny Mistral, CPU)."""

from __future__ import annotations

import pytest
import torch

from conftest import build_tiny_model
from lobolib.evaluation import decode
from lobolib.evaluation.evaluate import _generate, decoding_path, evaluate
from test_evaluate import mmlu_items, pubmedqa_items

torch.set_num_threads(1)

PAD = 3


@pytest.fixture
def sharp_model():
    """A tiny Mistral whose next-token distributions are peaked (so a wrong position or mask
    changes the argmax and the log-probs by far more than the tolerance)."""
    model = build_tiny_model(96, seed=1)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model


def _rows(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [[1] + torch.randint(4, 96, (n - 1,), generator=generator).tolist() for n in lengths]


def _both(model, rows, eos_ids, new_tokens=6, label_ids=(10, 11, 12)):
    with torch.inference_mode():
        fast = decode.greedy(model, rows, pad_id=PAD, eos_ids=eos_ids, new_tokens=new_tokens,
                             label_ids=list(label_ids), device=torch.device("cpu"))
        slow = _generate(model, rows, pad_id=PAD, eos_ids=eos_ids, new_tokens=new_tokens, label_ids=list(label_ids))
    return fast, slow


def test_greedy_equals_generate_on_a_batch_of_mixed_lengths(sharp_model):
    rows = _rows([5, 17, 9, 30, 12])
    (tokens, logprobs), (expected_tokens, expected_logprobs) = _both(sharp_model, rows, eos_ids=[2])
    assert tokens.shape == (5, 6)
    assert torch.equal(tokens, expected_tokens)
    assert torch.allclose(logprobs, expected_logprobs, atol=1e-4)
    assert logprobs.max() - logprobs.min() > 1.0  # the labels' scores differ: the check has teeth


def test_a_row_that_ends_early_is_padded_as_generate_pads_it(sharp_model):
    rows = _rows([6, 21, 11], seed=3)
    (free, _), _ = _both(sharp_model, rows, eos_ids=[])
    stop = int(free[0, 1])  # row 0 says this token second: make it the end-of-sequence token
    (tokens, _), (expected, _) = _both(sharp_model, rows, eos_ids=[stop])
    assert torch.equal(tokens, expected)
    assert tokens[0, 1] == stop and (tokens[0, 2:] == PAD).all()


def test_first_token_logprobs_equal_a_plain_forward_pass_of_each_prompt(sharp_model):
    rows = _rows([4, 19, 8])
    (_, logprobs), _ = _both(sharp_model, rows, eos_ids=[2], label_ids=(20, 30, 40, 50))
    for row, got in zip(rows, logprobs):
        with torch.inference_mode():
            logits = sharp_model(input_ids=torch.tensor([row])).logits[0, -1].float()
        assert torch.allclose(got, torch.log_softmax(logits, -1)[[20, 30, 40, 50]], atol=1e-4)


@pytest.mark.parametrize("change, reason", [
    (lambda m: setattr(m.model.layers[1].mlp, "act_fn", torch.nn.GELU()), "not SiLU"),
    (lambda m: setattr(m.model.layers[0].self_attn, "q_proj", _Quantised(32, 32, bias=False)), "nn.Linear"),
    (lambda m: setattr(m.model.layers[0].mlp.up_proj, "weight", torch.nn.Parameter(torch.empty(64, 32, device="meta"))),
     "offloaded"),
    (lambda m: setattr(m.generation_config, "repetition_penalty", 1.3), "repetition_penalty"),
    (lambda m: setattr(m.config, "sliding_window", 16), "sliding window"),
    (lambda m: setattr(m.config, "model_type", "gpt2"), "model type"),
])
def test_models_the_fast_path_cannot_serve_go_to_generate(sharp_model, change, reason):
    assert decode.supports(sharp_model, 40) is None
    assert decoding_path(sharp_model, 40).startswith("lobolib greedy")
    change(sharp_model)
    assert reason in decode.supports(sharp_model, 40)
    assert decoding_path(sharp_model, 40).startswith("transformers generate")


def test_evaluate_gives_the_same_records_through_either_decoder(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    items = pubmedqa_items() + mmlu_items()
    fast = evaluate(model, tokenizer, items, model_name="tiny", sparsity=0.0, progress=False)
    model.generation_config.no_repeat_ngram_size = 0  # neutral: still the fast path
    assert decoding_path(model).startswith("lobolib greedy")
    model.config.model_type = "not-a-family"  # forces generate
    slow = evaluate(model, tokenizer, items, model_name="tiny", sparsity=0.0, progress=False)
    assert [r.raw_response for r in fast] == [r.raw_response for r in slow]
    for a, b in zip(fast, slow):
        assert a.loglik_answer == b.loglik_answer
        assert a.option_logprobs == pytest.approx(b.option_logprobs, abs=1e-4)


def test_decoding_keeps_off_cudnn_attention(sharp_model, monkeypatch):
    """cuDNN's attention builds a plan per new shape — every decode step is one — so greedy runs
    its attention with cuDNN disabled, whoever calls it."""
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    decode.greedy(sharp_model, _rows([5, 9]), pad_id=PAD, eos_ids=[2], new_tokens=3, label_ids=None,
                  device=torch.device("cpu"))
    assert len(seen) == 2 * 3 and not any(seen)  # 2 layers x (prefill + 2 steps)
    assert torch.backends.cuda.cudnn_sdp_enabled() == before  # restored afterwards


class _Quantised(torch.nn.Linear):
    """Stands in for a quantised linear layer (a subclass whose weight is not the matrix)."""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_replay_gives_the_tokens_of_eager_steps(monkeypatch):
    from test_forward import _model

    model = _model("mistral", seed=3).cuda()
    rows = _rows([5, 17, 9, 30, 12, 3], seed=7)
    stop = 9

    def run(graphs: str):
        monkeypatch.setenv("LOBOLIB_CUDA_GRAPHS", graphs)
        with torch.inference_mode():
            return decode.greedy(model, rows, pad_id=PAD, eos_ids=[2, stop], new_tokens=8, label_ids=[10, 11],
                                 device=torch.device("cuda"))

    eager, replayed = run("0"), run("1")
    assert decode._Replay.failed is None
    assert torch.equal(eager[0], replayed[0]) and torch.equal(eager[1], replayed[1])
    with torch.inference_mode():
        expected, _ = _generate(model, rows, pad_id=PAD, eos_ids=[2, stop], new_tokens=8, label_ids=[10, 11])
    assert torch.equal(replayed[0], expected)
