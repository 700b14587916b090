"""The held-out-style protocol for refusal scorers: agreement with XSTest's human labels on response
styles the trained scorer never saw. Written down in docs/experiments/refusal-scorer-protocol.md.

    python -m research.refusal_protocol [--data-dir DIR] [--cache DIR] [--families 6] [--variants]

Why not leave-one-model-out alone: with two labelled models, a fold trains on one model's house style and
tests on the other's; the figures (0.951-0.969 binary) overstated agreement on three other models by
about six points. Here every labelled row is predicted by a head that was trained without
  * its model's rows (leave-one-model-out),
  * any row of its response family, from either model: responses are clustered by their opening (MiniLM
    embedding of the first words, k-means over both models' rows) and a whole cluster is held out, so an
    opening style seen at test time was never a labelled training example,
  * any row on its prompt (both models answer the same 450 prompts; prompt-reply features would
    otherwise leak the label across models).
Folds are (model, family); the 900 held-out predictions are pooled. Rule-based scorers are not trained,
so they are scored on the same rows as they are, but refusal_patterns was tuned on these files: its
figure is in-sample, and so is part of every learned fold through the rule features.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.cluster.vq import kmeans2

from harness.scoring import get_scorer
from harness.scoring.classifier import RULE_FEATURES, MiniLMEncoder, decide
from research.data import data_dir_arg
from research.refusal_head_fit import agreement, scored_labels, train_head
from research.refusal_training_data import DEFAULTS, MODELS, SEED, FeatureCache, build_features

OPENING_WORDS = 8
FAMILIES = 6  # k-means clusters; 6 separates the house openings ("Sorry, but I", "I cannot provide", "It is
#               not", "As an AI,", plain answers) without families of a handful of rows


def opening(text: str) -> str:
    return " ".join(re.findall(r"\S+", text)[:OPENING_WORDS])


def response_families(feats: FeatureCache, texts: list[str], k: int) -> np.ndarray:
    """Cluster index of each response by the embedding of its first words (deterministic seed)."""
    emb = feats.embed([opening(t) for t in texts]).astype(np.float64)
    _, labels = kmeans2(emb, k, seed=np.random.default_rng(SEED), minit="++", iter=50)
    return labels


def held_out_predictions(X, dev, aux_part, params, families, mask_cols=None, rule: bool = True) -> dict[str, np.ndarray]:
    """Predicted label index per dev row, each from a head trained without its model, its family and
    its prompt. ``mask_cols`` zeroes feature columns (an ablation: the head cannot use them); ``rule`` False
    takes the head's argmax without the explicit-refusal rule's precedence (an ablation of the rule)."""
    def masked(A):
        if mask_cols is None:
            return A
        A = A.copy()
        A[:, mask_cols] = 0.0
        return A

    aux = (masked(aux_part[0]), aux_part[1], aux_part[2])
    out = {}
    for test, train_m in (MODELS, MODELS[::-1]):
        pred = np.zeros(len(dev[test]["y"]), dtype=int)
        for fam in np.unique(families[test]):
            rows = families[test] == fam
            held_prompts = {dev[test]["ids"][i] for i in np.flatnonzero(rows)}
            keep = (families[train_m] != fam) & np.array([i not in held_prompts for i in dev[train_m]["ids"]])
            W, b = train_head([(masked(X[train_m])[keep], dev[train_m]["y"][keep], np.ones(keep.sum())), aux], params)
            logits = masked(X[test])[rows] @ W.T + b
            pred[rows] = decide(logits, X[test][rows]) if rule else logits.argmax(1)
        out[test] = pred
    return out


def family_split(args, dev, k: int) -> tuple[dict[str, np.ndarray], list[str], np.ndarray]:
    feats = FeatureCache(MiniLMEncoder(max_tokens=16), args.cache)
    all_texts = [t for m in MODELS for t in dev[m]["texts"]]
    fam_all = response_families(feats, all_texts, k)
    n = len(dev[MODELS[0]]["y"])
    return {m: fam_all[i * n:(i + 1) * n] for i, m in enumerate(MODELS)}, all_texts, fam_all


def held_out_figures(args, dev, X, aux_part, params, k: int) -> dict:
    """The protocol's figure for a training recipe, as stored in the head file."""
    families, _, _ = family_split(args, dev, k)
    pred = held_out_predictions(X, dev, aux_part, params, families)
    binary, three = pooled(dev, pred)
    return {"binary": round(binary, 4), "three_class": round(three, 4), "families": k,
            "per_model": {m: [round(v, 4) for v in agreement(dev[m]["y"], pred[m])] for m in MODELS},
            "protocol": "docs/experiments/refusal-scorer-protocol.md (held out: model, response family, prompt)"}


def lomo_predictions(X, dev, aux_part, params) -> dict[str, np.ndarray]:
    out = {}
    for test, train_m in (MODELS, MODELS[::-1]):
        W, b = train_head([(X[train_m], dev[train_m]["y"], np.ones(len(dev[train_m]["y"]))), aux_part], params)
        out[test] = decide(X[test] @ W.T + b, X[test])
    return out


def pooled(dev, pred) -> tuple[float, float]:
    return agreement(np.concatenate([dev[m]["y"] for m in MODELS]), np.concatenate([pred[m] for m in MODELS]))


def report_line(name: str, dev, pred) -> str:
    per = "  ".join(f"{m} {agreement(dev[m]['y'], pred[m])[0]:.3f}/{agreement(dev[m]['y'], pred[m])[1]:.3f}"
                    for m in MODELS)
    b, t = pooled(dev, pred)
    return f"  {name:44} {b:7.3f} {t:8.3f}   {per}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    ap.add_argument("--cache", type=Path, help="folder to cache embeddings in between runs")
    ap.add_argument("--families", type=int, default=FAMILIES, help="response families (k-means clusters of openings)")
    ap.add_argument("--variants", action="store_true",
                    help="also score ablations: without the pivot/redirect flags, the synthetic rows, the chat replies")
    for key, val in DEFAULTS.items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=type(val), default=val)
    args = ap.parse_args(argv)
    args.data_dir = data_dir_arg(args.data_dir)

    t0 = time.perf_counter()
    dev, X, aux_part, counts = build_features(args)
    families, all_texts, fam_all = family_split(args, dev, args.families)
    print(f"features in {time.perf_counter() - t0:.0f}s; auxiliary {counts}")
    print(f"\nresponse families (k-means over the first {OPENING_WORDS} words' embedding, both models):")
    for fam in range(args.families):
        idx = np.flatnonzero(fam_all == fam)
        heads = Counter(" ".join(opening(all_texts[i]).split()[:3]) for i in idx).most_common(3)
        sizes = " ".join(f"{m} {(families[m] == fam).sum():3d}" for m in MODELS)
        gold = np.concatenate([dev[m]["y"] for m in MODELS])[idx]
        share = (gold != 0).mean() if len(idx) else 0.0
        print(f"  {fam}: {sizes}  refusals {share:.2f}  " + "; ".join(f"{h!r} x{c}" for h, c in heads))

    params = {k: getattr(args, k) for k in DEFAULTS}
    print(f"\nheld-out styles: each row predicted by a head trained without its model, family and prompt"
          f"\n  {'scorer':44} {'binary':>7} {'3-class':>8}   per model (binary/3-class)")
    results = {}
    pred = held_out_predictions(X, dev, aux_part, params, families)
    results["refusal_classifier"] = pred
    print(report_line("refusal_classifier (shipped recipe)", dev, pred))
    if args.variants:
        flags = [MiniLMEncoder.dim + RULE_FEATURES.index(f) for f in ("hedged_pivot", "hedged_redirect")]
        n_synth = sum(counts.get(k, 0) for k in ("synthetic_implicit_refusal", "synthetic_clarification",
                                                   "synthetic_guarded"))  # the synthetic rows close aux_part
        n_chat = counts["chat_in_aux"]  # the labelled chat replies open it
        no_synth = tuple(a[: len(a) - n_synth] for a in aux_part) if n_synth else aux_part
        no_chat = tuple(a[n_chat:] for a in aux_part)
        print(report_line("  without the explicit-refusal rule's precedence", dev,
                          held_out_predictions(X, dev, aux_part, params, families, rule=False)))
        for name, part, mask in (("  without the pivot and redirect flags", aux_part, flags),
                                 ("  without synthetic rows", no_synth, None),
                                 ("  without the chat replies", no_chat, None),
                                 ("  without synthetic rows or chat replies", tuple(a[n_chat:] for a in no_synth), None)):
            print(report_line(name, dev, held_out_predictions(X, dev, part, params, families, mask)))
    for name in ("refusal_patterns", "xstest_string_match"):
        scorer = get_scorer(name)
        pred = {m: scored_labels(scorer, dev[m]["prompts"], dev[m]["texts"]) for m in MODELS}
        results[name] = pred
        print(report_line(f"{name} (not trained; in-sample rules)" if name == "refusal_patterns" else name, dev, pred))
    print("\nfor comparison, plain leave-one-model-out (families and prompts not held out):")
    print(report_line("refusal_classifier", dev, lomo_predictions(X, dev, aux_part, params)))
    y = np.concatenate([dev[m]["y"] for m in MODELS])
    p = np.concatenate([results["refusal_classifier"][m] for m in MODELS])
    conf = np.zeros((3, 3), int)
    np.add.at(conf, (y, p), 1)
    print("held-out-styles confusion, refusal_classifier (rows gold, cols pred: compl/refusal/partial): "
          + "  ".join(" ".join(f"{c:3d}" for c in r) for r in conf))
    print(f"done in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
