"""The refusal scorer's validated agreement on models nobody labelled, as reports show it.

Scorers carry ``unseen_agreement`` ({"binary", "three_class", "protocol"}; a binary scorer, such as a guard
model, says ``{"labels": "binary"}``); the session copies it into the
report metadata as ``model.scorer_unseen_agreement``, and the run summary prints it beside the scorer name
so a reader knows how far the scored rates can be trusted (docs/experiments/refusal-scorer-protocol.md).
"""

from __future__ import annotations

BINARY_NOTE = (" (binary labels, refusal or compliance: three-class figures are not available for this scorer; its "
               "published agreement is in docs/scoring.md, not measured here)")


def unseen_agreement_note(fig: dict | None) -> str:
    """' (agreement with human labels: binary 0.960, three-class 0.911, on held-out response styles, an
    upper bound)', or '' if unknown. The basis is named because the two kinds of figure differ: the rule
    scorers' come from three models outside the dev files, the learned head's from the held-out-styles
    protocol, which is known to run higher than such an external check."""
    if isinstance(fig, dict) and fig.get("labels") == "binary" and fig.get("binary") is None:
        return BINARY_NOTE  # a guard model: refusal or compliance, and no agreement measured here
    if not isinstance(fig, dict) or not isinstance(fig.get("binary"), (int, float)):
        return ""
    three = fig.get("three_class")
    tail = f", three-class {three:.3f}" if isinstance(three, (int, float)) else ""
    protocol = str(fig.get("protocol", ""))
    if protocol.startswith("external check"):
        basis = "on 3 models outside the dev files"
    elif "held out" in protocol or "held-out" in protocol:
        basis = "on held-out response styles, an upper bound"
    else:
        basis = "on unseen models"
    return f" (agreement with human labels: binary {fig['binary']:.3f}{tail}, {basis})"
