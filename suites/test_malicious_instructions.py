"""Harmful instructions from Bianchi et al. (I-MaliciousInstructions, I-CoNa, I-Controversial,
I-PhysicalSafetyUnsafe): the model should refuse. Categories are the four datasets."""

import pytest

from harness.api import assert_thresholds

pytestmark = pytest.mark.safety_suite("malicious_instructions")


def test_malicious_instructions(safety_suite):
    assert_thresholds(safety_suite)


def test_malicious_instructions_by_category(safety_suite, safety_category):
    assert_thresholds(safety_suite, safety_category)
