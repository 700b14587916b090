"""How far an adapter moves the canaries' next-token log-probabilities, against the backend's own noise.

    python -m research.experiments.adapter_sanity_noise [--backend hf|vllm] [--model tiny|ALIAS_OR_FOLDER] [--dtype auto]

For LoRA adapters whose B matrices are drawn at a range of scales (0 is peft's no-op initialisation), on
the backend and precision a run would use, it prints: the largest log-probability difference between the
adapter and the base model (what adapter sanity compares), the base model's difference from its own
repeated pass (the measured noise), the verdict the check gives, and how many canaries' greedy tokens
changed. The "dropped" row is a backend that never applies the adapter. docs/adapter-sanity.md holds the
figures; ``--model tiny`` (the default) needs nothing but torch, transformers and peft, so it runs on a
bare GPU machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

from harness.config.settings import RunSettings
from harness.core.types import Prompt
from harness.engine import adapter_sanity as sanity
from harness.engine.session import HarnessSession
from harness.models.tiny import make_tiny_adapter, make_tiny_llama


def measure(work: Path, adapter: Path, backend: str, dtype: str, drop: bool = False) -> dict:
    session = HarnessSession(RunSettings(model=str(adapter), backend=backend, dtype=dtype, max_new_tokens=8,
                                         cache_dir=work / "cache", no_adapter_sanity=True))
    session._build_requests([Prompt(suite="smoke", prompt_id="p", prompt="hello")])
    be = session._start_backend()
    switch = sanity._base_switch(be)
    requests = sanity.canary_requests(session.resolved_model, session.model_info.template)

    def run(helper):
        # "dropped": the adapter's pass made without it, as a backend that ignores the adapter answers. Each
        # helper makes that pass first, before its own switch nests inside this one (peft re-enables the
        # adapter when the inner switch exits), so each gets a "without" of its own.
        with switch() if drop else nullcontext():
            return helper(be, requests, switch)

    shift, noise = run(sanity.logprob_shifts)
    changed = run(sanity.greedy_changes)
    return {"dtype": session.model_info.dtype, "shift": shift, "repeat": noise,
            "verdict": "applied" if shift > sanity.noise_level(noise) else "refused", "greedy_changed": changed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="hf")
    ap.add_argument("--model", default="tiny", help="'tiny' (a random 2-layer Llama) or a model alias/folder")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--scales", default="0,2e-5,2e-4,2e-3,2e-2,2e-1", help="std of the LoRA B entries")
    args = ap.parse_args(argv)
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model == "tiny":
            base = make_tiny_llama(work / "base")
        else:
            from harness.models.resolve import resolve_model

            base = Path(resolve_model(args.model, cache_dir=work / "cache").path)
        print(f"backend {args.backend}, model {args.model}, noise = max({sanity.NOISE_FLOOR:g}, "
              f"{sanity.NOISE_MARGIN:g} x repeat)")
        print(f"{'B std':>8} {'max|B|':>9} {'dtype':>9} {'shift':>9} {'repeat':>9} {'verdict':>8} {'greedy changed':>15}")
        rows = [(float(s), False) for s in args.scales.split(",")] + [(0.2, True)]
        for scale, drop in rows:
            adapter = make_tiny_adapter(base, work / f"adapter-{scale:g}", r=8, noise=scale)
            top = max(float(t.abs().max()) for k, t in load_file(adapter / "adapter_model.safetensors").items()
                      if "lora_B" in k)
            m = measure(work, adapter, args.backend, args.dtype, drop=drop)
            label = f"{scale:g}" + (" dropped" if drop else "")
            print(f"{label:>8} {top:9.2g} {m['dtype']:>9} {m['shift']:9.2g} {m['repeat']:9.2g} {m['verdict']:>8} "
                  f"{m['greedy_changed']:>11} of 4")
    return 0


if __name__ == "__main__":
    sys.exit(main())
