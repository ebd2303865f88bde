"""Prompts: an Item in its benchmark's template, after any solved examples (k-shot).

The "reference" templates are the reference study's ("BioMedical LLM Lobotomy", Borzello &
Dalvi 2026); they rebuild its logged prompts character for character (see the tests). The
"harness" templates follow lm-evaluation-harness' tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

from lobolib.benchmarks.benchmark import MULTIPLE_CHOICE, Benchmark, Template, letters
from lobolib.errors import LoboError
from lobolib.records import Item

MULTIPLE_CHOICE_TEMPLATES = {
    "reference": Template("Question: {question}\nOptions:\n{options}\nAnswer:"),
    "harness": Template(
        "{question}\n{options}\nAnswer:",
        header="The following are multiple choice questions (with answers) about {subject}.\n\n",
        strip=True,
    ),
}
"""Templates of any multiple-choice benchmark: the reference study's MMLU prompt and MMLU's
lm-evaluation-harness prompt, with as many option lines as the item has options."""


def render(item: Item, benchmark: Benchmark, template: Template) -> str:
    """One question in a template, up to and including its "Answer...:" (no answer, no header)."""
    options = ""
    if benchmark.kind == MULTIPLE_CHOICE:
        if len(item.options) != benchmark.n_options:
            raise LoboError(f"{benchmark.name} item {item.id} has {len(item.options)} options, "
                            f"expected {benchmark.n_options}")  # fmt: skip
        options = "\n".join(template.option.format(letter=letter, text=text)
                            for letter, text in zip(letters(len(item.options)), item.options))  # fmt: skip
    question = item.question.strip() if template.strip else item.question
    return template.question.format(context=item.context, question=question, options=options,
                                    subject=_subject(item))  # fmt: skip


def prompt(item: Item, benchmark: Benchmark, template: str = "reference", shots: Sequence[Item] = ()) -> str:
    """The prompt shown to the model for `item` of `benchmark`: the template's header, then each
    solved example in the same format ending in its answer (" A", " yes"), separated by blank
    lines, then the question."""
    chosen = benchmark.template(template)
    for shot in shots:
        if shot.benchmark != item.benchmark:
            raise LoboError(f"a {shot.benchmark} shot cannot precede a {item.benchmark} question")
    blocks = [render(shot, benchmark, chosen) + " " + shot.answer for shot in shots]
    blocks.append(render(item, benchmark, chosen))
    return chosen.header.format(subject=_subject(item)) + "\n\n".join(blocks)


def _subject(item: Item) -> str:
    return item.subject.replace("_", " ")
