"""pytest-xdist runs: a serial run and a ``-n 2`` run write equal reports (apart from run ids and timing),
the model is loaded by one process only, and the controller prints one summary table.

The runs are subprocesses (xdist workers are processes anyway) on the tiny random Llama through the hf
backend, so generation, the cache and the lock are real. (With a model-free backend, dummy or replay,
each worker answers for itself: there is nothing to load and nothing is cached.)"""

from __future__ import annotations

import pytest

from harness.reports.parquet import read_report
from tests.support import project

TIMING = {"generation_seconds", "backend_start_seconds", "scoring_seconds", "startup_seconds", "data_seconds",
          "model_prep_seconds", "report_seconds", "wall_seconds"}


def comparable(path):
    """The report without what legitimately differs between two runs: the run id and the clock."""
    table, meta = read_report(path)
    rows = table.drop(["run_id"]).to_pylist()
    for key in ("run_id", "started", "finished"):
        meta.pop(key)
    meta["stats"] = {k: v for k, v in meta["stats"].items() if k not in TIMING}
    return rows, meta


def run_twice(harness_project, *args):
    """The same command serially and with -n 2, each from an empty generation cache; both report paths."""
    serial = harness_project.path / "serial.parquet"
    result = harness_project.run(*args)  # in-process: the serial run needs no fresh interpreter
    assert result.ret in (0, 1), harness_project.text(result)
    harness_project.report.rename(serial)
    for stale in harness_project.cache_dir.glob("generations.sqlite*"):
        stale.unlink()  # the -n 2 run must generate too, so that its `cached` column matches
    parallel = harness_project.run(*args, "-n", "2", subprocess=True)
    return serial, harness_project.report, parallel


@pytest.mark.slow
def test_serial_and_two_workers_write_equal_reports_with_one_model_load(harness_project, tiny_model):
    project(harness_project, configured_tests=True)
    args = ("--backend", "hf", "--model", str(tiny_model), "--max-new-tokens", "6", "-p", "xdist")
    serial, parallel, result = run_twice(harness_project, *args)
    text = harness_project.text(result)
    assert result.ret in (0, 1), text
    assert "2 workers" in text
    assert text.count("safety-harness summary") == 1  # one table, from the controller
    assert comparable(serial) == comparable(parallel)
    rows, meta = comparable(parallel)
    assert len(rows) == 7 and not any(r["cached"] for r in rows)
    # One backend (model load) and one generation for the whole run, not one per worker.
    assert meta["stats"]["backend_starts"] == 1
    assert meta["stats"]["n_generated"] == 7 and meta["stats"]["n_prompts"] == 7


def test_no_cache_with_workers_is_a_usage_error(harness_project, tiny_model):
    project(harness_project)
    result = harness_project.run("--backend", "hf", "--model", str(tiny_model), "--no-cache", "-p", "xdist",
                                 "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--no-cache cannot be combined with pytest-xdist" in harness_project.text(result)


def test_a_usage_error_on_the_workers_is_the_serial_runs_one_line(harness_project):
    # Raised at a worker's collection-time run (here a malformed prompt file), it used to kill the worker after
    # xdist had its items, and the controller ended in an INTERNALERROR traceback ("assert not crashitem").
    project(harness_project, configured_tests=True)
    (harness_project.path / "beta.jsonl").write_text('{"prompt": "hi"}\n{"prompt": "x"\n', encoding="utf-8")
    result = harness_project.run("--backend", "dummy", "-p", "xdist", "-n", "2", subprocess=True)
    text = harness_project.text(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert "INTERNALERROR" not in text and "no prompt was scored" not in text
    assert [line for line in text.splitlines() if line.startswith("ERROR:")] == [
        f"ERROR: {harness_project.path / 'beta.jsonl'}:2: malformed JSON (Expecting ',' delimiter, column 15)"]


def test_worker_payload_keeps_harm_scores_and_capability_results():
    """What a worker sends (JSON text) rebuilds the same rows, harm scores and capability statistics."""
    from harness.engine.capability_metrics import CapabilityResult, CapabilityRow
    from harness.scoring.harm import HarmScore
    from harness.engine.session import HarnessSession
    from harness.engine.suite_result import ScoredRow
    from harness.engine.session_payload import merge_payloads, to_payload
    from harness.config.settings import RunSettings
    from harness.core.types import GenerationResult, Prompt, RefusalScore

    prompt = Prompt("capability", "c1", "Name three colours.", expected="comply")
    row = ScoredRow(prompt, "T: Name three colours.", GenerationResult("Red, green, blue.", 5, "stop"),
                    RefusalScore("full_compliance", 0.02, {}), cached=False, harm=HarmScore(0.0, 0.1, {}))
    cap = CapabilityResult({"c1": CapabilityRow("Red.", 1.0, 0.8, -1.5, 3)}, "text_davinci_003", judge="longer",
                           notes=["n"], seconds={"judge": 0.1})
    worker = HarnessSession(RunSettings(backend="dummy"))
    worker.model_info = worker.model_info.merged({"scorer": "refusal_patterns"})
    worker.results["capability"] = worker.suite_result("capability", [row], capability=cap)
    worker.stats.n_prompts = worker.stats.n_cached = 1
    hs = HarnessSession(RunSettings(backend="dummy"))
    merge_payloads(hs, [to_payload(worker, {"n_prompts": 1, "n_cached": 1})])
    merged = hs.results["capability"]
    assert merged.rows[0].harm == row.harm and merged.rows[0].response == row.response
    assert merged.capability == cap and merged.capability.judge == "longer"
    assert hs.prompts["capability"] == [prompt] and hs.model_info.scorer == "refusal_patterns"
    assert hs.stats.n_prompts == 1 and hs.stats.n_cached == 1


def test_workers_that_each_generated_every_prompt_count_it_once():
    """A model-free backend keeps no cache, so each worker generates every prompt itself, at the same time:
    the merged run generated each prompt once (it read 'prompts 2: generated 4'), in the slowest worker's time."""
    import json

    from harness.config.settings import RunSettings
    from harness.core.types import GenerationResult, Prompt, RefusalScore
    from harness.engine.session import HarnessSession
    from harness.engine.session_payload import merge_payloads, to_payload
    from harness.engine.suite_result import ScoredRow

    def worker(seconds: float) -> str:
        hs = HarnessSession(RunSettings(backend="dummy"))
        hs.model_info = hs.model_info.merged({"scorer": "refusal_patterns", "run_key": "r"})
        rows = [ScoredRow(Prompt("smoke", f"p{i}", f"Prompt {i}", expected="comply"), f"T{i}",
                          GenerationResult("Sure.", 3 + i, "stop"), RefusalScore("full_compliance", 0.0, {}),
                          cached=False) for i in range(2)]
        hs.results["smoke"] = hs.suite_result("smoke", rows)
        hs.generated_keys = {r["key"] for r in json.loads(to_payload(hs))["results"]["smoke"]}
        hs.stats.n_prompts, hs.stats.n_generated, hs.stats.n_response_tokens_generated = 2, 2, 7
        hs.stats.generation_seconds = seconds
        return to_payload(hs, {"n_prompts": 2, "n_cached": 0})

    hs = HarnessSession(RunSettings(backend="dummy"))
    merge_payloads(hs, [worker(1.0), worker(1.5)])
    assert (hs.stats.n_prompts, hs.stats.n_generated, hs.stats.n_response_tokens_generated) == (2, 2, 7)
    assert hs.stats.generation_seconds == 1.5
