"""The default scorer's throughput as a user gets it: the wall time of the real command,

    safety-harness score FILE [FILE ...] --response-column completion --label-column final_label

over each labelled XSTest dev file (450 replies each) and over both in one command (900 replies, the
scorer loaded once), start-up included (Python, torch, the MiniLM encoder, reading the files, printing
agreement), median of ``--repeat`` runs, pinned to ``--cores`` CPUs.
Beside it, in the same run and interleaved, the same command with ``--scorer refusal_patterns`` (the
floor any scorer pays: Python, the harness, the file), so the ratio of the two survives a busy machine
better than either figure. ``--profile`` adds where one run's time goes, stage by stage, in a fresh process.

    python benchmarks/bench_classifier.py [--data-dir ../shared/data] [--cores 2] [--repeat 3] [--profile]

Target: >= 100 replies/s for the command, on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Each stage of one scoring run, timed in a fresh interpreter (imports are part of the cost).
_PROFILE = r"""
import sys, time
t, c = [time.perf_counter()], [time.process_time()]
def mark(): t.append(time.perf_counter()); c.append(time.process_time())
import csv
from harness.cli import main as _cli                                          # the harness and its CLI
from harness.scoring import get_scorer
mark()
from harness.scoring.minilm import import_torch
torch = import_torch()                                                         # torch, as the scorer loads it
mark()
scorer = get_scorer("refusal_classifier")                                      # tokenizer, weights, head
mark()
with open(sys.argv[1], newline="", encoding="utf-8") as fh:
    texts = [r["completion"] for r in csv.DictReader(fh)]
enc = scorer.encoder
heads = [x.strip()[: enc.max_tokens * 12] for x in texts]
ids = enc.tokenizer.encode_batch(heads)                                       # tokenisation alone
mark()
from harness.scoring.classifier import rule_features, decide
emb = enc.encode(texts)                                                       # tokenisation + encoder
mark()
rules = rule_features(texts)                                                  # the rule signals
mark()
import numpy as np
feats = np.hstack([emb, rules]); decide(scorer.head.probs(feats), feats)       # the head
mark()
names = ["python + harness imports", "import torch", "encoder load", "tokenisation", "embedding (incl. tokenisation)",
         "rule features", "head"]
print(f"  {'stage':32} {'wall':>8} {'CPU':>8}")
for n, a, b, ca, cb in zip(names, t, t[1:], c, c[1:]):
    print(f"  {n:32} {b - a:7.3f}s {cb - ca:7.3f}s")
print(f"  {'total':32} {t[-1] - t[0]:7.3f}s {c[-1] - c[0]:7.3f}s  (CPU: all threads; on 2 idle cores wall >= CPU / 2)")
"""


def command(paths: list[Path], scorer: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli.main", "score", *map(str, paths), "--response-column", "completion",
            "--label-column", "final_label", "--scorer", scorer]


def count_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def wall(cmd: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    parser.add_argument("--cores", type=int, default=2, help="pin the commands to this many CPUs")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also time each stage of one run")
    args = parser.parse_args()
    from harness.core.paths import data_dir_for_parser

    args.data_dir = data_dir_for_parser(parser, args.data_dir)  # the one data-folder resolver

    files = sorted((args.data_dir / "xstest" / "dev").glob("*_labeled.csv"))
    if not files:
        raise SystemExit(f"no XSTest labelled files under {args.data_dir}/xstest/dev")
    cpus = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cpus)  # inherited by the commands, and so by torch's thread pool
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    wall(command(files[:1], "refusal_classifier"))  # warm the page cache: a first run reads torch from disk

    load = os.getloadavg()
    rows = {f: count_rows(f) for f in files}
    print(f"safety-harness score FILE... --response-column completion --label-column final_label, "
          f"median of {args.repeat}, {len(cpus)} CPU(s) {cpus}")
    medians, rule_medians = [], []
    for paths in [[f] for f in files] + [files]:
        n = sum(rows[p] for p in paths)
        ours, rules = [], []
        for _ in range(args.repeat):  # interleaved, so both see the same machine
            ours.append(wall(command(paths, "refusal_classifier")))
            rules.append(wall(command(paths, "refusal_patterns")))
        med, med_rules = statistics.median(ours), statistics.median(rules)
        medians.append(n / med)
        rule_medians.append(n / med_rules)
        name = paths[0].name if len(paths) == 1 else f"all {len(paths)} files in one command"
        print(f"  {name:46} {n:4d} replies: refusal_classifier {med:6.2f} s = {n / med:6.1f} replies/s   "
              f"(refusal_patterns {med_rules:5.2f} s; runs {' '.join(f'{s:.2f}' for s in ours)})")
    print(f"refusal_classifier, the user's command: {min(medians[:-1]):.1f} replies/s on one file (the slower), "
          f"{medians[-1]:.1f} on the dev files in one command (target >= 100)")
    print(f"ratio of the commands' rates, refusal_classifier / refusal_patterns (one command, all files) = "
          f"{medians[-1] / rule_medians[-1]:.4f}")
    print(f"load average before / after: {' '.join(f'{x:.1f}' for x in load)} / "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (a busy machine lowers every figure)")
    if args.profile:
        print(f"\nwhere one run's time goes ({files[0].name}, fresh interpreter):")
        done = subprocess.run([sys.executable, "-c", _PROFILE, str(files[0])], capture_output=True, text=True, cwd=REPO)
        print(done.stdout.rstrip() or done.stderr.strip()[-800:])


if __name__ == "__main__":
    main()
