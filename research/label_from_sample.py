"""Fill the label column of a `safety-harness review REPORT --export CSV` file from a file of replies people
already labelled (by default the embedded model's 120, research/labels/smollm2_135m_suites_sample.csv), for
the replies whose (suite, prompt_id) and text are the same; the rest stay blank. This is how the figures in
docs/review.md were made without a person at the keyboard: the labels are the people's, the sample is the
review's.

    safety-harness review run.parquet --n 60 --export to_label.csv --labels L
    python -m research.label_from_sample to_label.csv            # writes to_label.csv's labels in place
    safety-harness labels import to_label.csv --labeller sample --labels L
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from research.data import LABELS

SAMPLE = LABELS / "smollm2_135m_suites_sample.csv"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="the CSV written by safety-harness review --export")
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="labelled replies: suite, prompt_id, label, response")
    args = parser.parse_args()
    with open(args.sample, newline="", encoding="utf-8") as f:
        known = {(r["suite"], r["prompt_id"], r["response"]): r["label"] for r in csv.DictReader(f)}
    with open(args.export, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"{args.export}: no rows", file=sys.stderr)
        return 2
    filled = 0
    for row in rows:
        label = known.get((row["suite"], row["prompt_id"], row["response"]))
        if label and not row["label"]:
            row["label"] = label
            filled += 1
    with open(args.export, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{args.export}: labelled {filled} of {len(rows)} replies from {args.sample} "
          f"({len(rows) - filled} have no labelled reply of the same text)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
