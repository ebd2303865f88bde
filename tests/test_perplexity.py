"""Perplexity: token-weighted over windows, per-window sums, batch-independent; text windows."""

import math

import pytest
import torch
from conftest import build_tiny_model, build_tiny_tokenizer, shared_path

from lobolib import LoboError
from lobolib.evaluation.perplexity import perplexity, text_windows


def windows(n=5, length=9, seed=0):
    return torch.randint(0, 97, (n, length), generator=torch.Generator().manual_seed(seed))


def test_perplexity_is_exp_of_the_mean_token_nll():
    model, ids = build_tiny_model(97), windows()
    result = perplexity(model, ids)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.double(), -1)
    nll = -logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert result["tokens"] == 5 * 8 and result["window_tokens"] == 8
    assert result["nll_sum"] == pytest.approx(float(nll.sum()), rel=1e-5)
    assert result["window_nll"] == pytest.approx(nll.sum(1).tolist(), rel=1e-5)
    assert result["ppl"] == pytest.approx(math.exp(float(nll.sum()) / 40), rel=1e-5)


def test_batch_size_does_not_change_the_result():
    model, ids = build_tiny_model(97), windows(7)
    one = perplexity(model, ids, batch_size=1)
    all_at_once = perplexity(model, ids, batch_size=7)
    assert one["window_nll"] == pytest.approx(all_at_once["window_nll"], rel=1e-5)


def test_a_uniform_model_has_the_vocabulary_as_perplexity():
    model = build_tiny_model(97)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    assert perplexity(model, windows())["ppl"] == pytest.approx(97, rel=1e-5)


def test_text_windows_are_consecutive_slices_of_the_tokens():
    tokenizer = build_tiny_tokenizer()
    text = "aspirin reduces fever " * 40
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    got = text_windows(text, tokenizer, 10, max_windows=3)
    assert got.tolist() == [ids[0:10], ids[10:20], ids[20:30]]
    assert text_windows(text, tokenizer, 10).shape[0] == len(ids) // 10


def test_real_wikitext_test_windows():
    text = shared_path("wikitext-2", "test.txt").read_text()
    got = text_windows(text, build_tiny_tokenizer(), 256, max_windows=4)
    assert got.shape == (4, 256)


@pytest.mark.parametrize("args,message", [(("abc", 1), "seq_len"), (("abc", 50), "fewer than one window"),
                                          (("abc", 8, 0), "max_windows")])
def test_bad_window_requests_are_lobo_errors(args, message):
    with pytest.raises(LoboError, match=message):
        text_windows(args[0], build_tiny_tokenizer(), *args[1:])


def test_bad_windows_are_lobo_errors():
    with pytest.raises(LoboError, match="LongTensor"):
        perplexity(build_tiny_model(97), torch.rand(2, 5))
    with pytest.raises(LoboError, match="vocabulary of 97"):
        perplexity(build_tiny_model(97), windows() + 97)
