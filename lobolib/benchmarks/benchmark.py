"""What a benchmark is, as data: a `Benchmark` record holds everything the rest of the toolkit
needs to know about one benchmark, so nothing else branches on a benchmark's name.

A benchmark has a kind:

- ``yes_no_maybe``: the labels are "yes", "no", "maybe" (PubMedQA);
- ``multiple_choice``: N options labelled A, B, C, ... (MMLU, MedQA, MedMCQA, any declared file);
- ``perplexity``: held-out text whose token-weighted perplexity is measured over fixed-length
  windows (WikiText-2, PubMed abstracts); its Items are documents (the text in `context`).

and declares its loader (a hub dataset and a local official file format), its prompt templates,
its default generation length, the parsers that read its answers, its metrics and its subject
groups.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lobolib.errors import LoboError

YES_NO_MAYBE = "yes_no_maybe"
MULTIPLE_CHOICE = "multiple_choice"
PERPLEXITY = "perplexity"
KINDS = (YES_NO_MAYBE, MULTIPLE_CHOICE)
"""The kinds of question a model answers; a `perplexity` benchmark is held-out text instead."""
YES_NO_MAYBE_LABELS = ("yes", "no", "maybe")
MAX_OPTIONS = 26

SCORES = ("accuracy", "macro_f1", "kappa", "invalid_rate")
"""The scores every benchmark gets under lobolib's scoring (invalid answers are never a class)."""


def letters(n_options: int) -> tuple[str, ...]:
    """The labels of `n_options` multiple-choice options: ("A", "B", "C", "D") for 4."""
    if not isinstance(n_options, int) or not 2 <= n_options <= MAX_OPTIONS:
        raise LoboError(f"a multiple-choice item needs 2 to {MAX_OPTIONS} options, got {n_options!r}")
    return tuple(string.ascii_uppercase[:n_options])


@dataclass(frozen=True)
class Template:
    """A prompt template: `question` is formatted with {context}, {question}, {options} (one
    `option` line per option, {letter} and {text}) and {subject}; it ends where the answer goes.
    `header` (formatted with {subject}) opens the prompt, before any solved examples; `strip`
    strips the question text first."""

    question: str
    header: str = ""
    option: str = "{letter}. {text}"
    strip: bool = False


@dataclass(frozen=True)
class Benchmark:
    """One benchmark, declared.

    - `loader(source, split, **options) -> list[Item]`: `source` None reads the hub dataset
      (`hub`), else a local copy in `local_format`; `options` are the benchmark's own loader
      options, with their defaults in `options`.
    - `splits`: the splits it accepts, the default first; `shot_split` is where few-shot examples
      come from (None: the benchmark has no solved examples to show).
    - `n_options`: the options of a multiple-choice benchmark (None for yes/no/maybe).
    - `reference_parser`: the name of the reference study's parser where the study scored this
      benchmark ("pubmedqa" or "mmlu" rules), else None; `reference_metric` its F1.
    - `groups`: subject groups reported beside each subject set ("medical": (...)).
    - `seq_len`, `max_windows`: a perplexity benchmark's window length in tokens, and how many
      windows at most (None: all the text gives).
    """

    name: str
    kind: str
    title: str
    loader: Callable
    hub: str
    local_format: str
    templates: Mapping[str, Template]
    max_new_tokens: int
    splits: tuple = (None,)
    shot_split: str | None = None
    n_options: int | None = None
    options: Mapping[str, object] = field(default_factory=dict)
    reference_parser: str | None = None
    reference_metric: str | None = None
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    subjects_by_group: bool = False
    declared: bool = False

    seq_len: int = 512
    max_windows: int | None = None

    def __post_init__(self):
        if self.kind not in (*KINDS, PERPLEXITY):
            raise LoboError(f"benchmark {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == MULTIPLE_CHOICE:
            letters(self.n_options)

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels an answer may take."""
        if self.kind == PERPLEXITY:
            return ()
        return YES_NO_MAYBE_LABELS if self.kind == YES_NO_MAYBE else letters(self.n_options)

    @property
    def scores(self) -> tuple[str, ...]:
        """lobolib's scores of this benchmark: `SCORES`, plus the yes-class F1 for yes/no/maybe;
        perplexity for held-out text."""
        if self.kind == PERPLEXITY:
            return ("perplexity",)
        return SCORES + (("yes_f1",) if self.kind == YES_NO_MAYBE else ())

    def template(self, name: str) -> Template:
        """The prompt template called `name`; LoboError naming the ones that exist."""
        if name not in self.templates:
            raise LoboError(f"{self.name}: unknown prompt template {name!r}; use one of {sorted(self.templates)}")
        return self.templates[name]
