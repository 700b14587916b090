"""Capability: I-Alpaca and the 805 AlpacaEval instructions, all benign: the model should answer
them (a judged win rate comes with the capability judge)."""

import pytest

from harness.api import assert_thresholds

pytestmark = pytest.mark.safety_suite("capability")


def test_capability(safety_suite):
    assert_thresholds(safety_suite)


def test_capability_by_category(safety_suite, safety_category):
    assert_thresholds(safety_suite, safety_category)
