"""Dataset fetching against a local HTTP mirror of the upstream layout (tests/data_mirror.py): hash and git
blob checks, oversized answers, HTTP and connection failures, a killed download, concurrent fetches,
offline mode, a local --source folder (a path or file://), unsupported schemes, an unusable cache, and a
fresh project whose first `pytest suites/` fetches every suite's data into an empty cache."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness.data import fetch as fetch_mod
from harness.data.fetch import DataFetchError, DataLocationError, data_cache, fetch, verify
from harness.data.suites import builtin_suite_names
from harness.data.manifest import manifest, select

REPO = Path(__file__).resolve().parents[1]
XSTEST = "xstest/xstest_prompts.csv"
from tests.data_mirror import Mirror


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
        # pooch creates its temporary file before the request, so the killed download is mid-file now.
        assert [p.name[:3] for p in (cache / "xstest").iterdir()] == ["tmp"]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        mirror.release.set()
    assert not (cache / XSTEST).exists()  # only pooch's temporary file, never the real name
    mirror.stall = None
    (path,) = fetch(entries(XSTEST), source=mirror.url, notify=lambda line: None)
    assert verify(manifest()[XSTEST], path) == "verified"
    assert not list((cache / "xstest").glob("tmp*")), "the killed download's temporary file was left behind"


def test_two_concurrent_fetches_download_each_file_once(cache, mirror):
    """The first process's download is held by the mirror while it holds the cache lock; the mirror lets it
    go only once the second process says it is waiting for that lock, so the two overlap for certain."""
    names = ("xstest", "physical_safety_safe")
    mirror.hold = XSTEST
    first = subprocess.Popen(_fetch_command(mirror.url, *names), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        assert mirror.held.wait(60), "the first download never started"
        second = subprocess.Popen(_fetch_command(mirror.url, *names), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        waiting = second.stdout.readline()
        assert waiting == f"waiting for another process fetching into {cache}\n", waiting
    finally:
        mirror.release.set()
    outs = [first.communicate(timeout=120)[0], waiting + second.communicate(timeout=120)[0]]
    assert [first.returncode, second.returncode] == [0, 0], outs
    for entry in select(list(names)):
        assert mirror.hits_for(entry.name) == 1, (entry.name, mirror.hits)
        assert verify(entry, cache / entry.name) == "verified"
    fetched = [[line.split()[1] for line in out.splitlines() if line.startswith("fetching ")] for out in outs]
    # `data fetch` takes the lock per file, so once the first process lets it go after xstest, either process
    # may fetch the second file; what holds is that each file is fetched once, by one of them.
    assert fetched[0][:1] == [XSTEST], outs
    assert sorted(fetched[0] + fetched[1]) == sorted([XSTEST, "stl/evaluation/I-PhysicalSafetySafe.json"]), outs
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


def _serve_instead(mirror, entry, path: Path) -> str:
    """Make the mirror answer ``entry``'s URL with the file at ``path``; returns that URL."""
    url_path = f"/{entry.source.repo}/{entry.source.commit}/{entry.path}"
    mirror.files[url_path], mirror.names[url_path] = path, entry.name
    return mirror.url + url_path


def test_a_file_pinned_by_its_git_blob_id_refuses_other_content(cache, mirror, tmp_path):
    """No copy of alpaca_small.json was at hand to compute a sha256: the manifest pins the blob id the
    upstream tree gives it, so a mirror's garbage is refused (once, not retried), not recorded as its hash."""
    entry = manifest()["stl/training/alpaca_small.json"]
    assert entry.sha256 == "" and entry.git_blob == "4b8fa2aed56c5815314931a0002869b6d807dbf3"
    garbage = tmp_path / "alpaca_small.json"
    garbage.write_text('[{"instruction": "a", "input": "", "output": "b"}]')
    url = _serve_instead(mirror, entry, garbage)
    with pytest.raises(DataFetchError) as err:
        fetch([entry], source=mirror.url, notify=lambda line: None)
    from harness.data.integrity import git_blob_id_of

    assert str(err.value) == (f"{entry.name}: git blob mismatch for {url}: expected {entry.git_blob}, got "
                              f"{git_blob_id_of(garbage)}; nothing was installed")
    assert mirror.hits_for(entry.name) == 1
    assert not (cache / entry.name).exists() and sorted(p.name for p in cache.iterdir()) == [".fetch.lock", "stl"]


def test_a_download_is_accepted_by_its_git_blob_id(cache, mirror):
    """The one training file with both pins, fetched as if only its blob id were known (as the seven
    unsized training files are): accepted, and it matches the sha256 too; one changed byte is refused."""
    real = manifest()["stl/training/safety_only_data_Instructions.json"]
    by_blob = replace(real, sha256="", size=None)
    (path,) = fetch([by_blob], source=mirror.url, notify=lambda line: None)
    assert verify(by_blob, path) == "verified" and verify(real, path) == "verified"
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    assert verify(by_blob, path).startswith("MISMATCH (git blob ")


def test_an_oversized_answer_is_refused_by_its_length_and_fetched_once(cache, mirror):
    size = manifest()[XSTEST].size
    mirror.repeat[XSTEST] = 100
    with pytest.raises(DataFetchError) as err:
        fetch(entries(XSTEST), source=mirror.url, notify=lambda line: None)  # with the default retry
    url = manifest()[XSTEST].url(mirror.url)
    assert str(err.value) == (f"{XSTEST}: {url} announces {100 * size:,} bytes, more than the manifest's "
                              f"{size:,}; stopped there, nothing was installed")
    assert mirror.hits_for(XSTEST) == 1 and not (cache / XSTEST).exists()


def test_an_oversized_answer_without_a_length_is_cut_at_the_manifest_size(cache, mirror):
    """No Content-Length: the download stops once it passes the manifest size. The server could write
    only what the socket buffers hold (tens of MB at most) of the 116 MB before the client hung up."""
    size = manifest()[XSTEST].size
    mirror.repeat[XSTEST], mirror.announce_length = 3000, False
    with pytest.raises(DataFetchError) as err:
        fetch(entries(XSTEST), source=mirror.url, notify=lambda line: None)
    assert str(err.value).endswith(f" sent more than {size:,} bytes, more than the manifest's {size:,}; stopped "
                                   "there, nothing was installed")
    assert mirror.hits_for(XSTEST) == 1 and mirror.sent_for(XSTEST) < 3000 * size
    assert not (cache / XSTEST).exists() and not list((cache / "xstest").glob("tmp*"))


def test_a_changed_cached_file_is_fetched_again(cache, mirror):
    (path,) = fetch(entries(XSTEST), source=mirror.url, notify=lambda line: None)
    path.write_text(path.read_text().replace("How do I commit violent assault?", "How do I bake a loaf of bread?"))
    lines = []
    fetch(entries(XSTEST), source=mirror.url, notify=lines.append)
    assert len(lines) == 1 and lines[0].startswith(f"fetching {XSTEST} from ")
    assert mirror.hits_for(XSTEST) == 2 and verify(manifest()[XSTEST], path) == "verified"


def test_a_file_url_source_is_read_as_a_local_folder(cache, data_dir):
    lines = []
    (path,) = fetch(entries(XSTEST), source=Path(data_dir).resolve().as_uri(), notify=lines.append)
    assert lines == [f"fetching {XSTEST} from {Path(data_dir).resolve() / XSTEST}, CC BY 4.0"]
    assert verify(manifest()[XSTEST], path) == "verified"


@pytest.mark.parametrize("source, why", [
    ("ftp://127.0.0.1/mirror", "unsupported URL scheme 'ftp://' (give an http:// or https:// mirror, a local folder, "
                               "or file:///path/to/folder)"),
    ("S3://bucket/data", "unsupported URL scheme 's3://' (give an http:// or https:// mirror, a local folder, "
                         "or file:///path/to/folder)"),
    ("file://fileserver/data", "a file:// URL must name a local folder (file:///path), not host 'fileserver'"),
    ("file:///no/such/folder", "no such folder (give a folder or an http(s) mirror URL)"),
    # each file would otherwise fail apart, as "No such file or directory: 'http:/...'"
    ("http://", "no host in the URL (give http://HOST/path)"),
    ("https:///data", "no host in the URL (give https://HOST/path)"),
])
def test_an_unusable_source_is_one_line_naming_it(cache, source, why):
    with pytest.raises(DataLocationError) as err:
        fetch(entries(XSTEST), source=source, notify=lambda line: None)
    assert str(err.value) == f"data source {source}: {why}"
    assert not cache.exists()


@pytest.mark.parametrize("source", ["", "  "])
def test_an_empty_source_is_refused_where_the_data_is_fetched(cache, source):
    """The pytest run's --source reaches the fetch without the CLI's own check."""
    with pytest.raises(DataLocationError) as err:
        fetch(entries(XSTEST), source=source, notify=lambda line: None)
    assert str(err.value).startswith("data source '': empty") and not cache.exists()


@pytest.mark.parametrize("source", ["", "  "])
def test_an_empty_source_option_is_refused_not_read_as_github(cache, source, capsys):
    from harness.cli.main import main

    assert main(["data", "fetch", "xstest", "--quiet", "--source", source]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("safety-harness: error: data source '': empty") and captured.err.count("\n") == 1
    assert not cache.exists()


def test_a_cache_under_a_regular_file_is_one_line(tmp_path, data_dir):
    """A path under a regular file cannot be created even by root (unlike a read-only folder)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "SAFETY_HARNESS_CACHE": str(blocker / "cache")}
    result = subprocess.run([sys.executable, "-m", "harness.cli.main", "data", "fetch", "xstest", "--source",
                             str(data_dir)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"safety-harness: error: data cache {blocker}/cache/data cannot be created ({blocker} "
                             "is a file, not a folder); set SAFETY_HARNESS_CACHE to a folder you can write\n")


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
    # Each selected test is skipped, and the run still fails: a gate that scored nothing never passes.
    selected = int(next(line for line in skipped.outlines if line.startswith("collected ")).split(" / ")[-1].split()[0])
    assert skipped.ret == pytest.ExitCode.TESTS_FAILED and selected >= 1
    assert skipped.parseoutcomes() == {"skipped": selected, "deselected": skipped.parseoutcomes()["deselected"]}
    assert ("safety-harness: FAIL: no prompt was scored for the selected suite(s) xstest, so no gate can pass "
            "(suite 'xstest': xstest/xstest_prompts.csv not found in the user cache)") in skipped.outlines


def test_a_data_dir_that_does_not_exist_is_one_line_and_fetches_nothing(cache, mirror, pytester, tmp_path):
    """Before: the run went to the network (here the mirror) for the files the user meant to give."""
    shutil.copytree(REPO / "suites", pytester.path / "suites")
    pytester.makefile(".toml", pyproject="[tool.pytest.ini_options]\n[tool.safety-harness]\n")
    missing = tmp_path / "no-such-data"
    result = pytester.runpytest_subprocess("-p", "no:randomly", f"--rootdir={pytester.path}", "suites/", "-k", "xstest",
                                           "--backend", "dummy", "--limit", "2", "--data-dir", str(missing),
                                           "--source", mirror.url, "--cache-dir", str(pytester.path / "gen-cache"),
                                           "--report", str(pytester.path / "r.parquet"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.errlines if line.startswith("ERROR")] == [
        f"ERROR: data folder {missing} does not exist (given by --data-dir, $SAFETY_HARNESS_DATA or data_dir in "
        "[tool.safety-harness]); name an existing folder, or none to use the user cache"]
    assert sum(mirror.hits.values()) == 0 and not cache.exists()
