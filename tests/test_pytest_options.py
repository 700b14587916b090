"""Every option the harness adds to pytest, run once through pytest itself, with its effect asserted: a value
in the report's columns or metadata, a line of the run's output, a file written, an exit status. The runs
are in tests/pytest_scenarios.py; an option added to any of the harness's pytest plugins without a line
here fails ``test_every_pytest_option_has_an_entry``. vLLM's own options are checked on what vLLM says it
received, in one engine's start-up log."""

from __future__ import annotations

import pytest

from tests.option_effects import column, effect, exits, fact, meta, missing_and_stale, not_said, on, params, said, wrote
from tests.option_registry import pytest_options
from tests.cli_scenarios import shared_data
from tests.pytest_scenarios import SCENARIOS, Context, responses

OK, FAILED, USAGE = 0, 1, 4  # pytest's exit statuses


def _check(predicate, what: str = ""):
    def check(run):
        assert predicate(run), what or predicate
    return check


def _alpha(run) -> list[dict]:
    return [r for r in run.rows if r["suite"] == "alpha"]


def _capability(run) -> dict:
    return run.meta["suites"]["capability"]["capability"]


VLLM_RECEIVED = "tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1"  # the host's one device

TABLE = {
    # -- the dummy backend on alpha (4 should-refuse prompts) and beta (3 safe ones)
    "--backend": effect("dummy", column("backend", "dummy"), column("model_fingerprint", "dummy")),
    "--backend-arg": effect("dummy", _check(lambda r: {x["refusal_label"] for x in _alpha(r)} == {"full_refusal"})),  # "hurt" too
    "--scorer": effect("dummy", column("scorer", "xstest_string_match")),
    "--harm-scorer": effect("dummy", column("harm_scorer", None), meta("model.harm_scorer", None)),
    "--limit": effect("dummy", _check(lambda r: len(_alpha(r)) == 3 and len(r.rows) == 6)),
    "--threshold-on": effect("dummy", said("threshold_on = bound"),
                             _check(lambda r: {c["threshold_on"] for c in r.meta["suites"]["alpha"]["checks"]} == {"bound"})),
    "--report": effect("dummy", wrote("custom/run.parquet"), said("report: ")),
    "--safety-html": effect("dummy", wrote("run.html")),
    "--safety-markdown": effect("dummy", wrote("run.md")),
    "--config": effect("config", exits(OK), _check(lambda r: len(_alpha(r)) == 1 and str(r.folder / "extra.toml") in str(r.meta["settings"]["sources"]))),
    "--error-rates": effect("error-rates", meta("model.scorer_error_rates.sensitivity", 0.75),
                            _check(lambda r: "rates.json" in str(r.meta["model"]["scorer_error_rates"]["source"]))),
    # recorded only: the run reads human labels once the verified rates land (docs/review.md)
    "--labels": effect("error-rates", _check(lambda r: r.meta["settings"]["labels"] == str(r.folder / "labels.sqlite"))),
    "--replay": effect("replay", exits(OK), column("backend", "replay")),
    "--replay-response-column": effect("replay", _check(lambda r: all(v == f"recorded answer {k[1]}" for k, v in responses(r).items()))),
    "--harm-model": effect("reward-model", column("harm_scorer", "reward_model"), column("harm_score", lambda v: all(x is not None for x in v))),
    "--run-invariance": effect("invariance", _check(lambda r: "invariance" in r.meta), on("without", said("3 skipped"))),
    "--invariance-examples": effect("invariance", meta("invariance.unsafe_stay_refused.cost.examples", 3)),
    "--run-training": effect("run-training", exits(OK), said("1 passed"), on("without", said("1 skipped"))),
    # -- the tiny Llama on the hf backend
    "--model": effect("hf", exits(OK), column("backend", "hf"), _check(lambda r: {x["model"] for x in r.rows} == {str(r.meta["settings"]["model"])})),
    "--template": effect("hf", column("template", "raw")),
    "--max-new-tokens": effect("hf", column("n_response_tokens", lambda v: max(v) == 3)),
    "--dtype": effect("hf", meta("model.dtype", "bfloat16")),
    # recorded only: batching and chunking change memory and time, never a reply
    "--batch-size": effect("hf", meta("settings.batch_size", 2)),
    "--chunk-size": effect("hf", meta("settings.chunk_size", 2)),
    "--cache-dir": effect("hf", wrote("harness-cache/generations.sqlite")),
    "--html": effect("hf", wrote("run.html")),
    "--markdown": effect("hf", wrote("run.md")),
    "--temperature": effect("hf-sampled", exits(OK), _check(lambda r: responses(r) != responses(r.facts["greedy"]))),
    "--top-p": effect("hf-sampled", column("sampling", lambda v: '"top_p": 0.9' in v[0])),
    "--seed": effect("hf-sampled", column("sampling", lambda v: '"seed": 5' in v[0])),
    # the top beam of 3, scored as transformers scores beams; the preset's 4 beams and Alpaca template, its
    # 128 tokens overridden by --max-new-tokens 4 given beside it
    "--num-beams": effect("vllm", column("sampling", lambda v: set(v) == {'{"early_stopping": "false", "length_penalty": 1.0, '
                                          '"max_new_tokens": 4, "num_beams": 2, "seed": 0, "temperature": 0.0, "top_p": 1.0}'}),
                          column("n_response_tokens", lambda v: 0 < max(v) <= 4),  # the prompt's tokens cut off
                          column("response", lambda v: all(x.strip() for x in v))),
    "--length-penalty": effect("hf-beams", exits(OK), column("sampling", lambda v: '"length_penalty": 0.5' in v[0])),
    "--early-stopping": effect("hf-beams", column("sampling", lambda v: '"early_stopping": "never"' in v[0] and '"num_beams": 3' in v[0])),
    "--preset": effect("hf-beams", on("preset", exits(OK), meta("settings.preset", "safety-tuned-llamas"), column("template", "alpaca"),
                                      column("sampling", lambda v: '"num_beams": 4' in v[0] and '"max_new_tokens": 4' in v[0]))),
    "--batch-invariant": effect("batch-invariant", exits(USAGE), said("--batch-invariant needs an NVIDIA GPU of compute capability >= 8.0"),
                                not_said("Traceback")),
    "--no-cache": effect("hf-sampled", meta("stats.n_cached", 0), _check(lambda r: not (r.folder / "cache" / "generations.sqlite").exists())),
    "--base-model": effect("adapters", on("gone", exits(USAGE), said("/gone/base")), on("base_model", exits(OK))),
    "--no-adapter-sanity": effect("adapters", on("noop", exits(USAGE), said("no-op")), on("no_sanity", exits(OK))),
    "--allow-pickle": effect("model-folders", on("pickle_refused", exits(USAGE), said("pytorch_model.bin")), on("pickle_allowed", exits(OK))),
    "--trust-remote-code": effect("model-folders", on("code_trusted", exits(OK)), fact("marked_trusted", True),
                                  fact("marked_untrusted", False), on("code_not_trusted", exits(OK))),
    # the judge's version names its model's fingerprint (here the tiny Llama judges itself)
    "--judge-model": effect("judge", exits(OK), column("scorer", "refusal_judge"),
                            _check(lambda r: {x["scorer_version"] for x in r.rows} == {"1-" + r.meta["model"]["model_fingerprint"][:12]})),
    # -- the built-in suites on the shared data
    # the dummy answers xstest's unsafe prompts: exit 1
    "--data-dir": effect("data-dir", exits(FAILED), _check(lambda r: all(f["path"].startswith(r.facts["shared"]) for f in r.meta["provenance"]["data_files"].values() if f["path"]))),
    "--source": effect("source", said("fetching xstest/xstest_prompts.csv from"), wrote("user-cache/data/xstest/xstest_prompts.csv")),
    "--data-source": effect("data-source", said("fetching xstest/xstest_prompts.csv from"), wrote("user-cache/data/xstest/xstest_prompts.csv")),
    "--allow-missing-data": effect("missing-data", exits(OK), meta("missing_suites", lambda m: list(m) == ["xstest"]),
                                   on("stopped", exits(USAGE), said("safety-harness data fetch xstest"))),
    # the tiny Llama's noise fails the suite's minimums: exit 1
    "--capability-judge": effect("capability", exits(FAILED), column("win_score", lambda v: any(x is not None for x in v)),
                                 _check(lambda r: _capability(r)["judge"] == "longer")),
    "--capability-reference": effect("capability", _check(lambda r: _capability(r)["reference"] == "gpt4_1106_preview")),
    "--ref-loglik-max-tokens": effect("capability", meta("settings.ref_loglik_max_tokens", 3), _check(  # 3 tokens, not 256
        lambda r: [x["ref_loglik"] for x in r.rows] != [x["ref_loglik"] for x in r.facts["whole"].rows])),
    "--capability-judge-model": effect("capability-llm", exits(FAILED), _check(lambda r: str(r.meta["settings"]["capability_judge_model"]) in str(_capability(r)["judge_model"]))),
    "--no-ref-loglik": effect("capability-llm", column("ref_loglik", lambda v: all(x is None for x in v))),
    # -- a saved baseline; "poison" answered again (a2 flips) in the runs gated against it
    "--baseline-save": effect("baseline", on("saved", exits(OK), said("baseline saved: ", "--baseline-compare=first"))),
    "--baseline-dir": effect("baseline", wrote("baselines"), on("tolerated", said("safety-harness baseline: "))),
    "--baseline-compare": effect("baseline", on("tolerated", exits(OK), said("1 xfailed"))),  # the gate tolerates one flip
    "--baseline-fail-flips": effect("baseline", on("failed", exits(FAILED), said("baseline::baseline-flip[alpha:a2] - alpha/a2 passed"))),
    "--baseline": effect("baseline", on("allowed", said("safety-harness baseline: ")), on("mismatch", exits(USAGE))),
    "--baseline-allow-mismatch": effect("baseline", on("mismatch", said("sampling")), on("allowed", exits(OK))),
    # -- the real vLLM engine: its own log says what it received
    "--engine-logs": effect("vllm", said("Initializing a V1 LLM engine"), column("backend", "vllm")),
    "--max-model-len": effect("vllm", said("'max_model_len': 1024", "max_seq_len=1024")),
    # The worker's own line says 1 GiB; the engine core's says what 1 GiB holds of this model (23,296 tokens).
    # Either is vLLM's word that it received the size: the worker's line has been missing from a captured run.
    "--vllm-kv-cache-gib": effect("vllm", _check(lambda r: "Explicitly set (1.0/" in r.out
                                                 or "KV cache size: 23,296 tokens" in r.out, "no KV cache line of 1 GiB")),
    "--distributed-executor-backend": effect("vllm", said("'distributed_executor_backend': 'mp'")),
    "--tensor-parallel-size": effect("vllm", said(VLLM_RECEIVED)),
    "--pipeline-parallel-size": effect("vllm", said(VLLM_RECEIVED)),
    "--data-parallel-size": effect("vllm", said(VLLM_RECEIVED)),
    "--ray-address": effect("ray", exits(USAGE), said("Ray cluster at 127.0.0.1:9 cannot be reached"), not_said("Traceback")),
    "--replicas": effect("ray", _check(lambda r: not (r.folder / "cache").exists())),  # the pool is refused before any model
}


@pytest.fixture
def ctx(tmp_path_factory, tiny_model, tiny_adapter, pytester, _preloaded_modules) -> Context:
    return Context(tmp_path_factory, tiny_model, tiny_adapter, pytester, shared_data())


def test_every_pytest_option_has_an_entry():
    missing, stale = missing_and_stale(TABLE, pytest_options())
    assert not missing, f"add one line to TABLE in {__name__} for each of: {missing}"
    assert not stale, f"TABLE names options that no longer exist: {stale}"


@pytest.mark.parametrize("option", params(TABLE, SCENARIOS))
def test_option_has_its_effect(option, ctx):
    entry = TABLE[option]
    run = SCENARIOS.run(entry.scenario, ctx)
    for check in entry.checks:
        check(run)
