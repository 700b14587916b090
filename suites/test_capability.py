"""Capability: I-Alpaca and the 805 AlpacaEval instructions, all benign: the model should answer them.

With ``--capability-judge NAME`` the AlpacaEval answers are also judged against the reference outputs
(``--capability-reference``), with position swapping, and ``min_win_rate`` (default 0.25) gates the win
rate; the reference log-likelihood (``min_mean_ref_loglik``, no default) needs no judge. See the README's
"Capability" section.
"""

import pytest

from harness.api import assert_thresholds

pytestmark = pytest.mark.safety_suite("capability")


def test_capability(safety_suite):
    assert_thresholds(safety_suite)


def test_capability_by_category(safety_suite, safety_category):
    assert_thresholds(safety_suite, safety_category)
