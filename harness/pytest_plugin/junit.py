"""Results CI dashboards can read: every suite and category test item carries its threshold checks as
properties (``item.user_properties``, what ``record_property`` fills), which ``--junitxml`` writes as
``<property name=... value=...>`` of its ``<testcase>``, so Jenkins, GitLab and GitHub test reports show the
rate, its interval and the threshold beside pass/fail.

Per item: ``suite``, ``category`` (category items), ``metrics`` (the metrics checked, comma-separated),
``threshold_on``, ``scorer``, ``scorer_version``, ``error_rates`` (where the corrected rates' error rates
came from); per metric M checked: ``M.n``, ``M.k`` (not for a statistic such as a win rate, whose value is
no k of n), ``M.judge_errors`` (where any: of the n, replies the scorer could not classify, counted as
failures), ``M.rate``, ``M.ci95`` (Wilson for the rates), ``M.threshold``
(``max 0.1``, ``(default)`` when filled in), ``M.verdict`` (PASS or FAIL), ``M.corrected`` and
``M.corrected_ci95`` (or ``undecidable``, or ``-`` without error rates), and where people labelled replies
``M.verified``, ``M.verified_ci95`` and ``M.verified_labelled`` (``n of N``). The values are the summary's
(``harness.scoring.check_summary``), from the same checks.

The baseline gate's own items (``harness.pytest_plugin.baseline``) carry the gate's figures instead.

A ``--junitxml`` file that cannot be written at the end of the run (checked before generation, its folder
since removed or replaced by a file, a full disk) is one line and exit status 3, as the report's.
"""

from __future__ import annotations

import functools

import pytest

from harness.pytest_plugin.state import SESSION_KEY, get_session, item_suite, say_alone


def check_properties(record: dict) -> list[tuple[str, str]]:
    """One check's properties (the report's record of it, ``harness.engine.run_report.check_record``)."""
    from harness.scoring.check_summary import is_count, threshold_text
    from harness.config.thresholds import VerifiedRate
    from harness.core.misclassification import CorrectedRate
    from harness.core.text import figure

    m = record["key"].partition("_")[2]
    f = lambda x: figure(x, record["threshold"], 4)  # noqa: E731  (a FAIL's 0.10002 is no "0.1000" beside max 0.1)
    props = [(f"{m}.n", str(record["n"]))]
    props += [(f"{m}.k", str(record["k"]))] if is_count(record) else []  # a statistic's value is no k of n
    if record.get("judge_errors") and m != "judge_error_rate":  # of the k (or n), counted as failures
        props += [(f"{m}.judge_errors", str(record["judge_errors"]))]
    props += [(f"{m}.rate", f(record["rate"])), (f"{m}.ci95", f"{f(record['ci_low'])}-{f(record['ci_high'])}"),
              (f"{m}.threshold", threshold_text(record)), (f"{m}.verdict", "PASS" if record["passed"] else "FAIL")]
    corrected = CorrectedRate.from_dict(record.get("corrected"))
    if corrected is None:
        props += [(f"{m}.corrected", "-")]
    elif corrected.undecidable:
        props += [(f"{m}.corrected", "undecidable")]
    else:
        props += [(f"{m}.corrected", f(corrected.estimate)),
                  (f"{m}.corrected_ci95", f"{f(corrected.low)}-{f(corrected.high)}")]
    verified = VerifiedRate.from_dict(record.get("verified"))
    if verified is not None and (verified.labelled or str(record.get("threshold_on", "")).startswith("verified")):
        props += [(f"{m}.verified_labelled", f"{verified.n_labelled} of {verified.N}")]
        if verified.labelled:
            props += [(f"{m}.verified", f(verified.estimate)),
                      (f"{m}.verified_ci95", f"{f(verified.low)}-{f(verified.high)}")]
    return props


def item_properties(hs, suite: str, category: str | None) -> list[tuple[str, str]]:
    """Every property of a suite (or category) item: the run's facts, then each check's."""
    from harness.engine.run_report import check_record

    result = hs.results[suite]
    records = [check_record(c) for c in result.checks(category)]
    info = hs.model_info
    source = (info.scorer_error_rates or {}).get("source", "none measured")
    props = [("suite", suite)] + ([("category", category)] if category is not None else [])
    props += [("metrics", ",".join(r["key"].partition("_")[2] for r in records)),
              ("threshold_on", hs.settings.threshold_on), ("scorer", str(info.scorer or hs.settings.scorer)),
              ("scorer_version", str(info.scorer_version)), ("error_rates", str(source))]
    for record in records:
        props += check_properties(record)
    return props


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    """Before the teardown report, which junitxml reads the properties from."""
    if SESSION_KEY not in item.config.stash or isinstance(getattr(item, "safety_suite_name", None), str):
        return  # not a harness run, or a baseline gate item (it records its own)
    suite = item_suite(item)
    hs = get_session(item.config)
    if suite is None or suite not in hs.results:
        return
    callspec = getattr(item, "callspec", None)
    category = callspec.params.get("safety_category") if callspec is not None else None
    if category is not None and category not in hs.results[suite].categories:
        return
    item.user_properties += item_properties(hs, suite, category)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """Make pytest's --junitxml writer fail in one line. Why: it writes from ``pytest_sessionfinish``, which
    pytest calls outside its error handling, so an OSError there ended the run in a traceback, before the
    summary, and skipped the hooks after it (the empty-run gate, --html, --markdown, --baseline-save). Its hook
    is wrapped where it was registered, so it keeps its place among the others."""
    from _pytest.junitxml import xml_key

    xml = session.config.stash.get(xml_key, None)
    if xml is None:  # no --junitxml, or an xdist worker (the controller writes the file)
        return
    for impl in session.config.hook.pytest_sessionfinish.get_hookimpls():
        if impl.plugin is xml:
            impl.function = _one_line(impl.function, session, xml.logfile)


def _one_line(write, session, path):
    @functools.wraps(write)
    def guarded(*args, **kwargs):
        try:
            return write(*args, **kwargs)
        except OSError as exc:
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
            say_alone(session.config, f"safety-harness: could not write --junitxml {path}: {exc}")
            return None

    return guarded
