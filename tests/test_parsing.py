"""The answer parser: what a response commits to, the reference study's rules, robustness, speed."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from conftest import shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from lobolib import LoboError
from lobolib.evaluation.parsing import (
    INVALID_REASONS,
    TIERS,
    ParseResult,
    parse_mmlu,
    parse_pubmedqa,
    parse_reference,
    parse_reference_mmlu,
    parse_reference_pubmedqa,
    parse_response,
)

CASES_FILE = Path(__file__).parent / "data" / "parser_cases.jsonl"
HEART = ("heart", "lung", "liver", "kidney")
KOROTKOFF = ("when you hear", "when the Korotkoff sounds start", "when they stop", "never")
VALIDITY = ("Valid", "Invalid. Counterexample when A", "Invalid. Counterexample when B", "Neither")
OPTIONS_IN_PROMPT = re.compile(
    r"\nOptions:\nA\. ([^\n]*)\nB\. ([^\n]*)\nC\. ([^\n]*)\nD\. ([^\n]*)\nAnswer:\Z"
)


def load_cases() -> list[dict]:
    """The hand-labelled responses from the reference study's logs."""
    with CASES_FILE.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# ----------------------------------------------------------------------------- careful reading
@pytest.mark.parametrize(
    "text, answer",
    [
        ("yes, but only in patients over 65", "yes"),
        ("Maybe\nsource of funding: none", "maybe"),
        (" yes", "yes"),
        ("No.", "no"),
        ("yes/yes/yes", "yes"),
        ("maybe, maybe, maybe", "maybe"),
        ("1/yes/yes/yes/yes", "yes"),
        ("no, there was no association between obesity", "no"),
        ("no correlation was found between the two", "no"),
        ("yes\n\nQuestion: is the other thing true?", "yes"),
        ("the answer is yes", "yes"),
        ("Answer (yes/no/maybe): no", "no"),
        ("does the school have a written food policy? yes", "yes"),
    ],
)
def test_pubmedqa_reads_the_committed_answer(text, answer):
    assert parse_pubmedqa(text).answer == answer


@pytest.mark.parametrize(
    "text, reason",
    [
        ("yes/no/maybe", "conflicting"),
        ("yes, maybe", "conflicting"),
        ("no/yes/yes\n\n- 1", "conflicting"),
        ("none", "off_format"),
        ("not at all", "off_format"),
        ("know", "off_format"),
        ("nothing", "off_format"),
        ("nobody", "off_format"),
        ("no data available", "off_format"),
        ("brabrabrabrabrabrabrabrabrabra", "degenerate"),
        ("/******/ /******/ /******/ /******/", "degenerate"),
        ("\xad\xad\xad\xad", "degenerate"),
        ("1. 1. 1.", "degenerate"),
        ("Context: the aim of this study", "new_section"),
        ("Question: does it work?", "new_section"),
        ("## 1. introduction", "new_section"),
        ("the injury severity distribution of hmcis can", "off_format"),
        ("", "empty"),
        ("  \n\t ", "empty"),
    ],
)
def test_pubmedqa_invalid_responses_say_why(text, reason):
    result = parse_pubmedqa(text)
    assert (result.answer, result.reason) == (None, reason)


@pytest.mark.parametrize(
    "text, options, answer",
    [
        (" A", HEART, "A"),
        (" A. heart", HEART, "A"),
        ("(B)", HEART, "B"),
        ("B)", HEART, "B"),
        ("The answer is B", HEART, "B"),
        ("Answer: C", HEART, "C"),
        ("OPTION D\n\nQUESTION", HEART, "D"),
        ("C C C", HEART, "C"),
        ("C\n\nQUESTION:", HEART, "C"),
        ("A. THE STRONGEST", ("the strongest", "the weakest", "both", "neither"), "A"),
        ("a. the strongest", ("the strongest", "the weakest", "both", "neither"), "A"),
        ("ATP", ("ADP", "ATP", "GTP", "AMP"), "B"),
        ("atp.", ("ADP", "ATP", "GTP", "AMP"), "B"),
        ("PHOSPHOCREA", ("ATP", "glycogen", "phosphocreatine", "fat"), "C"),
        ("A person who is sick", ("nobody", "A person who is sick", "a dog", "a cat"), "B"),
        ("1. 1", ("1", "7", "13", "19"), "A"),
        ("D. BOTH A AND", ("B ⊃ W", "W ⊃ B", "B ≡ W", "Both A and B"), "D"),
        ("1.\nB", HEART, "B"),
        ("B. WHEN THE KOR", KOROTKOFF, "B"),
        ("C. 75", ("60%", "90%", "75%", "45%"), "C"),
    ],
)
def test_mmlu_reads_the_committed_answer(text, options, answer):
    assert parse_mmlu(text, options).answer == answer


@pytest.mark.parametrize(
    "text, options, reason",
    [
        ("A person who smokes", HEART, "off_format"),
        ("1. 1", ("98%", "94%", "80%", "85%"), "degenerate"),
        ("A, B, C", HEART, "conflicting"),
        ("A. B. B", HEART, "conflicting"),
        ("B. VALID", VALIDITY, "conflicting"),
        ("INVALID. COUNTEREX", VALIDITY, "conflicting"),
        ("C. 75", ("60%", "75%", "90%", "45%"), "conflicting"),
        ("SOLUTION:", HEART, "new_section"),
        ("QUESTION: THE", HEART, "new_section"),
        ("Options:\nA.", HEART, "new_section"),
        ("GROUPLAYOUTGROUPLAYOUTGROUPLAYOUT", HEART, "degenerate"),
        ("THE GIVEN ARGUMENT", HEART, "off_format"),
        ("D-LABP", HEART, "off_format"),
        ("", HEART, "empty"),
    ],
)
def test_mmlu_invalid_responses_say_why(text, options, reason):
    result = parse_mmlu(text, options)
    assert (result.answer, result.reason) == (None, reason)


def test_non_text_input_reads_as_empty():
    for value in (None, float("nan"), 5, b"yes", ["A"]):
        assert parse_pubmedqa(value) == ParseResult(None, "empty", "empty")
        assert parse_mmlu(value, HEART) == ParseResult(None, "empty", "empty")


def test_parse_response_dispatches_and_rejects_unknown_benchmarks():
    assert parse_response("pubmedqa", "yes", ("yes", "no", "maybe")).answer == "yes"
    assert parse_response("mmlu", "B. lung", HEART).answer == "B"
    assert parse_reference("pubmedqa", "none", ()) == "no"
    assert parse_reference("mmlu", "1. 1", HEART) == "A"
    with pytest.raises(LoboError, match="unknown benchmark"):
        parse_response("medqa", "A", HEART)
    with pytest.raises(LoboError, match="unknown benchmark"):
        parse_reference("medqa", "A", HEART)


# ----------------------------------------------------------------------------- hand-labelled logs
def test_hand_labelled_cases_cover_both_models_and_benchmarks():
    cases = load_cases()
    assert len(cases) >= 300
    assert len({(case["benchmark"], case["text"]) for case in cases}) == len(cases)
    strata = {(case["benchmark"], "BioMistral" in case["source"]) for case in cases}
    assert strata == {("pubmedqa", True), ("pubmedqa", False), ("mmlu", True), ("mmlu", False)}
    for case in cases:
        assert case["expected"] in (None, "yes", "no", "maybe", "A", "B", "C", "D")
        assert (case["benchmark"] == "mmlu") == ("options" in case)


def test_parser_agrees_with_careful_human_reading():
    cases = load_cases()
    disagreements = []
    for case in cases:
        answer = parse_response(case["benchmark"], case["text"], case.get("options", ())).answer
        if answer != case["expected"]:
            disagreements.append((case["text"], case["expected"], answer))
    agreement = 1 - len(disagreements) / len(cases)
    assert agreement >= 0.97, disagreements


# ----------------------------------------------------------------------------- reference rules
def test_reference_rules_show_their_artefacts():
    assert parse_reference_pubmedqa("none") == "no"
    assert parse_reference_pubmedqa("I do not know") == "no"
    assert parse_reference_pubmedqa("brabrabra") == "maybe"
    assert parse_reference_pubmedqa("") == "maybe"
    assert parse_reference_pubmedqa("yes/no/maybe") == "yes"
    assert parse_reference_mmlu("1. 1", ("98%", "94%", "80%", "85%")) == "A"
    assert parse_reference_mmlu("66%", ("6%", "16%", "36%", "66%")) == "A"
    assert parse_reference_mmlu("gibberish", HEART) == "X"
    assert parse_reference_mmlu(None, HEART) == "X"


def test_reference_rules_reproduce_every_logged_guess():
    """Re-parse every raw_response of the reference study's logs: 100 % equal to parsed_guess."""
    pandas = pytest.importorskip("pandas")
    logs = shared_path("reference-logs")
    files = sorted(logs.glob("*_*/*_percent.csv.gz"))
    assert len(files) == 80
    checked = 0
    for path in files:
        frame = pandas.read_csv(path, keep_default_na=False, dtype=str)
        if path.parent.name.endswith("_MMLU"):
            options = [OPTIONS_IN_PROMPT.search(prompt).groups() for prompt in frame["prompt"]]
            guesses = [parse_reference_mmlu(t, o) for t, o in zip(frame["raw_response"], options)]
        else:
            guesses = [parse_reference_pubmedqa(t) for t in frame["raw_response"]]
        mismatches = [i for i, (a, b) in enumerate(zip(guesses, frame["parsed_guess"])) if a != b]
        assert not mismatches, (path.name, mismatches[:5])
        checked += len(frame)
    assert checked == 20 * (2 * 1000 + 2 * 762)


# ----------------------------------------------------------------------------- robustness, speed
def _assert_well_formed(result: ParseResult, labels: tuple[str, ...]) -> None:
    assert result.tier in TIERS
    if result.answer is None:
        assert result.reason in INVALID_REASONS
    else:
        assert result.answer in labels and result.reason is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_pubmedqa_never_raises(text):
    _assert_well_formed(parse_pubmedqa(text), ("yes", "no", "maybe"))
    assert parse_reference_pubmedqa(text) in ("yes", "no", "maybe")


@settings(max_examples=300, deadline=None)
@given(st.text(), st.lists(st.text(), min_size=4, max_size=4))
def test_mmlu_never_raises(text, options):
    _assert_well_formed(parse_mmlu(text, options), ("A", "B", "C", "D"))
    assert parse_reference_mmlu(text, options) in ("A", "B", "C", "D", "X")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["A", "b", "(C)", "D.", "yes", "no", "maybe"]), st.text(max_size=30))
def test_mmlu_tolerates_odd_options(text, junk):
    for options in (None, (), ("only one",), [junk] * 7, (None, 1, junk, b"x")):
        _assert_well_formed(parse_mmlu(text + junk, options), ("A", "B", "C", "D"))


def test_parses_40k_responses_in_under_5_seconds():
    cases = load_cases()
    work = [(c["benchmark"], c["text"], c.get("options", ())) for c in cases]
    work = (work * (40_000 // len(work) + 1))[:40_000]
    start = time.perf_counter()
    for benchmark, text, options in work:
        parse_response(benchmark, text, options)
    assert time.perf_counter() - start < 5.0
