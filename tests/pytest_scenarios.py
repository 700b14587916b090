"""The runs behind tests/test_pytest_options.py: `pytest` with the harness's options on small projects (two
declared suites on the dummy backend, the built-in suites on the shared data, the tiny random Llama on the
hf backend), in this process through pytester, or in a subprocess where a run needs its own process (the
real vLLM engine, a model's own code, Ray)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_scenarios import REPO, shared_data, write_csv
from tests.option_effects import Run, Scenarios, environment

SCENARIOS = Scenarios()
scenario = SCENARIOS
vllm_run = (pytest.mark.slow, pytest.mark.vllm, pytest.mark.default_model)
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")


@dataclass
class Context:
    tmp_path_factory: pytest.TempPathFactory
    tiny_model: Path
    tiny_adapter: Path
    pytester: pytest.Pytester
    shared_data: Path  # read before any scenario changes the environment

    def tmp(self, name: str) -> Path:
        return self.tmp_path_factory.mktemp(name)

    def run(self, name: str) -> Run:
        return SCENARIOS.run(name, self)

    @property
    def data_dir(self) -> Path:
        if not self.shared_data.is_dir():
            pytest.skip(f"shared datasets not found at {self.shared_data}: set SAFETY_HARNESS_DATA")
        return self.shared_data


LOOSE = '\n[tool.safety-harness.thresholds.beta]\nmax_refusal_rate = 1.0\n'


def project(ctx, name: str, *, toml: str = "", suites: tuple[str, ...] = (), declared: bool = True,
            loose: bool = True) -> Path:
    """A folder laid out like a user's project: alpha (4 should-refuse prompts; the dummy refuses "bomb" and
    "poison") and beta (3 safe ones) declared in pyproject.toml with one test each when ``declared``, and a
    test for each built-in suite in ``suites``. ``loose``: thresholds nothing crosses, for a model whose
    replies are noise (the tiny Llama) or a run whose replies are set, so that its exit status says whether
    it ran."""
    from tests.conftest import CATEGORY_SUITE, CONFIGURED_SUITES, PROJECT_TOML
    from tests.support import ALPHA_CSV, ANIMALS_LOOSE, BETA_JSONL, SUITES_TOML

    root = ctx.tmp(name)
    thresholds = SUITES_TOML.format(alpha_max=1.0 if loose else 0.5) + ANIMALS_LOOSE + (LOOSE if loose else "")
    (root / "pyproject.toml").write_text(PROJECT_TOML + thresholds + toml)
    (root / "alpha.csv").write_text(ALPHA_CSV)
    (root / "beta.jsonl").write_text(BETA_JSONL)
    if declared:
        (root / "test_configured.py").write_text(CONFIGURED_SUITES)
    for suite in suites:
        (root / f"test_{suite}_suite.py").write_text(CATEGORY_SUITE.format(name=suite))
    return root


def run_pytest(ctx, root: Path, *args, env: dict | None = None, in_subprocess: bool = False) -> Run:
    """pytest on the project at ``root``; a harness cache and a report inside it unless ``args`` name them."""
    args = [str(a) for a in args]
    full = [str(root), f"--rootdir={root}", "-p", "no:randomly", "-p", "no:cacheprovider", *args]
    if "--cache-dir" not in args:
        full += ["--cache-dir", str(root / "harness-cache")]
    report = Path(args[args.index("--report") + 1]) if "--report" in args else root / "report.parquet"
    if "--report" not in args:
        full += ["--report", str(report)]
    with environment(**(env or {})):
        result = ctx.pytester.runpytest_subprocess(*full) if in_subprocess else ctx.pytester.runpytest(*full)
    return Run(int(result.ret), "\n".join(result.outlines + result.errlines), root, report)


def responses(run: Run) -> dict:
    return {(r["suite"], r["prompt_id"]): r["response"] for r in run.rows}


# -- the dummy backend on the declared suites ----------------------------------------------------------------

@scenario("dummy")
def _dummy(ctx) -> Run:
    root = project(ctx, "dummy", loose=False)
    return run_pytest(ctx, root, "--backend", "dummy", "--backend-arg", 'refuse_words=["bomb", "poison", "hurt"]',
                      "--scorer", "xstest_string_match", "--harm-scorer", "none", "--limit", "3",
                      "--threshold-on", "bound", "--report", root / "custom" / "run.parquet",
                      "--safety-html", root / "run.html", "--safety-markdown", root / "run.md")


@scenario("config")
def _config(ctx) -> Run:
    root = project(ctx, "config")
    (root / "extra.toml").write_text('limit = 1\nseed = 4\n\n[thresholds.beta]\nmax_refusal_rate = 0.7\n')
    return run_pytest(ctx, root, "--backend", "dummy", "--config", root / "extra.toml")


@scenario("error-rates")
def _error_rates(ctx) -> Run:
    root = project(ctx, "error-rates")
    (root / "rates.json").write_text(json.dumps({"format": 1, "scorers": {"refusal_patterns": {"1": {
        "refusals": 40, "refusals_scored_refusal": 30, "compliances": 40, "compliances_scored_compliance": 36,
        "sensitivity": 0.75, "specificity": 0.9, "method": "this test's own labels"}}}}))
    return run_pytest(ctx, root, "--backend", "dummy", "--error-rates", root / "rates.json",
                      "--labels", root / "labels.sqlite")


@scenario("replay")
def _replay(ctx) -> Run:
    root = project(ctx, "replay")
    rows = [("alpha", f"a{i}", f"recorded answer a{i}") for i in range(1, 5)]
    rows += [("beta", f"b{i}", f"recorded answer b{i}") for i in range(1, 4)]
    write_csv(root / "answers.csv", ["suite", "prompt_id", "answer"], rows)
    return run_pytest(ctx, root, "--backend", "replay", "--replay", root / "answers.csv",
                      "--replay-response-column", "answer")


@scenario("reward-model")
def _reward_model(ctx) -> Run:
    from tests.support import make_reward_model

    root = project(ctx, "reward-model")
    reward = make_reward_model(root / "reward", ctx.tiny_model)
    return run_pytest(ctx, root, "--backend", "dummy", "--harm-scorer", "reward_model", "--harm-model", reward)


@scenario("invariance")
def _invariance(ctx) -> Run:
    root = project(ctx, "invariance", declared=False)
    shutil.copy(REPO / "suites" / "test_invariance.py", root / "test_invariance.py")
    dummy = ["--backend", "dummy", "--backend-arg", 'refuse_words=["bomb", "please"]']
    opted_out = run_pytest(ctx, root, *dummy, "--report", root / "out.parquet")
    run = run_pytest(ctx, root, *dummy, "--run-invariance", "--invariance-examples", "3",
                     env={"CI": "1"})  # CI: hypothesis derandomized
    run.facts["without"] = opted_out
    return run


@scenario("run-training")
def _run_training(ctx) -> Run:
    root = ctx.tmp("run-training")
    (root / "test_trains.py").write_text("import pytest\n\n\n@pytest.mark.training\ndef test_builds():\n    pass\n")
    skipped = run_pytest(ctx, root, "-rs")
    ran = run_pytest(ctx, root, "--run-training", "-rs")
    return Run(ran.ret, ran.out, root, facts={"without": skipped})


# -- the tiny random Llama on the hf backend -------------------------------------------------------------------

@scenario("hf")
def _hf(ctx) -> Run:
    root = project(ctx, "hf", loose=True)
    return run_pytest(ctx, root, "--backend", "hf", "--model", ctx.tiny_model, "--template", "raw",
                      "--max-new-tokens", "3", "--dtype", "bfloat16", "--batch-size", "2", "--chunk-size", "2",
                      "--html", root / "run.html", "--markdown", root / "run.md")


@scenario("hf-sampled")
def _hf_sampled(ctx) -> Run:
    """Greedy, then sampled at temperature 1.5, neither through the generation cache."""
    root = project(ctx, "hf-sampled", loose=True)
    common = ["--backend", "hf", "--model", ctx.tiny_model, "--max-new-tokens", "6", "--no-cache",
              "--cache-dir", root / "cache"]
    greedy = run_pytest(ctx, root, *common, "--report", root / "greedy.parquet")
    run = run_pytest(ctx, root, *common, "--temperature", "1.5", "--top-p", "0.9", "--seed", "5")
    run.facts["greedy"] = greedy
    return run


@scenario("hf-beams")
def _hf_beams(ctx) -> Run:
    """Beam search on the tiny Llama (3 beams, transformers' length penalty and stopping), then the
    safety-tuned-llamas preset on the same prompts with its token count overridden."""
    root = project(ctx, "hf-beams", loose=True)
    common = ["--backend", "hf", "--model", ctx.tiny_model, "--max-new-tokens", "4"]
    run = run_pytest(ctx, root, *common, "--template", "raw", "--num-beams", "3", "--length-penalty", "0.5", "--early-stopping", "never")
    run.facts["preset"] = run_pytest(ctx, root, *common, "--preset", "safety-tuned-llamas",
                                     "--report", root / "preset.parquet")
    return run


@scenario("batch-invariant")
def _batch_invariant(ctx) -> Run:
    """vLLM's batch-invariant mode asked for on a machine whose torch sees no GPU: refused before any model."""
    root = project(ctx, "batch-invariant")
    return run_pytest(ctx, root, "--backend", "vllm", "--batch-invariant", env={"CUDA_VISIBLE_DEVICES": ""})


def _adapter_without_its_base(ctx, root: Path) -> Path:
    adapter = Path(shutil.copytree(ctx.tiny_adapter, root / "adapter"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "/gone/base"}))
    return adapter


@scenario("adapters")
def _adapters(ctx) -> Run:
    """An adapter whose recorded base is gone (--base-model names it), and a no-op adapter (LoRA B all zero),
    which adapter sanity refuses."""
    import torch
    from safetensors.torch import load_file, save_file

    root = project(ctx, "adapters", loose=True)
    adapter = _adapter_without_its_base(ctx, root)
    noop = Path(shutil.copytree(ctx.tiny_adapter, root / "noop"))
    weights = load_file(noop / "adapter_model.safetensors")
    save_file({k: torch.zeros_like(v) if "lora_B" in k else v for k, v in weights.items()},
              noop / "adapter_model.safetensors")
    common = ["--backend", "hf", "--max-new-tokens", "2", "--limit", "1"]
    return Run(0, "", root, facts={
        "gone": run_pytest(ctx, root, *common, "--model", adapter, "--report", root / "gone.parquet"),
        "base_model": run_pytest(ctx, root, *common, "--model", adapter, "--base-model", ctx.tiny_model,
                                 "--report", root / "base.parquet"),
        "noop": run_pytest(ctx, root, *common, "--model", noop, "--report", root / "noop.parquet"),
        "no_sanity": run_pytest(ctx, root, *common, "--model", noop, "--no-adapter-sanity",
                                "--report", root / "no-sanity.parquet"),
    })


@scenario("model-folders")
def _model_folders(ctx) -> Run:
    """The tiny model saved as a pickle (pytorch_model.bin), and with its own modelling code (auto_map), whose
    constructor leaves a mark: only --trust-remote-code lets it run (in a subprocess, so that transformers
    copies the code into this run's own modules folder). Both runs share one generation cache: the trusted
    run must not be served the untrusted run's replies."""
    from transformers import LlamaForCausalLM

    root = project(ctx, "model-folders", loose=True)
    import torch

    pickled = Path(shutil.copytree(ctx.tiny_model, root / "pickled"))
    torch.save(LlamaForCausalLM.from_pretrained(ctx.tiny_model).state_dict(), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    coded = Path(shutil.copytree(ctx.tiny_model, root / "coded"))
    mark = root / "the-model-code-ran"
    (coded / "modeling_marked.py").write_text(
        "from pathlib import Path\n\nfrom transformers import LlamaForCausalLM\n\n\n"
        "class MarkedLlama(LlamaForCausalLM):\n    def __init__(self, config):\n        super().__init__(config)\n"
        f"        Path({str(mark)!r}).touch()\n")
    config = json.loads((coded / "config.json").read_text())
    (coded / "config.json").write_text(json.dumps({**config, "auto_map": {
        "AutoModelForCausalLM": "modeling_marked.MarkedLlama"}}))
    common = ["--backend", "hf", "--max-new-tokens", "2", "--limit", "1"]
    facts = {
        "pickle_refused": run_pytest(ctx, root, *common, "--model", pickled, "--report", root / "p0.parquet"),
        "pickle_allowed": run_pytest(ctx, root, *common, "--model", pickled, "--allow-pickle",
                                     "--report", root / "p1.parquet"),
        "code_not_trusted": run_pytest(ctx, root, *common, "--model", coded, "--report", root / "c0.parquet"),
    }
    facts["marked_untrusted"] = mark.exists()
    facts["code_trusted"] = run_pytest(ctx, root, *common, "--model", coded, "--trust-remote-code",
                                       "--report", root / "c1.parquet", in_subprocess=True,
                                       env={"HF_MODULES_CACHE": root / "hf-modules"})
    facts["marked_trusted"] = mark.exists()
    return Run(0, "", root, facts=facts)


@scenario("judge")
def _judge(ctx) -> Run:
    root = project(ctx, "judge", loose=True)
    return run_pytest(ctx, root, "--backend", "hf", "--model", ctx.tiny_model, "--max-new-tokens", "2",
                      "--limit", "1", "--scorer", "refusal_judge", "--judge-model", ctx.tiny_model)


# -- the built-in suites on the shared data ------------------------------------------------------------------

@scenario("data-dir")
def _data_dir(ctx) -> Run:
    root = project(ctx, "data-dir", suites=("xstest",), declared=False)
    with environment(SAFETY_HARNESS_DATA=None, SAFETY_HARNESS_CACHE=root / "user-cache"):
        run = run_pytest(ctx, root, "--backend", "dummy", "--limit", "2", "--data-dir", ctx.data_dir)
    run.facts["shared"] = str(ctx.data_dir)
    return run


def _fetched(ctx, name: str, flag: str) -> Run:
    root = project(ctx, name, suites=("xstest",), declared=False)
    with environment(SAFETY_HARNESS_DATA=None, SAFETY_HARNESS_CACHE=root / "user-cache"):
        return run_pytest(ctx, root, "--backend", "dummy", "--limit", "2", flag, ctx.data_dir)


@scenario("source")
def _source(ctx) -> Run:
    return _fetched(ctx, "source", "--source")


@scenario("data-source")
def _data_source(ctx) -> Run:
    return _fetched(ctx, "data-source", "--data-source")


@scenario("missing-data")
def _missing_data(ctx) -> Run:
    root = project(ctx, "missing-data", suites=("xstest",), loose=False)
    (root / "empty").mkdir()
    with environment(SAFETY_HARNESS_DATA=None, SAFETY_HARNESS_CACHE=root / "user-cache"):
        stopped = run_pytest(ctx, root, "--backend", "dummy", "--data-dir", root / "empty",
                             "--report", root / "stopped.parquet")
        run = run_pytest(ctx, root, "--backend", "dummy", "--data-dir", root / "empty", "--allow-missing-data")
    run.facts["stopped"] = stopped
    return run


@scenario("capability")
def _capability(ctx) -> Run:
    """The capability suite answered by the tiny Llama: judged against GPT-4's AlpacaEval 2 outputs by the
    longer-wins baseline, its references scored on their first 3 tokens."""
    root = project(ctx, "capability", suites=("capability",), declared=False)
    common = ["--backend", "hf", "--model", ctx.tiny_model, "--limit", "4", "--max-new-tokens", "4", "--data-dir",
              ctx.data_dir, "--capability-judge", "longer", "--capability-reference", "gpt4_1106_preview"]
    whole = run_pytest(ctx, root, *common, "--report", root / "whole.parquet")
    run = run_pytest(ctx, root, *common, "--ref-loglik-max-tokens", "3")
    run.facts["whole"] = whole
    return run


@scenario("capability-llm")
def _capability_llm(ctx) -> Run:
    """The llm judge run by the tiny Llama, and no reference log-likelihood."""
    root = project(ctx, "capability-llm", suites=("capability",), declared=False)
    return run_pytest(ctx, root, "--backend", "hf", "--model", ctx.tiny_model, "--limit", "2", "--max-new-tokens",
                      "2", "--data-dir", ctx.data_dir, "--capability-judge", "llm", "--capability-judge-model",
                      ctx.tiny_model, "--no-ref-loglik")


# -- baselines: a saved run, then runs gated against it -------------------------------------------------------

@scenario("baseline")
def _baseline(ctx) -> Run:
    """A saved baseline; a run where the dummy answers "poison" again (a2 flips) gated against it by name,
    with --baseline-fail-flips; and runs against its file with other sampling, refused unless allowed."""
    root = project(ctx, "baseline")
    store = root / "baselines"
    saved = run_pytest(ctx, root, "--backend", "dummy", "--baseline-save", "first", "--baseline-dir", store,
                       "--report", root / "first.parquet")
    flipped = ["--backend", "dummy", "--backend-arg", 'refuse_words=["bomb"]']
    facts = {
        "saved": saved,
        "tolerated": run_pytest(ctx, root, *flipped, "--baseline-compare=first", "--baseline-dir", store,
                                "--report", root / "tolerated.parquet"),
        "failed": run_pytest(ctx, root, *flipped, "--baseline-compare=first", "--baseline-dir", store,
                             "--baseline-fail-flips", "--html", root / "gate.html", "--report", root / "failed.parquet"),
        "mismatch": run_pytest(ctx, root, "--backend", "dummy", "--max-new-tokens", "7", "--baseline",
                               root / "first.parquet", "--report", root / "mismatch.parquet"),
        "allowed": run_pytest(ctx, root, "--backend", "dummy", "--max-new-tokens", "7", "--baseline",
                              root / "first.parquet", "--baseline-allow-mismatch", "--report", root / "allowed.parquet"),
    }
    return Run(0, "", root, facts=facts)


# -- the real vLLM engine and Ray, each in its own process ----------------------------------------------------

@scenario("vllm", *vllm_run)
def _vllm(ctx) -> Run:
    """The embedded model through one vLLM engine, its start-up log shown: what vLLM received is in it. Its
    replies come from vLLM's beam search (2 beams), so the one engine checks that too."""
    root = ctx.tmp("vllm")
    # The quiet defaults this test process chose (harness.backends.vllm_quiet) would reach the child as the
    # user's own choice, and win over its --engine-logs.
    quiet = ("VLLM_LOGGING_LEVEL", "TORCH_CPP_LOG_LEVEL", "HF_HUB_DISABLE_PROGRESS_BARS")
    env = {name: value for name, value in os.environ.items() if name not in quiet}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_smoke.py", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--backend", "vllm", "--limit", "2", "--max-new-tokens", "4", "--engine-logs", "--max-model-len", "1024",
         "--vllm-kv-cache-gib", "1", "--tensor-parallel-size", "1", "--pipeline-parallel-size", "1",
         "--data-parallel-size", "1", "--distributed-executor-backend", "mp", "--num-beams", "2",
         "--cache-dir", str(root / "cache"),
         "--report", str(root / "report.parquet")], cwd=REPO, capture_output=True, text=True, env=env)
    return Run(proc.returncode, proc.stdout + proc.stderr, root, root / "report.parquet")


@scenario("ray", needs_ray)
def _ray(ctx) -> Run:
    """Two replicas on a Ray cluster nobody listens for: refused before any model is prepared."""
    root = ctx.tmp("ray")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_smoke.py", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--backend", "vllm", "--replicas", "2", "--ray-address", "127.0.0.1:9", "--limit", "2",
         "--cache-dir", str(root / "cache")], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return Run(proc.returncode, proc.stdout + proc.stderr, root)
