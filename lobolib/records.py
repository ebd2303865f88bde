"""The two data types every stage passes on: an `Item` (one benchmark question) and a `Record`
(one evaluated item of one model under one compression setting at one level).

Benchmarks produce Items; evaluation turns Items into Records; the experiment stores Records and
analysis reads them. Neither type knows how it is made or kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from lobolib.errors import LoboError

DENSE = "dense"
"""The `method` of a record of the uncompressed model: shared by every setting's curve."""


@dataclass(frozen=True)
class Item:
    """One benchmark question.

    `options` are the answer choices as shown to the model: ("yes", "no", "maybe") for a
    yes/no/maybe benchmark, the option texts for a multiple-choice one. `answer` is the gold
    label: "yes"/"no"/"maybe", or the letter of the right option ("A", "B", ...). `subject` is
    the item's group for per-subject curves (the benchmark's name where it has none).
    """

    id: str
    benchmark: str
    subject: str
    question: str
    context: str
    options: tuple[str, ...]
    answer: str


@dataclass
class Record:
    """One evaluated item of one model, compressed by one method at one level.

    `method` is the compression setting's canonical description ("magnitude/layer",
    "wanda/2:4/calib=pubmed", "rtn/g128") or "dense" for the uncompressed model; `level` is the
    setting's level (a sparsity in [0, 1), or a bit width); `sparsity` is the fraction of the
    compressed matrices' weights set to zero (the level itself for pruning, 0 for quantization).
    """

    model: str
    method: str
    level: float
    sparsity: float
    benchmark: str
    subject: str
    item_id: str
    gold: str
    prompt_hash: str
    raw_response: str
    answer: str | None  # parsed by lobolib.parsing; None = invalid
    tier: str
    invalid_reason: str | None
    option_logprobs: dict[str, float] = field(default_factory=dict)  # label -> log-prob of its first token
    loglik_answer: str | None = None  # argmax of option_logprobs; None when not scored (imported logs)
    nll: float | None = None  # perplexity benchmarks: the window's summed negative log-likelihood (nats)
    tokens: int | None = None  # perplexity benchmarks: the tokens it predicts


RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Record))
OPTIONAL_FIELDS = ("nll", "tokens")
REQUIRED_FIELDS = tuple(name for name in RECORD_FIELDS if name not in OPTIONAL_FIELDS)


def prompt_hash(prompt: str) -> str:
    """The first 16 hex digits of the SHA-256 of the prompt text (UTF-8): identifies a prompt
    without storing it."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def record_to_json(record: Record) -> dict:
    """A Record as a plain JSON-ready dict (the option_logprobs dict copied), built field by
    field: ``dataclasses.asdict``'s deep copy is ten times slower on a 70,000-record import."""
    data = {name: getattr(record, name) for name in RECORD_FIELDS}
    data["option_logprobs"] = dict(record.option_logprobs or {})
    return data


def record_from_json(data: Mapping) -> Record:
    """A Record from a dict written by ``record_to_json``; extra keys (e.g. ``reference_parsed``
    of imported logs) are ignored, a missing field raises LoboError."""
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise LoboError(f"a record lacks the fields {missing}; it was not written by lobolib")
    values = {name: data[name] for name in RECORD_FIELDS if name in data}
    values["option_logprobs"] = dict(values["option_logprobs"] or {})
    return Record(**values)
