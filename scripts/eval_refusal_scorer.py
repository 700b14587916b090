# Figures from `python scripts/eval_refusal_scorer.py` (data: ../shared/data), 450 rows per file:
#
#   scorer                file        binary  three-class
#   refusal_patterns v1   gpt4         0.958        0.956
#   refusal_patterns v1   llama2new    0.953        0.867
#   xstest_string_match   gpt4         0.936        0.924
#   xstest_string_match   llama2new    0.924        0.856
#   gpt4_label (judge)    gpt4         0.938        0.936   (the files' own automatic GPT-4 judge)
#   gpt4_label (judge)    llama2new    0.804        0.782
#
#   refusal_patterns confusion (rows gold, columns predicted: compl / refusal / partial)
#     gpt4:       compl 229 0 1    refusal 12 199 0    partial 6 1 2
#     llama2new:  compl 167 8 1    refusal 8 214 8     partial 4 31 9
#
# The patterns were tuned on these same files, so the refusal_patterns figures are in-sample (optimistic
# for unseen models); the remaining errors are mostly premise rejections ("X was not justified.") and
# "As an AI, I don't hold opinions. However, ..." replies, which annotators split by prompt, and partial
# refusals that only a reader of the prompt can tell from "refusal plus alternatives".
# Speed ~15-21k responses/s on one core (printed per file below).

"""Agreement of refusal scorers with the XSTest human labels (xstest/dev/*_labeled.csv).

Prints, for each scorer and labelled file, binary agreement (compliance vs any refusal), three-class
agreement and a 3x3 confusion matrix; the files' own GPT-4 judge (gpt4_label) is printed for reference.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from any directory

from harness.core.errors import HarnessError  # noqa: E402
from harness.scoring import available_scorers, get_scorer  # noqa: E402
from harness.scoring.agreement import agreement as agreement_of  # noqa: E402

# final_label values in the XSTest files -> our labels
GOLD = {
    "1_full_compliance": "full_compliance",
    "2_full_refusal": "full_refusal",
    "3_partial_refusal": "partial_refusal",
}


def default_data_dir() -> Path:
    env = os.environ.get("SAFETY_HARNESS_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


class Labeled(NamedTuple):
    ids: list[str]
    prompts: list[str]
    completions: list[str]
    gold: list[str]  # human final_label, mapped to REFUSAL_LABELS
    judge: list[str | None]  # the file's gpt4_label (XSTest's automatic judge), for reference


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


def agreement(gold: list[str], pred: list[str]) -> tuple[float, float]:
    """(binary: compliance vs any refusal, three-class) agreement."""
    result = agreement_of(gold, pred)
    return result.binary, result.three_class


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder holding xstest/dev/")
    ap.add_argument("--scorer", action="append", help="scorer name (repeatable); default: all registered")
    ap.add_argument("--show-errors", type=int, default=0, metavar="N", help="print N disagreements per file")
    args = ap.parse_args(argv)

    files = sorted((args.data_dir / "xstest" / "dev").glob("*_labeled.csv"))
    if not files:
        print(f"error: no xstest/dev/*_labeled.csv under {args.data_dir}", file=sys.stderr)
        return 2
    try:
        scorers = [get_scorer(name) for name in (args.scorer or available_scorers())]
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    data = {path: load_labeled(path) for path in files}
    print("== gpt4_label (the files' own GPT-4 judge, for reference)")
    for path, d in data.items():
        binary, three = agreement(d.gold, [j or "missing" for j in d.judge])
        print(f"  {path.name}: n={len(d.gold)} binary={binary:.3f} three-class={three:.3f}")
    for scorer in scorers:
        print(f"== {scorer.name} (v{scorer.version})")
        for path, (ids, prompts, completions, gold, _) in data.items():
            t0 = time.perf_counter()
            pred = [s.label for s in scorer.score(prompts, completions)]
            rate = len(pred) / max(time.perf_counter() - t0, 1e-9)
            result = agreement_of(gold, pred)
            print(f"  {path.name}: n={len(gold)} binary={result.binary:.3f} three-class={result.three_class:.3f} "
                  f"({rate:,.0f}/s)")
            print("\n".join("    " + line for line in result.lines()[3:]))
            shown = 0
            for i, g, p, c in zip(ids, gold, pred, completions):
                if g != p and shown < args.show_errors:
                    shown += 1
                    print(f"    {i} gold={g} pred={p}: {c.strip()[:160]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
