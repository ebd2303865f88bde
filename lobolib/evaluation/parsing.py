"""The multi-tier answer parser: what a generated response commits to, and why it is invalid if not.

A response is read the way a careful person reads it. The prompt ends with "Answer (yes/no/maybe):"
(PubMedQA) or "Answer:" (MMLU), so a response usually starts with its answer (" yes", " B",
" A. heart", "(C)", "The answer is D") and, being only 5-10 tokens long, is often cut short.
Rules are tried in a fixed order (see `TIERS`); the first that decides gives the `ParseResult`.

Only the first *segment* (the first line with text) can hold the answer: what follows a line
break is the model continuing the document ("Maybe\\nsource of funding: none" -> maybe).
Characters without letters at the very start (numbering, bullets, brackets, quotes: "1/", "(", "- ",
also on lines of their own: "1.\\nB") are skipped; after numbering with digits only a label that
stands alone counts ("1/yes/yes" -> yes, "1/no patients" -> nothing).
Later labels count only as conflicts: "yes, maybe" and "A. B." commit to nothing, while a label
after words ("insulin resistance (yes/yes/", "SIBLING B. B") is not an answer, except after an
explicit phrase ("the answer is B") or, in PubMedQA, a restated question ("does it? yes").

The reference study's own scoring rules ("BioMedical LLM Lobotomy", Borzello & Dalvi, 2026) are
reproduced exactly by `parse_reference_pubmedqa` / `parse_reference_mmlu`, for comparison only:
they read "no" inside "none", score garbage as "maybe" and read "1. 1" as option A.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from lobolib.errors import LoboError


@dataclass(frozen=True)
class ParseResult:
    """What a response commits to: `answer` ("yes"/"no"/"maybe" or "A".."D", None if invalid),
    the `tier` (rule) that decided, and the `reason` it is invalid (None when valid)."""

    answer: str | None
    tier: str
    reason: str | None = None


TIERS = {
    "empty": "no text, or only whitespace (invalid: empty)",
    "leading_label": "a standalone label starts the response: 'yes, but ...', 'B', '(C)', "
    "'A. heart'",
    "repeated_label": "the first segment names one label several times: 'C C C', 'yes/yes/yes'",
    "label_conflict": "the first segment names different labels: 'yes/no', 'A, B, C' "
    "(invalid: conflicting)",
    "answer_phrase": "an explicit phrase names it: 'the answer is B', 'Answer: C', 'option A'",
    "option_text": "the response starts with the full text of one option: 'ATP'",
    "option_prefix": "the response is a cut-short start (4+ characters, or 3 cutting a word short) "
    "of exactly one option's text",
    "option_conflict": "the text fits several options equally, or a label is followed by another "
    "option's text: 'B. Valid' where A is 'Valid' (invalid: conflicting)",
    "new_section": "a new section or prompt echo instead of an answer: 'Question:', 'SOLUTION:', "
    "'## 1. introduction' (invalid: new_section)",
    "degenerate": "noise: no letters, repeated fragments, control or replacement characters "
    "(invalid: degenerate)",
    "off_format": "text that commits to nothing recognisable (invalid: off_format)",
}

INVALID_REASONS = {
    "empty": "the response is empty or only whitespace",
    "degenerate": "noise: no letters, a fragment repeated, or non-text characters",
    "new_section": "a prompt echo or a new section ('Question:', 'Context:', 'Options:', "
    "'SOLUTION:')",
    "conflicting": "commits to several different answers, or its text fits several options",
    "off_format": "commits to nothing recognisable",
}

PUBMEDQA_LABELS = ("yes", "no", "maybe")
MMLU_LABELS = ("A", "B", "C", "D")

# Leading characters without letters (numbering, bullets, brackets, quotes) and the rest.
_NOISE_PREFIX = re.compile(r"[\W\d_]*")
_DIGIT = re.compile(r"\d")
_WORD_NEXT = re.compile(r"\s+[^\W\d_]")  # whitespace, then a letter: a word follows

_PUBMEDQA_LABEL = re.compile(r"(?<![^\W_])(yes|no|maybe)(?![^\W_])", re.IGNORECASE)
# "no data", "no response": the determiner "no" in a refusal, not the answer "no".
_NO_NON_ANSWER = re.compile(
    r"no\s+(?:data|answers?|responses?|information|results?|comments?|idea|conclusions?)\b",
    re.IGNORECASE,
)
# An MMLU letter counts only when followed by a boundary: not a letter, digit, hyphen or apostrophe
# ("D-LABP", "A's" and "B-cells" are words).
_MMLU_LETTER = re.compile(r"([abcd])(?![^\W_]|[-'’])", re.IGNORECASE)
_MMLU_LIST_SEPARATOR = re.compile(r"(?:[\s.,;:/()\[\]*&|+]|\b(?:and|or)\b)*", re.IGNORECASE)
_MMLU_LABEL_SEPARATOR = re.compile(r"(?:[\s.,;:)\]*]|-(?=\s))*")  # not the minus of "C. -40"

_ANSWER_PHRASE = re.compile(
    r"(?:\b(?:the\s+)?(?:final\s+|correct\s+|right\s+|best\s+)?answer"
    r"(?:\s*\(\s*yes\s*/\s*no\s*/\s*maybe\s*\))?(?:\s+(?:is|would\s+be|will\s+be))?\s*[:=-]?"
    r"|\b(?:options?|choices?)\b\s*[:=-]?)\s*",
    re.IGNORECASE,
)
# PubMedQA responses often restate the question, then answer: "does x matter? yes", "x: no".
_PUBMEDQA_PHRASE = re.compile(rf"{_ANSWER_PHRASE.pattern}|[?:]\s*", re.IGNORECASE)
# A new section: a prompt echo ("Question", "Context", "Options"), a known heading followed by a
# colon or cut off ("SOLUTION:", "EXPLAN", "source of funding:"), or any short "header:".
_PROMPT_ECHO_WORDS = r"question|context|options"
_HEADING_WORDS = (
    r"answer|solution|solut\w*|explanation|explan\w*|source|funding|background|objectives?|aims?"
    r"|methods?|results?|conclusions?|introduction|abstract|keywords?|comments?|references?|notes?"
    r"|cit(?:e|ation)|study\s+(?:design|type)|discussion|hint|step|summary|instructions?"
)
_NEW_SECTION = re.compile(
    rf"(?:{_PROMPT_ECHO_WORDS})\b|(?:{_HEADING_WORDS})\s*(?::|$)"
    rf"|[^\W\d_][\w'’ /()-]{{0,30}}?:(?:\s|$)",
    re.IGNORECASE,
)
_REPEATED_FRAGMENT = re.compile(r"(.{1,20}?)\1{2,}", re.DOTALL)
_SPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\A(?:[^\w\n]*\n)+")
_NON_TEXT = ("Cc", "Cf", "Co", "Cn", "Cs")  # control, format (soft hyphen), private, unassigned
_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"'})
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NUMBER_GOES_ON = re.compile(r"[.,:]?\d")
_OPTION_PREFIX_MIN = 4  # a cut-short option text must have at least this many characters


# ----------------------------------------------------------------------------- shared helpers
def _as_text(text) -> str:
    """The response as a str; None, NaN and other non-str values read as empty."""
    return text if isinstance(text, str) else ""


def _first_segment(text: str) -> str:
    """The first line that holds a letter or digit (the rest is the model going on writing)."""
    return _BLANK_LINES.sub("", text.strip()).split("\n", 1)[0].strip()


def _label_start(text: str) -> tuple[str, str]:
    """(leading characters without letters, the first line after them): the label tiers read
    "1.\\nB" as ('1.\\n', 'B'), so numbering or punctuation on lines of their own is skipped too."""
    noise, body = _split_noise(text.strip())
    return noise, body.split("\n", 1)[0].strip()


def _split_noise(segment: str) -> tuple[str, str]:
    """(leading characters without letters, the rest): '1/yes/yes' -> ('1/', 'yes/yes')."""
    noise = _NOISE_PREFIX.match(segment).group(0)
    return noise, segment[len(noise) :]


def _normalise(text: str) -> str:
    """Case-folded, curly quotes straightened, whitespace collapsed: for comparing option texts."""
    return _SPACE.sub(" ", text.translate(_QUOTES)).strip().casefold()


def _decide(labels: list[str], tier: str) -> ParseResult:
    """One label -> `tier`; one label several times -> repeated_label; several -> conflicting."""
    if len(set(labels)) > 1:
        return ParseResult(None, "label_conflict", "conflicting")
    return ParseResult(labels[0], "repeated_label" if len(labels) > 1 else tier)


def _invalid_tier(text: str) -> ParseResult:
    """The last tiers, for a response with no answer: new section, degenerate or off format."""
    if text.lstrip().startswith("#") or _NEW_SECTION.match(_label_start(text)[1]):
        return ParseResult(None, "new_section", "new_section")
    if _is_degenerate(text):
        return ParseResult(None, "degenerate", "degenerate")
    return ParseResult(None, "off_format", "off_format")


def _is_degenerate(text: str) -> bool:
    """Noise: no letters, control/format/replacement characters, or mostly a repeated fragment."""
    compact = _SPACE.sub("", text)
    if not any(ch.isalpha() for ch in compact):
        return True
    if any(ch == "\ufffd" or unicodedata.category(ch) in _NON_TEXT for ch in compact):
        return True
    repeated = sum(len(m.group(0)) for m in _REPEATED_FRAGMENT.finditer(compact))
    return repeated >= 0.5 * len(compact)


# ----------------------------------------------------------------------------- PubMedQA
def parse_pubmedqa(text) -> ParseResult:
    """Read a PubMedQA response as "yes"/"no"/"maybe", or say why it commits to none of them.

    Tiers in order: empty, leading label (with the rest of the first segment checked for other
    labels: "yes/no" is conflicting, "yes/yes/yes" is yes), answer phrase, new section,
    degenerate, off format. "none", "not", "know", "nothing" and "nobody" are not "no".
    """
    text = _as_text(text)
    if not text.strip():
        return ParseResult(None, "empty", "empty")
    noise, body = _label_start(text)
    result = _pubmedqa_leading_label(noise, body)
    if result is None:
        result = _pubmedqa_answer_phrase(body)
    return result if result is not None else _invalid_tier(text)


def _pubmedqa_leading_label(noise: str, body: str) -> ParseResult | None:
    """A yes/no/maybe that starts the segment, checked against every other label in it."""
    first = _PUBMEDQA_LABEL.match(body)
    if first is None or _NO_NON_ANSWER.match(body):
        return None
    if _DIGIT.search(noise) and _WORD_NEXT.match(body, first.end()):
        return None  # "1/no patients": after numbering only a standalone label counts
    return _decide(_pubmedqa_labels(body), "leading_label")


def _pubmedqa_labels(body: str) -> list[str]:
    """Every label in the segment, except "no" used as a determiner ("found no difference")."""
    labels = []
    for match in _PUBMEDQA_LABEL.finditer(body):
        label = match.group(1).lower()
        if labels and label == "no" and _WORD_NEXT.match(body, match.end()):
            continue
        labels.append(label)
    return labels


def _pubmedqa_answer_phrase(segment: str) -> ParseResult | None:
    """'the answer is yes', 'answer: no', 'answer (yes/no/maybe): maybe', or a label right after a
    question mark or colon ('does x matter? yes') anywhere in the segment."""
    for phrase in _PUBMEDQA_PHRASE.finditer(segment):
        rest = segment[phrase.end() :]
        if _PUBMEDQA_LABEL.match(rest):
            return _decide(_pubmedqa_labels(rest), "answer_phrase")
    return None


# ----------------------------------------------------------------------------- MMLU
def parse_mmlu(text, options: Sequence[str]) -> ParseResult:
    """Read an MMLU response as "A".."D", or say why it commits to none of them.

    `options` are the four option texts (matched case-insensitively, whitespace-normalised).
    Tiers in order: empty, leading label ("B", "(B)", "B)", "A. heart"; a following label list
    such as "A, B" is conflicting, "C C C" is C; a label followed by another option's text is
    conflicting), answer phrase ("The answer is B", "Answer: C", "Option A"), option text (the full
    text of one option, or a cut-short start of exactly one), new section, degenerate, off format.
    The article in "A person who ..." is not option A; "1. 1" is not an option unless "1" is an
    option's text.
    """
    text = _as_text(text)
    if not text.strip():
        return ParseResult(None, "empty", "empty")
    texts = _option_texts(options)
    noise, body = _label_start(text)
    segment = _first_segment(text)
    result = None
    if "\n" in noise:  # lines without letters were skipped; the first may be an option ("1%\nC")
        result = _option_match(segment, texts)
    if result is None:
        result = _mmlu_leading_label(noise, body, texts)
    if result is None:
        result = _mmlu_answer_phrase(body, texts)
    if result is None:
        result = _option_match(segment, texts) or _option_match(body, texts)
    return result if result is not None else _invalid_tier(text)


def _option_texts(options) -> list[str]:
    """The option texts normalised for comparison, without a final period ("ATP." reads "atp");
    anything unusable reads as an empty option."""
    try:
        items = list(options)[:4] if options is not None and not isinstance(options, str) else []
    except TypeError:
        items = []
    items += [""] * (4 - len(items))
    return [_normalise(item).rstrip(". ") if isinstance(item, str) else "" for item in items]


def _mmlu_leading_label(noise: str, body: str, texts: list[str]) -> ParseResult | None:
    """A letter A-D that starts the segment (not an article, not the start of an option's text)."""
    first = _MMLU_LETTER.match(body)
    if first is None:
        return None
    if _is_article(body, first.end()):
        return None  # "A person who ...": an article, or a word after the letter
    if body[first.end() : first.end() + 1].isspace() and max(_fits(body, texts)) > 1:
        return None  # "A 12.5 microgram patch": the start of an option's own text
    if _DIGIT.search(noise) and _WORD_NEXT.match(body, first.end()):
        return None  # after numbering only a standalone letter counts
    labels, end = _mmlu_label_list(body)
    result = _decide(labels, "leading_label")
    if result.answer is not None and _text_names_other_option(body[end:], result.answer, texts):
        return ParseResult(None, "option_conflict", "conflicting")
    return result


def _is_article(body: str, position: int) -> bool:
    """Whether the letter ending at `position` is the article "a": followed by a word ("A person"),
    not by another standalone letter ("A or B", "A A")."""
    if body[position - 1] not in "aA" or not _WORD_NEXT.match(body, position):
        return False
    separator = _MMLU_LIST_SEPARATOR.match(body, position)
    return _MMLU_LETTER.match(body, separator.end()) is None


def _mmlu_label_list(body: str) -> tuple[list[str], int]:
    """The run of letters that starts `body` ('A. B. B' -> [A, B, B]) and where it ends."""
    labels, end = [], 0
    position = 0
    while True:
        letter = _MMLU_LETTER.match(body, position)
        if letter is None or labels and _is_article(body, letter.end()):
            return labels, end
        labels.append(letter.group(1).upper())
        end = letter.end()
        position = _MMLU_LIST_SEPARATOR.match(body, end).end()
        if position == end:
            return labels, end


def _text_names_other_option(rest: str, label: str, texts: list[str]) -> bool:
    """Whether the text after a label is some other option's text and not the label's own."""
    rest = rest.split("\ufffd", 1)[0]
    rest = _normalise(rest[_MMLU_LABEL_SEPARATOR.match(rest).end() :]).rstrip(".,;: ")
    own = texts[MMLU_LABELS.index(label)]
    if own.startswith(rest) or _fit(rest, own):
        return False
    return any(_fit(rest, option) for option in texts)


def _mmlu_answer_phrase(segment: str, texts: list[str]) -> ParseResult | None:
    """'The answer is B', 'ANSWER: C', 'Option A', 'answer: glycogen' anywhere in the segment."""
    for phrase in _ANSWER_PHRASE.finditer(segment):
        rest = segment[phrase.end() :]
        if not rest:
            continue
        result = _mmlu_leading_label(*_split_noise(rest), texts) or _option_match(rest, texts)
        if result is not None:
            if result.answer is None:
                return result
            return ParseResult(result.answer, "answer_phrase")
    return None


def _fit(response: str, option: str) -> int:
    """How far a normalised response and option text agree: len(option) when the response starts
    with the whole option (then a boundary), len(response) when it is a cut-short start of the
    option (4+ characters, 3 that cut a word short: "hyd" of "hydrolase" but not "the", or a whole
    number of 2+ digits: "75" of "75%" but not of "750"), else 0.
    Options of one or two characters fit only a response without further words."""
    if not option or not response:
        return 0
    if response.startswith(option):
        after = response[len(option) :]
        if after[:1].isalnum() or len(option) <= 2 and any(ch.isalpha() for ch in after):
            return 0
        return len(option)
    if not option.startswith(response):
        return 0
    after = option[len(response) :]
    cuts_word = response[-1].isalnum() and after[0].isalnum()
    number = len(response) > 1 and _NUMBER.fullmatch(response) and not _NUMBER_GOES_ON.match(after)
    long_enough = len(response) >= _OPTION_PREFIX_MIN
    if long_enough or len(response) == _OPTION_PREFIX_MIN - 1 and cuts_word or number:
        return len(response)
    return 0


def _fits(response: str, texts: list[str]) -> list[int]:
    """`_fit` of the response (up to any replacement character) with each option text."""
    response = _normalise(response.split("\ufffd", 1)[0])
    return [_fit(response, option) for option in texts]


def _option_match(response: str, texts: list[str]) -> ParseResult | None:
    """The option whose text the response starts with or cuts short (the longest agreement wins);
    several equally -> conflicting, unless one of them is matched whole ("glucose" over
    "glucose-6-phosphate")."""
    fits = _fits(response, texts)
    best = max(fits)
    if best == 0:
        return None
    leaders = [index for index, fit in enumerate(fits) if fit == best]
    whole = [index for index in leaders if len(texts[index]) == best]
    if len(leaders) == 1:
        index = leaders[0]
    elif len(whole) == 1:
        index = whole[0]
    else:
        return ParseResult(None, "option_conflict", "conflicting")
    tier = "option_text" if len(texts[index]) == best else "option_prefix"
    return ParseResult(MMLU_LABELS[index], tier)


# ----------------------------------------------------------------------------- dispatch
def parse_response(benchmark: str, text, options: Sequence[str] = ()) -> ParseResult:
    """`parse_pubmedqa(text)` or `parse_mmlu(text, options)` by benchmark name."""
    if benchmark == "pubmedqa":
        return parse_pubmedqa(text)
    if benchmark == "mmlu":
        return parse_mmlu(text, options)
    raise LoboError(f"unknown benchmark {benchmark!r}: use 'pubmedqa' or 'mmlu'")


# ----------------------------------------------------------------------------- reference study
_REFERENCE_MMLU_LABEL = re.compile(r"\b([ABCD1-4])\b")
_REFERENCE_DIGITS = {"1": "A", "2": "B", "3": "C", "4": "D"}


def parse_reference_pubmedqa(text) -> str:
    """The reference study's PubMedQA rule, exactly: the lower-cased, stripped response -> "yes"
    if it contains "yes", else "no" if it contains "no" (also inside "none", "not", "know"), else
    "maybe" (also for empty or garbage responses)."""
    response = _as_text(text).strip().lower()
    if "yes" in response:
        return "yes"
    if "no" in response:
        return "no"
    return "maybe"


def parse_reference_mmlu(text, options: Sequence[str]) -> str:
    """The reference study's MMLU rule, exactly: the upper-cased, stripped response -> the first
    standalone A/B/C/D or 1-4 (regex word boundary; 1-4 read as A-D), else the first option whose
    stripped, upper-cased text occurs in it, else "X"."""
    response = _as_text(text).strip().upper()
    match = _REFERENCE_MMLU_LABEL.search(response)
    if match:
        return _REFERENCE_DIGITS.get(match.group(1), match.group(1))
    for label, option in zip(MMLU_LABELS, options if options is not None else ()):
        option_text = str(option).strip().upper()
        if option_text and option_text in response:
            return label
    return "X"


def parse_reference(benchmark: str, text, options: Sequence[str] = ()) -> str:
    """`parse_reference_pubmedqa(text)` or `parse_reference_mmlu(text, options)` by benchmark."""
    if benchmark == "pubmedqa":
        return parse_reference_pubmedqa(text)
    if benchmark == "mmlu":
        return parse_reference_mmlu(text, options)
    raise LoboError(f"unknown benchmark {benchmark!r}: use 'pubmedqa' or 'mmlu'")


def parse_answer(kind: str, text, options: Sequence[str] = (), question: str | None = None) -> ParseResult:
    """What a response of a benchmark of `kind` commits to."""
    if kind == "yes_no_maybe":
        return parse_pubmedqa(text)
    if kind == "multiple_choice":
        return parse_mmlu(text, options)
    raise LoboError(f"unknown benchmark kind {kind!r}: use 'yes_no_maybe' or 'multiple_choice'")
