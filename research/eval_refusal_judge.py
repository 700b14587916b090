"""Agreement of the refusal_judge (XSTest's rubric on a local model) with XSTest's human labels.

    python -m research.eval_refusal_judge --judge-model smollm2-135m-instruct --backend vllm --limit 100

Prints, per labelled file in xstest/dev: the judge_error rate, binary and three-class agreement on the
rows the judge answered (and counting judge errors as wrong), the confusion matrix, the verdicts the judge
gave most often (to see how it fails), and throughput. ``--limit`` takes a fixed stratified sample per
file (by human label), so small runs keep the label mix.

Figures (the embedded 135M model judging, --backend vllm, all 450 rows per file, shared 2-core CPU):
    file       judge_error    binary / 3-class on answered rows   binary, judge_error counted wrong
    gpt4       163 (36.2%)    0.683 / 0.683                       0.436    (1.0 responses/s)
    llama2new   27 (6.0%)     0.381 / 0.381                       0.358    (0.8 responses/s)
It says 1_full_compliance to nearly everything; its unparseable outputs describe the text ("The text is
not a instruction to classify ...") or list all three classes. A usable judge needs a capable model.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from harness.config.settings import RunSettings
from harness.core.errors import HarnessError
from harness.data.loaders import read_table
from harness.scoring.agreement import agreement, normalize_label
from research.data import data_dir_arg
from research.xstest_dev import dev_files


def sample(rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    """At most ``limit`` rows, the same share of each human label as the file (deterministic)."""
    if limit is None or limit >= len(rows):
        return rows
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["final_label"], []).append(row)
    rng = random.Random(seed)
    picked = []
    for label, group in sorted(by_label.items()):
        k = max(1, round(limit * len(group) / len(rows)))
        picked += rng.sample(group, min(k, len(group)))
    return picked[:limit]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge-model", default="smollm2-135m-instruct", help="alias or local model folder")
    ap.add_argument("--backend", default="auto", choices=("auto", "vllm", "hf"))
    ap.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    ap.add_argument("--limit", type=int, default=None, help="rows per file (stratified by human label)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vllm-kv-cache-gib", type=float, default=1.0)
    ap.add_argument("--max-model-len", type=int, default=2048)
    args = ap.parse_args(argv)
    args.data_dir = data_dir_arg(args.data_dir)

    files = dev_files(args.data_dir)
    if not files:
        print(f"error: no xstest/dev/*_labeled.csv under {args.data_dir}", file=sys.stderr)
        return 2
    from harness.engine.preflight import scorer_options
    from harness.scoring.factory import build_refusal_scorer

    settings = replace(RunSettings(), scorer="refusal_judge", judge_model=args.judge_model, backend=args.backend,
                       vllm_kv_cache_gib=args.vllm_kv_cache_gib, max_model_len=args.max_model_len)
    try:
        t0 = time.perf_counter()
        scorer = build_refusal_scorer(scorer_options(settings))
        rows_by_file = {f: sample([r for _, r in read_table(f, ("prompt", "completion", "final_label"))],
                                  args.limit, args.seed) for f in files}
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"judge {args.judge_model} via {scorer.judge.backend}, refusal_judge version {scorer.version} "
          f"(set-up {time.perf_counter() - t0:.1f} s)")
    for path, rows in rows_by_file.items():
        t0 = time.perf_counter()
        scores = scorer.score([r["prompt"] for r in rows], [r["completion"] for r in rows])
        seconds = time.perf_counter() - t0
        pred = [s.label for s in scores]
        gold = [normalize_label(r["final_label"]) for r in rows]
        result = agreement(gold, pred)
        wrong_if_error = sum((g == "full_compliance") == (p == "full_compliance") and p != "judge_error"
                             for g, p in zip(gold, pred)) / len(rows)
        print(f"== {path.name}: n={len(rows)}, judge_error {result.judge_errors} ({result.judge_errors / len(rows):.1%}), "
              f"{len(rows) / seconds:.2f} responses/s ({seconds:.1f} s)")
        for line in result.lines():
            print("  " + line)
        print(f"  binary agreement counting judge_error as wrong: {wrong_if_error:.3f}")
        outputs = Counter(" ".join(s.extra.get("judge_output", "").split())[:40] for s in scores)
        print("  most frequent judge outputs: " + "; ".join(f"{o!r} x{n}" for o, n in outputs.most_common(5)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
