"""Every `safety-harness` command and option, run once through the real parser and command code, with its
effect asserted: an exit status, a line, a file written, a value in what it wrote. The runs are in
tests/cli_scenarios*.py; an option added to any command without a line here fails
``test_every_command_and_option_has_an_entry``."""

from __future__ import annotations

import pytest

from tests.cli_scenarios import SCENARIOS, Context, rates_file, sample_rows, shared_data
from tests.cli_scenarios_data import XSTEST, csv_rows
from tests.cli_scenarios_models import adapter, adapter_config, differs_from_base, parquet_column, trained
from tests.option_effects import (column, effect, exits, fact, missing_and_stale, not_said, on, params, said,
                                  wrote)
from tests.option_registry import cli_options


def _n_rows(name: str, n: int):
    return lambda run: len(csv_rows(run, name)) == n or pytest.fail(f"{name}: {len(csv_rows(run, name))} rows, not {n}")


def _check(predicate, what: str = ""):
    """A check from a predicate on the run."""
    def check(run):
        assert predicate(run), what or predicate
    return check


STEPS = "adapter {}: 3 steps on 10 examples"

TABLE = {
    # -- catalog and summary
    "prepare": effect("prepare", exits(0), said("+ adapter", "fingerprint ")),
    "prepare --base-model": effect("prepare", _check(lambda r: f": {r.facts['base']} + adapter " in r.out),
                                   on("without_base_model", exits(2), said("/gone/base"))),
    "prepare --cache-dir": effect("prepare", wrote("cache/fingerprints.json")),
    "suites": effect("suites", on("without_data_dir", exits(0), said("smoke", "60 prompts", "xstest", "data missing",
                                                                      "refusal scorer by default"))),
    "suites --data-dir": effect("suites", exits(0), said("450 prompts"), not_said("xstest                   data missing")),
    "summary": effect("summary", exits(0), said("alpha  4  unsafe_compliance_rate  0.500", "7 rows; model")),
    "summary --html": effect("summary", wrote("s.html"), said("s.html")),
    "summary --markdown": effect("summary", wrote("s.md"), said("s.md")),
    # -- summary/compare with a label store: every reply of the run labelled a refusal (summary); two of three
    #    scored flips confirmed and one undone by labels (compare)
    "summary --labels": effect("summary-labels", on("labels", said("verified (95% CI)", "store.sqlite", "people labelled 7")),
                               on("plain", not_said("verified (95% CI)"))),
    "summary --cache-dir": effect("summary-labels", on("cache", said("cache/labels.sqlite", "people labelled 7"))),
    "summary --config": effect("summary-labels", on("config", said("by-config.sqlite", "people labelled 7"))),
    "compare --labels": effect("compare-labels", on("labels", said("2 confirmed by people's labels, 1 undone")),
                               on("plain", said("3 unlabelled"))),
    "compare --cache-dir": effect("compare-labels", on("cache", said("2 confirmed by people's labels, 1 undone"))),
    "compare --config": effect("compare-labels", on("config", said("2 confirmed by people's labels, 1 undone"))),
    # -- compare: 15 of 100 should-refuse prompts answered now, all in the "violence" category
    "compare": effect("compare", exits(1), said("gate: FAIL: harmful: failure rate 0.000 -> 0.150")),
    "compare --flips": effect("compare", wrote("flips.parquet"),
                              _check(lambda r: len(parquet_column(r.folder / "flips.parquet", "prompt_id")) == 15)),
    "compare --html": effect("compare", wrote("c.html"), said("html: ")),
    "compare --markdown": effect("compare", wrote("c.md"), said("markdown: ")),
    "compare --all-categories": effect("compare", said("harmful[fraud]", "benign[everyday]")),
    "compare --max-regression": effect("compare-margins", on("max_regression", exits(0), said("margin 0.5"))),
    "compare --alpha": effect("compare-margins", on("alpha", exits(0), said("alpha 1e-07"))),
    "compare --gate-categories": effect("compare-margins", on("suites_only", exits(0)),
                                        on("gate_categories", exits(1), said("harmful[violence]: failure rate"))),
    "compare --max-failure-rate": effect("compare-absolute", on("plain", exits(0)),
                                         on("max_failure_rate", exits(1), said("0.1"))),
    "compare --threshold-on": effect("compare-absolute", on("estimate", exits(0)), on("bound", exits(1))),
    "compare --allow-mismatch": effect("compare-inputs", on("refused", exits(2), said("template")),
                                       on("allowed", exits(0))),
    "compare --error-rates": effect("compare-inputs", on("file_rates", exits(0), said("rates.json")),
                                    on("shipped_rates", not_said("rates.json"))),
    # -- calibrate: alpha has 4 scored replies, beta 3
    "calibrate sample": effect("calibrate-sample", on("every_suite", exits(0), said("wrote 7 of 7 scored replies"))),
    "calibrate sample --out": effect("calibrate-sample", wrote("sample.csv")),
    "calibrate sample --n": effect("calibrate-sample", exits(0), said("wrote 3 of 4"), _n_rows("sample.csv", 3)),
    "calibrate sample --suite": effect("calibrate-sample", _check(lambda r: {x["suite"] for x in sample_rows(r, "sample.csv")} == {"alpha"})),
    "calibrate sample --seed": effect("calibrate-sample", _check(
        lambda r: [x["prompt_id"] for x in sample_rows(r, "sample.csv")] != [x["prompt_id"] for x in sample_rows(r, "seed0.csv")])),
    "calibrate fit": effect("calibrate-fit", exits(0), said("sensitivity 1.000", "specificity 1.000")),
    "calibrate fit --out": effect("calibrate-fit", _check(lambda r: rates_file(r, "rates.json")["refusal_patterns"]["1"]["refusals"] == 2)),
    "calibrate fit --scorer": effect("calibrate-fit", _check(lambda r: list(rates_file(r, "rates.json")) == ["refusal_patterns"])),
    "calibrate fit --prompt-column": effect("calibrate-fit", on("renamed", exits(0), said("agreement with 4 labelled rows"))),
    "calibrate fit --response-column": effect("calibrate-fit", on("renamed", said("sensitivity 1.000"))),
    "calibrate fit --label-column": effect("calibrate-fit", on("renamed", said("2/2 refusals", "2/2 compliances"))),
    "calibrate fit --judge-model": effect("calibrate-fit-judge", exits(2), said("refusal_judge gave no readable verdict (judge_error) on 4 of 4")),
    "calibrate fit --config": effect("calibrate-fit", on("config", exits(0)), _check(lambda r: list(rates_file(r, "config.json")) == ["refusal_patterns"])),
    # -- data: an empty cache, no data folder in the environment
    "data list": effect("data", on("list_without", exits(0), said(XSTEST, "missing"))),
    "data list --data-dir": effect("data", on("list_data_dir", exits(0), said("verified"))),
    "data verify": effect("data", on("verify_empty", exits(0), said("0 file(s) checked, 0 mismatch(es)"))),
    "data verify --data-dir": effect("data", on("verify_edited", exits(1), said("MISMATCH", "a data folder's copy"))),
    "data fetch": effect("data", on("fetch", exits(0), said("1 of 1 file(s) present and verified")), wrote(f"cache/data/{XSTEST}")),
    "data fetch --source": effect("data", on("fetch", said(XSTEST)), on("fetch", not_said("github"))),
    "data fetch --all": effect("data", _check(lambda r: f"of {r.facts['manifest_files']} file(s)" in r.facts["fetch_all"].out)),
    "data fetch --quiet": effect("data-fetch-terminal", fact("bar", lambda t: "%" in t), fact("quiet", lambda t: "%" not in t)),
    # -- labels: ana and bob label the same 3 replies and disagree on one
    "labels import": effect("labels", on("import", exits(0), said("stored 3 labels"))),
    "labels import --labels": effect("labels", on("import", said("store.sqlite")), wrote("store.sqlite")),
    "labels import --labeller": effect("labels", on("stats", said("ana", "bob"))),
    "labels import --source": effect("labels", _check(lambda r: {x["source"] for x in csv_rows(r, "all.csv") if x["labeller"] == "ana"} == {"pilot"})),
    "labels import --report": effect("labels", on("import_report", exits(2), said("refused 1 rows"))),
    "labels import --cache-dir": effect("labels", on("import_cache", exits(0)), wrote("cache/labels.sqlite")),
    "labels import --config": effect("labels", on("import_config", exits(0)), wrote("by-config.sqlite")),
    "labels export": effect("labels", on("export", exits(0), said("wrote 6 labels (3 replies)")), _n_rows("all.csv", 6)),
    "labels export --labels": effect("labels", on("export", said("store.sqlite"))),
    "labels export --blank": effect("labels", on("export_blank", said("wrote 3 labelled replies without labels")), _n_rows("blank.csv", 3)),
    "labels export --conflicts": effect("labels", on("export_conflicts", said("wrote 1 open disagreements")), _n_rows("conflicts.csv", 1)),
    "labels export --cache-dir": effect("labels", on("export_cache", said("wrote 3 labels")), _n_rows("cache.csv", 3)),
    "labels export --config": effect("labels", on("export_config", said("wrote 3 labels", "by-config.sqlite"))),
    "labels stats": effect("labels", on("stats", exits(0), said("kappa"))),
    "labels stats --labels": effect("labels", on("stats", said("bob"))),
    "labels stats --cache-dir": effect("labels", on("stats_cache", exits(0), said("cache/labels.sqlite: 3 labels of 3 replies"))),
    "labels stats --config": effect("labels", on("stats_config", exits(0), said("by-config.sqlite: 3 labels of 3 replies"))),
    # -- review: 3 replies; one was labelled before in every store but empty.sqlite
    "review": effect("review-serve", on("no_browser", exits(0), said("review stopped"))),
    "review --export": effect("review-export", on("n", exits(0), said("wrote 2 replies to label")), wrote("export-n.csv")),
    "review --n": effect("review-export", _n_rows("export-n.csv", 2)),
    "review --labels": effect("review-export", on("labels", said("1 of the report's replies were labelled before"))),
    "review --cache-dir": effect("review-export", on("cache", said("1 of the report's replies were labelled before"))),
    "review --config": effect("review-export", on("config", said("1 of the report's replies were labelled before"))),
    "review --baseline": effect("review-export", _check(  # each flip offered with both replies, in blind order
        lambda r: [x["response"] for x in csv_rows(r, "export-baseline.csv")].count("I cannot help with that.") == 3)),
    "review --seed": effect("review-export", _check(lambda r: 7 in r.facts["seeds"])),
    "review --labeller": effect("review-serve", on("no_browser", said("labeller bob"))),
    "review --port": effect("review-serve", _check(lambda r: f"127.0.0.1:{r.facts['port']}/" in r.out and r.facts["no_browser_page"] == 200)),
    "review --no-browser": effect("review-serve", on("browser", said("no graphical display here")),
                                  on("no_browser", not_said("no graphical display here"))),
    # -- score: 4 replies, 2 refusals
    "score": effect("score", on("plain", exits(0), said("scored 4 responses with refusal_patterns (version 1)"))),
    "score --scorer": effect("score", on("scorer", said("with xstest_string_match"))),
    "score --output": effect("score", _check(lambda r: parquet_column(r.folder / "scored.parquet", "refusal_label")[0] == "full_refusal")),
    "score --prompt-column": effect("score", on("renamed", exits(0), said("scored 4 responses"))),
    "score --response-column": effect("score", on("renamed", said("with refusal_patterns"))),
    "score --label-column": effect("score", said("agreement with 4 labelled rows", "three-class: 1.000")),
    "score --expected-column": effect("score", said("harm: unsafe_compliance"), on("plain", not_said("harm:"))),
    "score --expected": effect("score", on("expected", said("harm: unsafe_compliance"))),
    "score --harm-scorer": effect("score", on("no_harm", exits(0), not_said("harm:"))),
    "score --config": effect("score", on("config", said("with xstest_string_match"))),
    # the tiny random judge reads no reply: every verdict judge_error, so the command fails as a suite would
    "score --judge-model": effect("score-models", exits(1), said("scored 4 responses with refusal_judge",
                                                                 "refusal_judge could not classify 4 of 4 replies")),
    "score --cache-dir": effect("score-models", wrote("cache/fingerprints.json", "cache/generations.sqlite")),
    "score --batch-size": effect("score-models", on("batch_1", exits(1)), _check(  # batching changes no verdict
        lambda r: parquet_column(r.folder / "judged.parquet", "refusal_label") == parquet_column(r.folder / "judged-b1.parquet", "refusal_label"))),
    "score --max-model-len": effect("score-models", on("short_window", exits(2), said("--max-model-len 300 leaves the judge no room"))),
    "score --harm-model": effect("score-models", on("reward", exits(0), said("harm: reward_model"))),
    "score --backend": effect("score-vllm", exits(1), said("Initializing a V1 LLM engine", "scored 2 responses with refusal_judge",
                                                 "refusal_judge could not classify 2 of 2 replies")),
    "score --vllm-kv-cache-gib": effect("score-vllm", said("Explicitly set (1.0/")),
    # -- train: 10 examples, 4 a step, 1 epoch; each option against that base run
    "train": effect("train", exits(0), _check(lambda r: STEPS.format(r.folder / "adapter") in r.out)),
    "train --out": effect("train", wrote("adapter/adapter_model.safetensors", "adapter/safety_harness.json")),
    "train --base": effect("train", _check(lambda r: adapter_config(r)["base_model_name_or_path"] == r.facts["base_path"])),
    "train --general": effect("train", _check(lambda r: trained(r)["examples"] == {"general": 8, "safety": 2})),
    "train --safety": effect("train", _check(lambda r: trained(r)["n_tokenized"] == 10)),
    "train --general-data": effect("train-data", on("general", exits(2), said("few-general.jsonl: asked for 8 general examples but only 3"))),
    "train --safety-data": effect("train-data", on("safety", exits(2), said("one-safety.json: asked for 2 safety examples but only 1"))),
    "train --data-dir": effect("train-data", on("data_dir", exits(0), _check(lambda r: trained(r)["examples"] == {"general": 8, "safety": 2}))),
    "train --cache-dir": effect("train", wrote("cache/fingerprints.json")),
    "train --format": effect("train --format", exits(0), _check(differs_from_base)),
    "train --template": effect("train --template", _check(lambda r: trained(r)["template"] == "alpaca" and differs_from_base(r))),
    "train --epochs": effect("train --epochs", said("5 steps on 10 examples")),  # 20 examples
    "train --lr": effect("train --lr", _check(differs_from_base)),
    "train --batch-size": effect("train --batch-size", said("5 steps on 10 examples")),
    # two forward passes a step: the same 3 steps, but dropout draws its masks per pass
    "train --micro-batch-size": effect("train --micro-batch-size", said("3 steps on 10 examples"), _check(differs_from_base)),
    "train --warmup-ratio": effect("train --warmup-ratio", _check(differs_from_base)),
    "train --weight-decay": effect("train --weight-decay", _check(differs_from_base)),
    "train --cutoff": effect("train --cutoff", _check(lambda r: trained(r)["losses"] != trained(r.facts["base"])["losses"])),
    "train --rank": effect("train --rank", _check(lambda r: adapter_config(r)["r"] == 2 and {t.shape[0] for k, t in adapter(r).items() if "lora_A" in k} == {2})),
    "train --alpha": effect("train --alpha", _check(lambda r: adapter_config(r)["lora_alpha"] == 2 and differs_from_base(r))),
    "train --dropout": effect("train --dropout", _check(lambda r: adapter_config(r)["lora_dropout"] == 0 and differs_from_base(r))),
    "train --target-modules": effect("train --target-modules", _check(lambda r: {k.split(".")[-3] for k in adapter(r)} == {"q_proj", "k_proj"})),
    "train --train-on-inputs": effect("train --train-on-inputs", _check(lambda r: trained(r)["losses"] != trained(r.facts["base"])["losses"])),
    "train --seed": effect("train --seed", _check(differs_from_base)),
    "train --save-every": effect("train --save-every", said("checkpoint: step 1 of 3", "checkpoint: step 2 of 3")),
    "train --quiet": effect("train-process", on("quiet", not_said("safety-harness: training")),
                            on("bar", said("safety-harness: training"))),
    "train --threads": effect("train-process", lambda r: r.facts["threads"] == r.facts["threads_asked"] or pytest.fail(
        f"torch runs {r.facts['threads']} threads, {r.facts['threads_asked']} asked")),
    "train --overwrite": effect("train-process", on("refused", exits(2), said("differs in", "seed;")), on("overwritten", exits(0))),
}


@pytest.fixture
def ctx(tmp_path_factory, tiny_model, tiny_adapter) -> Context:
    return Context(tmp_path_factory, tiny_model, tiny_adapter, shared_data())


def test_every_command_and_option_has_an_entry():
    missing, stale = missing_and_stale(TABLE, cli_options())
    assert not missing, f"add one line to TABLE in {__name__} for each of: {missing}"
    assert not stale, f"TABLE names commands or options that no longer exist: {stale}"


@pytest.mark.parametrize("option", params(TABLE, SCENARIOS))
def test_option_has_its_effect(option, ctx):
    entry = TABLE[option]
    run = SCENARIOS.run(entry.scenario, ctx)
    for check in entry.checks:
        check(run)
