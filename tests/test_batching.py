"""Batch planning and prompt tokenisation of the evaluator: `plan_batches` finds the cheapest split
under the budget (checked against every split of small cases), and `tokenize` remembers prompt
lists per tokenizer without ever serving stale ids."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import build_tiny_tokenizer
from lobolib.evaluation import evaluate as ev


def _plan(lengths, budget, new_tokens, pad_cost=1.0):
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, start = [], 0
    for count in ev.plan_batches(lengths, order, 0, budget, new_tokens, pad_cost):
        batches.append([lengths[i] for i in order[start:start + count]])
        start += count
    return batches


def _cost(batches, new_tokens, pad_cost=1.0):
    return sum(sum(b) + pad_cost * (len(b) * max(b) - sum(b)) + (new_tokens + 1) * ev.STEP_COST_TOKENS
               for b in batches)


def _cheapest(lengths, budget, new_tokens, pad_cost):
    widths = sorted(lengths, reverse=True)
    best = None
    for cuts in itertools.product([False, True], repeat=len(widths) - 1):
        batches, current = [], [widths[0]]
        for cut, width in zip(cuts, widths[1:]):
            if cut:
                batches.append(current)
                current = []
            current.append(width)
        batches.append(current)
        if all(len(b) <= budget.max_count(max(b), new_tokens) for b in batches):
            cost = _cost(batches, new_tokens, pad_cost)
            best = cost if best is None else min(best, cost)
    return best


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(1, 3000), min_size=1, max_size=9),
       memory=st.sampled_from([2e3, 2e4, 1e9]), new_tokens=st.sampled_from([1, 5, 10]),
       pad_cost=st.sampled_from([1.0, ev.PACKED_PAD_COST]))
def test_the_plan_is_the_cheapest_split_the_budget_allows(lengths, memory, new_tokens, pad_cost):
    budget = ev.BatchBudget(max_batch=6, bytes=memory, per_token=1.0, per_sequence=0.0, attention_per_token2=0.0)
    batches = _plan(lengths, budget, new_tokens, pad_cost)
    assert sorted(x for b in batches for x in b) == sorted(lengths)  # every prompt once
    assert all(len(b) <= budget.max_count(max(b), new_tokens) for b in batches)
    assert math.isclose(_cost(batches, new_tokens, pad_cost), _cheapest(lengths, budget, new_tokens, pad_cost),
                        rel_tol=1e-9)


def test_cheap_padding_buys_fewer_batches():
    lengths = [500] * 2 + [300] * 60  # one batch pads 60 x 200 tokens; a second batch costs 11 steps
    assert [len(b) for b in _plan(lengths, ev.fixed_budget(64), 10, pad_cost=1.0)] == [2, 60]
    assert [len(b) for b in _plan(lengths, ev.fixed_budget(64), 10, pad_cost=ev.PACKED_PAD_COST)] == [62]


def test_padding_is_cheap_only_where_lobolib_decodes(tiny_model_and_tokenizer):
    model, _ = tiny_model_and_tokenizer
    assert ev._pad_cost(model, 64) == ev.PACKED_PAD_COST
    model.generation_config.repetition_penalty = 1.3  # through transformers' generate, which computes pads
    assert ev._pad_cost(model, 64) == 1.0


def test_a_few_long_prompts_get_their_own_batch_and_short_leftovers_join_the_last():
    budget = ev.fixed_budget(64)
    lengths = [4000, 3900] + [300] * 60 + [120] * 3
    batches = _plan(lengths, budget, new_tokens=10)
    assert [len(b) for b in batches] == [2, 63]


def test_the_budget_caps_every_batch_even_when_one_batch_would_be_cheaper():
    budget = ev.BatchBudget(max_batch=1024, bytes=1000.0, per_token=1.0, per_sequence=0.0, attention_per_token2=0.0)
    assert max(len(b) for b in _plan([100] * 25, budget, new_tokens=5)) == 9  # 9 x (100 + 5) <= 1000


def test_tokenize_remembers_prompt_lists_and_sees_new_tokens():
    tokenizer = build_tiny_tokenizer()
    prompts = ["Question: does aspirin reduce fever?", "Answer: yes"]
    first = ev.tokenize(tokenizer, prompts)
    assert first == tokenizer(prompts, add_special_tokens=True)["input_ids"]
    assert ev.tokenize(tokenizer, list(prompts)) is first  # the same prompts again: remembered
    tokenizer.add_tokens(["aspirin"])
    again = ev.tokenize(tokenizer, prompts)
    assert again is not first and again == tokenizer(prompts, add_special_tokens=True)["input_ids"]
    for n in range(ev.TOKENIZED_KEEP + 1):
        ev.tokenize(tokenizer, [f"prompt {n}"])
    assert len(ev._TOKENIZED[tokenizer]) == ev.TOKENIZED_KEEP


def test_the_gpu_budget_counts_memory_the_allocator_holds_cached_as_free(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 30 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 16 * 2**30)
    assert ev._free_bytes(torch.device("cuda", 0)) == (10 + 30 - 16) * 2**30
