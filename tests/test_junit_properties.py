"""Results CI dashboards can read: the junit XML of a ``pytest suites/ --limit 5`` run (the dummy backend:
real suites and data, no model) carries on every suite and category item the checks' properties: metric, n,
rate, Wilson interval, threshold, verdict, the corrected rate and interval (or undecidable), the verified
rate and interval where people labelled replies, the scorer and its version. The suite items' values are
the report's record of the same checks."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.core.records import label_key
from harness.labels import LabelStore
from harness.reports.parquet import read_report
from tests.support import needs_encoder

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, needs_encoder]


def run_suites(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "suites/", "-p", "no:cacheprovider", "-q", "--backend", "dummy",
           "--limit", "5", "--cache-dir", str(tmp / "cache"), *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode in (0, 1), (proc.stdout + proc.stderr)[-4000:]  # 1: the dummy crosses thresholds
    return proc


def properties(case: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in case.iter("property")}


def test_every_suite_and_category_item_carries_its_checks(data_dir, tmp_path):
    first = tmp_path / "first.parquet"
    run_suites(tmp_path, "--report", str(first))
    rows = [r for r in read_report(first)[0].to_pylist() if r["suite"] == "smoke"][:3]
    store = LabelStore(tmp_path / "labels.sqlite")
    for r in rows:  # people read three smoke replies
        store.add(label_key(r["prompt"], r["response"], r["input"]), "full_refusal", labeller="ana",
                  prompt=r["prompt"], response=r["response"], input=r["input"] or "")

    xml, report = tmp_path / "junit.xml", tmp_path / "run.parquet"
    run_suites(tmp_path, "--report", str(report), "--labels", str(store.path), f"--junitxml={xml}")
    meta = read_report(report)[1]
    cases = [c for c in ET.parse(xml).getroot().iter("testcase") if c.get("classname", "").startswith("suites.")
             and c.find("skipped") is None]  # not the opt-in invariance and training items
    suites = {c.get("name") for c in cases if "[" not in c.get("name")}
    assert {f"test_{s}" for s in meta["suites"]} <= suites and len(cases) > len(suites)  # category items too
    for case in cases:
        props = properties(case)
        name = case.get("name")
        suite = props["suite"]
        assert name.startswith(f"test_{suite}")
        assert ("category" in props) == ("[" in name)
        assert props["scorer"] == meta["model"]["scorer"] and props["scorer_version"] == meta["model"]["scorer_version"]
        assert props["error_rates"] == meta["model"]["scorer_error_rates"]["source"] == "transport"
        metrics = props["metrics"].split(",")
        assert metrics and all(m for m in metrics)
        for m in metrics:
            for field in ("n", "k", "rate", "ci95", "threshold", "verdict", "corrected"):
                assert f"{m}.{field}" in props, (name, m, field)
            assert props[f"{m}.verdict"] in ("PASS", "FAIL")
            assert props[f"{m}.corrected"] == "undecidable" or f"{m}.corrected_ci95" in props
        if "[" in name:
            continue
        for check in meta["suites"][suite]["checks"]:  # the suite item says what the report recorded
            m = check["key"].partition("_")[2]
            assert props[f"{m}.rate"] == f"{check['rate']:.4f}" and props[f"{m}.n"] == str(check["n"])
            assert props[f"{m}.ci95"] == f"{check['ci_low']:.4f}-{check['ci_high']:.4f}"
            assert props[f"{m}.threshold"].split()[:2] == [check["key"].partition("_")[0], f"{check['threshold']:g}"]
            assert props[f"{m}.verdict"] == ("PASS" if check["passed"] else "FAIL")
            if check["corrected"] and not check["corrected"].get("undecidable"):
                c = check["corrected"]
                assert props[f"{m}.corrected"] == f"{c['estimate']:.4f}"
                assert props[f"{m}.corrected_ci95"] == f"{c['low']:.4f}-{c['high']:.4f}"
            v = check["verified"]
            if v and v["n_labelled"]:  # labelled: the verified rate, its interval and "n of N"
                assert suite == "smoke"
                assert props[f"{m}.verified_labelled"] == f"{v['n_labelled']} of {v['N']}"
                assert props[f"{m}.verified"] == f"{v['estimate']:.4f}"
                assert props[f"{m}.verified_ci95"] == f"{v['low']:.4f}-{v['high']:.4f}"
            else:  # nobody labelled these: no verified property
                assert f"{m}.verified" not in props and f"{m}.verified_labelled" not in props
    smoke = properties(next(c for c in cases if c.get("name") == "test_smoke"))
    assert sum(int(smoke.get(f"{m}.verified_labelled", "0").split()[0]) for m in smoke["metrics"].split(",")) == 3


def record(key: str, k: int, n: int, rate: float, **extra) -> dict:
    return {"key": key, "threshold": 0.5, "rate": rate, "k": k, "n": n, "ci_low": 0.1, "ci_high": 0.9,
            "passed": True, "judge_errors": 0, "threshold_on": "estimate", "default": False, "corrected": None,
            "verified": None, **extra}


def test_a_statistic_has_no_k_and_judge_errors_are_named():
    from harness.pytest_plugin.junit import check_properties

    # 3 won, 2 tied of 10: the win rate 0.4 is no 3 of 10, so no k is shown beside it
    props = dict(check_properties(record("min_win_rate", 3, 10, 0.4)))
    assert props["win_rate.n"] == "10" and props["win_rate.rate"] == "0.4000" and "win_rate.k" not in props
    assert "mean_ref_loglik.k" not in dict(check_properties(record("min_mean_ref_loglik", 5, 5, -1.5)))
    # 2 of the 3 unsafe compliances are replies the scorer could not classify, counted as failures
    props = dict(check_properties(record("max_unsafe_compliance_rate", 3, 4, 0.75, judge_errors=2)))
    assert (props["unsafe_compliance_rate.k"], props["unsafe_compliance_rate.judge_errors"]) == ("3", "2")
    assert "refusal_rate.judge_errors" not in dict(check_properties(record("max_refusal_rate", 1, 4, 0.25)))


def test_a_rate_a_hair_over_its_threshold_keeps_the_digits_that_tell_them_apart():
    """The properties are the summary's figures: a FAIL's 10002 of 100000 is no "0.1000" beside max 0.1."""
    from harness.pytest_plugin.junit import check_properties

    props = dict(check_properties(record("max_unsafe_compliance_rate", 10002, 100000, 0.10002, threshold=0.1,
                                         passed=False, ci_high=0.10000001)))
    assert props["unsafe_compliance_rate.rate"] == "0.10002"
    assert props["unsafe_compliance_rate.ci95"] == "0.1000-0.10000001"
    assert dict(check_properties(record("max_refusal_rate", 1, 4, 0.25)))["refusal_rate.rate"] == "0.2500"
