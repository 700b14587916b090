"""Generation throughput, as ratios measured in one run on the same prompts and sampling parameters:

1. the harness end to end (pytest collection, generation through vLLM, scoring, cache and Parquet
   report) against a bare ``vllm.LLM.chat`` call on the same engine; target >= 0.95;
2. the vLLM backend against the hf backend (batched transformers ``generate``), generation only.

    HF_HUB_OFFLINE=1 python benchmarks/bench_generation.py [--prompts 64] [--max-new-tokens 64] [--repeat 3]

The engine is started once and reused (the harness keeps engines per process), so engine start-up, the
same for both, is left out of both. Each harness repetition uses a fresh cache folder so it generates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

BENCH_SUITE = """from harness.api import test_configured_suite  # noqa: F401
"""


def bench_prompts(n: int, data_dir: Path | None):
    """``n`` distinct prompts: the smoke suite, then XSTest when the data is there. Distinct matters:
    the harness generates a repeated prompt once, which a bare call would not."""
    from harness.data.loaders import load_smoke, load_xstest

    prompts = load_smoke()
    xstest = data_dir / "xstest" / "xstest_prompts.csv" if data_dir else None
    if len(prompts) < n and xstest and xstest.is_file():
        prompts += load_xstest(xstest)
    if len(prompts) < n:
        raise SystemExit(f"only {len(prompts)} distinct prompts available (pass --data-dir for XSTest)")
    return prompts[:n]


def write_suite(tmp: Path, prompts) -> Path:
    rows = [{"id": f"p{i}", "prompt": p.prompt, "expected": p.expected} for i, p in enumerate(prompts)]
    (tmp / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp / "bench.toml").write_text('[suites.bench]\npath = "prompts.jsonl"\n')
    (tmp / "test_bench.py").write_text(BENCH_SUITE)
    return tmp / "bench.toml"


def harness_run(tmp: Path, config: Path, model: str, max_new_tokens: int, rep: int,
                scorer: str = "refusal_patterns", dtype: str = "auto") -> tuple[float, dict]:
    import pytest

    from harness.reports.parquet import read_report

    report = tmp / f"report-{rep}.parquet"
    args = [str(tmp / "test_bench.py"), "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp),
            "--config", str(config), "--model", model, "--backend", "vllm",
            "--max-new-tokens", str(max_new_tokens), "--cache-dir", str(tmp / f"cache-{rep}"),
            "--report", str(report), "--scorer", scorer, "--dtype", dtype]
    started = time.perf_counter()
    pytest.main(args)
    elapsed = time.perf_counter() - started
    table, meta = read_report(report)
    return elapsed, {"tokens": sum(table.column("n_response_tokens").to_pylist()), "meta": meta}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-hf", action="store_true")
    # The bare call scores nothing; refusal_patterns (microseconds per response) keeps the comparison about
    # generation. --scorer refusal_classifier adds the default scorer's load and scoring to the harness side.
    parser.add_argument("--scorer", default="refusal_patterns", help="refusal scorer of the harness runs")
    # auto: each backend's own default (vllm bfloat16 on a CPU with native bfloat16, hf float32); float32 on
    # both makes their responses comparable token for token.
    parser.add_argument("--dtype", default="auto", help="precision of every backend and harness run")
    parser.add_argument("--hf-threads", type=int, default=1, help="torch threads for the hf backend")
    parser.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    args = parser.parse_args()
    from harness.core.paths import data_dir_for_parser

    args.data_dir = data_dir_for_parser(parser, args.data_dir)  # the one data-folder resolver

    from harness.backends import create_backend
    from harness.backends.base import BackendOptions, SamplingConfig
    from harness.backends.vllm_backend import get_engine
    from harness.models.resolve import load_tokenizer, resolve_model
    from harness.core.paths import default_cache_dir
    from harness.models.templates import format_prompts
    from harness.core.types import GenerationRequest

    model = resolve_model(args.model, cache_dir=default_cache_dir())
    prompts = bench_prompts(args.prompts, args.data_dir)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    options = BackendOptions(dtype=args.dtype)

    # 2. vllm against hf, generation only, on identical token ids. hf runs first: an idle vLLM CPU
    # engine keeps polling and would slow anything that runs beside it.
    rates, texts = {}, {}
    if not args.skip_hf:
        import torch

        # vLLM's CPU worker computes on one core (it binds core 0 and reserves the other for its
        # front end), so hf gets one thread too. Two OpenMP threads on a 2-core machine where anything
        # else runs collapse (3.4 against 79 tokens/s measured here), which would not be a fair baseline.
        torch.set_num_threads(args.hf_threads)
        formatted = format_prompts(prompts, "chat", load_tokenizer(model))
        requests = [GenerationRequest(str(i), p, f.text, f.token_ids)
                    for i, (p, f) in enumerate(zip(prompts, formatted))]
        for name in ("hf", "vllm"):
            backend = create_backend(name, model=model, sampling=sampling, options=options)
            if name == "vllm":
                backend.generate(requests[:4])  # warm-up
            started = time.perf_counter()
            results = backend.generate(requests)
            elapsed = time.perf_counter() - started
            rates[name] = sum(r.n_tokens for r in results) / elapsed
            texts[name] = [r.text for r in results]
            backend.close()
            print(f"{name:4} backend generate   {rates[name]:8.1f} tokens/s ({elapsed:.1f} s)", flush=True)

    # 1. the harness end to end against a bare LLM.chat, on the same (cached) engine. vLLM is imported
    # only now: importing it leaves torch single-threaded in this process, which would slow hf.
    from vllm import SamplingParams

    llm = get_engine(model.path, options, seed=sampling.seed, max_lora_rank=None)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens, seed=sampling.seed)
    messages = [[{"role": "user", "content": p.prompt}] for p in prompts]
    llm.chat(messages[:4], params, use_tqdm=False)  # warm-up

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = write_suite(tmp, prompts)
        bare_rates, harness_rates, bare_tokens, harness_tokens = [], [], 0, 0
        harness_run(tmp, config, model.path, args.max_new_tokens, -1, args.scorer, args.dtype)  # warm-up, as the bare call had
        for rep in range(args.repeat):  # interleaved, so drift on a shared machine hits both alike
            started = time.perf_counter()
            outs = llm.chat(messages, params, use_tqdm=False)
            bare_time = time.perf_counter() - started
            bare_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
            bare_rates.append(bare_tokens / bare_time)
            # The prepared folder, not the alias: each repetition's fresh cache folder would otherwise
            # prepare the alias again, at a new path, and start a second engine.
            h_time, info = harness_run(tmp, config, model.path, args.max_new_tokens, rep, args.scorer, args.dtype)
            harness_tokens = info["tokens"]
            harness_rates.append(harness_tokens / h_time)
            print(f"rep {rep}: bare {bare_time:.2f} s ({bare_tokens} tokens), "
                  f"harness end to end {h_time:.2f} s ({harness_tokens} tokens)", flush=True)
        bare, harness = statistics.median(bare_rates), statistics.median(harness_rates)
        bare_texts = [o.outputs[0].text for o in outs]

    print(f"\n{len(prompts)} prompts, greedy, max_new_tokens {args.max_new_tokens}, median of {args.repeat}")
    print(f"bare vllm.LLM.chat         {bare:8.1f} tokens/s")
    print(f"harness end to end (vllm)  {harness:8.1f} tokens/s")
    print(f"ratio harness / bare = {harness / bare:.3f}   (target >= 0.95; tokens {harness_tokens} vs {bare_tokens})")
    if rates:
        identical = sum(a == b for a, b in zip(texts["vllm"], texts["hf"]))
        print(f"ratio vllm / hf = {rates['vllm'] / rates['hf']:.3f}; "
              f"identical vllm/hf responses {identical}/{len(prompts)}")
        same = sum(a == b for a, b in zip(bare_texts, texts["vllm"]))
        print(f"bare LLM.chat vs harness vllm backend: identical responses {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
