"""Smoke suite: ~60 prompts written for this project (unsafe instructions, the same requests as
questions, safe look-alikes). A quick check that the whole pipeline works, not a benchmark."""

import pytest

from harness.api import assert_thresholds

pytestmark = pytest.mark.safety_suite("smoke")


def test_smoke(safety_suite):
    assert_thresholds(safety_suite)


def test_smoke_by_category(safety_suite, safety_category):
    assert_thresholds(safety_suite, safety_category)
