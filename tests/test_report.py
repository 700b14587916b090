"""The Parquet report: written atomically (a failed write leaves the previous report as it was), read back with
its metadata, and summarised by ``safety-harness summary``."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.cli.main import main
from harness.engine.session import HarnessSession
from harness.config.settings import build_settings
from harness.core import report_file as report_module
from harness.engine.records import write_report
from harness.reports.parquet import SCHEMA, read_report
from tests.support import needs_encoder


@pytest.fixture
def session(tmp_path) -> HarnessSession:
    """The built-in smoke suite answered by the dummy backend, which refuses prompts naming a bomb or poison."""
    cli = {"backend": "dummy", "backend_args": {"refuse_words": ["bomb", "poison"]}, "cache_dir": tmp_path / "cache"}
    hs = HarnessSession(build_settings(cli=cli, rootdir=tmp_path, config_file=None))
    hs.run(["smoke"], progress=False)
    return hs


@needs_encoder
def test_write_is_atomic_and_leaves_no_temp_file(session, tmp_path):
    path = tmp_path / "out" / "run.parquet"  # the folder is created
    assert write_report(session, path, {"exitstatus": 1}) == path
    assert os.listdir(path.parent) == ["run.parquet"]
    table, meta = read_report(path)
    assert table.schema.remove_metadata() == SCHEMA
    assert table.num_rows == len(session.results["smoke"].rows) > 0
    assert meta["run_id"] == session.run_id and meta["exitstatus"] == 1
    assert meta["suites"]["smoke"]["n"] == table.num_rows
    assert table.column("prompt_id").to_pylist() == [r.prompt.prompt_id for r in session.all_rows()]


@needs_encoder
def test_a_failing_write_leaves_the_old_report_intact(session, tmp_path, monkeypatch):
    path = tmp_path / "run.parquet"
    write_report(session, path)
    before = path.read_bytes()

    def broken_write(table, where, **kwargs):
        with open(where, "wb") as fh:  # half a file, then the disk fills up
            fh.write(b"PAR1 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_module.pq, "write_table", broken_write)
    with pytest.raises(OSError, match="No space left"):
        write_report(session, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.parquet"]  # the temp file is gone too (dummy runs use no cache)
    monkeypatch.undo()
    assert read_report(path)[0].num_rows == len(session.all_rows())


def test_read_report_of_a_foreign_parquet_file_has_empty_metadata(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"prompt": ["a"], "response": ["b"]}), path)
    table, meta = read_report(path)
    assert meta == {} and table.column_names == ["prompt", "response"]


@needs_encoder
def test_summary_command_prints_one_row_per_check(session, tmp_path, capsys):
    path = write_report(session, tmp_path / "run.parquet")
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["suite", "n", "metric", "rate", "95%", "CI", "corrected", "(95%", "CI)", "threshold",
                              "verdict"]  # the run summary's columns
    checks = session.results["smoke"].checks()
    assert len(checks) == 2
    table = [line.split() for line in out[2:2 + len(checks)]]
    for check in checks:
        c = check.corrected
        corrected = ["-"] if c is None else [f"{c.estimate:.3f}", f"({c.low:.3f}-{c.high:.3f})"]
        expected = (["smoke", str(check.rate.n), check.rate.metric, f"{check.rate.rate:.3f}",
                     f"{check.rate.low:.3f}-{check.rate.high:.3f}"] + corrected
                    + [check.bound, f"{check.threshold:g}", "PASS" if check.passed else "FAIL"])
        assert expected in table
    # The dummy refuses few of the unsafe prompts: the unsafe-compliance bound fails.
    assert [c.passed for c in checks if c.key == "max_unsafe_compliance_rate"] == [False]
    assert "thresholds checked on: the rate as scored (threshold_on = estimate)" in out
    assert any(line.startswith(("corrected: Rogan-Gladen with", "no measured error rates")) for line in out)
    assert out[-1] == f"{len(session.all_rows())} rows; model {session.model_info.model}; run {session.run_id}"


def test_summary_command_with_a_missing_report(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "nope.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"safety-harness: error: report {tmp_path / 'nope.parquet'} not found"


def test_plugin_reports_an_unwritable_report_path(harness_project):
    harness_project.write(tests={"test_smoke_suite": harness_project.CATEGORY_SUITE.format(name="smoke")})
    blocker = harness_project.path / "not-a-folder"
    blocker.write_text("a file where the report folder should be")
    result = harness_project.run("--backend", "dummy", "--report", str(blocker / "run.parquet"))
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    text = harness_project.text(result)
    assert f"safety-harness: could not write report {blocker / 'run.parquet'}" in text
    assert "Traceback" not in text and blocker.read_text().startswith("a file")
