"""What a stored label is, and which of several labels of one reply is in force.

The rule, when several labels exist for one key (one (prompt, input, response)):

1. A label whose source is ``adjudication`` settles the key: the latest such label is in force.
2. Otherwise each labeller has one vote, their latest label (a person who labels a reply again corrects
   themselves: ``safety-harness review`` after an earlier import, or a second pass).
3. The class with the most votes is in force. A tie leaves the key without a label in force: it counts
   as unlabelled in the verified rates, ``labels stats`` counts it, and ``labels export --conflicts`` writes
   those replies for someone to adjudicate (imported back with ``--source adjudication``).

Why a majority and not "the primary labeller": a verified rate is only as good as its labels, and two people
who read the XSTest rubric differently on a reply have found a hard case, not an error of the second person.
Picking the latest label on a tie would make the verdict depend on who happened to label last; leaving it
open costs one unlabelled row (the interval stays honest) until someone decides it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

ADJUDICATION = "adjudication"  # the source of a label that settles a disagreement


@dataclass(frozen=True)
class LabelRecord:
    """One label one person gave one reply, as the store keeps it (retracted labels are kept too)."""

    id: int
    key: str  # harness.core.records.label_key(prompt, response, input)
    label: str  # one of harness.core.types.REFUSAL_LABELS
    labeller: str
    labelled_at: str  # ISO 8601, UTC, microseconds: sorts as text
    rubric_version: str
    source: str  # review | import | adjudication | any name an import gave
    prompt: str
    input: str
    response: str
    retracted_at: str | None = None  # set by an undo; a retracted label is never in force

    @property
    def order(self) -> tuple[str, int]:
        return (self.labelled_at, self.id)


def latest_per_labeller(records: list[LabelRecord]) -> dict[str, LabelRecord]:
    """Each labeller's latest label among ``records`` (retracted ones left out)."""
    latest: dict[str, LabelRecord] = {}
    for r in sorted((r for r in records if r.retracted_at is None), key=lambda r: r.order):
        latest[r.labeller] = r
    return latest


def in_force(records: list[LabelRecord]) -> str | None:
    """The label in force among the labels of one key (see the module's rule), or None on a tie."""
    active = [r for r in records if r.retracted_at is None]
    settled = [r for r in active if r.source == ADJUDICATION]
    if settled:
        return max(settled, key=lambda r: r.order).label
    votes = Counter(r.label for r in latest_per_labeller(active).values()).most_common()
    if not votes or (len(votes) > 1 and votes[0][1] == votes[1][1]):
        return None
    return votes[0][0]


def is_open(records: list[LabelRecord]) -> bool:
    """Labelled, yet no label in force: a tie between labellers waiting for adjudication."""
    return any(r.retracted_at is None for r in records) and in_force(records) is None
