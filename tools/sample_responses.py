"""Draw a stratified sample of distinct responses from the reference study's logs, to label by hand.

Usage: python tools/sample_responses.py LOGS_DIR OUT.jsonl [--seed 0] [--levels 50 90]
       [--per-level N] [--weights LOW MID HIGH] [--exclude CASES.jsonl ...]
       [--benchmark pubmedqa|mmlu] [--sentences]

Each line is one logged response without its label: benchmark, model, sparsity, question (the item's
question read from the logged prompt), options (MMLU: the four option texts from the prompt),
raw_response, source (file and row). Strata: both models x both benchmarks; per sparsity level
`--weights` cases (default 2 at 0-45 %, 7 at 50-90 %, 4 at 95 %), or `--per-level` per file; rows
drawn uniformly (so frequent responses are likelier); a response already drawn for its benchmark,
or present in an `--exclude` file (its "text" or "raw_response"), is skipped. `--sentences` keeps
only responses that start with three words, the first not yes/no/maybe (a draw enriched in
restated or negated questions).
Labels are then written by a person reading each response, never by running the parser.

tests/data/parser_cases.jsonl holds three older draws (fields text/expected), each labelled before
the parser saw it: seed 0 (all levels, 348 cases); a draw of 140 at 40-90 % restricted to responses
that are not a bare label and that the reference rules score as an answer; and 80 cases at 50-90 %
(seed 7). Draws of this version, labelled with their questions:
- tests/data/parser_holdout.jsonl: --seed 2026 --weights 1 8 4 --exclude parser_cases.jsonl
  (344 cases), labelled before the parser was changed and never used to tune it;
- tests/data/parser_tuning.jsonl: --seed 4242 --weights 1 8 4 (excluding both files above, 344),
  then --seed 99 --levels 0 70 --per-level 4 --benchmark pubmedqa --sentences (91), then an audit
  of the parser's new tiers drawn by tools/sample_firings.py (90).
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
PUBMEDQA_QUESTION = re.compile(r"\nQuestion: ([^\n]*)\nAnswer \(yes/no/maybe\):\Z")
MMLU_QUESTION = re.compile(r"\AQuestion: (.*?)\nOptions:\n", re.DOTALL)
# --sentences: a response that starts with a word other than a label and has 3+ words of letters
# (where restated or negated questions are), for a draw enriched in them.
SENTENCE = re.compile(r"\A\s*(?!(?:yes|no|maybe)\b)[^\W\d_]+(?:\W+[^\W\d_]+){2}", re.IGNORECASE)
LEVEL_FILE = re.compile(r"_(\d+)_percent\.csv\.gz$")
MODEL_FILE = re.compile(r"(BioMistral-7B|Mistral-7B-v0\.1)")


def per_level(sparsity: int, weights: tuple[int, int, int] = (2, 7, 4), fixed: int | None = None):
    """How many cases to draw at one sparsity level: `weights` for 0-45 %, 50-90 % and 95 %."""
    if fixed is not None:
        return fixed
    if sparsity < 50:
        return weights[0]
    return weights[1] if sparsity <= 90 else weights[2]


def excluded(paths: list[Path]) -> set[tuple[str, str]]:
    """(benchmark, response) of every case in the given jsonl files."""
    seen = set()
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                case = json.loads(line)
                seen.add((case["benchmark"], case.get("raw_response", case.get("text"))))
    return seen


def question_of(benchmark: str, prompt: str) -> str:
    """The item's question as the logged prompt states it."""
    pattern = MMLU_QUESTION if benchmark == "mmlu" else PUBMEDQA_QUESTION
    return pattern.search(prompt).group(1).strip()


def sample(
    logs_dir: Path,
    seed: int,
    levels: tuple[int, int] = (0, 95),
    fixed: int | None = None,
    weights: tuple[int, int, int] = (2, 7, 4),
    exclude: set[tuple[str, str]] = frozenset(),
    benchmarks: tuple[str, ...] = ("pubmedqa", "mmlu"),
    sentences: bool = False,
) -> list[dict]:
    """The stratified sample as a list of case dicts (no labels)."""
    rng = random.Random(seed)
    seen = set(exclude)
    cases = []
    for path in sorted(logs_dir.glob("*_*/*_percent.csv.gz")):
        benchmark = "mmlu" if path.parent.name.endswith("_MMLU") else "pubmedqa"
        sparsity = int(LEVEL_FILE.search(path.name).group(1))
        wanted = per_level(sparsity, weights, fixed)
        if not levels[0] <= sparsity <= levels[1] or wanted == 0 or benchmark not in benchmarks:
            continue
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        rows = list(range(len(frame)))
        rng.shuffle(rows)
        taken = 0
        for row in rows:
            text = frame.raw_response[row]
            if (benchmark, text) in seen or sentences and not SENTENCE.match(text):
                continue
            seen.add((benchmark, text))
            prompt = frame.prompt[row]
            case = {
                "benchmark": benchmark,
                "model": MODEL_FILE.search(path.name).group(1),
                "sparsity": sparsity,
                "question": question_of(benchmark, prompt),
            }
            if benchmark == "mmlu":
                case["options"] = list(OPTIONS_IN_PROMPT.search(prompt).groups())
            case["raw_response"] = text
            case["source"] = f"{path.parent.name}/{path.name}:{row}"
            cases.append(case)
            taken += 1
            if taken == wanted:
                break
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", type=int, nargs=2, default=(0, 95), metavar=("MIN", "MAX"))
    parser.add_argument("--per-level", type=int, default=None, help="cases per file (fixed)")
    parser.add_argument(
        "--weights", type=int, nargs=3, default=(2, 7, 4), metavar=("LOW", "MID", "HIGH"),
        help="cases per file at 0-45 %%, 50-90 %% and 95 %% sparsity",
    )
    parser.add_argument("--exclude", type=Path, nargs="*", default=[], help="jsonl files to avoid")
    parser.add_argument("--benchmark", choices=("pubmedqa", "mmlu"), default=None, help="only this one")
    parser.add_argument(
        "--sentences", action="store_true", help="only responses that start with 3+ words, not a label"
    )
    args = parser.parse_args()
    benchmarks = (args.benchmark,) if args.benchmark else ("pubmedqa", "mmlu")
    cases = sample(
        args.logs_dir, args.seed, tuple(args.levels), args.per_level, tuple(args.weights),
        excluded(args.exclude), benchmarks, args.sentences,
    )
    with args.out.open("w", encoding="utf-8") as handle:
        for case in cases:
            handle.write(json.dumps(case, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases -> {args.out}")


if __name__ == "__main__":
    main()
