"""The HTML and Markdown summaries (harness.reports.html, harness.reports.markdown): self-contained, escaped, with
embedded plots, and the HTML renders in headless Chromium (Debian package ``chromium``) to a page that
shows the verdict banner and the plots."""

from __future__ import annotations

import json
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.cli.main import main
from harness.baselines.compare import compare_reports, summarize_run
from harness.reports.html import render_html, write_html
from harness.reports.markdown import escape, render_markdown, write_markdown
from harness.reports.parquet import METADATA_KEY, SCHEMA

matplotlib = pytest.importorskip("matplotlib", reason="the plots need matplotlib: pip install matplotlib")

NASTY = "<script>alert('x')</script> | *bold* [link](http://example.invalid)\nsecond line"
XSTEST_TYPES = [("homonyms", "comply"), ("definitions", "comply"), ("contrast_homonyms", "refuse")]


def write_report(path, failing: set[str], run_id: str) -> str:
    """40 should-refuse prompts, 20 safe ones, and 30 XSTest prompts of three types."""
    entries = [("harmful", f"h{i:02d}", "violence", "refuse") for i in range(40)]
    entries += [("benign", f"b{i:02d}", "everyday", "comply") for i in range(20)]
    entries += [("xstest", f"x{i:02d}", *XSTEST_TYPES[i % 3]) for i in range(30)]
    table = {name: [] for name in SCHEMA.names}
    for suite, pid, category, expected in entries:
        passed = pid not in failing
        refused = passed if expected == "refuse" else not passed
        row = {n: "" if SCHEMA.field(n).type == pa.string() else None for n in SCHEMA.names}
        row.update(run_id=run_id, suite=suite, category=category, prompt_id=pid, prompt=f"prompt {pid}: {NASTY}",
                   expected=expected, response=("I can't help with that. " if refused else "Sure! ") + NASTY,
                   refusal_label="full_refusal" if refused else "full_compliance",
                   refusal_score=0.9 if refused else 0.0, passed=passed, model="synthetic", backend="replay",
                   template="chat", sampling="{}", n_response_tokens=4, cached=False, scorer="refusal_patterns",
                   scorer_version="1")
        for name in SCHEMA.names:
            table[name].append(row[name])
    meta = {"run_id": run_id, "suites": {"harmful": {"n": 40, "checks": [
        {"key": "max_unsafe_compliance_rate", "threshold": 0.1, "rate": 0.1, "k": 4, "n": 40,
         "ci_low": 0.04, "ci_high": 0.23, "passed": True}]}}}
    pq.write_table(pa.table(table, schema=SCHEMA).replace_schema_metadata({METADATA_KEY: json.dumps(meta)}), path)
    return str(path)


@pytest.fixture
def regression(tmp_path):
    base = write_report(tmp_path / "base.parquet", {"h00", "h01", "h02", "b00", "x02"}, "base")
    cand = write_report(tmp_path / "cand.parquet", {"h00", "h01"} | {f"h{i:02d}" for i in range(10, 24)}
                        | {"b00", "x02", "x05", "x01"}, "cand")
    return compare_reports(base, cand)


def test_html_is_self_contained_and_escaped(regression):
    page = render_html(regression)
    assert not regression.passed
    assert "Gate: FAIL" in page and "REGRESSION" in page
    assert page.count("data:image/png;base64,") == 3  # the rates, baseline-vs-candidate and XSTest plots
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "http" not in page.replace("http://example.invalid", "")  # nothing loaded from elsewhere
    assert "<link" not in page and "src='http" not in page
    assert page.count("<tr><td><b>harmful/") == 15  # 14 regressions and 1 improvement
    assert "Improvements (failed in the baseline, passed now): 1" in page


def test_markdown_escapes_cells_and_writes_its_plots(regression, tmp_path):
    assert escape("a|b\nc <i>*x*</i>") == "a\\|b<br>c &lt;i&gt;\\*x\\*&lt;/i&gt;"
    path = write_markdown(regression, tmp_path / "out" / "summary.md")
    text = path.read_text()
    assert (tmp_path / "out" / "summary.rates.png").stat().st_size > 1000
    assert "![rates](summary.rates.png)" in text and "![xstest](summary.xstest.png)" in text
    assert "**Gate: FAIL**" in text and "<script>" not in text
    flips = [line for line in text.splitlines() if line.startswith("| **harmful/")]
    assert len(flips) == 15 and all(line.count(" | ") == 3 for line in flips)  # 4 cells: no stray pipe
    assert "| homonyms | comply | 0/10 | 0/10 |" in text
    assert "| definitions | comply | 0/10 | 1/10 |" in text  # x01 is refused by the candidate


def test_single_run_summary(tmp_path):
    report = write_report(tmp_path / "run.parquet", {"h00", "b01"}, "one")
    summary = summarize_run(report)
    page = render_html(summary)
    assert "run summary" in page and "Gate" not in page and page.count("data:image/png;base64,") == 2
    assert "Threshold checks recorded in the run" in page
    md = render_markdown(summary)
    assert "| harmful | 40 | 1 | 0.025 (" in md


def test_compare_command_writes_html_and_markdown(regression, tmp_path, capsys):
    html_path, md_path = tmp_path / "r" / "c.html", tmp_path / "r" / "c.md"
    argv = ["compare", str(tmp_path / "base.parquet"), str(tmp_path / "cand.parquet"),
            "--html", str(html_path), "--markdown", str(md_path)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"html: {html_path}" in out and f"markdown: {md_path}" in out
    assert html_path.read_text().startswith("<!DOCTYPE html>") and md_path.is_file()


def screenshot(page, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium)")
    png = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={png}", "--window-size=1200,2000", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]
    return png


def _near(pixels, rgb, tol=0.02):
    import numpy as np

    return int((np.abs(pixels[..., :3] - np.array(rgb) / 255).max(axis=-1) < tol).sum())


def test_html_renders_in_headless_chromium(regression, tmp_path):
    from matplotlib.image import imread

    page = write_html(regression, tmp_path / "comparison.html")
    pixels = imread(screenshot(page, tmp_path))
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels[..., :3].std() > 0.05  # not a blank page
    assert _near(pixels, (0xFF, 0xEB, 0xE9)) > 5000  # the red FAIL banner, so the inline CSS applied
    assert _near(pixels, (0xD9, 0x60, 0x3B)) > 2000  # the candidate's bars, so the embedded plot drew


def test_summary_command_writes_html_and_markdown_of_a_run(tmp_path, capsys):
    report = write_report(tmp_path / "run.parquet", {"h00", "b01", "x03"}, "one")
    html_path, md_path = tmp_path / "s" / "run.html", tmp_path / "s" / "run.md"
    assert main(["summary", report, "--html", str(html_path), "--markdown", str(md_path)]) == 0
    out = capsys.readouterr().out
    assert f"html: {html_path}" in out and f"markdown: {md_path}" in out
    page = html_path.read_text()
    assert "run summary" in page and page.count("data:image/png;base64,") == 2
    assert "<td>unsafe_compliance_rate</td>" in page and "<td>refusal_rate</td>" in page  # rows under each suite
    assert (tmp_path / "s" / "run.xstest.png").stat().st_size > 1000
    assert main(["summary", str(tmp_path / "nowhere.parquet"), "--html", str(html_path)]) == 2
    assert "nowhere.parquet not found" in capsys.readouterr().err


def test_run_summary_renders_in_headless_chromium(tmp_path):
    from matplotlib.image import imread

    page = write_html(summarize_run(write_report(tmp_path / "run.parquet", {"h00", "b01"}, "one")), tmp_path / "run.html")
    pixels = imread(screenshot(page, tmp_path))
    assert pixels[..., :3].std() > 0.05
    assert _near(pixels, (0xD9, 0x60, 0x3B)) > 2000  # the run's bars in the embedded plots
    assert _near(pixels, (0xFF, 0xEB, 0xE9)) == 0  # no gate banner for a single run


def test_the_checks_table_shows_k_of_n_only_for_counted_rates(tmp_path):
    from harness.baselines.compare import load_report
    from harness.reports.html import check_rows

    path = write_report(tmp_path / "run.parquet", set(), "one")
    report = load_report(path)
    report.meta["suites"]["harmful"]["checks"].append(
        {"key": "min_win_rate", "threshold": 0.3, "rate": 0.4, "k": 3, "n": 10, "ci_low": 0.2, "ci_high": 0.6,
         "passed": True})  # 3 won and 2 tied of 10: a win rate of 0.4, not 3/10
    cells = {c["key"]: c["kn"] for c in check_rows(report)}
    assert cells == {"max_unsafe_compliance_rate": "4/40", "min_win_rate": "n=10"}
    assert "<td class=num>n=10</td>" in render_html(summarize_run(report)) and "| n=10 |" in render_markdown(summarize_run(report))


def test_every_plotted_interval_names_its_n(tmp_path, monkeypatch):
    import harness.reports.html as html_module

    drawn = []
    monkeypatch.setattr(html_module, "_bars", lambda title, xlabel, labels, series: drawn.append(labels) or b"")
    html_module.plots(summarize_run(write_report(tmp_path / "run.parquet", {"h00"}, "one")))
    rates, xstest = drawn
    assert rates == ["benign (n=20)", "harmful (n=40)", "xstest (n=30)"]
    assert xstest == ["definitions (safe, n=10)", "homonyms (safe, n=10)", "contrast_homonyms (unsafe, n=10)"]


def cli_summary(path) -> str:
    """What `safety-harness summary REPORT` prints, as the run's own terminal summary would."""
    import contextlib
    import io

    from harness.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["summary", str(path)]) == 0
    return out.getvalue()


def test_suites_skipped_for_missing_data_are_named(tmp_path):
    path = tmp_path / "run.parquet"
    write_report(path, set(), "one")
    table = pq.read_table(path)
    meta = {**json.loads(table.schema.metadata[METADATA_KEY]), "missing_suites": {"xstest_v2": "xstest_v2.csv: not found"}}
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(meta)}), path)
    summary = summarize_run(str(path))
    assert "<li>xstest_v2: skipped, xstest_v2.csv: not found</li>" in render_html(summary)
    assert "- xstest\\_v2: skipped, xstest\\_v2.csv: not found" in render_markdown(summary)
    assert "xstest_v2: skipped, xstest_v2.csv: not found" in cli_summary(path)  # and `safety-harness summary`


def test_the_capability_statistics_read_alike_in_every_summary(tmp_path):
    from types import SimpleNamespace

    from harness.engine.capability_metrics import CapabilityResult, CapabilityRow
    from harness.engine.run_report import capability_statistics
    from harness.scoring.check_summary import capability_lines

    rows = [SimpleNamespace(prompt=SimpleNamespace(prompt_id=f"c{i}")) for i in range(3)]
    cap = CapabilityResult({"c0": CapabilityRow(ref_loglik=-1.0), "c1": CapabilityRow(ref_loglik=-2.0),
                            "c2": CapabilityRow()}, "text_davinci_003", notes=["reference log-likelihood: 2 of 2 from the cache"])
    statistics = capability_statistics(cap, rows)  # no judge: no win rate
    assert list(statistics) == ["mean_ref_loglik"] and statistics["mean_ref_loglik"]["value"] == -1.5
    assert statistics["mean_ref_loglik"]["n"] == 2 and statistics["mean_ref_loglik"]["detail"] == "n=2 references"
    record = {**cap.metadata(), "statistics": statistics}
    path = tmp_path / "run.parquet"
    write_report(path, set(), "one")
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    meta["suites"]["harmful"]["capability"] = record
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(meta)}), path)
    line = ("harmful vs text_davinci_003, no judge: mean_ref_loglik -1.500 (95% CI [-2.000, -1.000]; "
            "n=2 references)")
    assert capability_lines(meta["suites"]) == [line, "harmful: reference log-likelihood: 2 of 2 from the cache"]
    summary = summarize_run(str(path))
    assert f"<li>{line}</li>" in render_html(summary)
    assert "- harmful vs text\\_davinci\\_003, no judge: mean\\_ref\\_loglik -1.500 (95% CI \\[-2.000, -1.000\\]; " \
           "n=2 references)" in render_markdown(summary)
    assert line in cli_summary(path).splitlines()
    # a report written before the statistics were recorded: its notes, and no "nothing measured"
    assert capability_lines({"s": {"capability": cap.metadata()}}) == ["s: reference log-likelihood: 2 of 2 from the cache"]


def test_a_dollar_sign_in_a_name_is_plotted_as_text(tmp_path):
    """A category or suite name is the user's text: matplotlib reads "$...$" in a label as mathtext, so a
    category like "price $\\frac$" stopped every plot (and the summary) with a parse traceback."""
    def renamed(failing, run_id):
        path = write_report(tmp_path / f"{run_id}.parquet", failing, run_id)
        table = pq.read_table(path)
        names = {"violence": "price $\\undefinedcmd$", "harmful": "cost $x$"}
        for column in ("category", "suite"):
            values = [names.get(v, v) for v in table.column(column).to_pylist()]
            table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.string()))
        pq.write_table(table, path)
        return path

    comparison = compare_reports(renamed({"h00"}, "base"), renamed({f"h{i:02d}" for i in range(9)}, "cand"))
    assert "price $\\undefinedcmd$" in render_html(comparison)  # the changes plot draws the category
    assert "cost \\$x\\$" in render_markdown(summarize_run(renamed(set(), "one")))  # the rates table's name


def test_markdown_escapes_dollar_signs():
    """GitHub renders "$...$" in Markdown as math: a reply quoting prices or LaTeX lost its text in a PR comment."""
    assert escape("from $5 to $x^2$") == "from \\$5 to \\$x^2\\$"
