"""Measure refusal scorers' sensitivity and specificity on the human-labelled XSTest completions and write
them into harness/scoring/error_rates.json (keyed by scorer name and version), which the harness uses to
correct rates for scorer error and to size baseline gates.

    python -m research.scorer_error_rates --scorer NAME [--scorer NAME ...] [--data-dir DIR] [--out FILE] [--cache DIR]
    python -m research.scorer_error_rates --model smollm2-135m-instruct   # that model's own labelled replies

Binary split: refusal = full or partial refusal, compliance = full compliance (as every gating metric
counts). Predictions are out-of-fold where the scorer is fitted to these files: a scorer listed in
OUT_OF_FOLD is retrained per fold by its own training script and predicts only rows it was not trained
on. A scorer with no fitted parameters is scored as shipped, and the file says so: rules written with
these files in view are in-sample, so their rates are optimistic for unseen models. Entries for other
scorers and versions already in the file are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from harness.core.errors import HarnessError
from harness.scoring import get_scorer
from harness.scoring.error_rates import ERROR_RATES_PATH, ErrorRates, write_error_rates
from research.data import LABELS, data_dir_arg
from research.xstest_dev import dev_files, load_labeled

DEFAULT_SCORERS = ("refusal_patterns", "refusal_classifier", "xstest_string_match")


def classifier_out_of_fold(data_dir: Path, files: list[Path], cache: Path | None = None) -> tuple[list[str], str]:
    """refusal_classifier: leave-one-model-out predictions from its training script (train on the other
    dev model's rows plus the auxiliary rows, predict this model's rows), in ``files`` order. ``cache``: a
    folder keeping the embeddings between runs (the predictions are the same with or without it)."""
    import argparse

    from research.refusal_head_fit import leave_one_model_out
    from research.refusal_training_data import DEFAULTS, MODELS, build_features

    from harness.core.types import REFUSAL_LABELS
    from harness.scoring.classifier import decide

    # The training script's own features and folds (its defaults), so these rates describe the shipped recipe.
    args = argparse.Namespace(data_dir=data_dir, cache=cache, **DEFAULTS)
    dev, X, aux, _ = build_features(args)
    logits = leave_one_model_out(X, dev, aux, dict(DEFAULTS))
    by_file = {f"xstest_v2_completions_{m}_labeled.csv": [REFUSAL_LABELS[i] for i in decide(logits[m], X[m])]
               for m in MODELS}
    missing = [f.name for f in files if f.name not in by_file]
    if missing:
        raise HarnessError(f"refusal_classifier's folds cover {', '.join(by_file)}, not {', '.join(missing)}")
    return ([label for f in files for label in by_file[f.name]],
            "out-of-fold, leave-one-model-out: the head retrained by research/train_refusal_classifier.py on the "
            "other dev model's rows plus its auxiliary rows (default settings), predicting the held-out model's")


# Scorers fitted to the labelled files: name -> function giving out-of-fold labels for all rows, in order.
OUT_OF_FOLD = {"refusal_classifier": classifier_out_of_fold}


def measure(name: str, data_dir: Path, cache: Path | None = None) -> ErrorRates:
    files = dev_files(data_dir)
    if not files:
        raise HarnessError(f"no xstest/dev/*_labeled.csv under {data_dir}")
    data = [load_labeled(f) for f in files]
    gold = [g for d in data for g in d.gold]
    scorer = get_scorer(name)
    if name in OUT_OF_FOLD:
        pred, how = OUT_OF_FOLD[name](data_dir, files, cache)
    else:
        pred = [s.label for d in data for s in scorer.score(d.prompts, d.completions)]
        how = ("scored as shipped (no fitted parameters, so no folds); its rules were written with these files "
               "in view: in-sample, optimistic for unseen models")
    names = ", ".join(f"{f.name} ({len(d.gold)})" for f, d in zip(files, data))
    method = (f"{how}. Data: XSTest v2 human final_label on {names}, both prompt types pooled (the unsafe "
              "prompts hold only 1 human-labelled compliance)")
    return ErrorRates.from_labels(scorer.name, scorer.version, gold, pred, method)


# Models whose own replies were labelled for this project: alias -> labels file (research/labels/README.md).
# Their rates are written under the model's fingerprint, and a run of that model corrects with them.
MODEL_LABELS = {"smollm2-135m-instruct": LABELS / "smollm2_135m_suites_sample.csv"}


def measure_model(name: str, alias: str) -> tuple[ErrorRates, str]:
    """Sensitivity and specificity of scorer ``name`` on ``alias``'s labelled replies (no scorer was fitted
    to them), and the model's fingerprint (as a run of it records it)."""
    import csv

    from harness.config.settings import RunSettings
    from harness.models.resolve import resolve_model

    labels = MODEL_LABELS[alias]
    with labels.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    scorer = get_scorer(name)
    pred = [s.label for s in scorer.score([""] * len(rows), [r["response"] for r in rows])]  # replies only
    gold = [r["label"] for r in rows]
    method = (f"scored as shipped on {len(rows)} replies of {alias} from one run of the main job, drawn by "
              f"safety-harness calibrate sample and labelled blind by the XSTest rubric ({labels.relative_to(REPO)})")
    fingerprint = resolve_model(alias, cache_dir=RunSettings().cache_dir).fingerprint
    return ErrorRates.from_labels(scorer.name, scorer.version, gold, pred, method), fingerprint


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scorer", action="append", help=f"scorer name (repeatable); default: {', '.join(DEFAULT_SCORERS)}")
    ap.add_argument("--data-dir", type=Path, help="folder holding xstest/dev/ (default: $SAFETY_HARNESS_DATA)")
    ap.add_argument("--out", type=Path, default=ERROR_RATES_PATH, help="JSON file to update (default: the package's)")
    ap.add_argument("--cache", type=Path, help="folder of cached embeddings (train_refusal_classifier.py --cache)")
    ap.add_argument("--model", choices=sorted(MODEL_LABELS),
                    help="measure on this model's own labelled replies and write them under its fingerprint")
    args = ap.parse_args(argv)
    args.data_dir = data_dir_arg(args.data_dir)

    about = ("Refusal scorers' sensitivity (human refusal, full or partial, scored as a refusal) and "
             "specificity (human full compliance scored as compliance), by scorer name and version; written "
             "by research/scorer_error_rates.py. Each entry's method says how its predictions were made.")
    measured, model = [], None
    try:
        for name in args.scorer or DEFAULT_SCORERS:
            if args.model:
                rates, fingerprint = measure_model(name, args.model)
                measured.append(rates)
                model = (fingerprint, args.model)
            else:
                measured.append(measure(name, args.data_dir, args.cache))
            print(measured[-1].describe())
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_error_rates(args.out, measured, about, model=model)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
