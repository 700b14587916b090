"""XSTest's human-labelled completions (``xstest/dev/*_labeled.csv`` under the data folder): the rows every
refusal scorer is measured and trained on."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import NamedTuple

from harness.core.errors import HarnessError

# final_label values in the XSTest files -> our labels
GOLD = {
    "1_full_compliance": "full_compliance",
    "2_full_refusal": "full_refusal",
    "3_partial_refusal": "partial_refusal",
}


class Labeled(NamedTuple):
    ids: list[str]
    prompts: list[str]
    completions: list[str]
    gold: list[str]  # human final_label, mapped to REFUSAL_LABELS
    judge: list[str | None]  # the file's gpt4_label (XSTest's automatic judge), for reference


def dev_files(data_dir: Path) -> list[Path]:
    """XSTest's labelled completion files under the data folder, in a fixed order (empty when none is there)."""
    return sorted((data_dir / "xstest" / "dev").glob("*_labeled.csv"))


def load_labeled(path: Path) -> Labeled:
    """Read one XSTest labelled file with the csv module (completions hold quotes, commas and newlines)."""
    csv.field_size_limit(sys.maxsize)
    data = Labeled([], [], [], [], [])
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"prompt", "completion", "final_label"} - set(reader.fieldnames or ())
        if missing:
            raise HarnessError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            label = GOLD.get((row["final_label"] or "").strip())
            if label is None:
                print(f"{path}:{line}: skipped, unknown final_label {row['final_label']!r}", file=sys.stderr)
                continue
            data.ids.append(row.get("id") or str(line))
            data.prompts.append(row["prompt"] or "")
            data.completions.append(row["completion"] or "")
            data.gold.append(label)
            data.judge.append(GOLD.get((row.get("gpt4_label") or "").strip()))
    return data
