"""Dataset fetching against a local HTTP mirror of the upstream layout (tests/data_mirror.py): hash checks,
HTTP and connection failures, a killed download, concurrent fetches, offline mode, a local --source folder,
and a fresh project whose first `pytest suites/` fetches every suite's data into an empty cache."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.data import fetch as fetch_mod
from harness.data.fetch import DataFetchError, data_cache, fetch, verify
from harness.data.suites import builtin_suite_names
from harness.data.manifest import manifest, select

REPO = Path(__file__).resolve().parents[1]
XSTEST = "xstest/xstest_prompts.csv"
sys.path.insert(0, str(Path(__file__).parent))
from data_mirror import Mirror  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty user cache; no data folder, no default source, not offline."""
    monkeypatch.setenv("SAFETY_HARNESS_CACHE", str(tmp_path / "cache"))
    for name in ("SAFETY_HARNESS_DATA", "SAFETY_HARNESS_DATA_SOURCE", "SAFETY_HARNESS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return data_cache()


@pytest.fixture
def mirror(data_dir):
    with Mirror(data_dir) as m:
        yield m


def entries(*names):
    return select(list(names))


def test_fetch_installs_verified_files_and_says_where_from(cache, mirror):
    lines = []
    (path,) = fetch(entries(XSTEST), source=mirror.url, notify=lines.append)
    assert path == cache / XSTEST and verify(manifest()[XSTEST], path) == "verified"
    assert lines == [f"fetching {XSTEST} from paul-rottger/exaggerated-safety@d7bb5bd7 ({mirror.url}), CC BY 4.0"]
    assert mirror.hits == {"/paul-rottger/exaggerated-safety/d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d/xstest_prompts.csv": 1}
    lines.clear()
    fetch(entries(XSTEST), source=mirror.url, notify=lines.append)  # present and verified: no download
    assert lines == [] and mirror.hits_for(XSTEST) == 1


def test_a_corrupted_file_is_refused_and_nothing_is_installed(cache, mirror):
    mirror.corrupt.add(XSTEST)
    with pytest.raises(DataFetchError) as err:
        fetch(entries(XSTEST), source=mirror.url, notify=lambda line: None, retries=0)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{XSTEST}: sha256 mismatch")
    assert f"expected {manifest()[XSTEST].sha256}, got " in message and "nothing was installed" in message
    assert not (cache / XSTEST).exists() and not list((cache / "xstest").glob("tmp*"))


def test_a_404_names_the_file(cache, mirror):
    with pytest.raises(DataFetchError, match=r"^stl/training/alpaca_small.json: cannot fetch http://127\.0\.0\.1:\d+/"
                                             r"vinid/safety-tuned-llamas/36a4b8d.*: HTTP 404 Not Found$"):
        fetch(entries("stl/training/alpaca_small.json"), source=mirror.url, notify=lambda line: None, retries=0)
    assert not (cache / "stl/training/alpaca_small.json").exists()


def test_a_refused_connection_is_one_line(cache):
    import socket

    pytest.importorskip("pooch")  # a declared dependency; absent only after `pip install --no-deps -e .`

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataFetchError, match=rf"^{XSTEST}: cannot fetch http://127.0.0.1:{port}/.*: Connection refused$"):
        fetch(entries(XSTEST), source=f"http://127.0.0.1:{port}", notify=lambda line: None, retries=0)


def _fetch_command(source: str, *names: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli.main", "data", "fetch", "--quiet", "--source", source, *names]


def test_a_download_killed_midway_leaves_nothing_and_the_next_attempt_succeeds(cache, mirror):
    mirror.stall = XSTEST
    proc = subprocess.Popen(_fetch_command(mirror.url, XSTEST), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert mirror.stalled.wait(60), "the download never started"
        time.sleep(0.2)  # let the first half reach the temporary file
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        mirror.release.set()
    assert not (cache / XSTEST).exists()  # only pooch's temporary file, never the real name
    mirror.stall = None
    (path,) = fetch(entries(XSTEST), source=mirror.url, notify=lambda line: None)
    assert verify(manifest()[XSTEST], path) == "verified"
    assert not list((cache / "xstest").glob("tmp*")), "the killed download's temporary file was left behind"


def test_two_concurrent_fetches_download_each_file_once(cache, mirror):
    mirror.delay_s = 0.3  # so that the two processes overlap
    names = ("xstest", "physical_safety_safe")
    procs = [subprocess.Popen(_fetch_command(mirror.url, *names), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for entry in select(list(names)):
        assert mirror.hits_for(entry.name) == 1, (entry.name, mirror.hits)
        assert verify(entry, cache / entry.name) == "verified"
    assert sum(out.count("fetching ") for out in outs) == 2, outs  # one process fetched, the other found them
    assert all("2 of 2 file(s) present and verified" in out for out in outs)


def test_offline_fetches_nothing_unless_a_source_is_given(cache, mirror, monkeypatch):
    monkeypatch.setenv("SAFETY_HARNESS_OFFLINE", "1")
    with pytest.raises(DataFetchError, match="SAFETY_HARNESS_OFFLINE is set and no --source is given"):
        fetch(entries(XSTEST), notify=lambda line: None)
    assert sum(mirror.hits.values()) == 0
    fetch(entries(XSTEST), source=mirror.url, notify=lambda line: None)  # an explicit source is always used
    monkeypatch.setenv("SAFETY_HARNESS_DATA_SOURCE", mirror.url)
    fetch(entries("I-CoNa.json"), notify=lambda line: None)
    assert (cache / "stl/evaluation/I-CoNa.json").is_file()


def test_source_folder_by_upstream_path_or_by_file_name(cache, data_dir, tmp_path):
    flat = tmp_path / "flat"  # a user's download: file names only
    flat.mkdir()
    shutil.copy(data_dir / XSTEST, flat / "xstest_prompts.csv")
    upstream = tmp_path / "upstream" / "data" / "evaluation"  # a clone of the paper's repository
    upstream.mkdir(parents=True)
    shutil.copy(data_dir / "stl/evaluation/Q-Harm.json", upstream / "Q-Harm.json")
    fetch(entries(XSTEST), source=str(flat), notify=lambda line: None)
    fetch(entries("Q-Harm.json"), source=str(tmp_path / "upstream"), notify=lambda line: None)
    assert verify(manifest()[XSTEST], cache / XSTEST) == "verified"
    assert verify(manifest()["stl/evaluation/Q-Harm.json"], cache / "stl/evaluation/Q-Harm.json") == "verified"
    with pytest.raises(DataFetchError, match=r"^stl/evaluation/I-CoNa.json: not found in --source folder"):
        fetch(entries("I-CoNa.json"), source=str(flat), notify=lambda line: None)


def test_a_file_without_a_pinned_hash_records_it_on_first_fetch(cache, mirror, tmp_path):
    entry = manifest()["stl/training/alpaca_small.json"]
    assert entry.sha256 == ""
    mirror.files[f"/{entry.source.repo}/{entry.source.commit}/{entry.path}"] = tmp_path / "alpaca_small.json"
    mirror.names[f"/{entry.source.repo}/{entry.source.commit}/{entry.path}"] = entry.name
    (tmp_path / "alpaca_small.json").write_text('[{"instruction": "a", "input": "", "output": "b"}]')
    lines = []
    (path,) = fetch([entry], source=mirror.url, notify=lines.append)
    assert "recorded on first fetch" in lines[-1] and verify(entry, path, cache) == "verified"
    path.write_text("[]")  # changed since: the recorded hash catches it
    assert verify(entry, path, cache).startswith("MISMATCH")


def test_the_cli_fetches_from_the_shared_folder_and_verifies(cache, data_dir):
    run = lambda *a: subprocess.run([sys.executable, "-m", "harness.cli.main", "data", *a], capture_output=True, text=True,
                                    env=os.environ.copy(), timeout=300)
    fetched = run("fetch", "--source", str(data_dir))
    assert fetched.returncode == 0, fetched.stderr
    assert "9 of 9 file(s) present and verified" in fetched.stdout
    listed = run("list", "xstest", "refusal_classifier")
    assert f"{XSTEST}" in listed.stdout and "verified" in listed.stdout and "missing" in listed.stdout
    (cache / XSTEST).write_text("id,prompt,type,label\n")
    verified = run("verify")
    assert verified.returncode == 1 and f"{XSTEST}: MISMATCH" in verified.stdout


def test_a_fresh_project_runs_every_suite_from_the_fetched_cache(cache, mirror, pytester):
    """No SAFETY_HARNESS_DATA, no data_dir, an empty cache: the first run fetches each suite's files from the
    mirror and runs all six suites; a second run, offline, reads them from the cache."""
    shutil.copytree(REPO / "suites", pytester.path / "suites")
    pytester.makefile(".toml", pyproject="[tool.pytest.ini_options]\n[tool.safety-harness]\n")
    args = ["-p", "no:randomly", f"--rootdir={pytester.path}", "suites/", "--backend", "dummy", "--limit", "3",
            "--cache-dir", str(pytester.path / "gen-cache"), "--report", str(pytester.path / "r.parquet")]
    result = pytester.runpytest_subprocess(*args, "--source", mirror.url)
    text = "\n".join(result.outlines + result.errlines)
    assert result.ret == 1, text  # the dummy model complies with everything: unsafe-compliance gates fail
    from harness.reports.parquet import read_report

    _, meta = read_report(pytester.path / "r.parquet")
    assert sorted(meta["suites"]) == ["capability", "malicious_instructions", "physical_safety_safe",
                                      "question_format", "smoke", "xstest"]
    fetched = {line.split()[1] for line in result.outlines if line.startswith("fetching ")}
    assert fetched == {f.name for f in select(None, default_users=builtin_suite_names())} - {"alpaca_eval/gpt4_1106_preview_outputs.json"}
    assert all(mirror.hits_for(name) == 1 for name in fetched)
    os.environ["SAFETY_HARNESS_OFFLINE"] = "1"  # restored by the cache fixture's monkeypatch
    again = pytester.runpytest_subprocess(*args)
    assert again.ret == 1 and not any(line.startswith("fetching ") for line in again.outlines)


def test_a_run_that_cannot_get_its_data_stops_with_one_line(cache, pytester, monkeypatch):
    monkeypatch.setenv("SAFETY_HARNESS_OFFLINE", "1")
    shutil.copytree(REPO / "suites", pytester.path / "suites")
    pytester.makefile(".toml", pyproject="[tool.pytest.ini_options]\n[tool.safety-harness]\n")
    args = ["-p", "no:randomly", f"--rootdir={pytester.path}", "suites/", "--backend", "dummy", "--limit", "2",
            "--cache-dir", str(pytester.path / "gen-cache"), "--report", str(pytester.path / "r.parquet")]
    result = pytester.runpytest_subprocess(*args, "-k", "xstest")
    errors = [line for line in result.errlines if line.startswith("ERROR")]
    assert result.ret == pytest.ExitCode.USAGE_ERROR and len(errors) == 1, result.errlines
    assert "xstest/xstest_prompts.csv not found in the user cache; run `safety-harness data fetch xstest`" in errors[0]
    assert "Traceback" not in "\n".join(result.outlines + result.errlines)
    skipped = pytester.runpytest_subprocess(*args, "-k", "xstest", "--allow-missing-data")
    assert skipped.ret in (0, pytest.ExitCode.NO_TESTS_COLLECTED) or "skipped" in skipped.outlines[-1]
