"""Regenerate harness/scoring/scorer_transport.json: every refusal scorer's sensitivity and specificity
counts on every model the project holds human labels of, per expected behaviour, in one go.

    python -m research.scorer_transport [--scorer NAME ...] [--data-dir DIR] [--cache DIR] [--out FILE]
    python -m research.scorer_transport --show        # the shipped counts and what the fit makes of them

Run it after a scorer changes (a retrained refusal_classifier has a new version, and a version missing
from the file has no between-model rates). The models and how each scorer's labels on them were made:
research/labelled_models.py (refusal_classifier's labels on the dev files are out of fold, from its own
training script; Llama-2-13b-chat is left out because it trains on those replies). The file is written
whole, atomically: entries of scorer versions no longer shipped are dropped, since they cannot be
reproduced. ``--cache`` keeps the MiniLM embeddings between runs (same figures, faster).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.core.errors import HarnessError
from harness.scoring.error_rates import ErrorRates
from harness.scoring.transport import COUNTS, FORMAT, REGENERATE, TRANSPORT_PATH
from research import labelled_models

DEFAULT_SCORERS = ("refusal_classifier", "refusal_patterns", "xstest_string_match")
ABOUT = ("Per scorer version, per model the project holds human labels of, per expected behaviour (refuse: "
         "should-refuse prompts, comply: should-answer prompts): human refusals (full or partial) and how many the "
         "scorer called a refusal, human full compliances and how many it called compliance. "
         "harness.scoring.transport fits the between-model spread of sensitivity and specificity to them. "
         f"Written whole by: {REGENERATE}")


def model_entry(rows, scored: list[str], how: str) -> dict:
    """One model's counts per expected behaviour (and how its scorer labels were made)."""
    entry = {"rows": len(rows), "how": how}
    for expected in ("refuse", "comply"):
        idx = [i for i, r in enumerate(rows) if r.expected == expected]
        if idx:
            rates = ErrorRates.from_labels("", "", [rows[i].human for i in idx], [scored[i] for i in idx])
            entry[expected] = {k: getattr(rates, k) for k in COUNTS}
    return entry


def scorer_entry(models, scorer: str, data_dir: Path | None, cache: Path | None) -> tuple[str, dict]:
    scored, how, version = labelled_models.scored_labels(models, scorer, data_dir, cache)
    return version, {"models": {m: model_entry(rows, scored[m], how[m]) for m, rows in models.items()}}


def build(scorers, data_dir: Path | None, cache: Path | None = None) -> dict:
    models = labelled_models.load_models(data_dir)
    out = {"format": FORMAT, "about": ABOUT, "left_out": labelled_models.LEFT_OUT, "scorers": {}}
    for name in scorers:
        version, entry = scorer_entry(models, name, data_dir, cache)
        out["scorers"][name] = {version: entry}
        print(f"{name} v{version}: {len(entry['models'])} models", flush=True)
    return out


def show(path: Path) -> list[str]:
    """Per scorer version: each model's counts per expected behaviour, then the fitted rates of a new model."""
    from harness.core.types import EXPECTED
    from harness.scoring.transport import model_counts, read_transport_file, transport_rates

    lines = []
    for scorer, versions in read_transport_file(str(path)).get("scorers", {}).items():
        for version in versions:
            lines += [f"{scorer} v{version}", "",
                      "| model | should-refuse: sensitivity | specificity | should-answer: sensitivity | specificity |",
                      "|---|---|---|---|---|"]
            per = {e: model_counts(scorer, version, e, path) or {} for e in EXPECTED}
            for model in dict.fromkeys(m for e in EXPECTED for m in per[e]):
                cells = []
                for e in EXPECTED:
                    c = per[e].get(model)
                    cells += (["-", "-"] if c is None else
                              [f"{c['refusals_scored_refusal']}/{c['refusals']}",
                               f"{c['compliances_scored_compliance']}/{c['compliances']}"])
                lines.append(f"| {model} | " + " | ".join(cells) + " |")
            lines.append("")
            lines += [f"- {transport_rates(scorer, version, e, path).describe()}" for e in EXPECTED]
            lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    from harness.core.files import atomic_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scorer", action="append", help=f"scorer (repeatable); default: {', '.join(DEFAULT_SCORERS)}")
    ap.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    ap.add_argument("--cache", type=Path, help="folder keeping MiniLM embeddings between runs")
    ap.add_argument("--out", type=Path, default=TRANSPORT_PATH, help="file to write (default: the package's)")
    ap.add_argument("--show", action="store_true", help="print the file's counts and fitted rates; write nothing")
    args = ap.parse_args(argv)
    if args.show:
        print("\n".join(show(args.out)))
        return 0
    try:
        data = build(args.scorer or DEFAULT_SCORERS, args.data_dir, args.cache)
    except (HarnessError, SystemExit) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1) + "\n", "utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
