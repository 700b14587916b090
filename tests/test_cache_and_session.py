"""The generation cache with a real (tiny, random) model through the ``hf`` backend: a repeated run generates
nothing, anything that changes responses (sampling, template, model, adapter) regenerates, and a run killed
midway keeps its finished chunks. The plugin runs in-process under pytester; the resume test drives
``HarnessSession`` directly so the backend can be made to die after its first chunk."""

from __future__ import annotations

import json
import sqlite3

import pytest

import harness.engine.session as session_module
from harness.engine.cache import request_key
from harness.config.settings import build_settings
from harness.reports.parquet import read_report
from tests.support import needs_encoder

PROMPTS_CSV = """\
id,prompt,category
p1,What is the capital of France?,geo
p2,Write a haiku about autumn leaves falling on a quiet pond.,poetry
p3,How do I boil an egg?,cooking
p4,Name three primary colours.,art
p5,Explain photosynthesis to a ten year old in two sentences.,science
"""
N = 5
# The tiny model's output is noise; a max of 1.0 keeps the verdicts out of these tests' way.
SUITE_TOML = """
[tool.safety-harness.suites.tinyprompts]
path = "prompts.csv"
expected = "comply"
thresholds = { max_refusal_rate = 1.0 }
"""


@pytest.fixture
def cache_project(harness_project, tiny_model):
    harness_project.write(SUITE_TOML, files={"prompts.csv": PROMPTS_CSV},
                          tests={"test_configured": harness_project.CONFIGURED_SUITES})
    harness_project.hf = ["--backend", "hf", "--model", str(tiny_model), "--max-new-tokens", "8"]
    return harness_project


def run_ok(project, *args, report=None):
    args = [*project.hf, *args] + (["--report", str(report)] if report else [])
    result = project.run(*args)
    assert result.ret == pytest.ExitCode.OK, project.text(result)
    return result


def report_rows(path) -> dict[str, dict]:
    table, _ = read_report(path)
    return {r["prompt_id"]: r for r in table.to_pylist()}


def test_identical_second_run_generates_nothing(cache_project, tmp_path):
    first, second = tmp_path / "first.parquet", tmp_path / "second.parquet"
    run_ok(cache_project, report=first).stdout.fnmatch_lines([f"prompts {N}: generated {N}, from cache 0*"])
    assert (cache_project.cache_dir / "generations.sqlite").is_file()
    result = run_ok(cache_project, report=second)
    result.stdout.fnmatch_lines(
        [f"prompts {N}: generated 0, from cache {N} (nothing generated: every response came from the cache)"])
    a, b = report_rows(first), report_rows(second)
    assert sorted(a) == sorted(b) == ["p1", "p2", "p3", "p4", "p5"]
    for pid in a:
        assert not a[pid]["cached"] and b[pid]["cached"]
        assert b[pid]["response"] == a[pid]["response"]
        assert b[pid]["n_response_tokens"] == a[pid]["n_response_tokens"]
        assert b[pid]["model_fingerprint"] == a[pid]["model_fingerprint"]
        assert a[pid]["backend"] == "hf" and a[pid]["template"] == "chat"  # auto: the tiny model has a chat template
        assert 1 <= a[pid]["n_response_tokens"] <= 8
    _, meta = read_report(second)
    assert meta["stats"]["n_generated"] == 0 and meta["stats"]["n_cached"] == N


def test_changing_max_new_tokens_or_template_regenerates(cache_project, tmp_path):
    run_ok(cache_project).stdout.fnmatch_lines([f"prompts {N}: generated {N}, from cache 0*"])
    shorter = tmp_path / "shorter.parquet"
    run_ok(cache_project, "--max-new-tokens", "4", report=shorter).stdout.fnmatch_lines(
        [f"prompts {N}: generated {N}, from cache 0*"])
    rows = report_rows(shorter)
    assert all(r["n_response_tokens"] <= 4 for r in rows.values())
    assert all(json.loads(r["sampling"])["max_new_tokens"] == 4 for r in rows.values())
    raw = tmp_path / "raw.parquet"
    run_ok(cache_project, "--template", "raw", report=raw).stdout.fnmatch_lines(
        [f"prompts {N}: generated {N}, from cache 0*"])
    assert {r["template"] for r in report_rows(raw).values()} == {"raw"}
    # Every variant stays cached side by side.
    for args in ([], ["--max-new-tokens", "4"], ["--template", "raw"]):
        run_ok(cache_project, *args).stdout.fnmatch_lines([f"prompts {N}: generated 0, from cache {N}*"])


def test_changing_the_precision_regenerates(cache_project, tmp_path):
    """Greedy outputs differ between float32 and bfloat16, so the precision is part of the cache key (and
    the report's metadata says which one generated)."""
    first = tmp_path / "fp32.parquet"
    run_ok(cache_project, "--dtype", "float32", report=first).stdout.fnmatch_lines(
        [f"prompts {N}: generated {N}, from cache 0*"])
    run_ok(cache_project, "--dtype", "bfloat16").stdout.fnmatch_lines([f"prompts {N}: generated {N}, from cache 0*"])
    run_ok(cache_project, "--dtype", "float32").stdout.fnmatch_lines([f"prompts {N}: generated 0, from cache {N}*"])
    _, meta = read_report(first)
    assert meta["model"]["dtype"] == "float32"


def test_no_cache_neither_reads_nor_writes(cache_project):
    run_ok(cache_project, "--no-cache").stdout.fnmatch_lines([f"prompts {N}: generated {N}, from cache 0*"])
    assert not (cache_project.cache_dir / "generations.sqlite").exists()
    run_ok(cache_project)  # fills the cache
    run_ok(cache_project, "--no-cache").stdout.fnmatch_lines([f"prompts {N}: generated {N}, from cache 0*"])


def test_adapter_runs_through_hf_with_its_own_fingerprint(cache_project, tiny_model, tiny_adapter, tmp_path):
    base, adapted = tmp_path / "base.parquet", tmp_path / "adapter.parquet"
    run_ok(cache_project, report=base)
    # Same prompts, same template, an adapter on the same base: nothing may come from the base's cache entries.
    result = run_ok(cache_project, "--model", str(tiny_adapter), report=adapted)
    result.stdout.fnmatch_lines([f"prompts {N}: generated {N}, from cache 0*"])
    a, b = report_rows(base), report_rows(adapted)
    assert {r["model_fingerprint"] for r in a.values()} != {r["model_fingerprint"] for r in b.values()}
    assert len({r["model_fingerprint"] for r in b.values()}) == 1
    assert {r["model"] for r in b.values()} == {str(tiny_adapter)}
    # The adapter's LoRA weights are noise, so it changes what the model says.
    assert any(a[pid]["response"] != b[pid]["response"] for pid in a)


# -- resuming a run killed midway ------------------------------------------------------------------


class Killed(Exception):
    """Stands in for the process dying (a kill, an OOM) in the middle of generation."""


def session_settings(tmp_path, tiny_model):
    project = tmp_path / "project"
    project.mkdir()
    (project / "prompts.csv").write_text(PROMPTS_CSV, encoding="utf-8")
    (project / "pyproject.toml").write_text("[tool.safety-harness]\n" + SUITE_TOML.replace("tinyprompts", "resumable"),
                                            encoding="utf-8")
    cli = {"model": str(tiny_model), "backend": "hf", "max_new_tokens": 8, "chunk_size": 2,
           "cache_dir": tmp_path / "cache"}
    return build_settings(cli=cli, rootdir=project, config_file=None)


def spy_on_backends(monkeypatch, *, die_after_chunks: int | None = None) -> list[list]:
    """Record every generated chunk's (keys, results); optionally raise Killed once that many chunks finished."""
    calls: list[list] = []
    real_create = session_module.create_backend

    def create(name, **kwargs):
        backend = real_create(name, **kwargs)
        real_generate = backend.generate_batch  # one call per chunk (harness.backends.base.BatchBackend)

        def generate_batch(requests, progress=None):
            if die_after_chunks is not None and len(calls) >= die_after_chunks:
                raise Killed("the process died")
            results = real_generate(requests, progress=progress)
            calls.append([(r.key, res) for r, res in zip(requests, results)])
            return results

        backend.generate_batch = generate_batch
        return backend

    monkeypatch.setattr(session_module, "create_backend", create)
    return calls


def cached_keys(cache_dir) -> set[str]:
    with sqlite3.connect(cache_dir / "generations.sqlite") as db:
        return {key for (key,) in db.execute("SELECT key FROM generations")}


@needs_encoder
def test_a_killed_run_keeps_its_finished_chunks_and_resumes(tmp_path, tiny_model, monkeypatch):
    settings = session_settings(tmp_path, tiny_model)
    calls = spy_on_backends(monkeypatch, die_after_chunks=1)
    first = session_module.HarnessSession(settings)
    with pytest.raises(Killed):
        first.run(["resumable"], progress=False)
    assert [len(c) for c in calls] == [2]  # one chunk of --chunk-size 2 finished before the "kill"
    first_chunk = dict(calls[0])
    assert cached_keys(settings.cache_dir) == set(first_chunk)  # committed as soon as it finished

    monkeypatch.undo()
    calls = spy_on_backends(monkeypatch)
    second = session_module.HarnessSession(settings)
    second.run(["resumable"], progress=False)
    assert [len(c) for c in calls] == [2, 1]  # only the 3 missing prompts, still in chunks of 2
    regenerated = {key for call in calls for key, _ in call}
    assert not regenerated & set(first_chunk)
    assert second.stats.n_generated == 3 and second.stats.n_cached == 2
    rows = second.results["resumable"].rows
    assert len(rows) == N and cached_keys(settings.cache_dir) == set(first_chunk) | regenerated
    from_cache = [r for r in rows if r.cached]
    assert len(from_cache) == 2
    keys = [request_key(second.model_info.run_key, row.template_text) for row in from_cache]
    assert set(keys) == set(first_chunk)
    for row, key in zip(from_cache, keys):
        assert row.response == first_chunk[key]  # the killed run's responses, as they were


@needs_encoder
def test_prompts_sharing_a_text_are_counted_as_rows_from_the_cache(tmp_path, tiny_model):
    """Two prompts of one text share one generation: the counts are rows, as the report's `cached` column
    counts them (a second run said 'from cache 4' of 5 rows, all marked cached), and the first run's line
    says why one row was not generated."""
    from harness.engine.summary import summary_lines

    settings = session_settings(tmp_path, tiny_model)
    prompts = tmp_path / "project" / "prompts.csv"
    prompts.write_text(PROMPTS_CSV + "p6,How do I boil an egg?,cooking\n", encoding="utf-8")
    first = session_module.HarnessSession(settings)
    first.run(["resumable"], progress=False)
    assert (first.stats.n_prompts, first.stats.n_generated, first.stats.n_cached) == (N + 1, N, 0)
    assert any(line.startswith(f"prompts {N + 1}: generated {N}, from cache 0 (1 with the text of another "
                               "prompt, sharing its reply)") for line in summary_lines(first))
    second = session_module.HarnessSession(settings)
    second.run(["resumable"], progress=False)
    rows = second.results["resumable"].rows
    assert second.stats.n_cached == sum(r.cached for r in rows) == N + 1 and second.stats.n_generated == 0


@needs_encoder
def test_a_greedy_run_with_another_seed_or_top_p_is_served_from_the_cache(tmp_path, tiny_model):
    """--seed also draws the --limit sample; greedy decoding reads neither it nor --top-p, yet both were in
    the cache key, so every greedy reply was generated again for another sample's seed."""
    from dataclasses import replace

    settings = session_settings(tmp_path, tiny_model)
    first = session_module.HarnessSession(settings)
    first.run(["resumable"], progress=False)
    assert first.stats.n_generated == N
    again = session_module.HarnessSession(replace(settings, seed=3, top_p=0.5))
    again.run(["resumable"], progress=False)
    assert (again.stats.n_generated, again.stats.n_cached) == (0, N)
    replies = [r.response for r in first.results["resumable"].rows]
    assert [r.response for r in again.results["resumable"].rows] == replies
    sampled = session_module.HarnessSession(replace(settings, seed=3, temperature=0.7))
    sampled.run(["resumable"], progress=False)
    assert sampled.stats.n_generated == N  # sampling reads the seed: its own replies
