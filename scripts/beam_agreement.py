"""Beam search on the vllm and hf backends, prompt by prompt: how often the two give the same top beam.

    HF_HUB_OFFLINE=1 python scripts/beam_agreement.py [--prompts 64] [--num-beams 4] [--max-new-tokens 64]

or each backend in its own process, side by side, then the table:

    python scripts/beam_agreement.py --only vllm --save vllm.json & python scripts/beam_agreement.py --only hf --save hf.json
    python scripts/beam_agreement.py --load vllm.json hf.json

Both backends get the same token ids (the chat template of the embedded model) in the same precision
(float32 by default: bfloat16 rounding alone moves beams). The prompts are the smoke suite's, then XSTest's
from $SAFETY_HARNESS_DATA, as benchmarks/bench_generation.py picks them. Prints the agreement table and,
for each prompt where the top beams differ, where they part and how each ended; docs/generation.md has
the figures and why they differ.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path



def prompts_for(n: int, data_dir: Path):
    from harness.data.loaders import load_smoke, load_xstest

    prompts = load_smoke()
    xstest = data_dir / "xstest" / "xstest_prompts.csv"
    if len(prompts) < n and xstest.is_file():
        prompts += load_xstest(xstest)
    if len(prompts) < n:
        raise SystemExit(f"only {len(prompts)} prompts available (set SAFETY_HARNESS_DATA for XSTest)")
    return prompts[:n]


def shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--early-stopping", default="false", choices=("false", "never"))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=8, help="hf backend batch size")
    parser.add_argument("--vllm-block-size", type=int, default=32,
                        help="vLLM KV-cache block size: vLLM's beam search sends every beam again each step, and only "
                             "whole blocks of it come from the prefix cache (vLLM's CPU default is 128; CPU attention needs a "
                             "multiple of 32)")
    parser.add_argument("--only", choices=("vllm", "hf"), help="search with one backend and --save its results")
    parser.add_argument("--save", type=Path, help="JSON file for --only's results")
    parser.add_argument("--load", type=Path, nargs=2, metavar=("VLLM_JSON", "HF_JSON"),
                        help="compare two --save files instead of searching (e.g. two --only runs side by side)")
    parser.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    args = parser.parse_args()
    from harness.core.paths import data_dir_for_parser

    args.data_dir = data_dir_for_parser(parser, args.data_dir)  # the one data-folder resolver

    from harness.backends import create_backend
    from harness.backends.base import BackendOptions, SamplingConfig
    from harness.core.paths import default_cache_dir
    from harness.core.types import GenerationRequest, GenerationResult
    from harness.models.resolve import load_tokenizer, resolve_model
    from harness.models.templates import format_prompts

    model = resolve_model(args.model, cache_dir=default_cache_dir())
    tokenizer = load_tokenizer(model)
    prompts = prompts_for(args.prompts, args.data_dir)
    formatted = format_prompts(prompts, "chat", tokenizer)
    requests = [GenerationRequest(str(i), p, f.text, f.token_ids) for i, (p, f) in enumerate(zip(prompts, formatted))]
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                              length_penalty=args.length_penalty, early_stopping=args.early_stopping)
    options = BackendOptions(dtype=args.dtype, batch_size=args.batch_size)
    results, seconds = {}, {}
    if args.load:
        for name, path in zip(("vllm", "hf"), args.load):
            saved = json.loads(path.read_text())
            results[name] = [GenerationResult(**r) for r in saved["results"]]
            seconds[name] = saved["seconds"]
    for name in () if args.load else [args.only] if args.only else ["vllm", "hf"]:
        extra = {"block_size": args.vllm_block_size} if name == "vllm" else {}
        backend = create_backend(name, model=model, sampling=sampling, options=replace(options, extra=extra))
        started = time.perf_counter()
        results[name] = backend.generate(requests)
        seconds[name] = time.perf_counter() - started
        backend.close()
    if args.only:
        args.save.write_text(json.dumps({"seconds": seconds[args.only], "results": [vars(r) for r in results[args.only]]}))
        return

    same = [v.text == h.text for v, h in zip(results["vllm"], results["hf"])]
    n, k = len(same), sum(same)
    print(f"{args.model}, {args.dtype}, num_beams={args.num_beams}, max_new_tokens={args.max_new_tokens}, "
          f"length_penalty={args.length_penalty}, early_stopping={args.early_stopping}")
    print(f"search time: vllm {seconds['vllm']:.0f} s (block size {args.vllm_block_size}), hf {seconds['hf']:.0f} s "
          f"(batch {args.batch_size})")
    print()
    print("| prompts | same top beam | share | differ |")
    print("|---:|---:|---:|---:|")
    print(f"| {n} | {k} | {k / n:.3f} | {n - k} |")
    if k < n:
        print()
        print("| prompt | shared tokens | vllm tokens, end | hf tokens, end |")
        print("|---|---:|---|---|")
    for req, v, h, ok in zip(requests, results["vllm"], results["hf"], same):
        if ok:
            continue
        vt = tokenizer.encode(v.text, add_special_tokens=False)
        ht = tokenizer.encode(h.text, add_special_tokens=False)
        print(f"| {req.prompt.suite}/{req.prompt.prompt_id} | {shared_prefix(vt, ht)} | {v.n_tokens}, {v.finish_reason} "
              f"| {h.n_tokens}, {h.finish_reason} |")


if __name__ == "__main__":
    main()
