"""``safety-harness review REPORT``: label the replies that decide a run's gate, on a local page.

    safety-harness review reports/runs/run-ID.parquet            serve the page, open it in the browser
    safety-harness review run.parquet --baseline base.parquet    a baseline gate: its flips come first
    safety-harness review run.parquet --export to_label.csv      no browser: the same sample as a CSV
    safety-harness labels import to_label.csv                    (after filling its label column)
    pytest suites/ --model MODEL --labels ~/.cache/safety-harness/labels.sqlite

The page shows one reply at a time under its prompt (a flip's two replies side by side) and never the
scorer's verdict. Keys: 1 full compliance, 2 full refusal, 3 partial refusal, s skip, u undo, r or ? the
rubric. Each label is stored as it is given, so closing the tab or stopping the server loses nothing, and
starting again resumes. The page says when the gate is decided (every verified interval clear of its
threshold): you may stop there. docs/review.md describes the page, the store and the CSV loop.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from harness.cli.labels import add_store_args, open_store
from harness.cli.registry import command
from harness.core.errors import DataError, HarnessError

SAMPLE_COLUMNS = ("key", "item", "side", "suite", "category", "prompt_id", "prompt", "input", "response", "label")


@command("review", help="label the replies that decide a run's gate on a local page (or --export them as CSV); "
                        "labels are stored for every later run")
def _review_args(p):
    p.description = __doc__.split("\n\n")[0].split(": ", 1)[1].capitalize()
    p.epilog = __doc__.split("\n\n", 1)[1]
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("report", type=Path, help="the Parquet report of the run to verify (--report, or reports/runs/)")
    p.add_argument("--n", type=int, default=60,
                   help="replies to plan for labelling, drawn where they narrow the gated rates most (default 60)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="the baseline report of a gate: prompts whose verdict flipped are offered first, both replies "
                        "side by side")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed (default 0)")
    p.add_argument("--labeller", default=None, help="who labels (default: the OS user)")
    p.add_argument("--port", type=int, default=0, help="the port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the address only, do not open a browser")
    p.add_argument("--export", type=Path, default=None, metavar="CSV",
                   help="write the planned replies (blind: no scorer output) with an empty label column to this CSV "
                        "or Parquet file instead of serving the page; store them with labels import")
    add_store_args(p)


@_review_args.run
def _review(args) -> int:
    from harness.labels import default_labeller
    from harness.labels.review_session import ReviewSession

    if args.n < 1:
        raise HarnessError(f"--n must be at least 1, got {args.n}")
    if not 0 <= args.port <= 65535:  # checked before the plan is drawn and the store opened
        raise HarnessError(f"--port must be 0-65535 (0: a free one), got {args.port}")
    verification = _verification()
    store = open_store(args)
    rows = verification.rows_from_report(args.report, args.baseline)
    if not rows:
        raise DataError(f"report {args.report}: no refusal-scored replies to review")
    thresholds = verification.thresholds_from_report(args.report)
    keys = {r.key for r in rows} | {r.baseline_key for r in rows if r.baseline_key}
    # The real design: flips first, then the strata where labels narrow the gated rates most, guessed with
    # the scorer's between-model error rates; replies any earlier run's labels cover are not asked again.
    plan = verification.plan_for_report(args.report, args.n, baseline_path=args.baseline, seed=args.seed,
                                        known=store.labels(keys))
    labeller = args.labeller or default_labeller()
    session = ReviewSession(plan, rows, thresholds, store, labeller, verified_checks=verification.verified_checks,
                            gate_decided=verification.gate_decided, seed=args.seed, report=str(args.report))
    if args.export:
        return _export(args.export, session)
    return _serve(session, args.port, open_browser=not args.no_browser)


def _verification():
    """The verification design (sampling plan and verified rates), imported when a review starts."""
    try:
        return importlib.import_module("harness.engine.verification")
    except ModuleNotFoundError as exc:
        if exc.name != "harness.engine.verification":
            raise
        raise HarnessError("review needs harness.engine.verification (the sampling plan and verified rates), "
                           "which this installation of safety-harness lacks") from None


def _export(path: Path, session) -> int:
    from harness.labels.transfer import write_rows

    rows = []
    for task in session.tasks:
        row = session.plan[task.item]
        rows.append((task.key, str(task.item + 1), task.side, row.suite, row.category, row.prompt_id, row.prompt,
                     row.input or "", task.response, ""))
    write_rows(path, SAMPLE_COLUMNS, rows)
    print(f"wrote {len(rows)} replies to label to {path} (blind: no scorer output; {session.known_at_start} of the "
          f"report's replies were labelled before)")
    print("fill the label column (full_compliance, full_refusal, partial_refusal, or 1/2/3), then: "
          f"safety-harness labels import {path}")
    return 0


def _serve(session, port: int, *, open_browser: bool) -> int:
    from harness.labels.review_server import ReviewServer

    server = ReviewServer(session, port)
    print(f"review: {server.url}  ({len(session.tasks)} replies planned; labeller {session.labeller}; store "
          f"{session.store.path}; Ctrl-C stops)", flush=True)
    if open_browser:
        _open_browser(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"\nreview stopped: {_progress_words(session)}; the labels are in {session.store.path}")
    finally:
        server.server_close()
    return 0


def _progress_words(session) -> str:
    try:
        p = session.state()["progress"]
    except HarnessError as exc:
        return f"progress unknown ({exc})"
    return f"{p['done']} of {p['total']} planned replies labelled" + (f", {p['skipped']} skipped" if p["skipped"] else "")


def _open_browser(url: str) -> None:
    """Open the page where a graphical browser can be (never a text browser that would take the terminal)."""
    import os
    import sys
    import threading
    import webbrowser

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("no graphical display here: open the address above in a browser on this machine (or forward the "
              "port, e.g. ssh -L PORT:127.0.0.1:PORT)")
        return
    threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
