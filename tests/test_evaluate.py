"""evaluate(): batched greedy generation and first-token option scores in one pass, on the tiny
Mistral model (CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from lobolib import LoboError
from lobolib.benchmarks import Item, build_prompt, option_labels
from lobolib.evaluation.evaluate import evaluate, option_token_ids
from lobolib.evaluation.parsing import parse_response
from lobolib.records import prompt_hash

torch.set_num_threads(1)


def pubmedqa_items(n: int = 7) -> list[Item]:
    """PubMedQA-like items of clearly different prompt lengths."""
    answers = ("yes", "no", "maybe")
    return [
        Item(
            id=str(1000 + i),
            benchmark="pubmedqa",
            subject="pubmedqa",
            question="does aspirin reduce fever?" + " really" * (i % 4),
            context="aspirin reduces fever. " * (1 + 3 * (i % 3)) + "the trial was small." * (i % 2),
            options=("yes", "no", "maybe"),
            answer=answers[i % 3],
        )
        for i in range(n)
    ]


def mmlu_items(n: int = 5, subject: str = "anatomy") -> list[Item]:
    """MMLU-like items of different prompt lengths."""
    return [
        Item(
            id=f"{subject}/{i}",
            benchmark="mmlu",
            subject=subject,
            question="which organ pumps blood?" + " in the body" * i,
            context="",
            options=("heart", "lung", "liver", "kidney" + " and more" * i),
            answer="ABCD"[i % 4],
        )
        for i in range(n)
    ]


@pytest.fixture
def model_and_tokenizer(tiny_model_and_tokenizer):
    """The tiny model with a sharpened output layer, so next-token distributions are peaked and a
    log-prob taken at the wrong position or for the wrong token differs by far more than 1e-4."""
    model, tokenizer = tiny_model_and_tokenizer
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model, tokenizer


def run(model, tokenizer, items, **kwargs):
    kwargs.setdefault("progress", False)
    return evaluate(model, tokenizer, items, model_name="tiny", sparsity=0.25, **kwargs)


def test_one_record_per_item_in_input_order_for_both_benchmarks(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items = pubmedqa_items()[:4] + mmlu_items() + pubmedqa_items()[4:]  # mixed benchmarks, mixed order
    records = run(model, tokenizer, items)

    assert [r.item_id for r in records] == [it.id for it in items]
    for item, record in zip(items, records):
        assert (record.model, record.sparsity, record.benchmark, record.subject) == (
            "tiny", 0.25, item.benchmark, item.subject)
        assert record.gold == item.answer
        assert record.prompt_hash == prompt_hash(build_prompt(item, "reference"))
        parsed = parse_response(item.benchmark, record.raw_response, item.options)
        assert (record.answer, record.tier, record.invalid_reason) == (parsed.answer, parsed.tier, parsed.reason)
        labels = option_labels(item.benchmark)
        assert list(record.option_logprobs) == list(labels)
        assert all(v <= 0 and math.isfinite(v) for v in record.option_logprobs.values())
        assert record.loglik_answer == max(record.option_logprobs, key=record.option_logprobs.get)
    # the sharpened random model gives labels clearly different scores
    assert any(max(r.option_logprobs.values()) - min(r.option_logprobs.values()) > 1e-2 for r in records)


def test_option_logprobs_equal_a_plain_forward_pass(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items = pubmedqa_items() + mmlu_items()
    records = run(model, tokenizer, items)  # batched, left-padded, mixed lengths
    for item, record in zip(items, records):
        ids = tokenizer(build_prompt(item), return_tensors="pt")
        with torch.no_grad():
            logits = model(**ids).logits[0, -1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for label, value in record.option_logprobs.items():
            token = tokenizer.encode(" " + label, add_special_tokens=False)[0]  # "Ġyes", "ĠA"
            assert value == pytest.approx(logprobs[token].item(), abs=1e-4)


def test_batched_results_equal_one_prompt_at_a_time(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items = pubmedqa_items() + mmlu_items()
    single = run(model, tokenizer, items, batch_size=1)
    for batch_size in (None, 3):
        batched = run(model, tokenizer, items, batch_size=batch_size)
        for a, b in zip(single, batched):
            assert a.raw_response == b.raw_response
            assert a.loglik_answer == b.loglik_answer
            for label in a.option_logprobs:
                assert a.option_logprobs[label] == pytest.approx(b.option_logprobs[label], abs=1e-4)


def test_padding_side_of_the_tokenizer_does_not_matter(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items = pubmedqa_items()
    left = run(model, tokenizer, items)
    tokenizer.padding_side = "right"
    right = run(model, tokenizer, items)
    assert [r.raw_response for r in left] == [r.raw_response for r in right]


def test_generated_text_equals_plain_greedy_generate(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items = pubmedqa_items()[:3] + mmlu_items()[:2]
    records = run(model, tokenizer, items)
    for item, record in zip(items, records):
        ids = tokenizer(build_prompt(item), return_tensors="pt")
        steps = 10 if item.benchmark == "pubmedqa" else 5
        out = model.generate(**ids, max_new_tokens=steps, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert record.raw_response == text


def _spy_generate(model, monkeypatch, fail_above: int | None = None):
    """Wrap evaluate.generate_batch (one call per batch, whichever decoder it uses): record each
    call's batch size and new tokens; raise CUDA-style out-of-memory for batches larger than
    `fail_above`."""
    from lobolib.evaluation import evaluate as evaluate_module

    calls = []
    real = evaluate_module.generate_batch

    def generate_batch(model, tokenizer, rows, **kwargs):
        calls.append((len(rows), kwargs["new_tokens"]))
        if fail_above is not None and len(rows) > fail_above:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, tokenizer, rows, **kwargs)

    monkeypatch.setattr(evaluate_module, "generate_batch", generate_batch)
    return calls


def test_out_of_memory_halves_the_batch_and_keeps_every_item(model_and_tokenizer, monkeypatch):
    model, tokenizer = model_and_tokenizer
    items = pubmedqa_items(9)
    expected = run(model, tokenizer, items, batch_size=1)
    calls = _spy_generate(model, monkeypatch, fail_above=2)
    records = run(model, tokenizer, items)  # automatic batch size: first batch holds all 9
    assert calls[0][0] == 9
    assert sum(rows for rows, _ in calls if rows <= 2) == len(items)
    assert [r.item_id for r in records] == [it.id for it in items]
    assert [r.raw_response for r in records] == [r.raw_response for r in expected]
    # an explicit batch size is halved the same way
    calls.clear()
    records = run(model, tokenizer, items, batch_size=8)
    assert [r.raw_response for r in records] == [r.raw_response for r in expected]


def test_out_of_memory_on_one_prompt_says_the_model_does_not_fit(model_and_tokenizer, monkeypatch):
    model, tokenizer = model_and_tokenizer
    _spy_generate(model, monkeypatch, fail_above=0)
    with pytest.raises(LoboError, match="does not fit"):
        run(model, tokenizer, pubmedqa_items(3))


def test_default_generation_lengths_are_the_reference_studys(model_and_tokenizer, monkeypatch):
    model, tokenizer = model_and_tokenizer
    calls = _spy_generate(model, monkeypatch)
    run(model, tokenizer, pubmedqa_items(2) + mmlu_items(2))
    assert sorted({steps for _, steps in calls}) == [5, 10]
    calls.clear()
    run(model, tokenizer, mmlu_items(2), max_new_tokens=3)
    assert {steps for _, steps in calls} == {3}
    calls.clear()
    run(model, tokenizer, pubmedqa_items(2) + mmlu_items(2), max_new_tokens={"pubmedqa": 4})
    assert sorted({steps for _, steps in calls}) == [4, 5]  # MMLU keeps its default


def test_template_may_differ_per_benchmark(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items = pubmedqa_items(1) + mmlu_items(1)
    records = run(model, tokenizer, items, template={"mmlu": "harness"})
    assert records[0].prompt_hash == prompt_hash(build_prompt(items[0], "reference"))
    assert records[1].prompt_hash == prompt_hash(build_prompt(items[1], "harness"))


def test_prompt_longer_than_the_model_context_is_an_error(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    model.config.max_position_embeddings = 40
    with pytest.raises(LoboError, match="exceed the model's 40 positions"):
        run(model, tokenizer, pubmedqa_items())


def test_shots_go_into_the_prompt_and_a_missing_subject_is_an_error(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items = mmlu_items(2)
    shots = {("mmlu", "anatomy"): mmlu_items(2, subject="anatomy")[:1]}
    records = run(model, tokenizer, items, shots=shots)
    assert records[0].prompt_hash == prompt_hash(build_prompt(items[0], "reference", shots[("mmlu", "anatomy")]))
    assert records[0].prompt_hash != prompt_hash(build_prompt(items[0]))
    with pytest.raises(LoboError, match="college_medicine"):
        run(model, tokenizer, mmlu_items(1, subject="college_medicine"), shots=shots)


@pytest.mark.parametrize("bad", [
    {"sparsity": 1.0}, {"sparsity": -0.1}, {"batch_size": 0}, {"max_new_tokens": 0},
    {"max_new_tokens": {"pubmedqa": 2.5}}, {"template": "nonexistent"},
])
def test_bad_arguments_raise_loboerror(model_and_tokenizer, bad):
    model, tokenizer = model_and_tokenizer
    kwargs = {"model_name": "tiny", "sparsity": 0.0, "progress": False, **bad}
    with pytest.raises(LoboError):
        evaluate(model, tokenizer, pubmedqa_items(1), **kwargs)


def test_option_tokens_for_a_sentencepiece_style_tokenizer():
    """With a Metaspace ("▁") tokenizer, as Llama/Mistral use, the label after "Answer:" is "▁yes"."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import PreTrainedTokenizerFast

    from conftest import TINY_CORPUS

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    raw.train_from_iterator(TINY_CORPUS * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    ids = option_token_ids(tokenizer, ("yes", "no", "maybe"), "Answer (yes/no/maybe):")
    assert tokenizer.convert_ids_to_tokens(list(ids.values())) == ["▁yes", "▁no", "▁maybe"]


def test_labels_sharing_a_first_token_give_no_loglik_answer(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    with pytest.warns(UserWarning, match="share a first token"):
        assert option_token_ids(tokenizer, ("maybe", "maybe not"), "Answer:") is None
