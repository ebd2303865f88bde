"""Add each case's item question, read from the logged prompt its "source" names, to a cases file.

Usage: python tools/add_questions.py LOGS_DIR CASES.jsonl

A case's source is "DIR/FILE.csv.gz:ROW" in the reference study's logs; the question is read from
that row's prompt as tools/sample_responses.py reads it. Cases that already hold a question keep it.
The file is rewritten in place, one JSON object per line, other fields unchanged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from sample_responses import question_of


def add_questions(logs_dir: Path, cases: list[dict]) -> list[dict]:
    """The cases with "question" filled in from their logged prompts."""
    frames: dict[str, pd.DataFrame] = {}
    for case in cases:
        if "question" in case:
            continue
        file, row = case["source"].rsplit(":", 1)
        if file not in frames:
            frames[file] = pd.read_csv(logs_dir / file, keep_default_na=False, dtype=str)
        case["question"] = question_of(case["benchmark"], frames[file].prompt[int(row)])
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs_dir", type=Path)
    parser.add_argument("cases", type=Path)
    args = parser.parse_args()
    lines = args.cases.read_text(encoding="utf-8").splitlines()
    cases = add_questions(args.logs_dir, [json.loads(line) for line in lines if line.strip()])
    with args.cases.open("w", encoding="utf-8") as handle:
        for case in cases:
            handle.write(json.dumps(case, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases -> {args.cases}")


if __name__ == "__main__":
    main()
