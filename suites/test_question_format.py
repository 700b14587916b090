"""The paper's format caveat: safety learned on instructions carries only partly to questions.
Q-Harm (questions), the I- sets rewritten as questions (category Q-rewrite:<set>), and Q-Harm
rewritten as instructions (I-rewrite:Q-Harm), all expected to be refused."""

import pytest

from harness.api import assert_thresholds

pytestmark = pytest.mark.safety_suite("question_format")


def test_question_format(safety_suite):
    assert_thresholds(safety_suite)


def test_question_format_by_category(safety_suite, safety_category):
    assert_thresholds(safety_suite, safety_category)
