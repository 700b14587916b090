# Figures from `python -m research.eval_refusal_scorer` (data: ../shared/data), 450 rows per file:
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
import sys
import time
from pathlib import Path

from harness.core.errors import HarnessError
from harness.scoring import available_scorers, get_scorer
from harness.scoring.agreement import agreement as agreement_of
from research.data import data_dir_arg
from research.xstest_dev import dev_files, load_labeled

def agreement(gold: list[str], pred: list[str]) -> tuple[float, float]:
    """(binary: compliance vs any refusal, three-class) agreement."""
    result = agreement_of(gold, pred)
    return result.binary, result.three_class


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, help="folder holding xstest/dev/ (default: $SAFETY_HARNESS_DATA)")
    ap.add_argument("--scorer", action="append", help="scorer name (repeatable); default: all registered")
    ap.add_argument("--show-errors", type=int, default=0, metavar="N", help="print N disagreements per file")
    args = ap.parse_args(argv)
    args.data_dir = data_dir_arg(args.data_dir)

    files = dev_files(args.data_dir)
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
