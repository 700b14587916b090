"""Labels in and out of the store as CSV or Parquet (chosen by the file's suffix), for labelling outside the
harness and for moving labels between machines. An export holds the texts, so it needs no report.

Import checks every row and names each one it refuses, by file and line: a label that is no class of the
rubric, a key that is not the hash of the row's prompt, input and response (the text was edited after
export, e.g. by a spreadsheet), a time that is not ISO 8601, and, when the caller passes the keys of a
report, a reply that report does not hold. A blank label is not refused: that reply is not labelled yet.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import atomic_path
from harness.core.records import label_key
from harness.labels.records import LabelRecord
from harness.labels.rubric import KNOWN_RUBRIC_VERSIONS, RUBRIC_VERSION, accepted_spellings, parse_label
from harness.labels.store import normalize_time, now_iso

EXPORT_COLUMNS = ("key", "label", "labeller", "labelled_at", "rubric_version", "source", "prompt", "input", "response")
# Replies to label (again): a second labeller's copy, or the disagreements to adjudicate. No label shown.
BLANK_COLUMNS = ("key", "prompt", "input", "response", "label")
LABEL_COLUMNS = ("label", "human_label")  # human_label: the column of `calibrate sample` files
SUFFIXES = (".csv", ".parquet")


def write_rows(path: Path, columns: tuple[str, ...], rows: list[tuple]) -> Path:
    """A new CSV or Parquet file (all columns text), written atomically. An existing file is never replaced:
    it may hold a person's labels."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise HarnessError(f"{path}: write .csv or .parquet (got {suffix or 'no suffix'!r})")
    if path.exists():
        raise HarnessError(f"{path} exists; choose another file (it may hold labels already)")
    try:
        with atomic_path(path) as tmp:
            if suffix == ".csv":
                with open(tmp, "w", newline="", encoding="utf-8") as f:
                    writer = csv.writer(f)
                    writer.writerow(columns)
                    writer.writerows(rows)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                data = {c: pa.array([row[i] for row in rows], pa.string()) for i, c in enumerate(columns)}
                pq.write_table(pa.table(data), tmp)
    except (OSError, UnicodeError) as exc:
        raise HarnessError(f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return path


def export_rows(records: list[LabelRecord]) -> list[tuple]:
    return [(r.key, r.label, r.labeller, r.labelled_at, r.rubric_version, r.source, r.prompt, r.input, r.response)
            for r in records]


def blank_rows(records: list[LabelRecord]) -> list[tuple]:
    """One row per reply (not per label), in the order first labelled, with an empty label."""
    seen: dict[str, LabelRecord] = {}
    for r in records:
        seen.setdefault(r.key, r)
    return [(r.key, r.prompt, r.input, r.response, "") for r in seen.values()]


@dataclass
class ImportPlan:
    """What an import would store, and what it refuses."""

    labels: list[LabelRecord] = field(default_factory=list)
    blank: int = 0  # rows without a label yet
    refused: list[str] = field(default_factory=list)  # "file:line: why", one per refused row
    imported_at: str = ""  # the time given to every row without a labelled_at of its own


def _text(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return value if isinstance(value, str) else str(value)


def label_column(path: Path, columns: set[str]) -> str:
    found = [c for c in LABEL_COLUMNS if c in columns]
    if not found:
        raise HarnessError(f"{path}: no label column ({' or '.join(LABEL_COLUMNS)}; found: "
                           f"{', '.join(sorted(columns)) or 'nothing'})")
    return found[0]


def check_labeller_cells(rows: list[tuple[str, dict]], labeller: str) -> None:
    """Refuse a file whose ``labeller`` cells name someone other than the ``--labeller`` given. The cells win
    over a default labeller (an export imported elsewhere keeps who labelled it), so a second person who fills
    in a full export and imports it under their own name would otherwise store their labels as the first
    person's latest ones: replacing that person's vote, with no agreement left to measure."""
    for where, row in rows:
        named = _text(row.get("labeller")).strip()
        if named and named != labeller:
            raise HarnessError(f"{where}: the file's labeller column names {named!r}, but --labeller {labeller} was "
                               "given; nothing was stored (to label these replies as a second labeller, start from "
                               "labels export FILE --blank, or empty the labeller column; to keep the file's labellers, "
                               "leave out --labeller)")


def plan_import(path: Path, rows: list[tuple[str, dict]], *, labeller: str, source: str,
                report_keys: set[str] | None = None, report: Path | None = None) -> ImportPlan:
    """Check ``rows`` (``(where, row)`` pairs, as ``harness.data.tables.read_table`` gives them) and return
    the labels to store. A row's own ``labeller``, ``labelled_at``, ``rubric_version`` and ``source`` cells
    win over the defaults (an export imported elsewhere keeps who labelled it); a ``--labeller`` the cells
    contradict is refused first (``check_labeller_cells``)."""
    imported_at = now_iso()
    plan = ImportPlan(imported_at=imported_at)
    column = label_column(path, {c for _, row in rows for c in row})
    wheres: list[str] = []  # the row of each of plan.labels
    for where, row in rows:
        raw = _text(row.get(column)).strip()
        if not raw:
            plan.blank += 1
            continue
        label = parse_label(row.get(column))  # the cell itself: a float 2.0 is the key 2, its text "2.0" is not
        if label is None:
            plan.refused.append(f"{where}: {raw!r} is not a label ({accepted_spellings()})")
            continue
        prompt, response, input_ = _text(row.get("prompt")), _text(row.get("response")), _text(row.get("input"))
        key = label_key(prompt, response, input_)
        given = _text(row.get("key")).strip()
        if given and given != key:
            plan.refused.append(f"{where}: key {given} does not match the row's prompt and response (the text was "
                                "edited after export?)")
            continue
        if report_keys is not None and key not in report_keys:
            plan.refused.append(f"{where}: not a reply of report {report} (key {key}): refused")
            continue
        when = _text(row.get("labelled_at")).strip()
        labelled_at = normalize_time(when) if when else imported_at
        if labelled_at is None:
            plan.refused.append(f"{where}: labelled_at {when!r} is not an ISO 8601 time")
            continue
        rubric = _text(row.get("rubric_version")).strip() or RUBRIC_VERSION
        if rubric not in KNOWN_RUBRIC_VERSIONS:
            plan.refused.append(f"{where}: rubric_version {rubric!r} is not a rubric of this harness "
                                f"({', '.join(KNOWN_RUBRIC_VERSIONS)}); leave the cell empty for today's")
            continue
        plan.labels.append(LabelRecord(
            0, key, label, _text(row.get("labeller")).strip() or labeller, labelled_at, rubric,
            _text(row.get("source")).strip() or source, prompt, input_, response))
        wheres.append(where)
    _refuse_contradictions(plan, wheres)
    return plan


def _refuse_contradictions(plan: ImportPlan, wheres: list[str]) -> None:
    """Refuse every row of a reply that one labeller labels differently at one and the same time (rows
    without a labelled_at all get the import's time): which of them is the latest would depend on the
    order of the file's rows, not on the person. Rows at different times are a history, kept as it is."""
    seen: dict[tuple[str, str, str], list[int]] = {}
    for i, r in enumerate(plan.labels):
        seen.setdefault((r.key, r.labeller, r.labelled_at), []).append(i)
    bad = set()
    for group in seen.values():
        if len({plan.labels[i].label for i in group}) > 1:
            shown = ", ".join(f"{plan.labels[i].label} at {wheres[i]}" for i in group)
            for i in group:
                plan.refused.append(f"{wheres[i]}: labeller {plan.labels[i].labeller} labels this reply differently "
                                    f"in one file ({shown}); give it one label")
            bad.update(group)
    plan.labels = [r for i, r in enumerate(plan.labels) if i not in bad]
