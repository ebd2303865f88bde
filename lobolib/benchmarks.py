"""Benchmark items: PubMedQA (yes/no/maybe) and MMLU (A-D), their loaders and prompt templates."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """One benchmark question.

    `options` are the answer choices as shown to the model: ("yes", "no", "maybe") for PubMedQA,
    the four option texts for MMLU. `answer` is the gold label: "yes"/"no"/"maybe" or "A".."D".
    """

    id: str
    benchmark: str  # "pubmedqa" | "mmlu"
    subject: str  # MMLU subject; "pubmedqa" for PubMedQA
    question: str
    context: str
    options: tuple[str, ...]
    answer: str
