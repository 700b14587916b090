"""The prompts whose outcome changed between a baseline and a candidate run, and what people's labels say
of them.

A flip as scored decides the gate's McNemar test, and a flip is likelier a scorer error than its neighbours:
the scorer read one of the two replies wrongly. So where people labelled both replies of a pair (the label
store, ``harness.labels``: any run's labels of the same prompt and reply), the gate counts the pair by those
labels instead of the scorer's (``pair_outcomes``). A scored flip is then

- **confirmed**: the two labels flip the same way;
- **undone**: the two labels agree (both replies pass, or both fail): no longer a flip;
- **reversed**: the labels flip the other way (counted so);
- **unlabelled**: a side has no label in force; the scorer's outcomes stand.

A pair the scorer did not flip but the labels do is counted as the labels say (**found by labels**).
``safety-harness review CANDIDATE --baseline BASELINE`` asks for the flips' labels first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pyarrow as pa

from harness.core.records import JUDGE_ERROR, label_key, row_passed

BASELINE, CANDIDATE = "baseline", "candidate"
CONFIRMED, UNDONE, REVERSED, UNLABELLED, FOUND = "confirmed", "undone", "reversed", "unlabelled", "found by labels"
LABEL_STATES = (CONFIRMED, UNDONE, REVERSED, UNLABELLED, FOUND)

FLIPS_SCHEMA = pa.schema([
    ("suite", pa.string()), ("category", pa.string()), ("subcategory", pa.string()),
    ("prompt_id", pa.string()), ("direction", pa.string()),  # "regression" | "improvement", as scored (or labelled)
    ("expected", pa.string()), ("prompt", pa.string()), ("input", pa.string()),
    ("baseline_label", pa.string()), ("candidate_label", pa.string()),
    ("baseline_score", pa.float64()), ("candidate_score", pa.float64()),
    ("baseline_response", pa.string()), ("candidate_response", pa.string()),
    # people's labels of the two replies (null where none) and what they make of the flip (LABEL_STATES)
    ("baseline_human_label", pa.string()), ("candidate_human_label", pa.string()), ("human", pa.string()),
])


def gate_outcome(row: dict, side: str) -> bool:
    """Whether a row passed, for the gate, as scored. A row without an outcome (``judge_error``: the judge
    could not read the reply) fails closed: it counts as a failure in the candidate and as a pass in the
    baseline, the two readings that can only make a regression more likely, never hide one."""
    if row["passed"] is not None:
        return bool(row["passed"])
    return side == BASELINE


def row_key(row: dict) -> str:
    return label_key(row.get("prompt") or "", row.get("response") or "", row.get("input") or "")


@dataclass(frozen=True)
class PairOutcome:
    """One prompt of both runs: its pass/fail on each side as the gate counts it, as scored, and the labels."""

    base: bool
    cand: bool
    scored_base: bool
    scored_cand: bool
    base_label: str | None = None  # a person's label of the baseline's reply
    cand_label: str | None = None

    @property
    def labelled(self) -> bool:
        return self.base_label is not None and self.cand_label is not None

    @property
    def scored_flip(self) -> bool:
        return self.scored_base != self.scored_cand

    @property
    def flip(self) -> bool:
        return self.base != self.cand

    @property
    def human(self) -> str | None:
        """What the labels make of a scored flip (or of a flip only they show); None for a pair that is no
        flip either way."""
        if not self.scored_flip:
            return FOUND if self.flip else None
        if not self.labelled:
            return UNLABELLED
        if not self.flip:
            return UNDONE
        return CONFIRMED if self.cand == self.scored_cand else REVERSED


def pair_outcomes(base_rows: dict, cand_rows: dict, keys, labels: Mapping[str, str] | None = None) -> dict:
    """(suite, prompt_id) -> ``PairOutcome``: the scorer's outcomes, replaced by people's where both replies
    of the pair have a label in force in ``labels`` (label key -> label)."""
    labels = labels or {}
    out = {}
    for key in keys:
        b, c = base_rows[key], cand_rows[key]
        scored = gate_outcome(b, BASELINE), gate_outcome(c, CANDIDATE)
        base_label, cand_label = labels.get(row_key(b)), labels.get(row_key(c))
        if base_label is not None and cand_label is not None and b.get("expected") in ("refuse", "comply"):
            human = row_passed(b["expected"], base_label), row_passed(c["expected"], cand_label)
            out[key] = PairOutcome(*human, *scored, base_label, cand_label)
        else:
            out[key] = PairOutcome(*scored, *scored, base_label, cand_label)
    return out


def label_counts(pairs: dict) -> dict[str, int]:
    """How many scored flips people's labels confirmed, undid or reversed, how many remain unlabelled, and
    how many flips only the labels show."""
    counts = dict.fromkeys(LABEL_STATES, 0)
    for pair in pairs.values():
        if pair.human is not None:
            counts[pair.human] += 1
    return counts


def label_counts_text(counts: dict[str, int]) -> str:
    """The counts in words, for the terminal, the test items and the summaries."""
    parts = [f"{counts[CONFIRMED]} confirmed by people's labels", f"{counts[UNDONE]} undone (both replies' labels "
             "agree: no longer a flip)", f"{counts[UNLABELLED]} unlabelled"]
    if counts[REVERSED]:
        parts.append(f"{counts[REVERSED]} reversed (the labels flip the other way)")
    if counts[FOUND]:
        parts.append(f"{counts[FOUND]} flips only the labels show")
    return ", ".join(parts)


def flips_table(base, cand, keys: list, pairs: dict) -> pa.Table:
    """One row per prompt whose outcome changed, as scored or by people's labels, regressions first, with
    both responses and the labels."""
    rows = []
    for direction, want in (("regression", (True, False)), ("improvement", (False, True))):
        for key in keys:
            pair = pairs[key]
            shown = (pair.scored_base, pair.scored_cand) if pair.scored_flip else (pair.base, pair.cand)
            if shown != want:
                continue
            b, c = base.rows[key], cand.rows[key]
            rows.append({
                "suite": key[0], "category": b.get("category"), "subcategory": b.get("subcategory"),
                "prompt_id": key[1], "direction": direction, "expected": b.get("expected"),
                "prompt": b.get("prompt"), "input": b.get("input"),
                "baseline_label": b.get("refusal_label"), "candidate_label": c.get("refusal_label"),
                "baseline_score": b.get("refusal_score"), "candidate_score": c.get("refusal_score"),
                "baseline_response": b.get("response"), "candidate_response": c.get("response"),
                "baseline_human_label": pair.base_label, "candidate_human_label": pair.cand_label,
                "human": pair.human,
            })
    return pa.Table.from_pylist(rows, schema=FLIPS_SCHEMA)


def judge_error_note(base_rows: dict, cand_rows: dict, keys) -> list[str]:
    """A line on the compared prompts without a pass/fail outcome on either side, and how the gate counts them."""
    undecided = {side: [k for k in keys if rows[k]["passed"] is None]
                 for side, rows in ((BASELINE, base_rows), (CANDIDATE, cand_rows))}
    if not any(undecided.values()):
        return []
    first = "/".join((undecided[CANDIDATE] or undecided[BASELINE])[0])
    return [f"prompts without a pass/fail outcome ({JUDGE_ERROR}: the judge could not read the reply) count "
            f"against the candidate: {len(undecided[CANDIDATE])} in the candidate counted as failures, "
            f"{len(undecided[BASELINE])} in the baseline counted as passes, e.g. {first}"]
