"""The refusal scorer's validated agreement on models nobody labelled, as reports show it.

Scorers carry ``unseen_agreement`` ({"binary", "three_class", "protocol"}); the session copies it into the
report metadata as ``model.scorer_unseen_agreement``, and the run summary prints it beside the scorer name
so a reader knows how far the scored rates can be trusted (docs/experiments/refusal-scorer-protocol.md).
"""

from __future__ import annotations


def unseen_agreement_note(fig: dict | None) -> str:
    """' (agreement with human labels on unseen models: binary 0.95, three-class 0.91)', or '' if unknown."""
    if not isinstance(fig, dict) or not isinstance(fig.get("binary"), (int, float)):
        return ""
    three = fig.get("three_class")
    tail = f", three-class {three:.3f}" if isinstance(three, (int, float)) else ""
    return f" (agreement with human labels on unseen models: binary {fig['binary']:.3f}{tail})"
