""""Did you mean ...?": the known name closest to what was typed, by edit distance with swapped
neighbours counted as one edit, ties broken by how near the mistyped keys are on a keyboard."""

from __future__ import annotations

from collections.abc import Sequence

_ROWS = ("1234567890-", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_KEYS = {ch: (row, col) for row, keys in enumerate(_ROWS) for col, ch in enumerate(keys)}


def edit_distance(typed: str, known: str) -> float:
    """Damerau-Levenshtein distance (insert, delete, substitute, swap neighbours: 1 each), a
    substitution of neighbouring keys costing a little less than one of distant keys."""
    a, b = typed.lower(), known.lower()
    rows, cols = len(a) + 1, len(b) + 1
    d = [[0.0] * cols for _ in range(rows)]
    for i in range(rows):
        d[i][0] = float(i)
    for j in range(cols):
        d[0][j] = float(j)
    for i in range(1, rows):
        for j in range(1, cols):
            substitute = 0.0 if a[i - 1] == b[j - 1] else _key_cost(a[i - 1], b[j - 1])
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + substitute)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def _key_cost(x: str, y: str) -> float:
    """1 for a substitution, 0.9 when the two keys touch on a QWERTY keyboard."""
    if x in _KEYS and y in _KEYS:
        (r1, c1), (r2, c2) = _KEYS[x], _KEYS[y]
        if abs(r1 - r2) <= 1 and abs(c1 - c2) <= 1:
            return 0.9
    return 1.0


def closest(typed: str, known: Sequence[str]) -> str | None:
    """The known name nearest to `typed`, or None when none is within about a third of its
    length (at least two edits)."""
    if not known:
        return None
    best = min(known, key=lambda name: (edit_distance(typed, name), name))
    limit = max(2.0, len(typed) / 3)
    return best if edit_distance(typed, best) <= limit else None
