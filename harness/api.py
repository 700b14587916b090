"""The fixture API for suite files (the built-in ones in ``suites/`` are its examples).

    import pytest
    from harness.api import assert_thresholds

    pytestmark = pytest.mark.safety_suite("xstest")

    def test_xstest(safety_suite):                      # the whole suite
        assert_thresholds(safety_suite)

    def test_xstest_by_type(safety_suite, safety_category):   # one test per category
        assert_thresholds(safety_suite, safety_category)

Fixtures: ``safety_suite`` (a ``SuiteResult``: ``rows``, ``categories``, ``checks()``, ``failures()``),
``safety_category`` (parametrized by the plugin), ``safety_session`` (the whole run), and for suites
declared in TOML, ``safety_suite_name`` (see ``test_configured_suite``).
"""

from __future__ import annotations

import pytest

from harness.engine.suite_result import SuiteResult


def assert_thresholds(result: SuiteResult, category: str | None = None) -> None:
    """Fail the test, without a Python traceback, when any threshold of the suite (or category) is crossed."""
    if not result.select(category):
        pytest.skip(f"{result.name}: no prompts" + (f" in category {category!r}" if category else ""))
    failures = result.failures(category)
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


def test_configured_suite(safety_suite: SuiteResult, safety_suite_name: str) -> None:
    """Import this into any test module to run every suite declared in [tool.safety-harness.suites]."""
    assert_thresholds(safety_suite)


def skip_marked(items, marker: str, reason: str) -> None:
    """Skip every collected item carrying ``marker`` (the opt-in pattern behind --run-training,
    --run-invariance, and the vLLM tests when vLLM is absent)."""
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker(marker):
            item.add_marker(skip)
