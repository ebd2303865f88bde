"""Draw a stratified sample of distinct responses from the reference study's logs, to label by hand.

Usage: python tools/sample_responses.py LOGS_DIR OUT.jsonl [--seed 0] [--levels 50 90]
       [--per-level N]

Each line is a case for tests/data/parser_cases.jsonl without its "expected" label: benchmark, text
(the logged raw_response), options (MMLU: the four option texts read from the logged prompt), source
(file and row). Strata: both models x both benchmarks; per sparsity level 2 cases at 0-45 %, 7 at
50-90 %, 4 at 95 %; rows drawn uniformly (so frequent responses are likelier), duplicates skipped.
Labels are then written by a person reading each response, never by running the parser.
tests/data/parser_cases.jsonl holds three such draws, each labelled before the parser saw it:
seed 0 (all levels, 348 cases); a draw of 140 at 40-90 % restricted to responses that are not a
bare label and that the reference rules score as an answer; and 80 cases at 50-90 % (seed 7).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import pandas as pd

OPTIONS_IN_PROMPT = re.compile(
    r"\nOptions:\nA\. ([^\n]*)\nB\. ([^\n]*)\nC\. ([^\n]*)\nD\. ([^\n]*)\nAnswer:\Z"
)
LEVEL_FILE = re.compile(r"_(\d+)_percent\.csv\.gz$")


def per_level(sparsity: int, fixed: int | None = None) -> int:
    """How many cases to draw at one sparsity level (most at the hard 50-90 % levels)."""
    if fixed is not None:
        return fixed
    if sparsity < 50:
        return 2
    return 7 if sparsity <= 90 else 4


def sample(
    logs_dir: Path, seed: int, levels: tuple[int, int] = (0, 95), fixed: int | None = None
) -> list[dict]:
    """The stratified sample as a list of case dicts (no labels)."""
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    cases = []
    for path in sorted(logs_dir.glob("*_*/*_percent.csv.gz")):
        benchmark = "mmlu" if path.parent.name.endswith("_MMLU") else "pubmedqa"
        sparsity = int(LEVEL_FILE.search(path.name).group(1))
        if not levels[0] <= sparsity <= levels[1]:
            continue
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        rows = list(range(len(frame)))
        rng.shuffle(rows)
        taken = 0
        for row in rows:
            text = frame.raw_response[row]
            if (benchmark, text) in seen:
                continue
            seen.add((benchmark, text))
            case = {"benchmark": benchmark, "text": text}
            if benchmark == "mmlu":
                case["options"] = list(OPTIONS_IN_PROMPT.search(frame.prompt[row]).groups())
            case["source"] = f"{path.parent.name}/{path.name}:{row}"
            cases.append(case)
            taken += 1
            if taken == per_level(sparsity, fixed):
                break
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", type=int, nargs=2, default=(0, 95), metavar=("MIN", "MAX"))
    parser.add_argument("--per-level", type=int, default=None, help="cases per file (fixed)")
    args = parser.parse_args()
    cases = sample(args.logs_dir, args.seed, tuple(args.levels), args.per_level)
    with args.out.open("w", encoding="utf-8") as handle:
        for case in cases:
            handle.write(json.dumps(case, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases -> {args.out}")


if __name__ == "__main__":
    main()
