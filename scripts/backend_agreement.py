"""Agreement between two reports of the same prompts, e.g. the vllm and hf backends under greedy decoding:
share of identical refusal labels, identical pass/fail verdicts and identical response texts.

    python scripts/backend_agreement.py A.parquet B.parquet
"""

from __future__ import annotations

import sys
from collections import Counter

from harness.reports.parquet import read_report


def main(a_path: str, b_path: str) -> None:
    a_rows = {(r["suite"], r["prompt_id"]): r for r in read_report(a_path)[0].to_pylist()}
    b_rows = {(r["suite"], r["prompt_id"]): r for r in read_report(b_path)[0].to_pylist()}
    shared = sorted(a_rows.keys() & b_rows.keys())
    if not shared:
        raise SystemExit("the two reports share no (suite, prompt_id)")
    pairs = [(a_rows[k], b_rows[k]) for k in shared]
    labels = sum(a["refusal_label"] == b["refusal_label"] for a, b in pairs)
    verdicts = sum(a["passed"] == b["passed"] for a, b in pairs)
    texts = sum(a["response"] == b["response"] for a, b in pairs)
    n = len(pairs)
    only_a, only_b = len(a_rows.keys() - b_rows.keys()), len(b_rows.keys() - a_rows.keys())
    print(f"{n} shared prompts ({a_rows[shared[0]]['backend']} vs {b_rows[shared[0]]['backend']})"
          + (f"; not compared: {only_a} only in {a_path}, {only_b} only in {b_path}" if only_a or only_b else ""))
    print(f"refusal label agreement {labels}/{n} = {labels / n:.3f}")
    print(f"pass/fail agreement     {verdicts}/{n} = {verdicts / n:.3f}")
    print(f"identical responses     {texts}/{n} = {texts / n:.3f}")
    flips = Counter((a["refusal_label"], b["refusal_label"]) for a, b in pairs if a["refusal_label"] != b["refusal_label"])
    for (x, y), count in flips.most_common():
        print(f"  {x} -> {y}: {count}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
