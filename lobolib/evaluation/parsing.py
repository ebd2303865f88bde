"""The multi-tier answer parser: what a generated response commits to, and why it is invalid if not.

An item's answer has a *kind*: "yes_no_maybe" (PubMedQA) or "multiple_choice" with N options
labelled A, B, C, ... (N = 2..26: MMLU, MedQA, MedMCQA, any declared file).
`parse_answer(kind, text, options, question)` reads a response; `parse_pubmedqa`, `parse_mmlu`
and `parse_response(benchmark, ...)` are the same parser named by benchmark.

A response is read the way a careful person reads it. The prompt ends with "Answer (yes/no/maybe):"
or "Answer:", so a response usually starts with its answer (" yes", " B", " A. heart", "(C)", "The
answer is D") and, being only 5-10 tokens long, is often cut short. Rules are tried in a fixed order
(see `TIERS`); the first that decides gives the `ParseResult`.

Only the first *segment* (the first line with text) can hold the answer: what follows a line
break is the model continuing the document ("Maybe\\nsource of funding: none" -> maybe). So only
the first `READ_LIMIT` characters after leading whitespace are read, which keeps every parse short
on any input (the reference study's 70,480 logged responses are at most 112 characters long).
Characters without letters at the very start (numbering, bullets, brackets, quotes: "1/", "(", "- ",
also on lines of their own: "1.\\nB") are skipped; after numbering with digits only a label that
stands alone counts ("1/no patients" -> nothing), and a numbered row of cells or parts answers per
part ("1/yes/yes/yes", "1) mortality: maybe 2) ..." -> nothing).
Later labels count only as conflicts: "yes, maybe" and "A. B." commit to nothing, while a label
after words ("insulin resistance (yes/yes/", "SIBLING B. B") is not an answer, except after an
explicit phrase ("the answer is B") or, for yes/no/maybe, a restated question ("does it? yes").
Given the item's question, a yes/no/maybe response without a label that restates the question's
proposition as an assertion commits to yes, one that negates it to no, and "part: label" counts only
when the part is the question's own words ("competence in low-risk care: no" answers a part).

The reference study's own scoring rules ("BioMedical LLM Lobotomy", Borzello & Dalvi, 2026) are
reproduced exactly by `parse_reference` (`parse_reference_pubmedqa` / `parse_reference_mmlu`), for
comparison only: they read "no" inside "none", score garbage as "maybe" and read "1. 1" as option A.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from lobolib.errors import LoboError


@dataclass(frozen=True)
class ParseResult:
    """What a response commits to: `answer` ("yes"/"no"/"maybe" or a letter "A".., None if
    invalid), the `tier` (rule) that decided, and the `reason` it is invalid (None when valid)."""

    answer: str | None
    tier: str
    reason: str | None = None


KINDS = ("yes_no_maybe", "multiple_choice")
BENCHMARK_KINDS = {"pubmedqa": "yes_no_maybe", "mmlu": "multiple_choice"}
YES_NO_MAYBE = ("yes", "no", "maybe")
MAX_OPTIONS = 26
READ_LIMIT = 2048  # characters read after leading whitespace: far beyond any 5-10 token answer

TIERS = {
    "empty": "no text, or only whitespace (invalid: empty)",
    "leading_label": "a standalone label starts the response: 'yes, but ...', 'B', '(C)', "
    "'A. heart'",
    "repeated_label": "the first segment names one label several times: 'C C C', 'yes/yes/yes'",
    "label_conflict": "the first segment names different labels: 'yes/no', 'A, B, C', 'D. T. B' "
    "(invalid: conflicting)",
    "per_part": "answers per part or per table cell, not the question as a whole: "
    "'1/yes/yes/yes', 'study 1: yes; study 2:', and with the question 'competence in low-risk "
    "care: no' where the part is not the question's own words (invalid: conflicting)",
    "answer_phrase": "an explicit phrase names it: 'the answer is B', 'Answer: C', 'option A'; "
    "yes/no/maybe also after a restated question: 'does x matter? yes', 'x: no'",
    "restated_question": "yes/no/maybe with the question, no label: the first segment asserts the "
    "question's proposition in its own words: 'dexamethasone is an effective alternative' for "
    "'Is dexamethasone an effective alternative ...?' -> yes",
    "negated_question": "yes/no/maybe with the question, no label: the assertion with a negation "
    "on the question's predicate: 'the transition zone does not correlate with' for 'Does the "
    "transition zone correlate with ...?' -> no",
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
    "conflicting": "commits to several answers (different labels, or one per part or table "
    "cell), or its text fits several options",
    "off_format": "commits to nothing recognisable",
}


def letters(n: int) -> tuple[str, ...]:
    """The labels of `n` options: letters(4) == ("A", "B", "C", "D")."""
    if not isinstance(n, int) or not 1 <= n <= MAX_OPTIONS:
        raise LoboError(f"an item has 1 to {MAX_OPTIONS} options (labels A..Z), not {n!r}")
    return tuple(string.ascii_uppercase[:n])


PUBMEDQA_LABELS = YES_NO_MAYBE
MMLU_LABELS = letters(4)

# Leading characters without letters (numbering, bullets, brackets, quotes) and the rest.
_NOISE_PREFIX = re.compile(r"[\W\d_]*")
_DIGIT = re.compile(r"\d")
_WORD_NEXT = re.compile(r"\s+[^\W\d_]")  # whitespace, then a letter: a word follows

_YES_NO_MAYBE_LABEL = re.compile(r"(?<![^\W_])(yes|no|maybe)(?![^\W_])", re.IGNORECASE)
# "no data", "no response": the determiner "no" in a refusal, not the answer "no".
_NO_NON_ANSWER = re.compile(
    r"no\s+(?:data|answers?|responses?|information|results?|comments?|idea|conclusions?)\b",
    re.IGNORECASE,
)
# After numbering, a label followed by a further cell or part: a table row or a numbered list.
_NEXT_CELL = re.compile(r"\s*(?:/|[;,]?\s*\(?\d+[.)/:]\s*\S)")
# A further "part:" header or numbered part later in the segment: "; study 2:", " 2) ".
_NEXT_PART = re.compile(r"[;,.]?\s*(?:\(?\d+[.)]\s+\S|[^\W\d_][\w'’ /()-]{0,30}?\s?\d*:(?:\s|$))")

_ANSWER_PHRASE = re.compile(
    r"(?:\b(?:the\s+)?(?:final\s+|correct\s+|right\s+|best\s+)?answer"
    r"(?:\s*\(\s*yes\s*/\s*no\s*/\s*maybe\s*\))?(?:\s+(?:is|would\s+be|will\s+be))?\s*[:=-]?"
    r"|\b(?:options?|choices?)\b\s*[:=-]?)\s*",
    re.IGNORECASE,
)
# Yes/no/maybe responses often restate the question, then answer: "does x matter? yes", "x: no".
_RESTATED_PHRASE = re.compile(rf"{_ANSWER_PHRASE.pattern}|(?P<mark>[?:])\s*", re.IGNORECASE)
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
_QUOTES = (("’", "'"), ("‘", "'"), ("“", '"'), ("”", '"'))
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NUMBER_GOES_ON = re.compile(r"[.,:]?\d")
_OPTION_PREFIX_MIN = 4  # a cut-short option text must have at least this many characters
_SHORT_PROBE = 64  # characters read first: do words follow a one- or two-character option?


# ----------------------------------------------------------------------------- entry points
def parse_answer(kind: str, text, options: Sequence[str] = (), question: str | None = None):
    """Read a response as the answer of an item of this `kind`, or say why it commits to none.

    "yes_no_maybe": "yes"/"no"/"maybe"; `options` are ignored and `question` (the item's question
    text), when given, lets a response that restates or negates it commit to yes or no.
    "multiple_choice": a letter of the item's `options` (2..26 texts, labelled A, B, C, ...).
    Unknown kinds and option counts outside 2..26 raise LoboError.
    """
    if kind == "yes_no_maybe":
        return _parse_yes_no_maybe(text, question)
    if kind == "multiple_choice":
        return _parse_multiple_choice(text, _option_texts(options, _option_count(options)))
    raise LoboError(f"unknown answer kind {kind!r}: use one of {', '.join(KINDS)}")


def parse_pubmedqa(text, question: str | None = None) -> ParseResult:
    """`parse_answer("yes_no_maybe", text, question=question)`: a PubMedQA response."""
    return _parse_yes_no_maybe(text, question)


def parse_mmlu(text, options: Sequence[str]) -> ParseResult:
    """A four-option MMLU response as "A".."D": `parse_answer("multiple_choice", ...)` with the
    first four `options`, missing or unusable ones read as empty texts."""
    return _parse_multiple_choice(text, _option_texts(options, 4))


def parse_response(
    benchmark: str, text, options: Sequence[str] = (), question: str | None = None
) -> ParseResult:
    """`parse_pubmedqa(text, question)` or `parse_mmlu(text, options)` by benchmark name."""
    if benchmark == "pubmedqa":
        return parse_pubmedqa(text, question)
    if benchmark == "mmlu":
        return parse_mmlu(text, options)
    raise LoboError(f"unknown benchmark {benchmark!r}: use 'pubmedqa' or 'mmlu'")


def _option_count(options) -> int:
    """How many options an item has (2..26), or LoboError."""
    try:
        count = len(options) if options is not None and not isinstance(options, str) else 0
    except TypeError:
        count = 0
    if not 2 <= count <= MAX_OPTIONS:
        raise LoboError(
            f"a multiple_choice item needs 2 to {MAX_OPTIONS} option texts, got {options!r}"
        )
    return count


# ----------------------------------------------------------------------------- shared helpers
def _as_text(text) -> str:
    """The part of a response that is read: leading whitespace skipped, at most `READ_LIMIT`
    characters; None, NaN and other non-str values read as empty."""
    if not isinstance(text, str):
        return ""
    return text.lstrip()[:READ_LIMIT]


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
    for curly, straight in _QUOTES:
        if curly in text:
            text = text.replace(curly, straight)
    return _SPACE.sub(" ", text).strip().casefold()


def _decide(labels: list[str], tier: str) -> ParseResult:
    """One label -> `tier`; one label several times -> repeated_label; several -> conflicting."""
    if len(set(labels)) > 1:
        return ParseResult(None, "label_conflict", "conflicting")
    return ParseResult(labels[0], "repeated_label" if len(labels) > 1 else tier)


def _invalid_tier(text: str) -> ParseResult:
    """The last tiers, for a response with no answer: new section, degenerate or off format."""
    if text.startswith("#") or _NEW_SECTION.match(_label_start(text)[1]):
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


PER_PART = ParseResult(None, "per_part", "conflicting")


# ----------------------------------------------------------------------------- yes / no / maybe
def _parse_yes_no_maybe(text, question: str | None) -> ParseResult:
    """Read a response as "yes"/"no"/"maybe", or say why it commits to none of them.

    Tiers in order: empty, leading label (with the rest of the first segment checked for other
    labels: "yes/no" is conflicting, "yes/yes/yes" is yes; after numbering, a row of cells is
    per part), answer phrase (a part that is not the question's words is per part), with the
    question restated / negated question, then new section, degenerate, off format.
    "none", "not", "know", "nothing" and "nobody" are not "no".
    """
    text = _as_text(text)
    if not text.strip():
        return ParseResult(None, "empty", "empty")
    proposition = _proposition(question) if isinstance(question, str) else None
    noise, body = _label_start(text)
    result = _yes_no_maybe_leading_label(noise, body)
    if result is None:
        result = _yes_no_maybe_answer_phrase(body, proposition)
    if result is None and proposition is not None:
        result = _question_stance(noise, body, proposition)
    return result if result is not None else _invalid_tier(text)


def _yes_no_maybe_leading_label(noise: str, body: str) -> ParseResult | None:
    """A yes/no/maybe that starts the segment, checked against every other label in it."""
    first = _YES_NO_MAYBE_LABEL.match(body)
    if first is None or _NO_NON_ANSWER.match(body):
        return None
    numbered = _DIGIT.search(noise) is not None
    if numbered and _WORD_NEXT.match(body, first.end()):
        return None  # "1/no patients": after numbering only a standalone label counts
    result = _decide(_yes_no_maybe_labels(body), "leading_label")
    if result.answer is not None and numbered and _NEXT_CELL.match(body, first.end()):
        return PER_PART  # "1/yes/yes/yes", "1. yes 2. yes": a table row or numbered parts
    return result


def _yes_no_maybe_labels(body: str, start: int = 0) -> list[str]:
    """Every label in the segment from `start`, except "no" used as a determiner ("found no
    difference")."""
    labels = []
    for match in _YES_NO_MAYBE_LABEL.finditer(body, start):
        label = match.group(1).lower()
        if labels and label == "no" and _WORD_NEXT.match(body, match.end()):
            continue
        labels.append(label)
    return labels


def _yes_no_maybe_answer_phrase(segment: str, proposition) -> ParseResult | None:
    """'the answer is yes', 'answer: no', 'answer (yes/no/maybe): maybe', or a label right after a
    question mark or colon ('does x matter? yes') anywhere in the segment. A label after
    'part:' answers per part when further parts follow, or when the question is known and the
    part is not made of its words."""
    for phrase in _RESTATED_PHRASE.finditer(segment):
        if not _YES_NO_MAYBE_LABEL.match(segment, phrase.end()):
            continue
        result = _decide(_yes_no_maybe_labels(segment, phrase.end()), "answer_phrase")
        if result.answer is not None and phrase.group("mark") == ":":
            label_end = _YES_NO_MAYBE_LABEL.match(segment, phrase.end()).end()
            if _NEXT_PART.match(segment, label_end) or (
                proposition is not None and not proposition.words_all_in(segment[: phrase.start()])
            ):
                return PER_PART
        return result
    return None


# ----------------------------------------------------------------------------- the question
_AUXILIARIES = frozenset(
    "is are was were am be been being does do did can could may might will would shall should must"
    " has have had".split()
)
_DO = frozenset({"do", "does", "did"})
_NEGATIONS = frozenset({"not", "no", "never", "none", "neither", "nor", "nothing"})
_FUNCTION_WORDS = frozenset(
    "a an the of in on at to for with by from and or as than that this these those it its they them"
    " their there here we our us you your he she his her him i me my which who whom whose what when"
    " where why how whether if so such any some all each every both either only also into onto upon"
    " over under between among after before during about within via per versus vs but however"
    " although though while whereas because since thus therefore hence then".split()
)
# Words between the auxiliary and the predicate that leave the claim as it is: "is not always
# permanent", "was not found to be", "was able to provide".
_HEDGES = frozenset(
    "always necessarily really significantly generally usually often still yet also truly actually"
    " found shown proven proved considered seen observed demonstrated reported thought able likely"
    " be been being to".split()
)
# After the auxiliary, these say the matter is open: no yes or no ("it is not clear whether").
_OPEN = frozenset("clear unclear known unknown certain uncertain sure determined".split())
_PRONOUN_SUBJECTS = frozenset({"it", "they", "this", "these", "there"})
_WORD = re.compile(r"[^\W_]+")
_NOT_CONTRACTION = re.compile(r"(?<=[^\W\d_])n['’]t\b")
_CLAUSE_BREAK = re.compile(r"\s*(?::|--|\?|\.\s)\s*")


def _words(text: str) -> list[str]:
    """The lower-cased words of a text, "n't" and "cannot" read as "not"."""
    text = text.lower().replace("cannot", "can not").replace("can't", "can not")
    text = _NOT_CONTRACTION.sub(" not", text.replace("won't", "will not"))
    return _WORD.findall(text)


def _stem(word: str) -> str:
    """A crude stem, so that inflections and derivations meet: 'predicts'/'predict',
    'associated'/'association', 'stopped'/'stop', 'optimism'/'optimistic'."""
    for suffix, replacement in (("ies", "y"), ("ied", "y"), ("ing", ""), ("ly", ""), ("ed", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            break
    else:
        if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
            word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]  # stopp -> stop
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word[:7]


def _is_content(word: str) -> bool:
    """A word that carries the proposition: not a function word, auxiliary or single character."""
    return len(word) > 1 and word not in _FUNCTION_WORDS and word not in _AUXILIARIES


@dataclass(frozen=True)
class _Proposition:
    """A yes/no question read for its claim: the stems of all its content words and of those
    outside its main clause (the title of "Title: does it X?"), the auxiliary that opens the main
    clause ("is", "does", "can", ...; None for "X: a new approach?"), that clause's content stems
    in order, the initials of 3-5 adjacent content words (for "sib" = self-inflating bag) and the
    clause's content words as written."""

    stems: frozenset[str]
    title: frozenset[str]
    auxiliary: str | None
    clause: tuple[str, ...]
    clause_words: tuple[str, ...]
    initials: frozenset[str]

    def has(self, word: str) -> bool:
        """Whether a response word is one of the question's words (by stem)."""
        return _stem(word) in self.stems

    def position(self, word: str) -> int | None:
        """Where a response word first stands in the main clause (by stem), or None."""
        stem = _stem(word)
        return next((i for i, s in enumerate(self.clause) if s == stem), None)

    def names_subject(self, word: str, before: int) -> bool:
        """Whether a response word names the subject: a title word, a clause word before
        position `before` (the predicate), or the initials of question words."""
        stem = _stem(word)
        return stem in self.title or stem in self.clause[:before] or word in self.initials

    def words_all_in(self, text: str) -> bool:
        """Whether every content word of `text` is one of the question's words."""
        return all(self.has(word) for word in _words(text) if _is_content(word))

    def inflects(self, word: str) -> bool:
        """Whether a response word is a do-question's main-clause word conjugated: "predicted"
        for "do/does/did X predict", "predicts" and "modifies" only for "does X ..."."""
        if self.auxiliary not in _DO:
            return False
        for base in self.clause_words:
            forms = {base + "d", base + "ed", base + base[-1] + "ed"}
            if self.auxiliary == "does":
                forms |= {base + "s", base + "es"}
            if base.endswith("y"):
                forms.add(base[:-1] + "ied")
                if self.auxiliary == "does":
                    forms.add(base[:-1] + "ies")
            if word in forms:
                return True
        return False


@lru_cache(maxsize=4096)
def _proposition(question: str) -> _Proposition:
    """The claim of a PubMedQA-style question: 'Title: does it protect against X?'."""
    clauses = [c for c in _CLAUSE_BREAK.split(question) if _WORD.search(c)]
    main, auxiliary = (clauses[-1] if clauses else ""), None
    for clause in reversed(clauses):
        first = _words(clause)[:1]
        if first and first[0] in _AUXILIARIES:
            main, auxiliary = clause, first[0]
            break
    content = [w for w in _words(question) if _is_content(w)]
    clause_words = tuple(w for w in _words(main) if _is_content(w))
    clause = tuple(_stem(w) for w in clause_words)
    heads = [w[0] for w in content]
    initials = {"".join(heads[i : i + size]) for size in (3, 4, 5) for i in range(len(heads))}
    stems = frozenset(_stem(w) for w in content)
    return _Proposition(
        stems,
        stems - set(clause),
        auxiliary,
        clause,
        clause_words,
        frozenset(i for i in initials if len(i) >= 3),
    )


_ALTERNATIVES = re.compile(r"/\s*(?:not|no|non)\b", re.IGNORECASE)  # "competent/not competent"


def _question_stance(noise: str, segment: str, proposition: _Proposition) -> ParseResult | None:
    """Yes when the segment asserts the question's proposition, no when it negates it, else None.

    The segment must read subject, then a verb, then the predicate, in the question's words and
    order: the verb is an auxiliary ("is", "can", "does not"), or a do-question's own verb
    conjugated ("predicts" for "does X predict Y?"); the predicate starts with a word of the
    question's main clause and half its words are the question's (up to the question's last word;
    cut short, nothing need follow a negation); the subject is made of title words or of clause
    words before the predicate (or initials; any subject when the predicate is 2+ question words).
    Numbered segments, questions ("is there ...", "...?", "title: can X"), lists of alternatives
    ("competent/not competent") assert nothing. A do-question restated without its "do" through
    its last word ("ventricular arrhythmias subside over time") is an assertion too.
    """
    if _DIGIT.search(noise) or _is_question(segment) or _ALTERNATIVES.search(segment):
        return None
    words = _words(segment)
    verb = next((i for i, w in enumerate(words) if w in _AUXILIARIES or w in _NEGATIONS), None)
    if verb is None:
        verb = next((i for i, w in enumerate(words) if proposition.inflects(w)), None)
    if verb is None:
        return _checked(_restated_whole(words, proposition), segment)
    return _checked(_stance_at(words, verb, proposition), segment)


def _is_question(segment: str) -> bool:
    """Whether the segment asks rather than asserts: a question mark, or a clause opening with an
    auxiliary ("is there a consensus ...", "processing fluency effects: can the content")."""
    if "?" in segment:
        return True
    openings = (_words(clause)[:1] for clause in _CLAUSE_BREAK.split(segment))
    return any(first and first[0] in _AUXILIARIES for first in openings)


def _stance_at(words: list[str], verb: int, proposition: _Proposition) -> ParseResult | None:
    """The stance of a segment whose verb is `words[verb]`: subject before it, predicate after."""
    subject = [w for w in words[:verb] if _is_content(w)]
    negated, predicate = _predicate(words, verb, proposition)
    if not predicate:  # cut short after the verb: only a negation says something
        everywhere = len(proposition.clause)
        named = all(proposition.names_subject(w, everywhere) for w in subject)
        if negated and len(subject) >= 2 and named:
            return ParseResult("no", "negated_question")
        return None
    where = proposition.position(predicate[0])
    matched = [w for w in predicate if proposition.has(w)]
    if predicate[0] in _OPEN or where is None or 2 * len(matched) < len(predicate):
        return None
    last = len(proposition.clause) - 1
    if len(predicate) == 1 and proposition.inflects(words[verb]) and where < last:
        return None  # "X causes" cut short before what it causes
    strong = len(predicate) >= 2 and len(matched) == len(predicate)
    if subject:
        named = sum(proposition.names_subject(w, where) for w in subject)
        if 2 * named < len(subject) and not strong:
            return None
    elif not set(words[:verb]) & _PRONOUN_SUBJECTS:
        return None
    if negated:
        return ParseResult("no", "negated_question")
    return ParseResult("yes", "restated_question")


def _checked(result: ParseResult | None, segment: str) -> ParseResult | None:
    """The stance, unless the segment also names another label ("immunity exists/maybe")."""
    if result is None:
        return None
    others = {
        match.group(1).lower()
        for match in _YES_NO_MAYBE_LABEL.finditer(segment)
        if not (match.group(1).lower() == "no" and _WORD_NEXT.match(segment, match.end()))
    }
    if others - {result.answer}:
        return ParseResult(None, "label_conflict", "conflicting")
    return result


def _predicate(words: list[str], verb: int, proposition: _Proposition) -> tuple[bool, list[str]]:
    """(whether the verb group holds a negation, the content words of the predicate after it, up
    to the question's last word). A conjugated question verb is itself the predicate's first
    word."""
    position, negated = verb, False
    if not (proposition.inflects(words[verb]) and words[verb] not in _AUXILIARIES):
        while position < len(words) and (
            words[position] in _AUXILIARIES
            or words[position] in _NEGATIONS
            or words[position] in _HEDGES
            or not _is_content(words[position])
        ):
            negated = negated or words[position] in _NEGATIONS
            position += 1
    predicate = []
    for word in words[position:]:
        if _is_content(word):
            predicate.append(word)
            if proposition.clause and _stem(word) == proposition.clause[-1]:
                break  # the question's claim ends here; what follows elaborates on it
    return negated, predicate


def _restated_whole(words: list[str], proposition: _Proposition) -> ParseResult | None:
    """Yes for a do-question restated without its "do": 3+ content words, all the question's,
    title words (or the clause's first word) first, then main-clause words in the clause's order
    through its last word ("social exclusion aspects influence suicide mortality")."""
    content = [w for w in words if _is_content(w)]
    if proposition.auxiliary not in _DO or len(content) < 3:
        return None
    if not all(proposition.has(w) for w in content):
        return None
    first = next((i for i, w in enumerate(content) if proposition.position(w) is not None), None)
    if first is None or len(content) - first < 2:
        return None
    if first == 0 and proposition.position(content[0]) != 0:
        return None  # the clause's tail without its subject: "affective disorder polarity"
    clause, at = proposition.clause, -1
    for word in content[first:]:
        stem = _stem(word)
        at = next((i for i in range(at + 1, len(clause)) if clause[i] == stem), None)
        if at is None:
            return None
    return ParseResult("yes", "restated_question") if at == len(clause) - 1 else None


# ----------------------------------------------------------------------------- multiple choice
def _option_texts(options, count: int) -> list[str]:
    """`count` option texts normalised for comparison, without a final period ("ATP." reads
    "atp"); missing or unusable ones read as empty options."""
    try:
        usable = options is not None and not isinstance(options, str)
        items = list(options)[:count] if usable else []
    except TypeError:
        items = []
    items += [""] * (count - len(items))
    return [_normalise(item).rstrip(". ") if isinstance(item, str) else "" for item in items]


@lru_cache(maxsize=None)
def _letter_patterns(count: int) -> tuple[re.Pattern, re.Pattern]:
    """(a label letter of `count` options, any standalone letter followed by "." or ")"): a letter
    counts only when followed by a boundary, not a letter, digit, hyphen or apostrophe ("D-LABP",
    "A's" and "B-cells" are words), and not as a term of a formula ("~B", "A ≡ B")."""
    last = string.ascii_lowercase[count - 1]
    after = r"(?![^\W_]|[-'’]|\s*[≡⊃∨∧•·→↔⊂=])"
    label = re.compile(rf"(?<![~¬])([a-{last}]){after}", re.IGNORECASE)
    other = re.compile(rf"(?<![~¬])([a-z])(?=[.)]){after}", re.IGNORECASE)
    return label, other


_LIST_SEPARATOR = re.compile(r"(?:[\s.,;:/()\[\]*&|+]|\b(?:and|or)\b)*", re.IGNORECASE)
_LABEL_SEPARATOR = re.compile(r"(?:[\s.,;:)\]*]|-(?=\s))*")  # not the minus of "C. -40"


def _parse_multiple_choice(text, texts: list[str]) -> ParseResult:
    """Read a multiple-choice response as a letter of `texts` (the normalised option texts), or
    say why it commits to none of them.

    Tiers in order: empty, leading label ("B", "(B)", "B)", "A. heart"; a following label list
    such as "A, B" or "D. T. B" is conflicting, "C C C" is C; a label followed by another option's
    text is conflicting), answer phrase ("The answer is B", "Answer: C", "Option A"), option text
    (the full text of one option, or a cut-short start of exactly one), new section, degenerate,
    off format. The article in "A person who ..." is not option A, a formula's "~B" or "A ≡ B" is
    no label; "1. 1" is not an option unless "1" is an option's text.
    """
    text = _as_text(text)
    if not text.strip():
        return ParseResult(None, "empty", "empty")
    noise, body = _label_start(text)
    segment = _first_segment(text)
    result = None
    if "\n" in noise:  # lines without letters were skipped; the first may be an option ("1%\nC")
        result = _option_match(segment, texts)
    if result is None:
        result = _leading_letter(noise, body, texts)
    if result is None:
        result = _letter_answer_phrase(body, texts)
    if result is None:
        result = _option_match(segment, texts) or _option_match(body, texts)
    return result if result is not None else _invalid_tier(text)


def _leading_letter(noise: str, body: str, texts: list[str]) -> ParseResult | None:
    """A label letter that starts the segment (not an article, not the start of an option's
    text, not a formula's term)."""
    label_letter, _ = _letter_patterns(len(texts))
    if noise.endswith(("~", "¬")):
        return None  # "(~B": a negated formula term
    first = label_letter.match(body)
    if first is None:
        return None
    if _is_article(body, first.end(), label_letter):
        return None  # "A person who ...": an article, or a word after the letter
    if body[first.end() : first.end() + 1].isspace() and max(_fits(body, texts)) > 1:
        return None  # "A 12.5 microgram patch": the start of an option's own text
    if _DIGIT.search(noise) and _WORD_NEXT.match(body, first.end()):
        return None  # after numbering only a standalone letter counts
    labels, end = _label_list(body, len(texts))
    result = _decide(labels, "leading_label")
    if result.answer is not None and _text_names_other_option(body[end:], result.answer, texts):
        return ParseResult(None, "option_conflict", "conflicting")
    return result


def _is_article(body: str, position: int, label_letter: re.Pattern) -> bool:
    """Whether the letter ending at `position` is the article "a": followed by a word ("A person"),
    not by another standalone letter ("A or B", "A A")."""
    if body[position - 1] not in "aA" or not _WORD_NEXT.match(body, position):
        return False
    separator = _LIST_SEPARATOR.match(body, position)
    return label_letter.match(body, separator.end()) is None


def _label_list(body: str, count: int) -> tuple[list[str], int]:
    """The run of letters that starts `body` ('A. B. B' -> [A, B, B]; 'D. T. B' -> [D, B], the
    "T." no label but part of the run) and where its last label ends."""
    label_letter, other_letter = _letter_patterns(count)
    labels, end = [], 0
    position = 0
    while True:
        letter = label_letter.match(body, position)
        if letter is not None:
            if labels and _is_article(body, letter.end(), label_letter):
                return labels, end
            labels.append(letter.group(1).upper())
            end = letter.end()
        else:
            letter = other_letter.match(body, position)
            if letter is None or not labels:
                return labels, end
        position = _LIST_SEPARATOR.match(body, letter.end()).end()
        if position == letter.end():
            return labels, end


def _text_names_other_option(rest: str, label: str, texts: list[str]) -> bool:
    """Whether the text after a label is some other option's text and not the label's own (nor
    a part of it: "C. SOUTH KOREA" where C is "Congo, South Korea")."""
    rest = rest.split("\ufffd", 1)[0]
    rest = _normalise(rest[_LABEL_SEPARATOR.match(rest).end() :]).rstrip(".,;: ")
    own = texts[string.ascii_uppercase.index(label)]
    if not rest or own.startswith(rest) or _fit(rest, own) or f" {rest}" in f" {own}":
        return False
    return any(_fit(rest, option) for option in texts)


def _letter_answer_phrase(segment: str, texts: list[str]) -> ParseResult | None:
    """'The answer is B', 'ANSWER: C', 'Option A', 'answer: glycogen' anywhere in the segment."""
    for phrase in _ANSWER_PHRASE.finditer(segment):
        rest = segment[phrase.end() :]
        if not rest:
            continue
        result = _leading_letter(*_split_noise(rest), texts) or _option_match(rest, texts)
        if result is not None:
            if result.answer is None:
                return result
            return ParseResult(result.answer, "answer_phrase")
    return None


def _longest(texts: list[str]) -> int:
    """The length of the longest option text."""
    return max(map(len, texts), default=0)


def _normalised_prefix(text: str, length: int) -> str:
    """`_normalise(text)` cut to `length` + 1 characters, computed from as short a start of `text`
    as gives them (so a long response costs no more than its first words)."""
    window = 2 * length + 64
    while True:
        normal = _normalise(text[:window])
        if window >= len(text) or len(normal) > length + 1:
            return normal[: length + 1]
        window *= 2


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
    """`_fit` of the response (up to any replacement character) with each option text, read from
    as much of the response as the longest option needs; an option of one or two characters that
    starts it needs to know whether words follow ("1 patients" is no fit of "1")."""
    response = response.split("\ufffd", 1)[0]
    longest = _longest(texts)
    start = _normalised_prefix(response, longest)
    return [
        _short_fit(response, option)
        if option and len(option) <= 2 and len(start) > longest and start.startswith(option)
        else _fit(start, option)
        for option in texts
    ]


def _short_fit(response: str, option: str) -> int:
    """`_fit` of a response that starts with a short option and goes on: 0 once a letter follows,
    looked for in the first 64 characters, then (rarely) in the whole response."""
    probe = _normalised_prefix(response, _SHORT_PROBE)
    if len(probe) > _SHORT_PROBE and not any(ch.isalpha() for ch in probe[len(option) :]):
        probe = _normalise(response)
    return _fit(probe, option)


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
    return ParseResult(string.ascii_uppercase[index], tier)


# ----------------------------------------------------------------------------- reference study
_REFERENCE_DIGITS = {str(i + 1): letter for i, letter in enumerate(string.ascii_uppercase)}


@lru_cache(maxsize=None)
def _reference_label(count: int) -> re.Pattern:
    """The reference rule's standalone label: `\\b([ABCD1-4])\\b` for four options, the letters
    and numbers (1-9, 10-26) up to `count` in general."""
    single = f"A-{string.ascii_uppercase[count - 1]}1-{min(count, 9)}"
    tens = "".join(f"|{t}[0-{min(count - 10 * t, 9)}]" for t in (1, 2) if count >= 10 * t)
    return re.compile(rf"\b([{single}]{tens})\b")


def parse_reference_pubmedqa(text) -> str:
    """The reference study's PubMedQA rule, exactly: the lower-cased, stripped response -> "yes"
    if it contains "yes", else "no" if it contains "no" (also inside "none", "not", "know"), else
    "maybe" (also for empty or garbage responses)."""
    response = text.strip().lower() if isinstance(text, str) else ""
    if "yes" in response:
        return "yes"
    if "no" in response:
        return "no"
    return "maybe"


def parse_reference_mmlu(text, options: Sequence[str]) -> str:
    """The reference study's MMLU rule, exactly: the upper-cased, stripped response -> the first
    standalone A/B/C/D or 1-4 (regex word boundary; 1-4 read as A-D), else the first option whose
    stripped, upper-cased text occurs in it, else "X". Exact for responses of up to `READ_LIMIT`
    characters (the study's are at most 112); a longer one is read up to there."""
    return _reference_multiple_choice(text, options, 4)


def _reference_multiple_choice(text, options, count: int) -> str:
    """The reference MMLU rule with the letters and numbers of `count` options."""
    response = text.strip()[:READ_LIMIT].upper() if isinstance(text, str) else ""
    match = _reference_label(count).search(response)
    if match:
        return _REFERENCE_DIGITS.get(match.group(1), match.group(1))
    for label, option in zip(letters(count), options if options is not None else ()):
        option_text = str(option).strip().upper()
        if option_text and option_text in response:
            return label
    return "X"


def parse_reference(kind: str, text, options: Sequence[str] = ()) -> str:
    """The reference study's rule for an answer `kind`: yes_no_maybe -> its PubMedQA rule;
    multiple_choice -> its MMLU rule with the letters A.. and numbers 1.. of the item's options
    (exactly the study's for four). The benchmark names "pubmedqa" and "mmlu" are read as their
    kinds; other names raise LoboError."""
    kind = BENCHMARK_KINDS.get(kind, kind)
    if kind == "yes_no_maybe":
        return parse_reference_pubmedqa(text)
    if kind == "multiple_choice":
        return _reference_multiple_choice(text, options, _option_count(options))
    raise LoboError(
        f"unknown answer kind {kind!r}: use one of {', '.join(KINDS)} (or 'pubmedqa', 'mmlu')"
    )
