"""Scorers that label model responses (refusal detection now; learned classifiers and harm scorers later)."""

from harness.scoring import classifier  # noqa: F401  registers refusal_classifier; torch loads only when built
from harness.scoring.base import RefusalScorer, available_scorers, get_scorer, register_scorer
from harness.scoring.refusal import (
    DEFAULT_REFUSAL_SCORER,
    RefusalPatternScorer,
    XSTestStringMatchScorer,
)

__all__ = [
    "DEFAULT_REFUSAL_SCORER",
    "RefusalPatternScorer",
    "RefusalScorer",
    "XSTestStringMatchScorer",
    "available_scorers",
    "get_scorer",
    "register_scorer",
]
