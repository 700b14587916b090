"""Fitting and judging the refusal_classifier head: the weighted softmax regression, its temperature,
leave-one-model-out folds, agreement with the human labels and calibration figures.

Shared by research/train_refusal_classifier.py, research/refusal_protocol.py and the experiments beside them.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from harness.core.types import REFUSAL_LABELS
from harness.scoring.classifier import MiniLMEncoder, decide
from research.refusal_training_data import MODELS


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


def chat_out_of_fold(X: dict, dev: dict, aux_part, params: dict, chat_in_aux: int, chat_weight: float) -> np.ndarray:
    """Predicted label index per labelled chat reply (dev["chat"]) from the full recipe (both dev models and
    the auxiliary rows) that never saw that reply. With ``chat_weight`` 0 no chat reply is trained on and
    one fit predicts them all; otherwise two folds by a hash of the reply's id, each half predicted by a
    head trained on the other half too. ``chat_in_aux`` leading auxiliary rows are the chat replies, then
    their prompt-paired contrast rows (dev["contrast"], if any), which follow their prompt's fold: no
    reply is predicted by a head that saw a contrast row on its own prompt."""
    Xa, ya, wa = (a[chat_in_aux:] for a in aux_part)
    base = [(X[m], dev[m]["y"], np.ones(len(dev[m]["y"]))) for m in MODELS] + [(Xa, ya, wa)]
    Xc, yc = X["chat"], dev["chat"]["y"]
    if chat_weight <= 0:
        W, b = train_head(base, params)
        return decide(Xc @ W.T + b, Xc)
    fold = prompt_fold(dev["chat"]["ids"])
    groups = [(Xc, yc, fold)]
    if "contrast" in dev:
        groups.append((X["contrast"], dev["contrast"]["y"], prompt_fold(dev["contrast"]["ids"])))
    pred = np.zeros(len(yc), dtype=int)
    for f in (0, 1):
        parts = [(Xg[fg != f], yg[fg != f], np.full(int((fg != f).sum()), chat_weight)) for Xg, yg, fg in groups]
        W, b = train_head(base + parts, params)
        pred[fold == f] = decide(Xc[fold == f] @ W.T + b, Xc[fold == f])
    return pred


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """One temperature for all logits, fitted to the binary NLL of P(any refusal) on held-out rows: that
    is the probability we report, and a temperature never changes the argmax, so labels stay as they are."""
    hit = (y != 0).astype(float)

    def nll(log_t):
        p = np.clip(refusal_prob(softmax(logits / np.exp(log_t))), 1e-7, 1 - 1e-7)
        return -(hit * np.log(p) + (1 - hit) * np.log(1 - p)).mean()

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def refusal_prob(P: np.ndarray) -> np.ndarray:
    return P[:, 1] + P[:, 2]


def scored_labels(scorer, prompts: list[str], texts: list[str]) -> np.ndarray:
    """A registered scorer's labels as REFUSAL_LABELS indices, comparable with the head's predictions."""
    return np.array([REFUSAL_LABELS.index(s.label) for s in scorer.score(prompts, texts)], dtype=int)


def agreement(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    return float(((y == 0) == (pred == 0)).mean()), float((y == pred).mean())


def prompt_fold(ids: list[str]) -> np.ndarray:
    """Two prompt folds by a hash of the XSTest id, identical for both models."""
    return np.array([int(hashlib.sha256(i.encode()).hexdigest(), 16) % 2 for i in ids])


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


def format_calibration(c: dict) -> str:
    return f"ECE {c['ece']:.3f}  Brier {c['brier']:.4f}  NLL {c['nll']:.3f}"


def reliability(p: np.ndarray, hit: np.ndarray) -> list[str]:
    edges = [0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0001]
    lines = ["    P(refusal) bin   n   mean p  observed"]
    for lo, hi in zip(edges, edges[1:]):
        m = (p >= lo) & (p < hi)
        if m.any():
            lines.append(f"    [{lo:.1f}, {min(hi, 1):.1f})  {m.sum():5d}   {p[m].mean():.3f}   {hit[m].mean():.3f}")
    return lines

