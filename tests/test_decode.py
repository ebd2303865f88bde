"""decode.greedy: the evaluator's fast greedy decoder gives what transformers' generate gives, and
models it cannot serve go to generate (tiny Mistral, CPU)."""

from __future__ import annotations

import pytest
import torch

from conftest import build_tiny_model
from lobolib import decode
from lobolib.evaluate import _generate, decoding_path, evaluate
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


def test_the_models_attention_setting_is_restored_even_after_an_error(sharp_model):
    before = sharp_model.config._attn_implementation
    with pytest.raises(IndexError):  # a label id outside the vocabulary fails inside the decoder's scope
        decode.greedy(sharp_model, _rows([5]), pad_id=PAD, eos_ids=[2], new_tokens=2, label_ids=[10_000],
                      device=torch.device("cpu"))
    assert sharp_model.config._attn_implementation == before


@pytest.mark.parametrize("change, reason", [
    (lambda m: setattr(m.config, "_attn_implementation", "eager"), "attention implementation"),
    (lambda m: setattr(m.generation_config, "repetition_penalty", 1.3), "repetition_penalty"),
    (lambda m: setattr(m.config, "sliding_window", 16), "sliding window"),
    (lambda m: setattr(m.config, "model_type", "gpt2"), "model type"),
])
def test_models_the_fast_path_cannot_serve_go_to_generate(sharp_model, change, reason):
    assert decode.supports(sharp_model, 40) is None
    assert decoding_path(sharp_model, 40) == "lobolib greedy"
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
    assert decoding_path(model) == "lobolib greedy"
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
    real = decode._attention

    def spy(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(decode, "_attention", spy)  # greedy registers the module's _attention on each call
    before = torch.backends.cuda.cudnn_sdp_enabled()
    decode.greedy(sharp_model, _rows([5, 9]), pad_id=PAD, eos_ids=[2], new_tokens=3, label_ids=None,
                  device=torch.device("cpu"))
    assert seen and not any(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled() == before  # restored afterwards
