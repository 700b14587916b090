"""Where a run's generation time goes: the prompts of a report generated again on the harness's own vLLM
engine (in this process, as a CPU run starts it), split into prefill and decode, with the engine's operators
ranked by the torch profiler.

    HF_HUB_OFFLINE=1 python benchmarks/profile_generation.py REPORT [--max-tokens 256] [--profile-tokens 48]
        [--compiled]

REPORT is a run's Parquet report (the main job's: ``pytest suites/ --limit 20 --report REPORT``); its prompts
are templated with the model's chat template, as the main job's are. Printed: the engine's start, the prefill
alone (one new token per prompt), the decode seconds per step at the full batch, the whole generation's
tokens/s, and the operators' share of the profiled steps. ``--compiled`` starts the engine with torch.compile
instead of eager (the CPU default), to weigh the compile time against its speed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a run's Parquet report; its prompts are generated again")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-tokens", type=int, default=256, help="new tokens of the whole generation")
    parser.add_argument("--profile-tokens", type=int, default=48, help="new tokens of the profiled generation")
    parser.add_argument("--decode-steps", type=int, default=32, help="steps timed at the full batch")
    parser.add_argument("--compiled", action="store_true", help="torch.compile the model (eager otherwise)")
    args = parser.parse_args()

    from harness.backends.base import BackendOptions
    from harness.backends.vllm_backend import get_engine
    from harness.core.paths import default_cache_dir
    from harness.models.resolve import resolve_model
    from harness.reports.parquet import read_report

    table, _ = read_report(args.report)
    model = resolve_model(args.model, cache_dir=default_cache_dir())
    started = time.perf_counter()
    engine = get_engine(model.path, BackendOptions(dtype="float32", extra={"enforce_eager": not args.compiled}),
                        seed=0, max_lora_rank=None)
    print(f"engine start {time.perf_counter() - started:.1f} s ({'compiled' if args.compiled else 'eager'})")

    import vllm

    tokenizer = engine.get_tokenizer()
    prompts = [{"prompt_token_ids": tokenizer.encode(tokenizer.apply_chat_template(
        [{"role": "user", "content": row["prompt"]}], add_generation_prompt=True, tokenize=False),
        add_special_tokens=False)} for row in table.select(["prompt"]).to_pylist()]
    n_prompt_tokens = sum(len(p["prompt_token_ids"]) for p in prompts)

    def generate(max_tokens: int, *, ignore_eos: bool = False) -> tuple[float, int]:
        params = vllm.SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=ignore_eos)
        t0 = time.perf_counter()
        out = engine.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - t0, sum(len(o.outputs[0].token_ids) for o in out)

    generate(1)  # warm-up: the first call pays one-time costs the run's own first call pays as well
    prefill, _ = generate(1)
    batch, _ = generate(args.decode_steps + 1, ignore_eos=True)
    print(f"{len(prompts)} prompts, {n_prompt_tokens} prompt tokens: prefill {prefill:.1f} s; decode at a batch of "
          f"{len(prompts)}: {(batch - prefill) / args.decode_steps:.3f} s a step")
    seconds, tokens = generate(args.max_tokens)
    print(f"generation of up to {args.max_tokens} tokens: {tokens} tokens in {seconds:.1f} s "
          f"({tokens / seconds:.1f} tokens/s)")

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        generate(args.profile_tokens)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1
    print(f"operators, share of the profiled generation ({args.profile_tokens} tokens, prefill included):")
    for e in ops[:8]:
        print(f"  {e.key:45} {100 * e.self_cpu_time_total / total:5.1f}%  {e.count:6d} calls")


if __name__ == "__main__":
    main()
