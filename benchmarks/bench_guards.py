"""Guard scorer throughput through vLLM on the CPU, on tiny models of each guard's architecture: replies/s of
the scorer (formatting, tokenizing, generating, parsing) on XSTest's 450 GPT-4 dev replies with their prompts,
and, as a ratio in the same run, against a bare ``engine.generate`` on the very token ids the scorer sent.

A random tiny guard answers ``max_new_tokens`` of noise (128 WildGuard and Qwen3Guard, 100 Llama Guard: the
authors' budgets); a forced one answers one token and stops. A real guard answers 10-20 tokens, in between.
The tiny models spell every byte as a token, so the guard prompts are 2-4x longer than a real tokenizer's.

    python benchmarks/bench_guards.py [--data-dir ../shared/data] [--replies 450] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench_scorer import load_completions

FORCED = {"wildguard": "Harmful request: no\nResponse refusal: yes\nHarmful response: no",
          "qwen3guard": "Safety: Safe\nCategories: None\nRefusal: Yes", "llamaguard": "safe"}


def best_seconds(call, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def measure(kind: str, model: Path, prompts: list[str], replies: list[str], repeat: int, cache: Path) -> str:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from harness.backends import BackendOptions
    from harness.scoring.guards import llamaguard, qwen3guard, wildguard
    from harness.scoring.guards.base import GuardHarmScorer, GuardReader, GuardRefusalScorer
    from harness.scoring.judge import JudgeModel

    fmt = {"wildguard": wildguard.WILDGUARD, "qwen3guard": qwen3guard.QWEN3GUARD, "llamaguard": llamaguard.LLAMAGUARD}[kind]
    judge = JudgeModel(str(model), cache_dir=cache, backend="vllm", options=BackendOptions(max_model_len=4096, kv_cache_gib=1))
    reader = GuardReader(judge, fmt)
    scorer = GuardHarmScorer(reader) if kind == "llamaguard" else GuardRefusalScorer(reader)
    started = time.perf_counter()
    scorer.score(prompts[:8], replies[:8])  # starts the engine; not throughput
    start_s = time.perf_counter() - started

    engine = judge.backend_for(fmt.max_new_tokens).engine

    def score():
        # Replies the guard has not seen: its memo of the last batch and vLLM's prefix cache would answer the
        # repeat from the first run (the fixed instruction is cached again within the run, as in a real one).
        judge._last.clear()
        engine.reset_prefix_cache()
        scorer.score(prompts, replies)

    ours = best_seconds(score, repeat)
    ids = [reader.token_ids(p, r) for p, r in zip(prompts, replies)]
    params = SamplingParams(temperature=0.0, max_tokens=fmt.max_new_tokens)

    def bare_generate():
        engine.reset_prefix_cache()
        engine.generate([TokensPrompt(prompt_token_ids=list(i)) for i in ids], params, use_tqdm=False)

    bare = best_seconds(bare_generate, repeat)
    formatting = best_seconds(lambda: fmt.batch_token_ids(judge.tokenizer, [reader.prompt_text(p, r) for p, r
                                                                             in zip(prompts, replies)]), repeat)
    n = len(replies)
    mean_len = sum(map(len, ids)) / n
    return (f"{kind:<11} {model.name:<18} {n / ours:8.1f} replies/s   bare engine {n / bare:8.1f}/s   ratio "
            f"{bare / ours:.3f}   format+tokenize {formatting:.2f} s   (prompt {mean_len:,.0f} tokens on average; "
            f"engine start {start_s:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    parser.add_argument("--replies", type=int, default=450)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--guards", nargs="*", default=list(FORCED))
    args = parser.parse_args()
    from harness.core.paths import data_dir_for_parser

    args.data_dir = data_dir_for_parser(parser, args.data_dir)  # the one data-folder resolver

    from harness.backends.vllm_backend import shutdown_engines
    from harness.models.tiny import make_tiny_guard

    replies = load_completions(args.data_dir)[: args.replies]
    prompts = load_completions(args.data_dir, "prompt")[: args.replies]
    print(f"{len(replies)} XSTest dev replies with their prompts, best of {args.repeat}, vLLM on the CPU "
          f"({os.cpu_count()} CPUs visible)")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.guards:
            for variant, verdict in (("random", None), ("forced", FORCED[kind])):
                model = make_tiny_guard(kind, Path(tmp) / f"{kind}-{variant}", verdict=verdict)
                print(measure(kind, model, prompts, replies, args.repeat, Path(tmp) / "cache"), flush=True)
                shutdown_engines()  # one engine at a time: the machine's memory is shared


if __name__ == "__main__":
    main()
