"""Shared fixtures: real files in ../shared/data (skipped with a reason when absent) and a tiny
Mistral-architecture model with its own tokenizer, saved the way hub models are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY_CORPUS = [
    "Context: aspirin reduces fever. Question: does aspirin reduce fever? Answer (yes/no/maybe): yes",
    "Context: the trial was small. Question: is the effect certain? Answer (yes/no/maybe): maybe",
    "Question: which organ pumps blood? Options: A. heart B. lung C. liver D. kidney Answer: A",
    "Question: what is two plus two? Options: A. three B. four C. five D. six Answer: B",
    "no yes maybe A B C D none not know",
]


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying which file is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer trained on a few sentences (any text encodes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TINY_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def build_tiny_model(vocab_size: int, seed: int = 0, dtype=None):
    """A random-weight MistralForCausalLM small enough to run in milliseconds on a CPU."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )
    model = MistralForCausalLM(config)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A directory holding a tiny Mistral model (safetensors) and its tokenizer."""
    path = tmp_path_factory.mktemp("tiny-mistral")
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(len(tokenizer))
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_model_and_tokenizer():
    """A fresh tiny model (random weights, fp32) and tokenizer, left padding, in memory."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.padding_side = "left"
    return build_tiny_model(len(tokenizer)), tokenizer


@pytest.fixture(scope="session")
def embedded_cache() -> Path:
    """The embedded models and mini benchmark, built once for the whole test session where the
    runner looks for them ($LOBOTOMY_CACHE, else outputs/.cache/embedded), reused while valid."""
    from lobolib.experiment import embedded

    path = Path(os.environ.get("LOBOTOMY_CACHE") or ROOT / "outputs" / ".cache" / "embedded")
    embedded.ensure_embedded(path, seed=0, progress=False)
    return path
