"""Per-item records on disk."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Record:
    """One evaluated item at one sparsity level of one model."""

    model: str
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
