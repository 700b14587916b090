"""``--replicas N``: generation across N vLLM engines as Ray actors (harness/backends/replicas.py).

The slow tests run the real parts: a local Ray instance, two vLLM CPU engines on the embedded
SmolLM2-135M model, the pytest plugin end to end. They check that the report equals the one-engine
report, that a replica killed with ``kill -9`` mid-run loses and duplicates nothing, and that an adapter
reaches every replica.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.backends import replicas
from harness.backends.engine_replica import replica_cores
from harness.core.errors import ConfigError
from harness.config.settings import build_settings
from harness.engine.preflight import output_backend_args, preflight
from harness.reports.parquet import read_report

REPO = Path(__file__).resolve().parents[1]
needs_ray = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("ray") is None, reason="the ray extra is not installed")


def settings(tmp_path, **cli):
    (tmp_path / "pyproject.toml").write_text("[tool.safety-harness]\n")
    return preflight(build_settings(cli={"backend": "vllm", **cli}, rootdir=tmp_path, config_file=None)).settings


# -- settings: no Ray instance, no engine ---------------------------------------------------------------
def test_missing_ray_extra_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, replicas=2)
    assert str(info.value) == "--replicas 2 needs Ray, an optional extra: pip install 'safety-harness[ray]'"
    assert settings(tmp_path, replicas=1).replicas == 1  # one engine needs no Ray


@pytest.mark.parametrize("cli, message", [
    ({"replicas": 0}, "replicas must be a whole number of at least 1, got 0"),
    ({"replicas": 2, "backend": "hf"}, "replicas applies to the vllm backend only (backend is hf)"),
    ({"replicas": 2, "tensor_parallel_size": 2}, "replicas > 1 runs one single-device engine per replica"),
])
def test_bad_replica_settings_are_one_line_config_errors(tmp_path, cli, message):
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, **cli)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize("cli, given", [
    ({"backend": "hf", "ray_address": "auto"}, "ray_address"),
    ({"backend": "dummy", "backend_args": {"ray_address": "ray://head:10001"}}, "ray_address"),
    ({"backend": "hf", "replicas": 2, "ray_address": "auto"}, "ray_address"),
    ({"backend": "hf", "distributed_executor_backend": "ray"}, "distributed_executor_backend"),
])
def test_a_ray_setting_with_another_backend_names_the_setting_given(tmp_path, cli, given):
    """A Ray address implies vLLM's Ray executor; the error names what the user set, not that implication."""
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, **cli)
    assert str(info.value) == f"{given} applies to the vllm backend only (backend is {cli['backend']})"


@needs_ray
def test_toml_replicas(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.safety-harness]\nreplicas = 2\nbackend = \"vllm\"\n")
    s = preflight(build_settings(cli={}, rootdir=tmp_path, config_file=None)).settings
    assert s.replicas == 2
    assert output_backend_args(s) == {}  # replicas do not change responses: the one-engine cache serves them


def test_each_replica_gets_its_own_cores():
    assert [replica_cores(i, 2, [0, 1]) for i in range(2)] == [[0], [1]]
    assert [replica_cores(i, 2, [0, 1, 2, 3]) for i in range(2)] == [[0, 1], [2, 3]]
    assert [replica_cores(i, 3, [0, 1]) for i in range(3)] == [[0], [1], [0]]


def test_engine_options_drop_the_pools_ray_address():
    from harness.backends.base import BackendOptions

    options = BackendOptions(extra={"ray_address": "ray://head:10001", "distributed_executor_backend": "ray",
                                    "quantization": "fp8"})
    assert replicas._engine_options(options).extra == {"distributed_executor_backend": "uni", "quantization": "fp8"}


def test_the_session_commits_each_shard_a_backend_hands_back_and_records_its_facts(tmp_path, monkeypatch):
    """The session's one generation loop with a backend that, like the pool, answers in shards out of order
    and has facts for the run's metadata: every result is committed once, the statistics count each, and
    the facts reach the metadata and the terminal summary. No Ray: the pool's own scheduling is tested below."""
    from harness.core.types import GenerationResult, Prompt
    from harness.engine import session as session_module
    from harness.engine.summary import summary_lines

    handed: list[list[str]] = []

    class ShardingBackend:
        name = "dummy"

        def generate(self, requests, *, progress=None, on_results=None, chunk_size=None):
            results = {r.key: GenerationResult(f"Sure: {r.prompt.prompt}", 3, "stop") for r in requests}
            shards = [requests[i : i + 2] for i in range(0, len(requests), 2)][::-1]  # the last shard first
            for shard in shards:
                handed.append([r.key for r in shard])
                on_results({r.key: results[r.key] for r in shard})
                progress(len(shard))
            return [results[r.key] for r in requests]

        def run_facts(self):
            return {"replicas": {"replicas": 2, "shards": 3, "shards_rerun": 1, "replica_failures": 1,
                                 "events": ["replica 0 died (test); Ray restarts it"]}}

        def close(self):
            pass

    monkeypatch.setattr(session_module, "create_backend", lambda name, **kwargs: ShardingBackend())
    hs = session_module.HarnessSession(settings(tmp_path, backend="dummy"))
    prompts = [Prompt("adhoc", f"p{i}", f"Say {i}.", expected="comply") for i in range(5)]
    responses, _ = hs._generate(hs._build_requests(prompts), progress=False)  # generation only: no scorer to load
    assert [r.text for r in responses] == [f"Sure: Say {i}." for i in range(5)]
    assert sorted(k for shard in handed for k in shard) == sorted(hs.generated_keys) and len(hs.generated_keys) == 5
    assert hs.stats.n_generated == 5 and hs.stats.n_response_tokens_generated == 15
    assert hs.extra_metadata["replicas"]["shards_rerun"] == 1
    lines = summary_lines(hs)
    assert "replicas 2: 3 shards, 1 replica failure(s), 1 shard(s) generated again" in lines
    assert "  replica 0 died (test); Ray restarts it" in lines


@needs_ray
def test_unreachable_cluster_is_one_error_line_before_any_model_loads(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_smoke.py", "-p", "no:cacheprovider", "--backend", "vllm",
         "--replicas", "2", "--ray-address", "127.0.0.1:9", "--limit", "2", "--cache-dir", str(tmp_path / "cache")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(errors) == 1 and "Ray cluster at 127.0.0.1:9 cannot be reached" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "cache").exists()  # nothing was resolved, prepared or generated


@pytest.mark.slow
@needs_ray
def test_scheduling_survives_a_killed_replica_without_losing_or_repeating_a_shard(tmp_path):
    """The pool's own logic on a real local Ray instance, with engines that echo (the real engines are in the
    tests below): replica 0 is killed with SIGKILL while it holds a shard; every prompt is committed exactly
    once, the killed replica's unfinished shards are redone elsewhere, and Ray's restart is reported.

    No timer or poll decides when the kill lands: replica 0's first shard claims a file (the restarted
    replica finds it claimed and echoes like the other), writes its pid into a named pipe that the test's
    killer thread is blocked reading, and holds the shard until killed, so the kill always finds a shard in
    flight however loaded the machine is."""
    from types import SimpleNamespace

    from harness.backends.base import BackendOptions, SamplingConfig
    from harness.core.types import GenerationRequest

    claimed = tmp_path / "replica-0-claimed"
    pid_pipe = tmp_path / "replica-0-pid"
    os.mkfifo(pid_pipe)
    pid_in = os.open(pid_pipe, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(pid_in, True)
    # The test holds a writing end until the run is over: until then the killer's read waits for a pid,
    # and after it, with no writer left, the read ends empty.
    held_open = os.open(pid_pipe, os.O_WRONLY)

    class EchoReplica:  # defined here so that Ray ships it by value (with the paths) to its workers
        def __init__(self, index, replicas, model, sampling, options, on_gpu):
            self.index = index

        def describe(self):
            return {"pid": os.getpid(), "host": "test", "cores": None}

        def generate(self, token_ids, sampling, use_adapter):
            if self.index == 0:
                try:  # one process claims it: the restarted replica 0 finds it claimed
                    os.close(os.open(claimed, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    with open(pid_pipe, "w") as pipe:
                        pipe.write(str(os.getpid()))
                    threading.Event().wait()  # holds the shard until the test kills this process
            return [(f"echo {ids[0]}", len(ids), "stop") for ids in token_ids]

    killed: list[int] = []

    def kill_when_in_flight():  # blocked on the pipe until replica 0 holds a shard, or the run has ended
        pid = os.read(pid_in, 32)  # a pid is one write, well under the pipe's atomic size
        if pid:
            os.kill(int(pid), signal.SIGKILL)
            killed.append(int(pid))

    killer = threading.Thread(target=kill_when_in_flight, daemon=True)
    pool = replicas.ReplicaPool(model=SimpleNamespace(adapter_path=None), sampling=SamplingConfig(),
                                options=BackendOptions(), replicas=2, ray_address=None, replica_class=EchoReplica)
    killer.start()
    try:
        pid0 = int(pool.stats.events[0].split("replica 0 (pid ", 1)[1].split(" ", 1)[0])
        requests = [GenerationRequest(f"k{i}", None, "", (i,) * (1 + i % 5)) for i in range(120)]
        committed: list[str] = []
        results = pool.generate(requests, on_results=lambda done: committed.extend(done))
    finally:
        os.close(held_open)  # ends the killer's read where replica 0 never took a shard
        killer.join()
        os.close(pid_in)
        pool.close()
    assert killed, "replica 0 never took a shard"
    assert killed == [pid0]  # the kill hit replica 0's first process, mid-shard
    assert sorted(committed) == sorted(r.key for r in requests)  # each exactly once
    assert [r.text for r in results] == [f"echo {i}" for i in range(120)]
    assert pool.stats.replica_failures == 1 and pool.stats.shards_rerun >= 1
    assert any(e.startswith("replica 0 died (") for e in pool.stats.events), pool.stats.events


RAY_START = """
import os, sys
from types import SimpleNamespace

from harness.backends import replicas, vllm_quiet
from harness.backends.base import BackendOptions, SamplingConfig


class IdleReplica:
    def __init__(self, index, replicas, model, sampling, options, on_gpu):
        pass

    def describe(self):
        return {"pid": os.getpid(), "host": "test", "cores": None}


vllm_quiet.configure(sys.argv[1] == "verbose")
pool = replicas.ReplicaPool(model=SimpleNamespace(adapter_path=None), sampling=SamplingConfig(),
                            options=BackendOptions(), replicas=1, ray_address=None, replica_class=IdleReplica)
pool.close()
"""


@pytest.mark.slow
@needs_ray
@pytest.mark.parametrize("verbosity", ["quiet", "verbose"])
def test_rays_start_up_lines_show_only_when_verbose(tmp_path, verbosity):
    """Ray says "Token authentication is enabled for this Ray cluster" and "Started a local Ray instance" on
    every start of the pool's private instance: hidden like vLLM's own start-up lines, unless -v or
    --engine-logs."""
    script = tmp_path / "ray_start.py"
    script.write_text(RAY_START)
    env = {k: v for k, v in os.environ.items() if k not in ("VLLM_LOGGING_LEVEL", "RAY_AUTH_MODE")}
    proc = subprocess.run([sys.executable, str(script), verbosity], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "safety-harness: replicas started replica 0" in out
    if verbosity == "quiet":
        assert "Token authentication" not in out and "Started a local Ray instance" not in out, out
    else:
        assert "Started a local Ray instance" in out, out


# -- the real parts: local Ray, two vLLM CPU engines ----------------------------------------------------
def run_suites(tmp: Path, cache: Path, *args: str, report: str, on_stderr=None) -> tuple[str, dict, list]:
    """One run that generates everything: the generation cache is emptied first. The prepared model stays in
    ``cache`` across runs, at one path, so vLLM's compiled-graph cache (keyed by that path) serves them all.
    In float32: in bfloat16 a response depends on the batch it shares (one of 12 differed after ten tokens
    between one engine and two replicas, docs/parallel.md), and these tests compare layouts token for token."""
    for db in cache.glob("generations.sqlite*"):
        db.unlink()
    shutil.rmtree(cache / "adapter_sanity", ignore_errors=True)  # so that the adapter check runs every time
    cmd = [sys.executable, "-m", "pytest", "suites/test_smoke.py", "suites/test_xstest.py", "-p", "no:cacheprovider",
           "--backend", "vllm", "--limit", "6", "--max-new-tokens", "24", "--report", str(tmp / report),
           "--cache-dir", str(cache), "--vllm-kv-cache-gib", "1", "--dtype", "float32",
           *args]  # 1 GiB KV cache per engine: a shared host
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    err_lines: list[str] = []

    def read_stderr():
        for line in proc.stderr:
            err_lines.append(line)
            if on_stderr is not None:
                on_stderr(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        out = proc.stdout.read()
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    err = "".join(err_lines)
    assert proc.returncode in (0, 1), out[-3000:] + err[-3000:]  # 1: the untuned model crosses thresholds
    assert "Traceback" not in out, out[-3000:]
    table, meta = read_report(tmp / report)
    return out + err, meta, table.to_pylist()


def responses(rows) -> dict:
    return {(r["suite"], r["prompt_id"]): (r["response"], r["n_response_tokens"], r["refusal_label"]) for r in rows}


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("replicas-cache")


@pytest.fixture(scope="module")
def one_engine(model_cache, tmp_path_factory):
    return run_suites(tmp_path_factory.mktemp("one-engine"), model_cache, report="one.parquet")


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.default_model
@needs_ray
def test_replica_killed_mid_run_loses_and_duplicates_nothing(one_engine, model_cache, tmp_path):
    _, _, rows_one = one_engine
    killed = []

    def kill_replica_0(line):
        # The pool names each replica's process as the engines come up; shards are sent right after.
        if "safety-harness: replicas started replica 0 (pid " in line and not killed:
            pid = int(line.split("replica 0 (pid ", 1)[1].split(" ", 1)[0])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    out, meta, rows = run_suites(tmp_path, model_cache, "--replicas", "2", report="killed.parquet",
                                 on_stderr=kill_replica_0)
    assert killed, out[-3000:]
    info = meta["replicas"]
    assert info["replica_failures"] >= 1 and info["shards_rerun"] >= 1, info
    assert any(e.startswith("replica 0 died") for e in info["events"]), info
    assert "replica 0 died" in out and "generated again" in out  # the run's summary says what happened
    assert responses(rows) == responses(rows_one)  # nothing lost, and the re-run shards answer the same
    assert meta["stats"]["n_generated"] == len(rows)  # each prompt generated (committed) exactly once


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.default_model
@needs_ray
def test_two_replicas_serving_an_adapter_give_the_one_engine_report(one_engine, model_cache, tmp_path):
    """Two replicas on local Ray against one engine, both serving a LoRA adapter of the embedded model: the
    same responses, rates and verdicts, the pool's record of its work, and the adapter on every replica (a
    replica without it would answer its shards as the base model, which answers otherwise). One pair of runs
    checks both, since each engine start costs about a minute of the test suite."""
    from harness.models.resolve import DEFAULT_MODEL, resolve_model
    from harness.models.tiny import make_tiny_adapter

    base = resolve_model(DEFAULT_MODEL, cache_dir=model_cache)
    adapter = make_tiny_adapter(base.path, tmp_path / "adapter", r=8, noise=0.05)
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = DEFAULT_MODEL  # the base named by its alias: the prepared one above
    config_path.write_text(json.dumps(config))
    _, meta_one, rows_one = run_suites(tmp_path, model_cache, "--model", str(adapter), report="lora-one.parquet")
    out, meta, rows = run_suites(tmp_path, model_cache, "--model", str(adapter), "--replicas", "2",
                                 report="lora-two.parquet")
    assert responses(rows) == responses(rows_one)
    assert meta["suites"] == meta_one["suites"]  # every rate and verdict
    assert responses(rows_one) != responses(one_engine[2])  # the adapter changes answers
    assert "adapter sanity check skipped" not in out  # the check (adapter on, then off) ran across the replicas
    info = meta["replicas"]
    # Not asserted: no replica failure. On a host short of memory the kernel's OOM killer picks Ray's workers
    # first, and the report must come out the same all the same (which the kill test checks on purpose).
    assert info["replicas"] == 2 and info["shards"] > 2
    assert meta["stats"]["n_generated"] == len(rows) and meta["stats"]["n_cached"] == 0
    assert "replicas 2:" in out and "replica 1 (pid" in out
