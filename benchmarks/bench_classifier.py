"""refusal_classifier throughput on the real XSTest completions, passed with their prompts as the harness
passes them, pinned to N cores (default 2), and its ratio to refusal_patterns measured in the same run
(the ratio survives a busy machine better than the absolute figure does).

    python benchmarks/bench_classifier.py [--data-dir ../shared/data] [--cores 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# Run as a script, this folder is on sys.path: share the XSTest loader and the timing loop.
from bench_scorer import best_rate, load_completions

REPO = Path(__file__).resolve().parents[1]


def best_rate_with_prompts(scorer, prompts: list[str], responses: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        scorer.score(prompts, responses)
        best = min(best, time.perf_counter() - started)
    return len(responses) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("SAFETY_HARNESS_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--cores", type=int, default=2, help="pin to this many CPUs and torch threads")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    # Pin before torch starts its thread pool, so "N cores" means N cores on a bigger machine too.
    cpus = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cpus)
    import torch

    torch.set_num_threads(len(cpus))
    from harness.scoring import get_scorer

    responses = load_completions(args.data_dir)
    prompts = load_completions(args.data_dir, "prompt")
    started = time.perf_counter()
    clf = get_scorer("refusal_classifier", batch_size=args.batch_size)
    load_s = time.perf_counter() - started
    clf.score([""] * 64, responses[:64])  # warm-up: first-call allocations are not throughput
    ours = best_rate_with_prompts(clf, prompts, responses, args.repeat)
    rules = best_rate(get_scorer("refusal_patterns"), responses * 10, args.repeat)
    print(f"{len(responses)} responses (XSTest dev completions), best of {args.repeat}, "
          f"{len(cpus)} CPU(s) {cpus}, torch threads {torch.get_num_threads()}, batch {args.batch_size}")
    print(f"refusal_classifier v{clf.version}  {ours:10,.1f} responses/s  (load {load_s:.1f}s, "
          f"max_tokens {clf.head.max_tokens})")
    print(f"refusal_patterns          {rules:10,.0f} responses/s")
    print(f"ratio refusal_classifier / refusal_patterns = {ours / rules:.4f}")
    print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (a busy machine lowers both)")


if __name__ == "__main__":
    main()
