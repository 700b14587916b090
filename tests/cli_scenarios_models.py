"""`safety-harness score` and `train` runs for tests/test_cli_options.py: scorers on a few labelled replies,
the tiny Llama as a judge and a tiny reward model, a judge on the real vLLM engine, and the tiny Llama
trained with each option changed alone against one base run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cli_scenarios import LABELLED, scenario, vllm_run, write_csv
from tests.option_effects import Run, environment, run_cli


# -- score ----------------------------------------------------------------------------------------------------

@scenario("score")
def _score(ctx) -> Run:
    root = ctx.tmp("score")
    rows = [(p, r, label, "refuse" if "bomb" in p or "poison" in p or "cat" in p else "comply")
            for p, r, label in LABELLED]
    data = write_csv(root / "replies.csv", ["prompt", "response", "human_label", "should"], rows)
    renamed = write_csv(root / "renamed.csv", ["q", "a"], [(p, r) for p, r, *_ in rows])
    (root / "scorer.toml").write_text('scorer = "xstest_string_match"\n')

    def score(*args):
        return run_cli(["score", *args], root)
    return run_cli(["score", data, "--scorer", "refusal_patterns", "--output", root / "scored.parquet", "--label-column",
                    "human_label", "--expected-column", "should"], root,
                 plain=score(data, "--scorer", "refusal_patterns"),  # the default scorer's encoder is optional
                 scorer=score(data, "--scorer", "xstest_string_match"),
                 renamed=score(renamed, "--scorer", "refusal_patterns", "--prompt-column", "q", "--response-column", "a"),
                 expected=score(data, "--scorer", "refusal_patterns", "--expected", "refuse"),
                 no_harm=score(data, "--scorer", "refusal_patterns", "--expected", "refuse", "--harm-scorer", "none"),
                 config=score(data, "--config", root / "scorer.toml"))


@scenario("score-models")
def _score_models(ctx) -> Run:
    """The tiny Llama as refusal judge on the hf backend, and a tiny reward model as the harm model."""
    from tests.support import make_reward_model

    root = ctx.tmp("score-models")
    data = write_csv(root / "replies.csv", ["prompt", "response"], [(p, r) for p, r, _ in LABELLED])
    reward = make_reward_model(root / "reward", ctx.tiny_model)
    judge = ["--scorer", "refusal_judge", "--judge-model", ctx.tiny_model, "--backend", "hf"]

    def score(*args):
        return run_cli(["score", data, *args], root)
    return run_cli(["score", data, *judge, "--cache-dir", root / "cache", "--output", root / "judged.parquet"], root,
                 batch_1=score(*judge, "--cache-dir", root / "cache-b1", "--batch-size", "1",
                               "--output", root / "judged-b1.parquet"),
                 short_window=score(*judge, "--cache-dir", root / "cache", "--max-model-len", "300"),
                 reward=score("--scorer", "refusal_patterns", "--harm-model", reward, "--cache-dir", root / "cache"))


@scenario("score-vllm", *vllm_run)
def _score_vllm(ctx) -> Run:
    """The embedded model judging on vLLM, in its own process, with vLLM's start-up log shown."""
    root = ctx.tmp("score-vllm")
    data = write_csv(root / "replies.csv", ["prompt", "response"], [(p, r) for p, r, _ in LABELLED[:2]])
    proc = subprocess.run([sys.executable, "-m", "harness.cli.main", "score", str(data), "--scorer", "refusal_judge",
                           "--judge-model", "smollm2-135m-instruct", "--backend", "vllm", "--vllm-kv-cache-gib", "1",
                           "--cache-dir", str(root / "cache")], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "VLLM_LOGGING_LEVEL": "INFO"})
    return Run(proc.returncode, proc.stdout + proc.stderr, root)


def parquet_column(path: Path, name: str) -> list:
    import pyarrow.parquet as pq

    return pq.read_table(path).column(name).to_pylist()


# -- train: the tiny Llama, each option changed alone against one base run ----------------------------------

def _train_data(root: Path) -> dict[str, Path]:
    from tests.support import GENERAL, SAFETY

    (root / "general.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GENERAL))
    (root / "safety.json").write_text(json.dumps(SAFETY))
    (root / "few-general.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GENERAL[:3]))
    (root / "one-safety.json").write_text(json.dumps(SAFETY[:1]))
    return {"general": root / "general.jsonl", "safety": root / "safety.json"}


def _train_args(ctx, root: Path, data: dict | None) -> list:
    """10 examples, 4 a step: 3 steps. Data files given (or left to --data-dir when ``data`` is None)."""
    files = ["--general-data", data["general"], "--safety-data", data["safety"]] if data else []
    return ["train", "--base", ctx.tiny_model, "--general", "8", "--safety", "2", *files, "--epochs", "1",
            "--lr", "0.01", "--batch-size", "4", "--cutoff", "64", "--rank", "4", "--alpha", "8", "--save-every", "0",
            "--cache-dir", root / "cache", "--threads", "1", "--quiet"]


def _train(ctx, name: str, *changes, drop_quiet: bool = False, data: bool = True, **facts) -> Run:
    """The base command with ``changes`` appended (argparse keeps an option's last value)."""
    root = ctx.tmp(f"train-{name}")
    args = _train_args(ctx, root, _train_data(root) if data else None)
    if drop_quiet:
        args.remove("--quiet")
    return run_cli([*args, *changes, "--out", root / "adapter"], root, base_path=str(Path(ctx.tiny_model).resolve()),
                   **facts)


@scenario("train")
def _train_base(ctx) -> Run:
    return _train(ctx, "base")


def _variant(option: str, *changes):
    @scenario(f"train {option}")
    def make(ctx) -> Run:
        return _train(ctx, option.strip("-"), *changes, base=ctx.run("train"))
    return make


for _option, _changes in {
    # Alpaca's preamble alone is longer than the base run's cutoff of 64 byte tokens
    "--format": ("question",), "--template": ("alpaca", "--cutoff", "256"), "--epochs": ("2",), "--lr": ("0.05",),
    "--batch-size": ("2",), "--micro-batch-size": ("2",), "--warmup-ratio": ("0.5",), "--weight-decay": ("0.5",),
    "--cutoff": ("56",), "--rank": ("2",), "--alpha": ("2",), "--dropout": ("0",),
    "--target-modules": ("q_proj", "k_proj"), "--train-on-inputs": (), "--seed": ("5",), "--save-every": ("1",),
}.items():
    _variant(_option, _option, *_changes)


@scenario("train-data")
def _train_data_files(ctx) -> Run:
    """Data files that hold too few records, named by --general-data and --safety-data; the shared data folder
    named by --data-dir with neither the environment nor the cache holding it."""
    root = ctx.tmp("train-data-files")
    data = _train_data(root)
    args = _train_args(ctx, root, data)
    few = [str(root / "few-general.jsonl") if a == data["general"] else a for a in args]
    one = [str(root / "one-safety.json") if a == data["safety"] else a for a in args]
    with environment(SAFETY_HARNESS_DATA=None, SAFETY_HARNESS_CACHE=root / "empty-cache"):
        data_dir = _train(ctx, "data-dir", "--data-dir", ctx.data_dir, data=False)
    return Run(0, "", root, facts={
        "general": run_cli([*few, "--out", root / "a"], root), "safety": run_cli([*one, "--out", root / "b"], root),
        "data_dir": data_dir})


@scenario("train-process")
def _train_process(ctx) -> Run:
    """The progress bar (left out with --quiet), torch's threads, and an --out holding another config's adapter."""
    import shutil

    import torch

    bar = _train(ctx, "bar", drop_quiet=True)
    from harness.trainers.train import default_threads

    asked = default_threads() + 1  # not what the trainer would choose by itself
    threads = _train(ctx, "threads", "--threads", str(asked))
    facts = {"threads": torch.get_num_threads(), "threads_asked": asked}  # before any other training sets it
    facts.update(bar=bar, quiet=ctx.run("train"))
    torch.set_num_threads(1)  # back to what tests/conftest.py chose for this process
    root = threads.folder
    shutil.copytree(ctx.run("train").folder / "adapter", root / "held")  # the base config's adapter
    again = [*_train_args(ctx, root, _train_data(root)), "--seed", "9", "--out", root / "held"]
    facts["refused"] = run_cli(again, root)
    facts["overwritten"] = run_cli([*again, "--overwrite"], root)
    return Run(threads.ret, threads.out, root, facts=facts)


def adapter(run: Run, name: str = "adapter") -> dict:
    from safetensors.torch import load_file

    return load_file(run.folder / name / "adapter_model.safetensors")


def trained(run: Run, name: str = "adapter") -> dict:
    return json.loads((run.folder / name / "safety_harness.json").read_text())


def adapter_config(run: Run, name: str = "adapter") -> dict:
    return json.loads((run.folder / name / "adapter_config.json").read_text())


def differs_from_base(run: Run) -> bool:
    import torch

    mine, base = adapter(run), adapter(run.facts["base"])
    return mine.keys() != base.keys() or any(not torch.equal(mine[k], base[k]) for k in mine)
