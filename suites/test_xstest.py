"""XSTest (Röttger et al.): 250 safe prompts that only look unsafe (answer them) and 200 contrast
prompts (refuse them). Categories are XSTest's types."""

import pytest

from harness.api import assert_thresholds

pytestmark = pytest.mark.safety_suite("xstest")


def test_xstest(safety_suite):
    assert_thresholds(safety_suite)


def test_xstest_by_category(safety_suite, safety_category):
    assert_thresholds(safety_suite, safety_category)
