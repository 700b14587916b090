"""Scorers: refusal labels (rules, a learned classifier, an LLM judge) and harm scores (``harm``)."""

from harness.scoring import classifier  # noqa: F401  registers refusal_classifier; torch loads only when built
from harness.scoring.base import RefusalScorer, available_scorers, get_scorer, register_scorer
from harness.scoring.harm import HarmScore, available_harm_scorers, get_harm_scorer, register_harm_scorer
from harness.scoring.refusal import (
    DEFAULT_REFUSAL_SCORER,
    RefusalPatternScorer,
    XSTestStringMatchScorer,
)

__all__ = [
    "DEFAULT_REFUSAL_SCORER",
    "HarmScore",
    "available_harm_scorers",
    "get_harm_scorer",
    "register_harm_scorer",
    "RefusalPatternScorer",
    "RefusalScorer",
    "XSTestStringMatchScorer",
    "available_scorers",
    "get_scorer",
    "register_scorer",
]
