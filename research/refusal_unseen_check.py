"""Refusal scorers on three chat models that no scorer was trained or tuned on, labelled for this project.

    python -m research.refusal_unseen_check [--scorer NAME ...] [--head FILE] [--misses]
    python -m research.refusal_unseen_check --calibration [--label-n 200] [--draws 200]
    python -m research.refusal_unseen_check --export DIR     # per-model CSVs for safety-harness calibrate fit

The replies are the AlpacaEval answers of Claude, Guanaco-65B and AlpacaFarm's PPO-human LLaMA-7B in
AlpacaEval's annotation files (``alpaca_eval/dev_annotations/*.json``, pinned like every data file), each
labelled by the XSTest rubric (research/labels/README.md). Three house styles the dev files lack: a
commercial assistant that declines with "I apologize, but I do not feel comfortable ...", a QLoRA-tuned
LLaMA of the kind this project's users build, and an RLHF-tuned LLaMA-7B. AlpacaEval's prompts are ordinary
requests, so these rows measure mostly specificity (how often a compliance is called a refusal) and the
refusals that such prompts still draw; with 66 refusals in 2,415 rows, a scorer that never says "refusal"
agrees 0.973 binary, so read sensitivity and specificity, not agreement. No training script reads these
labels: they stay a held-out check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from harness.scoring import get_scorer
from research.data import LABELS, data_dir_arg
from research.refusal_head_fit import agreement, scored_labels
from research.refusal_training_data import load_chat_labelled

UNSEEN = {  # model -> (upstream file under the data dir, labels file)
    "claude": ("alpaca_eval/dev_annotations/claude.json", LABELS / "claude_alpaca_eval.csv"),
    "guanaco-65b": ("alpaca_eval/dev_annotations/guanaco-65b.json", LABELS / "guanaco_65b_alpaca_eval.csv"),
    "alpaca-farm-ppo-human": ("alpaca_eval/dev_annotations/alpaca-farm-ppo-human.json",
                              LABELS / "alpaca_farm_ppo_human_alpaca_eval.csv"),
}


# The embedded default model's own replies to the suites (a run of `pytest suites/ --limit 20`), labelled blind:
# the small, garbled, rarely-refusing model of this project's main job. Its replies are in the file (they are the
# project's own outputs, not upstream data); the prompts are the suites' (joined by suite and prompt_id).
SMOLLM2 = LABELS / "smollm2_135m_suites_sample.csv"


def load_unseen(data_dir: Path) -> dict[str, dict]:
    return {m: load_chat_labelled(data_dir, labels, data_file) for m, (data_file, labels) in UNSEEN.items()}


def load_smollm2(path: Path = SMOLLM2) -> dict[str, dict]:
    """The embedded model's labelled replies, in evaluate()'s form. The scorers read replies only, so the
    prompts are left empty rather than fetched from the suites' data."""
    import csv

    from harness.core.types import REFUSAL_LABELS

    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {"smollm2-135m (suites)": {"prompts": [""] * len(rows), "texts": [r["response"] for r in rows],
                                      "y": np.array([REFUSAL_LABELS.index(r["label"]) for r in rows]),
                                      "ids": [f"{r['suite']}/{r['prompt_id']}" for r in rows]}}


def rates(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Sensitivity (refusals called any refusal) and specificity (compliances called compliance)."""
    ref, ok = y != 0, y == 0
    return float((pred[ref] != 0).mean()) if ref.any() else float("nan"), float((pred[ok] == 0).mean())


def evaluate(data: dict[str, dict], names: list[str], head: Path | None = None) -> dict[str, dict]:
    """Per scorer and model (and pooled): binary and three-class agreement, sensitivity, specificity."""
    out = {}
    for name in names:
        scorer = get_scorer(name, head_path=head) if head and name == "refusal_classifier" else get_scorer(name)
        preds = {m: scored_labels(scorer, d["prompts"], d["texts"]) for m, d in data.items()}
        res = {m: (*agreement(data[m]["y"], p), *rates(data[m]["y"], p), p) for m, p in preds.items()}
        y = np.concatenate([d["y"] for d in data.values()])
        p = np.concatenate(list(preds.values()))
        res["pooled"] = (*agreement(y, p), *rates(y, p), p)
        out[name] = res
    return out


def export(data: dict[str, dict], out: Path) -> list[Path]:
    """One CSV per model (prompt, response, human_label), the input of ``safety-harness calibrate fit``."""
    import csv

    from harness.core.types import REFUSAL_LABELS

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for m, d in data.items():
        path = out / f"{m}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["prompt", "response", "human_label"])
            w.writerows(zip(d["prompts"], d["texts"], (REFUSAL_LABELS[i] for i in d["y"])))
        paths.append(path)
    return paths


def calibration(data: dict[str, dict], name: str, label_n: int, draws: int) -> list[str]:
    """Does the corrected refusal rate cover a model's labelled refusal rate? Corrected with the scorer's
    shipped (dev-file) error rates, and with rates measured on a uniform sample of ``label_n`` of the
    model's own replies (what ``safety-harness calibrate`` does), over ``draws`` samples."""
    from harness.core.misclassification import corrected_rate
    from harness.scoring.error_rates import ErrorRates, error_rates_for

    scorer = get_scorer(name)
    shipped = error_rates_for(scorer.name, scorer.version)
    rng = np.random.default_rng(0)
    lines = [f"{name} v{scorer.version}: corrected refusal rate against the labelled one, per model "
             f"(own rates: {label_n} labelled replies drawn {draws} times)",
             f"{'model':22} {'labelled':>8} {'scored':>7} {'shipped-corrected (95% CI)':>27} {'covers':>6} "
             f"{'own-rates coverage':>18} {'median width':>12} {'no refusal drawn':>16} {'undecidable':>11}"]
    for m, d in data.items():
        truth = d["y"] != 0
        scored = scored_labels(scorer, d["prompts"], d["texts"]) != 0
        k, n = int(scored.sum()), len(scored)
        c = corrected_rate(k, n, "refusal", shipped)
        covers, widths, empty, undecidable = 0, [], 0, 0
        for _ in range(draws):
            idx = rng.choice(n, label_n, replace=False)
            t, s = truth[idx], scored[idx]
            if not t.any():  # calibrate fit refuses a sample without a refusal: sensitivity unmeasurable
                empty += 1
                continue
            own = ErrorRates("own", "1", int(t.sum()), int((s & t).sum()), int((~t).sum()), int((~s & ~t).sum()))
            co = corrected_rate(k, n, "refusal", own)
            if co.undecidable:  # the sample cannot rule out a scorer at chance level: no interval to check
                undecidable += 1
                continue
            covers += co.low <= truth.mean() <= co.high
            widths.append(co.high - co.low)
        used = draws - empty - undecidable
        lines.append(f"{m:22} {truth.mean():8.3f} {k / n:7.3f} {c.text():>27} "
                     f"{'yes' if c.low <= truth.mean() <= c.high else 'no':>6} "
                     f"{(f'{covers / used:.3f}' if used else '-'):>18} "
                     f"{(f'{np.median(widths):.3f}' if widths else '-'):>12} {empty:16d} {undecidable:11d}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    ap.add_argument("--scorer", nargs="+", default=["refusal_classifier", "refusal_patterns", "xstest_string_match"])
    ap.add_argument("--head", type=Path, help="refusal head file for refusal_classifier (default: the shipped one)")
    ap.add_argument("--misses", action="store_true", help="print every reply the first scorer gets wrong")
    ap.add_argument("--export", type=Path, help="write each model's labelled replies as DIR/MODEL.csv and stop")
    ap.add_argument("--calibration", action="store_true",
                    help="corrected rates with shipped error rates against rates from a labelled sample of each model")
    ap.add_argument("--label-n", type=int, default=200, help="--calibration: labelled replies per sample")
    ap.add_argument("--draws", type=int, default=200, help="--calibration: samples drawn per model")
    args = ap.parse_args(argv)
    args.data_dir = data_dir_arg(args.data_dir)
    data = load_unseen(args.data_dir)
    if args.export:
        for path in export(data, args.export):
            print(f"wrote {path}")
        return 0
    if args.calibration:
        for line in calibration(data, args.scorer[0], args.label_n, args.draws):
            print(line)
        return 0
    counts = ", ".join(f"{m} {len(d['y'])} ({int((d['y'] != 0).sum())} refusals)" for m, d in data.items())
    print(f"labelled replies: {counts}")
    print(f"{'scorer':22} {'model':22} {'binary':>7} {'3-class':>8} {'sensitivity':>12} {'specificity':>12}")
    results = evaluate(data, args.scorer, args.head)
    for name, res in results.items():
        for m, (b, t, sens, spec, _) in res.items():
            print(f"{name:22} {m:22} {b:7.3f} {t:8.3f} {sens:12.3f} {spec:12.3f}")
    # Refusals are rare here, so agreement alone says little: a scorer that never says "refusal" scores this.
    y = np.concatenate([d["y"] for d in data.values()])
    print(f"{'(always compliance)':22} {'pooled':22} {(y == 0).mean():7.3f} {(y == 0).mean():8.3f} {0.0:12.3f} {1.0:12.3f}")
    small = load_smollm2()  # not pooled with the three: another kind of prompt, and a model of another size
    (m, d), = small.items()
    print(f"the embedded model's replies to the suites ({len(d['y'])} labelled, {int((d['y'] != 0).sum())} refusals):")
    for name, res in evaluate(small, args.scorer, args.head).items():
        b, t, sens, spec, _ = res[m]
        print(f"{name:22} {m:22} {b:7.3f} {t:8.3f} {sens:12.3f} {spec:12.3f}")
    if args.misses:
        data = {**data, **small}
    if args.misses:
        from harness.core.types import REFUSAL_LABELS

        name = args.scorer[0]
        for m, d in data.items():
            pred = results[name][m][4]
            for i in np.flatnonzero(pred != d["y"]):
                print(f"  [{m} {d['ids'][i]}] gold {REFUSAL_LABELS[d['y'][i]]:16} got {REFUSAL_LABELS[pred[i]]:16} "
                      f"{d['texts'][i][:100]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
