"""Benchmarks as data: one declarative `Benchmark` record per benchmark, one file each.

Built in: PubMedQA (yes/no/maybe), MMLU, MedQA-USMLE and MedMCQA (multiple choice): with
MMLU's medical subjects, the MultiMedQA multiple-choice set that BioMistral reports; and held-out
text for perplexity, WikiText-2 and PubMed abstracts. Any other
multiple-choice (or yes/no/maybe) file or hub dataset can be declared in a parameters file
(`declared.declare`). Everything that depends on a benchmark reads its record: adding a built-in
benchmark means adding one file here and naming it in `BUILT_IN`.

    from lobolib import benchmarks
    items = benchmarks.load("medqa", source="data_clean/questions/US/4_options/phrases_no_exclude_test.jsonl", split="test")
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence

from lobolib.benchmarks.benchmark import KINDS, MULTIPLE_CHOICE, PERPLEXITY, YES_NO_MAYBE, Benchmark, Template, letters
from lobolib.benchmarks.declared import declare
from lobolib.benchmarks.hub import is_hub
from lobolib.benchmarks.medmcqa import MEDMCQA
from lobolib.benchmarks.medqa import MEDQA
from lobolib.benchmarks.mmlu import (
    MMLU,
    MMLU_SUBJECTS,
    SUBJECT_GROUPS,
    expand_subjects,
    groups_of,
    load_mmlu,
    load_mmlu_shots,
)
from lobolib.benchmarks.perplexity import PUBMED_ABSTRACTS, WIKITEXT2
from lobolib.benchmarks.prompts import prompt
from lobolib.benchmarks.pubmedqa import PUBMEDQA, REFERENCE_CONTEXT_JOIN, load_pubmedqa
from lobolib.errors import LoboError
from lobolib.records import Item

BUILT_IN: dict[str, Benchmark] = {b.name: b for b in (PUBMEDQA, MMLU, MEDQA, MEDMCQA, WIKITEXT2, PUBMED_ABSTRACTS)}

__all__ = [
    "BUILT_IN", "Benchmark", "Item", "KINDS", "MEDMCQA", "MEDQA", "MMLU", "MMLU_SUBJECTS", "MULTIPLE_CHOICE",
    "PERPLEXITY", "PUBMEDQA", "PUBMED_ABSTRACTS", "REFERENCE_CONTEXT_JOIN", "WIKITEXT2",
    "SUBJECT_GROUPS", "Template", "YES_NO_MAYBE", "build_prompt", "declare", "expand_subjects",
    "get", "groups_of", "items_fingerprint", "letters", "load", "load_mmlu", "load_mmlu_shots",
    "load_pubmedqa", "load_shots", "option_labels",
]  # fmt: skip


def get(name: str, declared: Mapping[str, Benchmark] | None = None) -> Benchmark:
    """The benchmark called `name`: a built-in one, or one of `declared`."""
    if declared and name in declared:
        return declared[name]
    if name in BUILT_IN:
        return BUILT_IN[name]
    known = sorted(BUILT_IN) + sorted(declared or {})
    raise LoboError(f"unknown benchmark {name!r}: use one of {', '.join(known)} or declare it in the parameters "
                    "(kind, source, question, options, answer)")  # fmt: skip


def load(name: str, source=None, split=None, **options) -> list[Item]:
    """The Items of benchmark `name`, built in or declared (pass `spec=` a declaration's mapping
    for one that is not in `BUILT_IN`).

    `source` None or "hub" reads the hub dataset, else a local copy in the benchmark's official
    format (file or folder). `split` None takes the benchmark's default. `options` are the
    benchmark's own (MMLU: subjects, max_items_per_subject) and `max_items` (the first N).
    """
    spec = options.pop("spec", None)
    benchmark = declare(name, spec) if spec is not None else get(name)
    allowed = {*benchmark.options, "max_items"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise LoboError(f"{name}: unknown option(s) {unknown}; it takes {sorted(allowed)}")
    if split is not None and split not in benchmark.splits:
        raise LoboError(f"{name}: unknown split {split!r}; use one of {[s for s in benchmark.splits if s]}")
    return benchmark.loader(None if is_hub(source) else source, split, **options)


def load_shots(benchmark: Benchmark, source, subject: str, k: int) -> list[Item]:
    """The first `k` solved examples of `subject` from the benchmark's `shot_split`."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise LoboError(f"the number of shots must be a non-negative integer, got {k!r}")
    if k == 0:
        return []
    if benchmark is MMLU:
        return load_mmlu_shots(None if is_hub(source) else source, subject, k)
    if benchmark.shot_split is None:
        raise LoboError(f"{benchmark.name} has no split of solved examples to show; use shots: 0")
    pool = [item for item in benchmark.loader(None if is_hub(source) else source, benchmark.shot_split)
            if item.subject == subject or not benchmark.subjects_by_group]  # fmt: skip
    if len(pool) < k:
        raise LoboError(f"{k} shots asked for {benchmark.name} ({subject}) but its {benchmark.shot_split} split "
                        f"holds {len(pool)}")  # fmt: skip
    return pool[:k]


def option_labels(benchmark: str | Benchmark) -> tuple[str, ...]:
    """The labels an answer may take: ("yes", "no", "maybe") or ("A", "B", "C", "D")."""
    return (benchmark if isinstance(benchmark, Benchmark) else get(benchmark)).labels


def build_prompt(item: Item, template: str = "reference", shots: Sequence[Item] = (),
                 benchmark: Benchmark | None = None) -> str:
    """The prompt shown to the model for `item` (see `prompts.prompt`); `benchmark` defaults to
    the built-in one of the item's name.

    "reference" (default): the reference study's zero-shot prompts, exactly —
      PubMedQA "Context: {context}\\nQuestion: {question}\\nAnswer (yes/no/maybe):",
      MMLU "Question: {question}\\nOptions:\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\nAnswer:".
    "harness": lm-evaluation-harness style.
    """
    return prompt(item, benchmark or get(item.benchmark), template, shots)


def items_fingerprint(items: Iterable[Item]) -> str:
    """sha256 (hex) over the items' ids, gold answers and question texts, in order (for manifests)."""
    payload = json.dumps([[item.id, item.answer, item.question] for item in items], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
