"""The answer parser: what a response commits to (by answer kind, any number of options, read
with the item's question), the reference study's rules, robustness, bounded work, speed."""

from __future__ import annotations

import json
import re
import string
import time
from pathlib import Path

import pytest
from conftest import shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from lobolib import LoboError
from lobolib.evaluation import parsing
from lobolib.evaluation.parsing import (
    INVALID_REASONS,
    KINDS,
    READ_LIMIT,
    TIERS,
    ParseResult,
    letters,
    parse_answer,
    parse_mmlu,
    parse_pubmedqa,
    parse_reference,
    parse_reference_mmlu,
    parse_reference_pubmedqa,
    parse_response,
)

DATA = Path(__file__).parent / "data"
CASES_FILE = DATA / "parser_cases.jsonl"
TUNING_FILE = DATA / "parser_tuning.jsonl"
HOLDOUT_FILE = DATA / "parser_holdout.jsonl"
HEART = ("heart", "lung", "liver", "kidney")
FIVE = ("heart", "lung", "liver", "kidney", "the fifth organ")
KOROTKOFF = ("when you hear", "when the Korotkoff sounds start", "when they stop", "never")
VALIDITY = ("Valid", "Invalid. Counterexample when A", "Invalid. Counterexample when B", "Neither")
OPTIONS_IN_PROMPT = re.compile(
    r"\nOptions:\nA\. ([^\n]*)\nB\. ([^\n]*)\nC\. ([^\n]*)\nD\. ([^\n]*)\nAnswer:\Z"
)
PUBMEDQA_QUESTION = re.compile(r"\nQuestion: ([^\n]*)\nAnswer \(yes/no/maybe\):\Z")
KIND = {"pubmedqa": "yes_no_maybe", "mmlu": "multiple_choice"}
# Agreement with the hand labels, measured when the parser was last changed (see README): a
# regression guard. The holdout was labelled before the parser changed and never tuned on.
HOLDOUT_AGREEMENT = {"pubmedqa": 168 / 172, "mmlu": 169 / 172}
TUNING_AGREEMENT = {"pubmedqa": 339 / 353, "mmlu": 172 / 172}
CASES_AGREEMENT = {"pubmedqa": 284 / 284, "mmlu": 283 / 284}


def load(path: Path) -> list[dict]:
    """Hand-labelled responses from the reference study's logs, one JSON object per line, read
    as (benchmark, response, options, question, label) dicts whatever the file's field names."""
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [
        {
            "benchmark": row["benchmark"],
            "response": row.get("raw_response", row.get("text")),
            "options": tuple(row.get("options", ())),
            "question": row.get("question"),
            "label": row.get("label", row.get("expected")),
            "source": row["source"],
        }
        for row in rows
    ]


def read(case: dict) -> ParseResult:
    """The parser's reading of a labelled case, with its question, as evaluation calls it."""
    kind = KIND[case["benchmark"]]
    return parse_answer(kind, case["response"], case["options"], question=case["question"])


def agreement(cases: list[dict], benchmark: str) -> float:
    """The share of a benchmark's cases where the parser gives the hand label."""
    chosen = [case for case in cases if case["benchmark"] == benchmark]
    return sum(read(case).answer == case["label"] for case in chosen) / len(chosen)


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
        ("1/yes", "yes"),
        ("no, there was no association between obesity", "no"),
        ("no correlation was found between the two", "no"),
        ("yes\n\nQuestion: is the other thing true?", "yes"),
        ("the answer is yes", "yes"),
        ("Answer (yes/no/maybe): no", "no"),
        ("does the school have a written food policy? yes", "yes"),
        ("the school food policy: yes", "yes"),
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
        ("1/yes/yes/yes/yes", "conflicting"),
        ("11 (1/maybe/maybe/", "conflicting"),
        ("1. yes 2. yes", "conflicting"),
        ("1) mortality: maybe 2) morbidity: yes", "conflicting"),
        ("study 1: yes; study 2:", "conflicting"),
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


def test_a_numbered_table_row_or_part_list_answers_per_part():
    for text in ("1/yes/yes/yes/yes", "100%/no/no", "1. yes 2. yes", "study 1: yes; study 2: yes"):
        assert parse_pubmedqa(text).tier == "per_part", text


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
        ("B ≡ W", ("B ⊃ W", "W ⊃ B", "B ≡ W", "Both A and B"), "C"),
        ("1.\nB", HEART, "B"),
        ("B. WHEN THE KOR", KOROTKOFF, "B"),
        ("C. 75", ("60%", "90%", "75%", "45%"), "C"),
        ("C. SOUTH KOREA", ("India, Congo", "India, Korea", "Congo, South Korea", "South Korea, India"), "C"),
        ("A.S. A", HEART, "A"),
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
        ("D. T. B", HEART, "conflicting"),
        ("B. VALID", VALIDITY, "conflicting"),
        ("INVALID. COUNTEREX", VALIDITY, "conflicting"),
        ("C. 75", ("60%", "75%", "90%", "45%"), "conflicting"),
        ("SOLUTION:", HEART, "new_section"),
        ("QUESTION: THE", HEART, "new_section"),
        ("Options:\nA.", HEART, "new_section"),
        ("GROUPLAYOUTGROUPLAYOUTGROUPLAYOUT", HEART, "degenerate"),
        ("THE GIVEN ARGUMENT", HEART, "off_format"),
        ("D-LABP", HEART, "off_format"),
        ("(~B", HEART, "off_format"),
        ("A ≡ B", HEART, "off_format"),
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
        assert parse_answer("multiple_choice", value, FIVE) == ParseResult(None, "empty", "empty")


# ----------------------------------------------------------------------------- answer kinds
def test_letters_label_any_number_of_options():
    assert letters(4) == ("A", "B", "C", "D")
    assert letters(5)[-1] == "E" and letters(26)[-1] == "Z" and len(letters(2)) == 2
    for bad in (0, 27, -1, 2.0):
        with pytest.raises(LoboError, match="options"):
            letters(bad)


@pytest.mark.parametrize(
    "text, options, answer",
    [
        ("E", FIVE, "E"),
        ("(E)", FIVE, "E"),
        ("E. the fifth", FIVE, "E"),
        ("The answer is E", FIVE, "E"),
        ("the fifth organ", FIVE, "E"),
        ("B", ("yes", "no"), "B"),
        ("no", ("yes", "no"), "B"),
        ("Z", tuple(f"option {i}" for i in range(26)), "Z"),
        ("J. option 9", tuple(f"option {i}" for i in range(26)), "J"),
    ],
)
def test_multiple_choice_reads_the_letters_of_its_options(text, options, answer):
    assert parse_answer("multiple_choice", text, options).answer == answer


def test_multiple_choice_letters_beyond_the_options_are_no_answer():
    assert parse_answer("multiple_choice", "E", HEART).answer is None
    assert parse_answer("multiple_choice", "C", ("yes", "no")).answer is None
    assert parse_answer("multiple_choice", "A, E", FIVE).reason == "conflicting"


def test_yes_no_maybe_ignores_options_and_wrappers_agree():
    assert parse_answer("yes_no_maybe", "maybe", options=("x",)).answer == "maybe"
    for text in ("yes/yes", "B. lung", "1. 1", "no, maybe", "C C C", "liver"):
        assert parse_pubmedqa(text) == parse_answer("yes_no_maybe", text)
        assert parse_response("pubmedqa", text) == parse_answer("yes_no_maybe", text)
        assert parse_mmlu(text, HEART) == parse_answer("multiple_choice", text, HEART)
        assert parse_response("mmlu", text, HEART) == parse_answer("multiple_choice", text, HEART)


def test_unknown_kinds_benchmarks_and_option_counts_raise_before_parsing():
    with pytest.raises(LoboError, match="unknown answer kind"):
        parse_answer("medqa", "A", HEART)
    with pytest.raises(LoboError, match="unknown answer kind"):
        parse_answer("mmlu", "A", HEART)  # benchmarks are named by kind here
    with pytest.raises(LoboError, match="unknown benchmark"):
        parse_response("medqa", "A", HEART)
    with pytest.raises(LoboError, match="unknown answer kind"):
        parse_reference("medqa", "A", HEART)
    for options in ((), ("only one",), None, "ABCD", tuple("x" * 27)):
        with pytest.raises(LoboError, match="2 to 26 option texts"):
            parse_answer("multiple_choice", "A", options)
        with pytest.raises(LoboError, match="2 to 26 option texts"):
            parse_reference("multiple_choice", "A", options)
    assert set(KINDS) == {"yes_no_maybe", "multiple_choice"}


# ----------------------------------------------------------------------------- the question
DEXAMETHASONE = (
    "Is dexamethasone an effective alternative to oral prednisone in the treatment of pediatric"
    " asthma exacerbations?"
)
TRANSITION = (
    "Does the radiographic transition zone correlate with the level of aganglionosis on the"
    " specimen in Hirschsprung's disease?"
)
POSTCONDITIONING = (
    "Remote ischemic postconditioning: does it protect against ischemic damage in percutaneous"
    " coronary revascularization?"
)
THROMBECTOMY = (
    "Is Aspiration Thrombectomy Beneficial in Patients Undergoing Primary Percutaneous Coronary"
    " Intervention?"
)
ARRHYTHMIAS = "Do ventricular arrhythmias in athletes subside over time?"
MIDWIVES = "Midwives' competence: is it affected by working in a rural location?"
XGC = "Xanthogranulomatous cholecystitis: a premalignant condition?"


@pytest.mark.parametrize(
    "text, question, answer, tier",
    [
        ("dexamethasone is an effective alternative", DEXAMETHASONE, "yes", "restated_question"),
        ("dexamethasone is not an effective alternative", DEXAMETHASONE, "no", "negated_question"),
        ("dexamethasone isn't an effective alternative", DEXAMETHASONE, "no", "negated_question"),
        ("the radiographic transition zone does not correlate with", TRANSITION, "no", "negated_question"),
        ("the radiographic transition zone correlates with the level", TRANSITION, "yes", "restated_question"),
        ("remote ischemic postconditioning protects against", POSTCONDITIONING, "yes", "restated_question"),
        ("aspiration thrombectomy is not", THROMBECTOMY, "no", "negated_question"),
        ("ventricular arrhythmias subside over time", ARRHYTHMIAS, "yes", "restated_question"),
        ("xgc is a premalignant condition, but", XGC, "yes", "restated_question"),
        ("yes, dexamethasone is not", DEXAMETHASONE, "yes", "leading_label"),
    ],
)
def test_a_restated_or_negated_question_commits_to_yes_or_no(text, question, answer, tier):
    assert parse_answer("yes_no_maybe", text, question=question) == ParseResult(answer, tier)


@pytest.mark.parametrize(
    "text, question",
    [
        ("is dexamethasone an effective alternative", DEXAMETHASONE),  # the question echoed
        ("dexamethasone: an effective alternative?", DEXAMETHASONE),
        ("oral prednisone in the treatment of pediatric asthma", DEXAMETHASONE),  # no verb
        ("dexamethasone is", DEXAMETHASONE),  # cut short before the claim
        ("dexamethasone is a steroid", DEXAMETHASONE),  # not the question's predicate
        ("it is not clear whether dexamethasone", DEXAMETHASONE),
        ("1. dexamethasone is an effective alternative", DEXAMETHASONE),  # numbered
        ("competent/not competent/", MIDWIVES),
        ("affected by working in a rural location", MIDWIVES),  # the clause's tail, no subject
        ("the radiographic transition zone correlates", TRANSITION),  # cut before the object
    ],
)
def test_text_that_merely_echoes_or_sounds_like_the_question_commits_to_nothing(text, question):
    assert parse_answer("yes_no_maybe", text, question=question).answer is None


def test_without_the_question_a_restatement_reads_as_today():
    text = "dexamethasone is an effective alternative"
    assert parse_answer("yes_no_maybe", text) == ParseResult(None, "off_format", "off_format")
    assert parse_pubmedqa(text, question=DEXAMETHASONE).answer == "yes"
    assert parse_response("pubmedqa", text, (), DEXAMETHASONE).answer == "yes"


def test_a_part_that_is_not_the_question_answers_only_that_part():
    assert parse_answer("yes_no_maybe", "competence in low-risk care: no").answer == "no"
    result = parse_answer("yes_no_maybe", "competence in low-risk care: no", question=MIDWIVES)
    assert result == ParseResult(None, "per_part", "conflicting")
    restated = "midwives' competence in a rural location: no"
    assert parse_answer("yes_no_maybe", restated, question=MIDWIVES).answer == "no"


def test_a_stance_with_another_label_conflicts():
    question = "Serovar specific immunity to Neisseria gonorrhoeae: does it exist?"
    result = parse_answer("yes_no_maybe", "serovar specific immunity exists/maybe", question=question)
    assert result.reason == "conflicting"


# ----------------------------------------------------------------------------- hand-labelled logs
def test_labelled_files_are_disjoint_samples_of_both_models_and_benchmarks():
    files = {path: load(path) for path in (CASES_FILE, TUNING_FILE, HOLDOUT_FILE)}
    keys = {path: {(c["benchmark"], c["response"]) for c in cases} for path, cases in files.items()}
    for path, cases in files.items():
        assert len(keys[path]) == len(cases) >= 300, path.name
        assert {(c["benchmark"], "BioMistral" in c["source"]) for c in cases} >= {
            ("pubmedqa", True), ("pubmedqa", False)
        }
        for case in cases:
            assert case["label"] in (None, "yes", "no", "maybe", "A", "B", "C", "D")
            assert (case["benchmark"] == "mmlu") == (len(case["options"]) == 4)
            assert case["question"]
    assert not keys[HOLDOUT_FILE] & (keys[CASES_FILE] | keys[TUNING_FILE])
    assert not keys[TUNING_FILE] & keys[CASES_FILE]
    holdout = files[HOLDOUT_FILE]
    for benchmark in ("pubmedqa", "mmlu"):
        assert sum(c["benchmark"] == benchmark for c in holdout) >= 150


@pytest.mark.parametrize("benchmark", ["pubmedqa", "mmlu"])
def test_parser_agrees_with_careful_human_reading_on_the_holdout(benchmark):
    assert agreement(load(HOLDOUT_FILE), benchmark) >= HOLDOUT_AGREEMENT[benchmark] - 1e-9


@pytest.mark.parametrize("benchmark", ["pubmedqa", "mmlu"])
def test_parser_agrees_with_the_tuning_and_earlier_cases(benchmark):
    assert agreement(load(TUNING_FILE), benchmark) >= TUNING_AGREEMENT[benchmark] - 1e-9
    assert agreement(load(CASES_FILE), benchmark) >= CASES_AGREEMENT[benchmark] - 1e-9


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


def test_reference_rule_by_kind_reads_the_letters_and_numbers_of_the_options():
    assert parse_reference("yes_no_maybe", "none") == "no"
    assert parse_reference("pubmedqa", "none", ("yes", "no", "maybe")) == "no"
    assert parse_reference("mmlu", "1. 1", HEART) == "A"
    assert parse_reference("multiple_choice", "E", FIVE) == "E"
    assert parse_reference("multiple_choice", "5.", FIVE) == "E"
    assert parse_reference("multiple_choice", "E", HEART) == "X"
    assert parse_reference("multiple_choice", "5.", HEART) == "X"
    assert parse_reference("multiple_choice", "the fifth organ", FIVE) == "E"
    many = tuple(f"option {i}" for i in range(26))
    assert parse_reference("multiple_choice", "(26)", many) == "Z"
    assert parse_reference("multiple_choice", "12", many) == "L"
    assert parse_reference("multiple_choice", "27 Z", many) == "Z"


def naive_reference(text, options) -> str:
    """The reference MMLU rule written another way: the first maximal run of word characters
    that is a label letter or number of the options, else the first option text found, else X."""
    response = text.strip().upper() if isinstance(text, str) else ""
    labels = letters(len(options))
    numbers = {str(i + 1): label for i, label in enumerate(labels)}
    for word in re.findall(r"\w+", response):
        if word in labels or word in numbers:
            return numbers.get(word, word)
    for label, option in zip(labels, options):
        if option.strip().upper() and option.strip().upper() in response:
            return label
    return "X"


TOKENS = st.sampled_from(["A", "b", "C", "d", "E", "1", "4", "5", "12", "26", "27", "z", "é", "_", "ß"])
JOINERS = st.sampled_from([" ", ".", "", "(", ")", "-", "’", "\n", "\u00a0", "/", "Ab"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(TOKENS, JOINERS), max_size=8), st.integers(2, 26), st.text(max_size=6))
def test_reference_rule_for_any_option_count_matches_a_naive_reading(parts, count, junk):
    text = "".join(token + joiner for token, joiner in parts) + junk
    options = tuple(f"opt{i}" for i in range(count))
    assert parse_reference("multiple_choice", text, options) == naive_reference(text, options)
    if count == 4:
        assert parse_reference_mmlu(text, options) == naive_reference(text, options)


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
            guesses_by_kind = [
                parse_reference("multiple_choice", t, o) for t, o in zip(frame["raw_response"], options)
            ]
        else:
            guesses = [parse_reference_pubmedqa(t) for t in frame["raw_response"]]
            guesses_by_kind = [parse_reference("yes_no_maybe", t) for t in frame["raw_response"]]
        assert guesses == guesses_by_kind
        mismatches = [i for i, (a, b) in enumerate(zip(guesses, frame["parsed_guess"])) if a != b]
        assert not mismatches, (path.name, mismatches[:5])
        checked += len(frame)
    assert checked == 20 * (2 * 1000 + 2 * 762)


# ----------------------------------------------------------------------------- bounded reading
def logged_responses() -> set[tuple]:
    """Every distinct (kind, response, options, question) in the reference study's logs."""
    pandas = pytest.importorskip("pandas")
    work = set()
    for path in sorted(shared_path("reference-logs").glob("*_*/*_percent.csv.gz")):
        frame = pandas.read_csv(path, keep_default_na=False, dtype=str)
        multiple_choice = path.parent.name.endswith("_MMLU")
        for prompt, text in zip(frame["prompt"], frame["raw_response"]):
            if multiple_choice:
                work.add(("multiple_choice", text, OPTIONS_IN_PROMPT.search(prompt).groups(), None))
            else:
                work.add(("yes_no_maybe", text, (), PUBMEDQA_QUESTION.search(prompt).group(1)))
    return work


def test_the_read_bound_changes_no_logged_response(monkeypatch):
    """All 70,480 logged responses (42,172 distinct with their items) fit in READ_LIMIT, and
    parse the same with the bound lifted: bounding the work changes no real result."""
    work = logged_responses()
    assert max(len(text.lstrip()) for _, text, _, _ in work) <= READ_LIMIT
    bounded = [parse_answer(*item[:3], question=item[3]) for item in work]
    bounded_reference = [parse_reference(*item[:3]) for item in work]
    monkeypatch.setattr(parsing, "READ_LIMIT", 10**9)
    assert bounded == [parse_answer(*item[:3], question=item[3]) for item in work]
    assert bounded_reference == [parse_reference(*item[:3]) for item in work]


FIRST_LINES = st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=40).filter(
    lambda text: any(ch.isalpha() for ch in text)
)
ANSWERISH = st.sampled_from(["yes", "no", "maybe", "A", "B.", "(C)", "the answer is D", "heart", "1/"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(ANSWERISH, FIRST_LINES), min_size=1, max_size=4), st.text(max_size=30))
def test_the_answer_depends_only_on_the_first_line_whatever_follows(first, tail):
    """Only the first segment can hold the answer, so reading a bounded prefix is safe: text
    after the first line break, up to a megabyte of it, never changes the answer."""
    line = " ".join(first)
    if not any(ch.isalpha() for ch in line):
        return
    long_tail = "\n" + (tail + "yes B\n") * (1_000_000 // (len(tail) + 6))
    for kind, options, question in (
        ("yes_no_maybe", (), None),
        ("yes_no_maybe", (), DEXAMETHASONE),
        ("multiple_choice", HEART, None),
        ("multiple_choice", ("1", "22", "yes", "heart and lung"), None),
    ):
        alone = parse_answer(kind, line, options, question)
        followed = parse_answer(kind, line + long_tail, options, question)
        assert alone.answer == followed.answer, (kind, line)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab ’“ß\t\nİﬁ.", max_size=80), st.integers(0, 30))
def test_a_normalised_prefix_is_the_start_of_the_normalised_text(text, length):
    assert parsing._normalised_prefix(text, length) == parsing._normalise(text)[: length + 1]


OPTION_WORDS = st.sampled_from(["1", "22", "a", "ab", "heart", "Heart rate", "héart", "’s", "75%"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(OPTION_WORDS, min_size=4, max_size=4),
    st.lists(st.one_of(OPTION_WORDS, st.sampled_from([" ", "  ", ".", "x", "\ufffd", "9"])), max_size=12),
)
def test_option_fits_read_from_a_prefix_equal_fits_of_the_whole_response(options, pieces):
    texts = parsing._option_texts(options, 4)
    response = "".join(pieces)
    whole = parsing._normalise(response.split("\ufffd", 1)[0])
    assert parsing._fits(response, texts) == [parsing._fit(whole, option) for option in texts]


# ----------------------------------------------------------------------------- robustness
def _assert_well_formed(result: ParseResult, labels: tuple[str, ...]) -> None:
    assert result.tier in TIERS
    if result.answer is None:
        assert result.reason in INVALID_REASONS
    else:
        assert result.answer in labels and result.reason is None


@settings(max_examples=300, deadline=None)
@given(st.text(), st.one_of(st.none(), st.text(max_size=80)))
def test_yes_no_maybe_never_raises(text, question):
    _assert_well_formed(parse_answer("yes_no_maybe", text, question=question), ("yes", "no", "maybe"))
    assert parse_reference_pubmedqa(text) in ("yes", "no", "maybe")


@settings(max_examples=300, deadline=None)
@given(st.text(), st.lists(st.text(), min_size=2, max_size=26))
def test_multiple_choice_never_raises(text, options):
    labels = letters(len(options))
    _assert_well_formed(parse_answer("multiple_choice", text, options), labels)
    assert parse_reference("multiple_choice", text, options) in labels + ("X",)


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


# ----------------------------------------------------------------------------- speed
def test_parses_40k_responses_in_under_5_seconds():
    cases = load(CASES_FILE) + load(TUNING_FILE)
    work = [(KIND[c["benchmark"]], c["response"], c["options"], c["question"]) for c in cases]
    work = (work * (40_000 // len(work) + 1))[:40_000]
    start = time.perf_counter()
    for kind, text, options, question in work:
        parse_answer(kind, text, options, question)
    assert time.perf_counter() - start < 5.0


MEGABYTE = 1_000_000


def _megabyte(unit: str) -> str:
    return (unit * (MEGABYTE // len(unit) + 1))[:MEGABYTE]


ADVERSARIAL = {
    "answer run": _megabyte("answer "),
    "the answer is": _megabyte("the answer is "),
    "option run": _megabyte("option "),
    "letters": _megabyte("A "),
    "letter list": _megabyte("A, B, "),
    "dense letters": _megabyte("ABAB"),
    "label list": _megabyte("yes/no/maybe/"),
    "no no": _megabyte("no "),
    "table row": "1/" + _megabyte("yes/"),
    "whitespace": " " * (MEGABYTE - 3) + "yes",
    "blank lines": "\n" * (MEGABYTE - 1) + "B",
    "noise lines": _megabyte("1.\n"),
    "one word": "x" * MEGABYTE,
    "repeat 20": _megabyte("abcdefghijklmnopqrst"),
    "repeat 21": _megabyte("abcdefghijklmnopqrstu"),
    "near repeat": _megabyte("abaabbaaabbb"),
    "question marks": _megabyte("? "),
    "colons": _megabyte("a: "),
    "restated questions": _megabyte("does it? "),
    "brackets": "(" * MEGABYTE,
    "numbering": _megabyte("1/"),
    "option texts": _megabyte("heart lung "),
    "digits": _megabyte("1 2 "),
    "assertions": _megabyte("dexamethasone is an effective alternative "),
    "unicode": _megabyte("ßİ’\u00ad\ufffd"),
}
SHORT = ("1", "2", "a", "yes")
MANY = tuple(f"option {i}" for i in range(26))
PARSERS = {
    "yes_no_maybe": lambda text: parse_answer("yes_no_maybe", text),
    "yes_no_maybe + question": lambda text: parse_answer("yes_no_maybe", text, question=DEXAMETHASONE),
    "multiple_choice": lambda text: parse_answer("multiple_choice", text, HEART),
    "multiple_choice short options": lambda text: parse_answer("multiple_choice", text, SHORT),
    "multiple_choice 26 options": lambda text: parse_answer("multiple_choice", text, MANY),
    "parse_pubmedqa": parse_pubmedqa,
    "parse_mmlu": lambda text: parse_mmlu(text, HEART),
    "reference yes_no_maybe": lambda text: parse_reference("yes_no_maybe", text),
    "reference multiple_choice": lambda text: parse_reference("multiple_choice", text, HEART),
    "reference 26 options": lambda text: parse_reference("multiple_choice", text, MANY),
    "reference mmlu": lambda text: parse_reference_mmlu(text, SHORT),
}


@pytest.mark.parametrize("name", list(PARSERS))
def test_every_parser_reads_a_megabyte_of_adversarial_text_in_under_50_ms(name):
    """Linear time with a bounded read: each 1 MB adversarial response parses in < 50 ms (the best
    of 3 runs, a generous guard; the bench figures are in the report)."""
    parse = PARSERS[name]
    slow = {}
    for label, text in ADVERSARIAL.items():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            parse(text)
            times.append(time.perf_counter() - start)
        if min(times) >= 0.05:
            slow[label] = round(min(times), 3)
    assert not slow, slow
