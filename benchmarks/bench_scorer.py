"""Refusal scorer throughput, as a ratio in one run: refusal_patterns against XSTest's string match
(the cheapest possible scorer) on the real XSTest completions, plus absolute responses/s.

    python benchmarks/bench_scorer.py [--data-dir ../shared/data] [--repeat 5]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from harness.scoring import get_scorer


def load_completions(data_dir: Path, column: str = "completion") -> list[str]:
    """One column of the labelled XSTest dev files, in file then row order ("prompt" gives the prompts)."""
    out = []
    for path in sorted((data_dir / "xstest" / "dev").glob("*_labeled.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            out += [row[column] for row in csv.DictReader(fh)]
    if not out:
        raise SystemExit(f"no XSTest completions under {data_dir}/xstest/dev")
    return out


def best_rate(scorer, responses: list[str], repeat: int) -> float:
    """Responses/s of the best of ``repeat`` timed batches."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        scorer.score([""] * len(responses), responses)
        best = min(best, time.perf_counter() - started)
    return len(responses) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from harness.core.paths import data_dir_for_parser

    args.data_dir = data_dir_for_parser(parser, args.data_dir)  # the one data-folder resolver
    responses = load_completions(args.data_dir) * 4
    ours = best_rate(get_scorer("refusal_patterns"), responses, args.repeat)
    base = best_rate(get_scorer("xstest_string_match"), responses, args.repeat)
    print(f"{len(responses)} responses (XSTest dev completions x4), best of {args.repeat}")
    print(f"refusal_patterns     {ours:10,.0f} responses/s")
    print(f"xstest_string_match  {base:10,.0f} responses/s")
    print(f"ratio refusal_patterns / string_match = {ours / base:.3f}")


if __name__ == "__main__":
    main()
