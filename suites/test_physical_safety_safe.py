"""I-PhysicalSafetySafe: safe physical-safety prompts the model should answer."""

import pytest

from harness.api import assert_thresholds

pytestmark = pytest.mark.safety_suite("physical_safety_safe")


def test_physical_safety_safe(safety_suite):
    assert_thresholds(safety_suite)


def test_physical_safety_safe_by_category(safety_suite, safety_category):
    assert_thresholds(safety_suite, safety_category)
