"""``safety-harness labels export|import|stats``: the label store outside the review page.

    safety-harness labels export labels.csv                 every label in force, with who and when
    safety-harness labels export second.csv --blank         the labelled replies without labels, for a second labeller
    safety-harness labels import second.csv --labeller bob  store a filled-in file (CSV or Parquet)
    safety-harness labels stats                             counts per labeller, Cohen's kappa between labellers

The store is labels.sqlite beside the generation cache, or the file named by --labels or by
labels = "..." in [tool.safety-harness]. When several people label one reply, the label in force is the
adjudicated one, else the majority of each person's latest label; a tie stays open until someone
adjudicates it (export --conflicts, then import --source adjudication). docs/review.md has the rule and
the reasons.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli.registry import command
from harness.core.errors import HarnessError

MAX_REFUSED_SHOWN = 20


def add_store_args(p) -> None:
    """The options that find the label store (shared with ``review``)."""
    p.add_argument("--labels", type=Path, default=None,
                   help="the label store (SQLite; default labels.sqlite in the cache folder, or labels = \"...\" in "
                        "[tool.safety-harness])")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="the cache folder whose labels.sqlite is the default store (default: $SAFETY_HARNESS_CACHE "
                        "or ~/.cache/safety-harness)")
    p.add_argument("--config", type=Path, default=None, help="TOML file with [tool.safety-harness] settings")


def store_settings(args):
    """The settings of the project found from here (pyproject.toml, or --config), checked, with the options of
    ``add_store_args`` over them."""
    from harness.config.settings import build_settings
    from harness.engine.preflight import preflight

    return preflight(build_settings(cli={"labels": args.labels, "cache_dir": args.cache_dir},
                                    rootdir=Path.cwd(), config_file=args.config)).settings


def store_location(args, settings=None) -> Path:
    """The store the settings name: --labels, else TOML ``labels``, else <cache_dir>/labels.sqlite.
    ``settings``: those ``store_settings`` already read."""
    from harness.labels import store_path

    settings = settings or store_settings(args)
    return store_path(settings.labels, settings.cache_dir)


def open_store(args, *, create: bool = True):
    """The store at ``store_location``. Without ``create`` (commands that only read it) a missing store is
    None, and a missing store that --labels names is an error: a mistyped path would otherwise read as an
    empty store ("no labels yet", an export of 0 labels) and leave a new empty store behind."""
    from harness.labels import LabelStore

    path = store_location(args)
    if not create and not path.exists():
        if args.labels is not None:
            raise HarnessError(f"label store {path} not found (store labels into it with: safety-harness labels "
                               f"import FILE --labels {path}, or safety-harness review REPORT --labels {path})")
        return None
    return LabelStore(path)


@command("labels", help="the human label store: export and import labels (CSV, Parquet), agreement between labellers")
def _labels_args(p):
    p.description = __doc__.split("\n\n")[0].split(": ", 1)[1].capitalize()
    p.epilog = __doc__.split("\n\n", 1)[1]
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="labels_command", required=True, metavar="{export,import,stats}")
    export = sub.add_parser("export", help="write the stored labels (or the replies to label again) as CSV or Parquet",
                            description="Write every label in force with its labeller, time, rubric version, source "
                                        "and the texts (no report needed to read it), as CSV or Parquet by suffix.")
    export.add_argument("out", type=Path, help="the file to write (.csv or .parquet; an existing file is kept)")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--blank", action="store_true",
                       help="the labelled replies without their labels, for a second labeller (agreement)")
    which.add_argument("--conflicts", action="store_true",
                       help="only the replies whose labellers disagree with no majority, without labels, to adjudicate")
    add_store_args(export)
    imp = sub.add_parser("import", help="store the labels of a filled-in CSV or Parquet file",
                         description="Store each labelled row (columns prompt, response, label or human_label; "
                                     "optional key, input, labeller, labelled_at, rubric_version, source). Rows "
                                     "with a blank label are left for later; a row with an unknown label, a key that "
                                     "does not match its text, or (with --report) a reply the report does not hold "
                                     "is named and refused. Exit 0: all stored; 1: some rows refused, the rest "
                                     "stored; 2: nothing stored.")
    imp.add_argument("file", type=Path, help="CSV or Parquet file, e.g. from review --export or labels export")
    imp.add_argument("--report", type=Path, default=None, help="refuse rows that are no reply of this Parquet report")
    imp.add_argument("--labeller", default=None, help="who labelled rows without a labeller column (default: the OS user)")
    imp.add_argument("--source", default="import",
                     help="where rows without a source column came from (default import; 'adjudication' settles a "
                          "disagreement)")
    add_store_args(imp)
    stats = sub.add_parser("stats", help="counts per labeller and agreement (Cohen's kappa) between labellers",
                           description="Counts of labels per labeller and class, the open disagreements, and for "
                                       "each pair of labellers who labelled the same replies: raw agreement and "
                                       "Cohen's kappa, three-class and binary (compliance vs any refusal).")
    add_store_args(stats)


@_labels_args.run
def _labels(args) -> int:
    return {"export": _export, "import": _import, "stats": _stats}[args.labels_command](args)


def _export(args) -> int:
    from harness.labels.transfer import BLANK_COLUMNS, EXPORT_COLUMNS, blank_rows, export_rows, write_rows

    store = open_store(args, create=False)
    if store is None:
        raise HarnessError("no label store yet, so no labels to export (label replies with: safety-harness review "
                           "REPORT, or labels import FILE)")
    records = store.records()
    if args.conflicts:
        open_keys = set(store.open_keys())
        records = [r for r in records if r.key in open_keys]
    if args.blank or args.conflicts:
        rows = blank_rows(records)
        write_rows(args.out, BLANK_COLUMNS, rows)
        what = "open disagreements" if args.conflicts else "labelled replies"
        print(f"wrote {len(rows)} {what} without labels to {args.out}; fill the label column, then: "
              f"safety-harness labels import {args.out}"
              + (" --source adjudication" if args.conflicts else " --labeller NAME"))
        return 0
    rows = export_rows(records)
    write_rows(args.out, EXPORT_COLUMNS, rows)
    print(f"wrote {len(rows)} labels ({len({r.key for r in records})} replies) from {store.path} to {args.out}")
    return 0


def _import(args) -> int:
    from harness.data.tables import read_table
    from harness.labels import default_labeller
    from harness.labels.records import latest_per_labeller
    from harness.labels.transfer import check_labeller_cells, plan_import

    rows = read_table(args.file, ["prompt", "response"])
    if args.labeller:
        check_labeller_cells(rows, args.labeller)
    report_keys = _report_keys(args.report) if args.report else None
    plan = plan_import(args.file, rows, labeller=args.labeller or default_labeller(), source=args.source,
                       report_keys=report_keys, report=args.report)
    store = open_store(args)
    # A row whose labeller's latest stored label of that reply is the same label adds nothing (a file imported
    # again after fixing a refused row). Nor does a row without a labelled_at of its own whose vote (reply,
    # labeller, label) the store already holds: stamped with this import's time, it would become that
    # labeller's latest label again and undo a correction made since the file was first imported.
    records = store.records(r.key for r in plan.labels)
    stored = {}
    for key_records in _group(records).values():
        for labeller, r in latest_per_labeller(key_records).items():
            stored[(r.key, labeller)] = r.label
    held = {_vote(r) for r in records}
    new = [r for r in plan.labels if stored.get((r.key, r.labeller)) != r.label
           and not (r.labelled_at == plan.imported_at and _vote(r) in held)]
    added, already = store.add_many(new)
    already += len(plan.labels) - len(new)
    print(f"stored {added} labels from {args.file} in {store.path}"
          + (f"; {already} already stored" if already else "")
          + (f"; {plan.blank} rows without a label yet" if plan.blank else ""))
    if plan.refused:
        print(f"refused {len(plan.refused)} rows (nothing of them was stored):", file=sys.stderr)
        for line in plan.refused[:MAX_REFUSED_SHOWN]:
            print(f"  {line}", file=sys.stderr)
        if len(plan.refused) > MAX_REFUSED_SHOWN:
            print(f"  ... and {len(plan.refused) - MAX_REFUSED_SHOWN} more", file=sys.stderr)
        return 1 if plan.labels else 2
    return 0


def _report_keys(path: Path) -> set[str]:
    from harness.core.records import label_key
    from harness.core.report_file import read_run_report

    table, _ = read_run_report(path)
    columns = table.select([c for c in ("prompt", "input", "response") if c in table.column_names]).to_pylist()
    return {label_key(r.get("prompt") or "", r.get("response") or "", r.get("input") or "") for r in columns}


def _vote(record) -> tuple:
    """What one label says: who labelled which reply as what (an adjudication settles, so it is another vote)."""
    from harness.labels import ADJUDICATION

    return record.key, record.labeller, record.label, record.source == ADJUDICATION


def _group(records) -> dict:
    groups: dict[str, list] = {}
    for r in records:
        groups.setdefault(r.key, []).append(r)
    return groups


def _stats(args) -> int:
    from harness.core.text import format_table
    from harness.core.types import REFUSAL_LABELS
    from harness.labels.agreement import agreements, counts_per_labeller

    store = open_store(args, create=False)
    records = [] if store is None else store.records()
    if not records:
        where = store.path if store else store_location(args)
        print(f"label store {where}: no labels yet (safety-harness review REPORT, or labels import FILE)")
        return 0
    keys = {r.key for r in records}
    in_force, open_keys = store.labels(), store.open_keys()
    print(f"label store {store.path}: {len(records)} labels of {len(keys)} replies; {len(in_force)} with a label in "
          f"force" + (f", {len(open_keys)} open disagreements (labels export FILE --conflicts)" if open_keys else ""))
    counts = counts_per_labeller(records)
    rows = [(name, str(sum(c.values())), *(str(c.get(label, 0)) for label in REFUSAL_LABELS))
            for name, c in sorted(counts.items())]
    for line in format_table(("labeller", "replies", *REFUSAL_LABELS), rows):
        print(line)
    pairs = agreements(records)
    if not pairs:
        print("agreement: no reply labelled by two labellers (labels export FILE --blank gives a second labeller the "
              "same replies)")
        return 0
    print("agreement on the replies both labelled (each labeller's latest label):")
    rows = [(f"{p.first} / {p.second}", str(p.n), f"{p.agreement:.3f}", _kappa(p.kappa), f"{p.binary_agreement:.3f}",
             _kappa(p.binary_kappa)) for p in pairs]
    for line in format_table(("labellers", "replies", "agreement", "kappa", "binary agreement", "binary kappa"), rows):
        print(line)
    return 0


def _kappa(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
