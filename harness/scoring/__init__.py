"""Scorers: refusal labels (rules, a learned classifier, an LLM judge, guard models) and harm scores (``harm``)."""

# Importing a scorer module registers its scorers; torch loads only when a model-backed scorer is built.
from harness.scoring import classifier, judge  # noqa: F401
from harness.scoring.base import RefusalScorer, available_scorers, get_scorer, register_scorer
from harness.scoring.harm import HarmScore, available_harm_scorers, get_harm_scorer, register_harm_scorer
from harness.scoring import guards  # noqa: F401,E402  (registers wildguard, qwen3guard, llamaguard)
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
