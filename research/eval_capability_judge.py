"""Validate capability judges against AlpacaEval's GPT-4 pairwise preferences.

    python -m research.eval_capability_judge --per-file 25 --judge llm --judge longer

Reads every ``dev_annotations/*.json`` (text_davinci_003 as output_1 against four models as output_2),
takes a seeded sample of ``--per-file`` pairs from each, judges every pair in both orders (position
swapping; an inconsistent verdict is a tie) and prints each judge's agreement with GPT-4, with ties
excluded and included, with bootstrap 95% intervals; also how often the judge's two orders agreed, and
each file's win rate of output_2 by GPT-4 and by the judge.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from harness.capability.judges import JudgeConfig, available_judges, get_judge
from harness.capability.references import load_annotations
from harness.capability.validation import agreement, verdict_from_score
from harness.capability.win_rate import judge_swapped
from harness.core.errors import HarnessError
from research.data import data_dir_arg


def sample_annotations(folder: Path, per_file: int | None, seed: int):
    files = sorted(folder.glob("*.json"))
    if not files:
        raise HarnessError(f"{folder}: no annotation files (*.json)")
    out = []
    for path in files:
        items = load_annotations(path)
        if per_file is not None and per_file < len(items):
            items = random.Random(f"{seed}:{path.name}").sample(items, per_file)
        out += items
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    ap.add_argument("--judge", action="append", choices=available_judges(),
                    help="judge to validate (repeatable; default: llm and longer)")
    ap.add_argument("--judge-model", default="smollm2-135m-instruct", help="model the llm judge runs")
    ap.add_argument("--per-file", type=int, default=25, help="pairs sampled from each annotation file (0: all)")
    ap.add_argument("--max-chars", type=int, default=JudgeConfig.max_chars)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared 2-core machine two threads oversubscribe and run slower)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    args.data_dir = data_dir_arg(args.data_dir)
    import torch

    torch.set_num_threads(args.threads)
    try:
        pairs = sample_annotations(args.data_dir / "alpaca_eval" / "dev_annotations", args.per_file or None, args.seed)
        gpt4 = [a.preference for a in pairs]
        files = sorted({a.source.split(": item")[0] for a in pairs})
        print(f"{len(pairs)} pairs ({args.per_file or 'all'} per file from {len(files)} files, seed {args.seed}); "
              f"GPT-4 ties: {sum(p == 1.5 for p in gpt4)}")
        results = {}
        for name in args.judge or ["llm", "longer"]:
            t0 = time.perf_counter()
            judge = get_judge(name, JudgeConfig(model=args.judge_model, max_chars=args.max_chars))
            verdicts = judge_swapped(judge, [a.instruction for a in pairs], [a.output_1 for a in pairs],
                                     [a.output_2 for a in pairs])
            seconds = time.perf_counter() - t0
            judged = [verdict_from_score(v.score) for v in verdicts]
            agree = agreement(gpt4, judged)
            consistent = sum(1 for v in verdicts if (v.prob_shown_first > 0.5) == (v.prob_shown_second > 0.5)
                             and 0.5 not in (v.prob_shown_first, v.prob_shown_second)) / len(verdicts)
            label = name + (f" ({args.judge_model})" if name == "llm" else "")
            print(f"\n{label}: {seconds:.0f} s")
            print(f"  agreement with GPT-4, ties excluded: {agree['ties_excluded']}  "
                  f"(judge decisive on {agree['coverage']:.0%} of GPT-4's decisive pairs)")
            print(f"  agreement with GPT-4, ties included: {agree['ties_included']}")
            print(f"  both orders agree (position-consistent): {consistent:.3f}")
            per_file = {}
            for f in files:
                idx = [i for i, a in enumerate(pairs) if a.source.startswith(f)]
                gpt4_rate = sum({2.0: 1.0, 1.5: 0.5}.get(gpt4[i], 0.0) for i in idx) / len(idx)
                judge_rate = sum(1 - verdicts[i].score for i in idx) / len(idx)
                per_file[Path(f).stem] = {"gpt4": gpt4_rate, "judge": judge_rate}
                print(f"  win rate of {Path(f).stem} over text_davinci_003: GPT-4 {gpt4_rate:.2f}, judge {judge_rate:.2f}")
            results[label] = {"seconds": seconds, "consistent": consistent, "coverage": agree["coverage"],
                              "per_file": per_file,
                              **{k: vars(agree[k]) for k in ("ties_excluded", "ties_included")}}
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps({"pairs": len(pairs), "per_file": args.per_file, "seed": args.seed,
                                         "judges": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
