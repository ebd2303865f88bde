"""The embedded default: a real pruning experiment in miniature that runs offline on a small CPU.

Everything here is generated from a seed by this module's own code:

- two synthetic fact bases — a *general* one (invented countries, syllogisms, fallacies) and a
  *medical* one (invented drugs, conditions and genes with real organs and symptoms);
- a mini benchmark drawn from them, written in the official PubMedQA (`ori_pqal.json`,
  `test_ground_truth.json`) and MMLU (`test/<subject>_test.csv`, `dev/<subject>_dev.csv`) file
  formats, so the project's real loaders read it;
- a byte-level BPE tokenizer trained on that text;
- two tiny MistralForCausalLM models: a *base* trained mostly on the general facts (it sees the
  medical items less often) and a *specialist* continued from the base on the medical facts.

The models memorise the facts and the benchmark items in the project's prompt formats, so at 0%
sparsity they answer far above chance; magnitude pruning then erases what they memorised.
`ensure_embedded(cache_dir)` builds all of it once and returns the paths; reruns reuse the cache.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from lobolib.benchmarks import build_prompt
from lobolib.errors import LoboError
from lobolib.records import Item

VERSION = "embedded-v2"
EMBEDDED_MODELS = ("base", "specialist")
EMBEDDED_BENCHMARKS = ("pubmedqa", "mmlu")
MMLU_SUBJECTS = {
    "anatomy": "medical",
    "clinical_knowledge": "medical",
    "college_medicine": "medical",
    "medical_genetics": "medical",
    "professional_medicine": "medical",
    "formal_logic": "general",
    "logical_fallacies": "general",
    "global_facts": "general",
}
PUBMEDQA_LABEL_COUNTS = {"yes": 110, "no": 68, "maybe": 22}  # ~55/34/11 %, like PQA-L
MMLU_TEST_PER_SUBJECT = 25
MMLU_DEV_PER_SUBJECT = 5
LETTERS = ("A", "B", "C", "D")

# --- word lists (written for this project) -------------------------------------------------------
SYLLABLES = ["lor", "mer", "zan", "tel", "dov", "qui", "ser", "pra", "vex", "cor", "bel", "nor",
             "fen", "gal", "hol", "kir", "lum", "mav", "nes", "ost", "pel", "rin", "sab", "tor",
             "ul", "var", "wen", "yar", "zol", "dem", "fal", "tav"]
DRUG_ENDINGS = ["vatin", "azole", "umab", "pril", "cillin", "oxan", "itide", "afen", "olol", "idine"]
DISEASE_KINDS = ["fever", "syndrome", "disease", "palsy", "anemia", "colitis", "dermatitis",
                 "fibrosis", "neuritis", "arthritis"]
ORGANS = {  # organ: (function, body system) — real anatomy, in our own words
    "heart": ("pumps blood through the body", "circulatory"),
    "lung": ("exchanges oxygen and carbon dioxide", "respiratory"),
    "liver": ("stores glycogen and clears toxins", "digestive"),
    "kidney": ("filters the blood and makes urine", "urinary"),
    "stomach": ("digests food with acid", "digestive"),
    "pancreas": ("releases insulin", "endocrine"),
    "thyroid": ("controls the rate of metabolism", "endocrine"),
    "spleen": ("removes old red blood cells", "lymphatic"),
    "brain": ("controls thought and movement", "nervous"),
    "skin": ("protects the body from injury", "integumentary"),
    "colon": ("absorbs water from waste", "digestive"),
    "bladder": ("stores urine", "urinary"),
}
SYMPTOMS = ["fever", "cough", "rash", "fatigue", "jaundice", "headache", "chest pain", "nausea",
            "weight loss", "joint pain", "thirst", "dizziness", "itching", "back pain"]
DRUG_CLASSES = ["beta blocker", "antibiotic", "statin", "antiviral", "diuretic", "antifungal",
                "steroid", "antacid"]
GENE_LETTERS = "BCDFGHKLMNPRSTVWXZ"
COUNTRY_ENDINGS = ["ia", "land", "or", "istan", "ora", "enia"]
CITY_ENDINGS = ["ton", "burg", "ville", "port", "holm", "grad"]
RIVER_ENDINGS = ["a river", "o river", "en river"]
LANGUAGE_ENDINGS = ["ish", "ese", "ic"]
CATEGORIES = ["blickets", "wugs", "daxes", "feps", "tomas", "zibs", "glorps", "mippets", "snarfs",
              "quolls", "trevs", "yonks", "plinths", "gorbs", "vims", "kades"]
FALLACIES = {  # fallacy: argument templates ({p}, {q} are people, {t} a topic)
    "ad hominem": ["{p} says the {t} plan is wrong because {q} who wrote it is rude.",
                   "{p} ignores the {t} report because its author failed school."],
    "straw man": ["{q} wants a smaller {t} budget, so {p} says {q} wants to end {t} entirely.",
                  "{p} answers a mild {t} proposal as if it were an extreme one."],
    "slippery slope": ["{p} says one change to the {t} rules will lead step by step to disaster.",
                       "{p} warns that allowing {t} today means chaos will follow tomorrow."],
    "false dilemma": ["{p} says we either ban {t} completely or accept total ruin.",
                      "{p} claims you are with {p} on {t} or against everyone."],
    "appeal to authority": ["{p} says the {t} claim is true only because a famous actor said so.",
                            "{p} trusts a celebrity about {t} instead of the evidence."],
    "bandwagon": ["{p} says the {t} idea is right because most people believe it.",
                  "{p} supports {t} only because it is popular."],
    "circular reasoning": ["{p} says the {t} book is true because the {t} book says so.",
                           "{p} argues {t} is good because {t} is not bad."],
    "hasty generalization": ["{p} met two rude {t} fans and says all {t} fans are rude.",
                             "{p} tried {t} once and says it never works for anyone."],
    "red herring": ["asked about {t}, {p} changes the subject to the weather.",
                    "{p} answers a question on {t} by talking about something unrelated."],
    "post hoc": ["{p} wore a red hat and then {t} went well, so the hat caused it.",
                 "{p} says {t} caused the storm because the storm came after it."],
}
PEOPLE = ["Ana", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea",
          "Milo", "Nia", "Otto", "Pia"]
TOPICS = ["tax", "school", "park", "road", "music", "sport", "farm", "train", "garden", "film"]


@dataclass
class FactBase:
    """A named set of facts: their statements (training text) and relations the items are drawn from."""

    name: str
    statements: list[str] = field(default_factory=list)
    relations: dict = field(default_factory=dict)


def _names(rng: random.Random, count: int, endings: list[str], parts: int = 1) -> list[str]:
    """`count` distinct invented words: random syllables followed by one of `endings`."""
    names: list[str] = []
    while len(names) < count:
        word = "".join(rng.choice(SYLLABLES) for _ in range(parts)) + rng.choice(endings)
        if word not in names:
            names.append(word)
    return names


def medical_fact_base(seed: int = 0) -> FactBase:
    """Invented-but-plausible medicine: drugs treat conditions (or not, or with mixed evidence),
    conditions affect organs and cause symptoms, genes are linked to conditions."""
    rng = random.Random(f"medical-{seed}")
    drugs = _names(rng, 40, DRUG_ENDINGS)
    conditions = [f"{name} {rng.choice(DISEASE_KINDS)}" for name in _names(rng, 40, ["", "s", "e"], 2)]
    genes = []
    while len(genes) < 30:
        gene = "".join(rng.choice(GENE_LETTERS) for _ in range(3)) + str(rng.randint(1, 9))
        if gene not in genes:
            genes.append(gene)
    organs = list(ORGANS)
    condition = {}
    for i, name in enumerate(conditions):
        effective, ineffective, mixed = drugs[i], drugs[(i + 7) % 40], drugs[(i + 19) % 40]
        condition[name] = {
            "organ": rng.choice(organs),
            "symptom": rng.choice(SYMPTOMS),
            "treated_by": effective,
            "not_treated_by": ineffective,
            "mixed": mixed,
            "gene": genes[i] if i < len(genes) else None,
            "not_gene": genes[(i + 11) % len(genes)],
        }
    drug_class = {drug: rng.choice(DRUG_CLASSES) for drug in drugs}
    statements = []
    for name, c in condition.items():
        statements += [
            f"{c['treated_by']} treats {name}.",
            f"{c['not_treated_by']} does not treat {name}.",
            f"the evidence that {c['mixed']} treats {name} is mixed.",
            f"{name} affects the {c['organ']}.",
            f"the main symptom of {name} is {c['symptom']}.",
        ]
        if c["gene"]:
            statements.append(f"{c['gene']} is linked to {name}.")
    statements += [f"{drug} is a {cls}." for drug, cls in drug_class.items()]
    statements += [f"the {organ} {fn}. the {organ} is part of the {system} system."
                   for organ, (fn, system) in ORGANS.items()]
    return FactBase("medical", statements, {"condition": condition, "drug_class": drug_class})


def general_fact_base(seed: int = 0) -> FactBase:
    """Invented geography (capitals, languages, rivers), syllogisms and named fallacies."""
    rng = random.Random(f"general-{seed}")
    countries = _names(rng, 36, COUNTRY_ENDINGS, 2)
    cities = _names(rng, 36, CITY_ENDINGS, 2)
    rivers = _names(rng, 36, RIVER_ENDINGS, 1)
    languages = _names(rng, 12, LANGUAGE_ENDINGS, 1)
    country = {
        name: {"capital": cities[i], "river": rivers[i], "language": rng.choice(languages)}
        for i, name in enumerate(countries)
    }
    syllogisms = []
    for _ in range(40):
        a, b, c = rng.sample(CATEGORIES, 3)
        syllogisms.append({"a": a, "b": b, "other": c, "x": rng.choice(PEOPLE)})
    statements = []
    for name, c in country.items():
        statements += [f"the capital of {name} is {c['capital']}.",
                       f"people in {name} speak {c['language']}.",
                       f"the {c['river']} flows through {name}."]
    statements += [f"all {s['a']} are {s['b']}. {s['x']} is one of the {s['a']}, "
                   f"so {s['x']} is one of the {s['b']}." for s in syllogisms]
    for fallacy, templates in FALLACIES.items():
        example = templates[0].format(p="Ana", q="Ben", t="tax")
        statements.append(f"an example of the {fallacy} fallacy: {example}")
    return FactBase("general", statements, {"country": country, "syllogisms": syllogisms,
                                            "languages": languages})


# --- the mini benchmark --------------------------------------------------------------------------
STUDY_DESIGNS = {  # the methods sentence of an abstract: what was studied, never what was found
    "drug": ["We gave {x} to {n} patients in a randomised trial.", "A cohort of {n} patients received {x}."],
    "gene": ["We sequenced {x} in {n} families.", "{n} patients were tested for variants of {x}."],
    "organ": ["We scanned the {x} in {n} patients.", "The {x} of {n} patients was examined."],
}


def _pubmedqa_candidates(medical: FactBase, rng: random.Random) -> dict[str, list[dict]]:
    """Every PubMedQA-style question the medical facts support, grouped by gold label.

    The context gives background and a study-design sentence, both the same whatever the
    verdict, so the answer is a fact the model must have memorised (no results sentence to read:
    such a cue would survive pruning and hide the loss of knowledge)."""
    by_label: dict[str, list[dict]] = {"yes": [], "no": [], "maybe": []}
    organs = list(ORGANS)

    def add(kind, label, question, background, x, meshes, long_answer):
        design = rng.choice(STUDY_DESIGNS[kind]).format(x=x, n=rng.randint(20, 400))
        by_label[label].append({"question": question, "contexts": [f"{background} {design[0].upper()}{design[1:]}"],
                                "meshes": meshes, "long_answer": long_answer})

    for name, c in medical.relations["condition"].items():
        organ_sentence = f"{name.capitalize()} is a disorder of the {c['organ']}."
        symptom_sentence = f"Patients with {name} often present with {c['symptom']}."
        for drug, label in ((c["treated_by"], "yes"), (c["not_treated_by"], "no"), (c["mixed"], "maybe")):
            add("drug", label, f"Does {drug} treat {name}?", rng.choice([organ_sentence, symptom_sentence]), drug,
                [drug, name], {"yes": f"{drug} treats {name}.", "no": f"{drug} does not treat {name}.",
                               "maybe": f"the evidence that {drug} treats {name} is mixed."}[label])
        if c["gene"]:
            for gene, label in ((c["gene"], "yes"), (c["not_gene"], "no")):
                add("gene", label, f"Is {gene} linked to {name}?", symptom_sentence, gene, [gene, name],
                    f"{gene} is {'' if label == 'yes' else 'not '}linked to {name}.")
        other = rng.choice([o for o in organs if o != c["organ"]])
        for organ, label in ((c["organ"], "yes"), (other, "no")):
            add("organ", label, f"Does {name} affect the {organ}?", symptom_sentence, organ, [name, organ],
                f"{name} {'affects' if label == 'yes' else 'does not affect'} the {organ}.")
    return by_label


def pubmedqa_items(medical: FactBase, seed: int = 0) -> dict[str, dict]:
    """~200 PubMedQA-style items keyed by an invented 8-digit PMID, in `ori_pqal.json` layout."""
    rng = random.Random(f"pubmedqa-{seed}")
    by_label = _pubmedqa_candidates(medical, rng)
    chosen = []
    for label, count in PUBMEDQA_LABEL_COUNTS.items():
        if len(by_label[label]) < count:
            raise LoboError(f"the medical fact base supports only {len(by_label[label])} '{label}' items")
        chosen += [(label, entry) for entry in rng.sample(by_label[label], count)]
    rng.shuffle(chosen)
    pmids = rng.sample(range(10_000_000, 40_000_000), len(chosen))
    items = {}
    for pmid, (label, entry) in zip(pmids, chosen):
        items[str(pmid)] = {
            "QUESTION": entry["question"],
            "CONTEXTS": entry["contexts"],
            "LABELS": ["RESULTS"],
            "MESHES": entry["meshes"],
            "YEAR": str(rng.randint(1995, 2024)),
            "reasoning_required_pred": label,
            "reasoning_free_pred": label,
            "final_decision": label,
            "LONG_ANSWER": entry["long_answer"],
        }
    return items


def _mcq(rng: random.Random, question: str, correct: str, pool) -> tuple:
    """A 4-option row (question, A, B, C, D, letter) with three distinct distractors from `pool`."""
    distractors = rng.sample(sorted({p for p in pool if p != correct}), 3)
    options = distractors + [correct]
    rng.shuffle(options)
    return (question, *options, LETTERS[options.index(correct)])


def _mmlu_subject_rows(subject: str, medical: FactBase, general: FactBase, rng: random.Random) -> list:
    """Every distinct MMLU-style row the fact bases support for one subject."""
    cond = medical.relations["condition"]
    rows = []
    if subject == "anatomy":
        for organ, (fn, system) in ORGANS.items():
            rows.append(_mcq(rng, f"Which organ {fn}?", organ, ORGANS))
        rows += [_mcq(rng, f"Which organ does {name} affect?", c["organ"], ORGANS) for name, c in cond.items()]
    elif subject == "clinical_knowledge":
        rows = [_mcq(rng, f"What is the main symptom of {name}?", c["symptom"], SYMPTOMS)
                for name, c in cond.items()]
    elif subject == "college_medicine":
        rows = [_mcq(rng, f"Which drug treats {name}?", c["treated_by"],
                     [d for d in medical.relations["drug_class"] if d not in (c["mixed"],)])
                for name, c in cond.items()]
    elif subject == "medical_genetics":
        genes = [c["gene"] for c in cond.values() if c["gene"]]
        rows = [_mcq(rng, f"Which gene is linked to {name}?", c["gene"], genes)
                for name, c in cond.items() if c["gene"]]
    elif subject == "professional_medicine":
        for name, c in cond.items():
            pool = [n for n, o in cond.items() if (o["organ"], o["symptom"]) != (c["organ"], c["symptom"])]
            rows.append(_mcq(rng, f"A patient has {c['symptom']} and a disorder of the {c['organ']}. "
                                  f"Which condition is most likely?", name, pool + [name]))
    elif subject == "formal_logic":
        for s in general.relations["syllogisms"]:
            q = f"All {s['a']} are {s['b']}. {s['x']} is one of the {s['a']}. What follows?"
            correct = f"{s['x']} is one of the {s['b']}"
            wrong = [f"{s['x']} is not one of the {s['b']}", f"all {s['b']} are {s['a']}",
                     f"{s['x']} is one of the {s['other']}"]
            rows.append(_mcq(rng, q, correct, wrong + [correct]))
    elif subject == "logical_fallacies":
        for fallacy, templates in FALLACIES.items():
            for template in templates:
                for _ in range(2):
                    p, q = rng.sample(PEOPLE, 2)
                    argument = template.format(p=p, q=q, t=rng.choice(TOPICS))
                    rows.append(_mcq(rng, f"Which fallacy is this? {argument[0].upper()}{argument[1:]}",
                                     fallacy, FALLACIES))
    elif subject == "global_facts":
        country = general.relations["country"]
        for name, c in country.items():
            kind = rng.choice(["capital", "language", "river"])
            if kind == "capital":
                rows.append(_mcq(rng, f"What is the capital of {name}?", c["capital"],
                                 [o["capital"] for o in country.values()]))
            elif kind == "language":
                rows.append(_mcq(rng, f"Which language is spoken in {name}?", c["language"],
                                 general.relations["languages"]))
            else:
                rows.append(_mcq(rng, f"Which river flows through {name}?", c["river"],
                                 [o["river"] for o in country.values()]))
    return rows


def mmlu_rows(medical: FactBase, general: FactBase, seed: int = 0) -> dict[str, dict[str, list]]:
    """{subject: {"test": rows, "dev": rows}}: 25 test and 5 dev questions per subject, no overlap."""
    rng = random.Random(f"mmlu-{seed}")
    need = MMLU_TEST_PER_SUBJECT + MMLU_DEV_PER_SUBJECT
    out = {}
    for subject in MMLU_SUBJECTS:
        rows = list({row[0]: row for row in _mmlu_subject_rows(subject, medical, general, rng)}.values())
        if len(rows) < need:
            raise LoboError(f"the fact bases support only {len(rows)} distinct {subject} questions")
        rows = rng.sample(rows, need)
        out[subject] = {"dev": rows[:MMLU_DEV_PER_SUBJECT], "test": rows[MMLU_DEV_PER_SUBJECT:]}
    return out


def write_benchmark(root: Path, pubmedqa: dict, mmlu: dict) -> dict:
    """Write the mini benchmark in the official file formats; return the two sources' paths.

    PubMedQA: `root/pubmedqa/ori_pqal.json` and `test_ground_truth.json` (every item is a test
    item). MMLU: `root/mmlu/{test,dev}/<subject>_<split>.csv`, no header row."""
    pqa_dir, mmlu_dir = Path(root) / "pubmedqa", Path(root) / "mmlu"
    pqa_dir.mkdir(parents=True, exist_ok=True)
    (pqa_dir / "ori_pqal.json").write_text(json.dumps(pubmedqa, indent=1))
    truth = {pmid: entry["final_decision"] for pmid, entry in pubmedqa.items()}
    (pqa_dir / "test_ground_truth.json").write_text(json.dumps(truth))
    for subject, splits in mmlu.items():
        for split, rows in splits.items():
            (mmlu_dir / split).mkdir(parents=True, exist_ok=True)
            with open(mmlu_dir / split / f"{subject}_{split}.csv", "w", newline="") as f:
                csv.writer(f).writerows(rows)
    return {"pubmedqa": str(pqa_dir / "ori_pqal.json"), "mmlu": str(mmlu_dir)}


# --- training text -------------------------------------------------------------------------------
def benchmark_items(pubmedqa: dict, mmlu: dict) -> list[Item]:
    """The generated questions as `Item`s (PubMedQA, then MMLU test and dev rows)."""
    items = [Item(pmid, "pubmedqa", "pubmedqa", e["QUESTION"], " ".join(e["CONTEXTS"]),
                  ("yes", "no", "maybe"), e["final_decision"]) for pmid, e in pubmedqa.items()]
    for subject, splits in mmlu.items():
        for split, rows in splits.items():
            items += [Item(f"{subject}/{i}" if split == "test" else f"{subject}/{split}/{i}", "mmlu",
                           subject, row[0], "", tuple(row[1:5]), row[5]) for i, row in enumerate(rows)]
    return items


def render_prompt(item: Item) -> str:
    """The project's "reference" prompt for an item (`lobolib.benchmarks.build_prompt`, so
    training text and evaluation prompts cannot drift apart)."""
    return build_prompt(item, template="reference")


def render_answer(item: Item) -> str:
    """What a model that knows the fact says: " yes" or " B. <option text>"."""
    if item.benchmark == "pubmedqa":
        return f" {item.answer}"
    return f" {item.answer}. {item.options[LETTERS.index(item.answer)]}"


def training_examples(facts: FactBase, items: list[Item]) -> list[tuple[str, str]]:
    """(prompt, completion) pairs: fact statements (whole text is learned) and answered items."""
    return [("", s) for s in facts.statements] + [(render_prompt(i), render_answer(i)) for i in items]


def corpus_fingerprint(examples: list[tuple[str, str]]) -> str:
    """sha256 over the version tag and every training text: it changes when any text does."""
    digest = hashlib.sha256(VERSION.encode())
    for prompt, completion in examples:
        digest.update(f"{prompt}\x00{completion}\x01".encode())
    return digest.hexdigest()


# --- tokenizer -----------------------------------------------------------------------------------
def train_tokenizer(texts: list[str], vocab_size: int = 2048):
    """Byte-level BPE (any text encodes) trained on the project's own text, wrapped as a
    `PreTrainedTokenizerFast` that adds <s> like Mistral's; " yes"/" no"/" maybe"/" A".." D" are
    single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>", model_max_length=512)
    for label in (" yes", " no", " maybe", " A", " B", " C", " D"):
        if len(tokenizer.encode(label, add_special_tokens=False)) != 1:
            raise LoboError(f"embedded tokenizer splits {label!r}; raise vocab_size")
    return tokenizer


# --- models --------------------------------------------------------------------------------------
def tiny_mistral(vocab_size: int, seed: int):
    """A ~1.2M-parameter MistralForCausalLM (hidden 128, 4 layers, 4 heads, 2 kv heads)."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=320,
                           num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                           pad_token_id=3, tie_word_embeddings=False, sliding_window=None)
    return MistralForCausalLM(config)


def _encode(tokenizer, examples: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example: <s> prompt completion </s>; the prompt is not learned."""
    out = []
    for prompt, completion in examples:
        p = tokenizer.encode(prompt) if prompt else [tokenizer.bos_token_id]
        c = tokenizer.encode(completion, add_special_tokens=False) + [tokenizer.eos_token_id]
        out.append((p + c, [-100] * len(p) + c))
    return out


def train(model, tokenizer, examples: list[tuple[str, str]], *, steps: int, seed: int,
          lr: float = 3e-3, batch_size: int = 32, desc: str = "train", progress: bool = True):
    """AdamW with warm-up and cosine decay over shuffled epochs of `examples` (fixed data order
    from `seed`); the model is trained in place and returned in eval mode."""
    import torch
    from tqdm.auto import tqdm

    encoded = _encode(tokenizer, examples)
    rng = random.Random(f"order-{seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    order: list[int] = []
    for _ in tqdm(range(steps), desc=desc, unit="step", disable=not progress, mininterval=2):
        if len(order) < batch_size:
            epoch = list(range(len(encoded)))
            rng.shuffle(epoch)
            order += epoch
        batch, order = [encoded[i] for i in order[:batch_size]], order[batch_size:]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([x + [tokenizer.pad_token_id] * (width - len(x)) for x, _ in batch])
        labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch])
        # right padding under causal attention: no real token sees a pad, so no mask is needed
        # (and without one the fast causal attention kernel runs)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return model.eval()


# --- the build -----------------------------------------------------------------------------------
BASE_MIX = {"general_facts": 2, "general_items": 3, "medical_items": 2}
SPECIALIST_MIX = {"medical_facts": 2, "medical_items": 3, "general_items": 1}


@dataclass
class Corpus:
    """Everything generated from one seed before any training: fact bases, benchmark, training text."""

    seed: int
    medical: FactBase
    general: FactBase
    pubmedqa: dict
    mmlu: dict
    items: list[Item]

    def examples(self, mix: dict[str, int]) -> list[tuple[str, str]]:
        """Training pairs with each part repeated as often as `mix` says."""
        parts = {
            "general_facts": training_examples(self.general, []),
            "medical_facts": training_examples(self.medical, []),
            "general_items": [(render_prompt(i), render_answer(i)) for i in self.items
                              if MMLU_SUBJECTS.get(i.subject) == "general"],
            "medical_items": [(render_prompt(i), render_answer(i)) for i in self.items
                              if MMLU_SUBJECTS.get(i.subject, "medical") == "medical"],
        }
        return [pair for name, times in mix.items() for pair in parts[name] * times]

    def fingerprint(self) -> str:
        """Changes whenever any training text or the version tag does."""
        return corpus_fingerprint(self.examples(BASE_MIX) + self.examples(SPECIALIST_MIX))


def build_corpus(seed: int = 0) -> Corpus:
    """Fact bases, mini benchmark and items for `seed` (fast, deterministic, no training)."""
    medical, general = medical_fact_base(seed), general_fact_base(seed)
    pubmedqa, mmlu = pubmedqa_items(medical, seed), mmlu_rows(medical, general, seed)
    return Corpus(seed, medical, general, pubmedqa, mmlu, benchmark_items(pubmedqa, mmlu))


# --- cache ---------------------------------------------------------------------------------------
BASE_STEPS, SPECIALIST_STEPS, BATCH_SIZE, LEARNING_RATE = 700, 400, 16, 3e-3
DONE_MARKER = "done.json"


def _build(root: Path, corpus: Corpus, progress: bool) -> dict:
    """Write the benchmark, train tokenizer, base and specialist into `root`; return timings."""
    import torch

    paths = write_benchmark(root / "data", corpus.pubmedqa, corpus.mmlu)
    base_examples, specialist_examples = corpus.examples(BASE_MIX), corpus.examples(SPECIALIST_MIX)
    tokenizer = train_tokenizer([p + c for p, c in base_examples + specialist_examples])
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    try:
        seconds = {}
        model = tiny_mistral(len(tokenizer), corpus.seed)
        for name, examples, steps, seed in (("base", base_examples, BASE_STEPS, corpus.seed),
                                             ("specialist", specialist_examples, SPECIALIST_STEPS, corpus.seed + 1)):
            start = time.perf_counter()
            train(model, tokenizer, examples, steps=steps, seed=seed, lr=LEARNING_RATE,
                  batch_size=BATCH_SIZE, desc=training_message(name, steps), progress=progress)
            seconds[name] = round(time.perf_counter() - start, 1)
            model.save_pretrained(root / name, safe_serialization=True)
            tokenizer.save_pretrained(root / name)
    finally:
        torch.set_num_threads(threads)
    return {**paths, "train_seconds": seconds}


SECONDS_PER_STEP = 0.09  # one training step of the tiny model on two idle CPU cores


def training_message(name: str, steps: int) -> str:
    """The progress bar's label while an embedded model trains: what happens, that it happens
    once, and about how long it takes."""
    minutes = steps * SECONDS_PER_STEP / 60
    took = "under a minute" if minutes < 0.75 else f"about {max(1, round(minutes))} min"
    return f"training the embedded {name} model, once ({took} on 2 cores; cached for later runs)"


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts as alive; on Windows,
    where signal 0 would terminate it, every process counts as alive)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _remove_stale_staging(root: Path) -> None:
    """Delete `.seed-N.building-<pid>` folders left by builds whose process is gone (or by this one)."""
    for staging in root.parent.glob(f".{root.name}.building-*"):
        pid = staging.name.rsplit("-", 1)[1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(staging, ignore_errors=True)


def ensure_embedded(cache_dir, seed: int = 0, progress: bool = True) -> dict:
    """The embedded default, built once per (seed, version) under `cache_dir` and reused after.

    Returns {"base": dir, "specialist": dir, "pubmedqa": path to ori_pqal.json, "mmlu": dir,
    "corpus_fingerprint": sha256}. The model dirs load with `AutoModelForCausalLM.from_pretrained`
    and `AutoTokenizer.from_pretrained`, like hub models. A build counts as complete only once its
    `done.json` marker is written (last, atomically); anything else found there is rebuilt."""
    if not isinstance(seed, int) or seed < 0:
        raise LoboError(f"embedded seed must be a non-negative integer, got {seed!r}")
    corpus = build_corpus(seed)
    fingerprint = corpus.fingerprint()
    root = Path(cache_dir).expanduser() / f"seed-{seed}"
    marker = root / DONE_MARKER
    if marker.exists():
        try:
            done = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            done = {}
        if done.get("version") == VERSION and done.get("corpus_fingerprint") == fingerprint:
            return {key: str(root / rel) for key, rel in done["paths"].items()} | {
                "corpus_fingerprint": fingerprint}
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LoboError(f"cannot create the embedded cache folder {root.parent}: {err}; "
                        "set another cache path (e.g. $LOBOTOMY_CACHE)") from err
    _remove_stale_staging(root)
    staging = root.parent / f".{root.name}.building-{os.getpid()}"
    info = _build(staging, corpus, progress)
    rel = {"base": "base", "specialist": "specialist",
           "pubmedqa": str(Path(info["pubmedqa"]).relative_to(staging)),
           "mmlu": str(Path(info["mmlu"]).relative_to(staging))}
    done = {"version": VERSION, "seed": seed, "corpus_fingerprint": fingerprint, "paths": rel,
            "train_seconds": info["train_seconds"]}
    tmp = staging / (DONE_MARKER + ".tmp")
    tmp.write_text(json.dumps(done, indent=1))
    os.replace(tmp, staging / DONE_MARKER)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(staging, root)
    return {key: str(root / r) for key, r in rel.items()} | {"corpus_fingerprint": fingerprint}
