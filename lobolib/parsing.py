"""The multi-tier answer parser."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParseResult:
    """What a response commits to: `answer` ("yes"/"no"/"maybe" or "A".."D", None if invalid),
    the `tier` (rule) that decided, and the `reason` it is invalid (None when valid)."""

    answer: str | None
    tier: str
    reason: str | None = None
