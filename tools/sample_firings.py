"""Draw logged PubMedQA responses on which given parser tiers fire, to audit their precision by hand.

Usage: python tools/sample_firings.py LOGS_DIR OUT.jsonl --tiers restated_question,negated_question
       [--count 60] [--seed 2] [--exclude CASES.jsonl ...]

Each distinct response (read with its item's question) that the current parser decides by one of
`--tiers`, and that no `--exclude` file holds, is a candidate; `--count` of them are drawn with
`--seed`. Lines have the fields of tools/sample_responses.py, without the parser's answer, so the
person labelling them does not see it. The audit part of tests/data/parser_tuning.jsonl was drawn
this way with --seed 2 and the parser of that day (a draft of the question tiers): 60 of the
restated/negated_question firings, then 30 of the per_part ones, the holdout, parser_cases and the
rest of parser_tuning excluded.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import sys

import pandas as pd
from sample_responses import LEVEL_FILE, MODEL_FILE, excluded, question_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's lobolib
from lobolib.evaluation.parsing import parse_answer  # noqa: E402


def firings(logs_dir: Path, tiers: set[str], avoid: set[tuple[str, str]]) -> list[dict]:
    """Every distinct logged PubMedQA response that the parser decides by one of `tiers`."""
    seen, found = set(), []
    for path in sorted(logs_dir.glob("*_PubMedQA/*_percent.csv.gz")):
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        for row, (prompt, text) in enumerate(zip(frame.prompt, frame.raw_response)):
            if ("pubmedqa", text) in avoid or text in seen:
                continue
            question = question_of("pubmedqa", prompt)
            if parse_answer("yes_no_maybe", text, question=question).tier in tiers:
                seen.add(text)
                found.append({
                    "benchmark": "pubmedqa",
                    "model": MODEL_FILE.search(path.name).group(1),
                    "sparsity": int(LEVEL_FILE.search(path.name).group(1)),
                    "question": question,
                    "raw_response": text,
                    "source": f"{path.parent.name}/{path.name}:{row}",
                })
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tiers", required=True, help="comma-separated tier names")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--exclude", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    found = firings(args.logs_dir, set(args.tiers.split(",")), excluded(args.exclude))
    cases = random.Random(args.seed).sample(found, min(args.count, len(found)))
    with args.out.open("w", encoding="utf-8") as handle:
        for case in cases:
            handle.write(json.dumps(case, ensure_ascii=False) + "\n")
    print(f"{len(cases)} of {len(found)} firings -> {args.out}")


if __name__ == "__main__":
    main()
