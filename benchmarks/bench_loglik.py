"""Reference log-likelihood throughput, as a ratio in one run: the batched teacher-forced forward passes
of ``harness.capability.loglik`` against one sequence per forward pass, on real AlpacaEval references
and the embedded model, interleaved so both see the same machine load. On a CPU, batching buys little
(one sequence of a few hundred tokens already fills the matrix units) and padding costs a little; on a
GPU it is the difference between a busy and an idle device.

    python benchmarks/bench_loglik.py [--data-dir ../shared/data] [--prompts 32] [--repeat 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from harness.core.paths import data_dir_for_parser

    args.data_dir = data_dir_for_parser(ap, args.data_dir)  # the one data-folder resolver
    import torch

    torch.set_num_threads(args.threads)
    from harness.capability import lm as lm_module
    from harness.capability.lm import load_scoring_lm
    from harness.capability.loglik import reference_logliks
    from harness.capability.references import load_references
    from harness.data.loaders import load_alpaca_eval
    from harness.core.paths import default_cache_dir

    path = args.data_dir / "alpaca_eval" / "text_davinci_003_outputs.json"
    prompts = load_alpaca_eval(path, suite="capability")[: args.prompts]
    refs = load_references("text_davinci_003", args.data_dir)
    references = [refs[p.prompt] for p in prompts]
    lm = load_scoring_lm("smollm2-135m-instruct", cache_dir=default_cache_dir())

    def run(batched: bool) -> float:
        original = lm_module._batches
        if not batched:  # one row per forward pass
            lm_module._batches = lambda lengths, tails, *a: [[i] for i in range(len(lengths))]
        try:
            t0 = time.perf_counter()
            found = reference_logliks(lm, prompts, references, max_tokens=args.max_tokens)
            return sum(f.n_tokens for f in found if f) / (time.perf_counter() - t0), found
        finally:
            lm_module._batches = original

    reference_logliks(lm, prompts[:2], references[:2], max_tokens=8)  # warm-up, so neither mode pays for it
    batched, single, same = [], [], True
    for _ in range(args.repeat):
        rate_b, found_b = run(True)
        rate_s, found_s = run(False)
        batched.append(rate_b)
        single.append(rate_s)
        same &= all(abs(a.mean - b.mean) < 1e-3 for a, b in zip(found_b, found_s))
    b, s = statistics.median(batched), statistics.median(single)
    print(f"{len(prompts)} references, first {args.max_tokens} tokens, {args.threads} torch thread(s)")
    print(f"batched: {b:.0f} reference tokens/s; one per forward: {s:.0f}; ratio {b / s:.2f}; "
          f"same values: {same}")


if __name__ == "__main__":
    main()
