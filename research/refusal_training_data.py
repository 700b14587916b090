"""Training data for the refusal_classifier head: the labelled XSTest dev rows, a guarded chat model's
replies labelled for this project, the weakly labelled auxiliary rows, the synthetic rows, and their
features as the scorer computes them.

Shared by research/train_refusal_classifier.py (which trains and writes the head), research/refusal_protocol.py
(the held-out-styles protocol) and the experiments beside them, so that every figure describes one recipe.
Data is read from the data dir and never copied into the repo; see train_refusal_classifier.py's doc for
what each source contributes and why.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from harness.core.types import REFUSAL_LABELS
from harness.scoring.classifier import MiniLMEncoder, clean_text, rule_features
from harness.scoring.refusal import classify
from research.data import LABELS
from research.xstest_dev import load_labeled

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
# "I cannot fulfill this request." compliance (docs/experiments/refusal-scorer-protocol.md). The labelled
# chat replies (below) at weight 2: their own cross-fitted agreement goes 0.884 / 0.860 (not trained on)
# -> 0.916 / 0.899 with the dev folds unchanged; weight 4 gives 0.916 / 0.901.
# The encoder is read after its third layer, on the opening 48 tokens: held-out styles (research/
# refusal_protocol.py) 0.963 / 0.912 against 0.958 / 0.910 for all six layers on 64 tokens, at 3/8 of the
# encoder's arithmetic, which is what lets `safety-harness score` pass 100 replies/s on two cores. Seven
# (layers, tokens) pairs were run through the protocol: (6, 64) 0.958 / 0.910, (6, 48) 0.956 / 0.907,
# (4, 64) 0.962 / 0.918, (4, 48) 0.956 / 0.909, (4, 40) 0.952 / 0.904, (3, 64) 0.958 / 0.910, (3, 48)
# 0.963 / 0.912: within about four rows of 900 of each other, so the cheapest that loses nothing was taken.
DEFAULTS = {"max_tokens": 48, "l2_emb": 30.0, "l2_rule": 10.0, "prior": 5.0, "aux_weight": 0.25,
            "n_stl": 1200, "n_alpaca": 1200, "n_implicit": 800, "n_clarify": 300, "n_guarded": 300,
            "synth_weight": 0.25, "chat_weight": 2.0, "encoder_layers": 3}

# A guarded chat model's own replies: Llama-2-13b-chat on AlpacaEval's 805 instructions (the upstream file
# the capability judge also reads), labelled for this project by the XSTest rubric, one line per reply, by
# index and a hash of its instruction (research/labels/README.md). The text stays upstream.
CHAT_FILE = "alpaca_eval/dev_annotations/llama-2-13b-chat-hf.json"
CHAT_LABELS = LABELS / "llama2_13b_chat_alpaca_eval.csv"


def load_xstest(data_dir: Path) -> dict[str, dict]:
    out = {}
    for model in MODELS:
        path = data_dir / "xstest" / "dev" / f"xstest_v2_completions_{model}_labeled.csv"
        d = load_labeled(path)
        out[model] = {"ids": d.ids, "texts": [clean_text(c) for c in d.completions],
                      "prompts": [clean_text(p) for p in d.prompts],
                      "y": np.array([REFUSAL_LABELS.index(g) for g in d.gold])}  # fmt: skip
    return out


def load_chat_labelled(data_dir: Path, labels: Path = CHAT_LABELS, data_file: str = CHAT_FILE) -> dict:
    """Labelled AlpacaEval replies (``output_2`` of ``data_file``; by default the guarded chat model's) as
    {"ids", "prompts", "texts", "y"}, in the labels file's order. A label line whose instruction hash does
    not match the data file (another upstream version) stops the run."""
    source = data_dir / data_file
    try:
        rows = json.loads(source.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise SystemExit(f"{source}: cannot read the chat replies ({e}); fetch it: safety-harness data fetch")
    out = {"ids": [], "prompts": [], "texts": [], "y": []}
    with labels.open(newline="", encoding="utf-8") as fh:
        for line, rec in enumerate(csv.DictReader(fh), start=2):
            try:
                row = rows[int(rec["index"])]
                label = REFUSAL_LABELS.index(rec["label"])
            except (KeyError, ValueError, IndexError, TypeError):
                raise SystemExit(f"{labels}:{line}: bad index or label {rec.get('index')!r} {rec.get('label')!r}")
            if hashlib.sha256(row["instruction"].encode()).hexdigest()[:16] != rec["instruction_sha256"]:
                raise SystemExit(f"{labels}:{line}: instruction hash differs from {source} row {rec['index']}")
            out["ids"].append(f"alpaca_eval:{int(rec['index'])}")
            out["prompts"].append(clean_text(row["instruction"]))
            out["texts"].append(clean_text(row["output_2"]))
            out["y"].append(label)
    out["y"] = np.array(out["y"], dtype=int)
    return out


# AlpacaEval's reference answers to the same 805 instructions (the capability suite's references).
REFERENCE_FILES = ("alpaca_eval/text_davinci_003_outputs.json", "alpaca_eval/gpt4_1106_preview_outputs.json")


def load_chat_contrast(data_dir: Path, chat: dict) -> dict:
    """For each instruction the chat model refused (fully or partly), AlpacaEval's reference answers to it
    that the rule scorer calls plain compliance, as compliance rows with the chat reply's id. Without them
    the head learns the refused instructions' topics as refusal evidence: replies of other models that
    simply answered those instructions ("Here is a recipe for ...") came out as refusals. An experiment
    (train_refusal_classifier.py --chat-contrast), not the shipped recipe: it moved every check by under a
    point (docs/experiments/refusal-scorer-protocol.md)."""
    out = {"ids": [], "texts": [], "y": []}
    refused = [(i, p) for i, p, y in zip(chat["ids"], chat["prompts"], chat["y"]) if y != 0]
    for name in REFERENCE_FILES:
        rows = json.loads((data_dir / name).read_text("utf-8"))
        for rid, prompt in refused:
            row = rows[int(rid.split(":")[1])]
            text = clean_text(row.get("output")).strip()
            if clean_text(row.get("instruction")) == prompt and text and classify(text).label == "full_compliance":
                out["ids"].append(rid)
                out["texts"].append(text)
    out["y"] = np.zeros(len(out["ids"]), dtype=int)
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
                   n_implicit: int, n_clarify: int, n_guarded: int = 0,
                   n_premise: int = 0) -> tuple[list[str], list[str], np.ndarray]:
    """Implicit refusals over the paper's harmful prompts, clarification requests over any prompt, and the
    guarded house style (refusals, counter-statements, partials and warm answers over Alpaca answers;
    research/refusal_synthetic.py); labels as REFUSAL_LABELS indices. No XSTest prompt is used."""
    from research.refusal_synthetic import synthetic_rows

    ev = data_dir / "stl" / "evaluation"
    harmful = []
    for name in ("I-MaliciousInstructions", "Q-Harm", "I-PhysicalSafetyUnsafe", "I-CoNa", "I-Controversial"):
        harmful += json.loads((ev / f"{name}.json").read_text("utf-8"))["instructions"]
    harmful += [q for q, y in zip(aux_prompts, aux_y) if y == 1 and q]  # the demonstrations' own instructions
    any_prompts = sorted({q for q in aux_prompts if q})
    answers = sorted({t for t, y in zip(aux_texts, aux_y) if y == 0 and len(t) > 120})
    answered = sorted({(q, t) for q, t, y in zip(aux_prompts, aux_texts, aux_y) if y == 0 and q and len(t) > 120})
    prompts, texts, labels = synthetic_rows(sorted(set(harmful)), any_prompts, answers, n_implicit, n_clarify,
                                            SEED + 2, n_guarded=n_guarded, answered=answered, n_premise=n_premise)
    return prompts, [clean_text(t) for t in texts], np.array([REFUSAL_LABELS.index(lab) for lab in labels])


class FeatureCache:
    """Embeds each distinct text once per run (and, with --cache, across runs)."""

    def __init__(self, encoder: MiniLMEncoder, cache_dir: Path | None):
        self.encoder, self.cache_dir, self.memo = encoder, cache_dir, {}

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.memo})
        if missing:
            # The depth joins the key only when it is not all six layers: caches written before the setting
            # existed (six layers) keep their keys.
            depth = f"|{self.encoder.layers}" if self.encoder.layers != 6 else ""
            key = hashlib.sha256(("\0".join(missing) + f"|{self.encoder.max_tokens}{depth}").encode()).hexdigest()[:16]
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

    def __call__(self, texts: list[str]) -> np.ndarray:
        """[reply embedding | rule features], as the scorer computes them."""
        return np.hstack([self.embed(texts), rule_features(texts)])


def build_features(args) -> tuple[dict, dict, tuple, dict]:
    """Dev rows, their features per model, and the auxiliary training part (features, labels, row weights).
    ``dev`` and ``X`` also hold the labelled chat replies under "chat" (not a dev model: no fold loop runs
    over it). The auxiliary part is, in this order: the chat replies at ``chat_weight`` (if above 0; the
    first ``counts["chat_in_aux"]`` rows), weak labels from the demonstrations and Alpaca at
    ``aux_weight``, synthetic rows at ``synth_weight`` (last)."""
    dev = load_xstest(args.data_dir)
    dev["chat"] = load_chat_labelled(args.data_dir)
    aux_prompts, aux_texts, aux_y, counts = load_auxiliary(args.data_dir, args.n_stl, args.n_alpaca)
    feats = FeatureCache(MiniLMEncoder(max_tokens=args.max_tokens, layers=args.encoder_layers), args.cache)
    X = {m: feats(dev[m]["texts"]) for m in (*MODELS, "chat")}
    X_aux = feats(aux_texts)
    w_aux = np.full(len(aux_y), args.aux_weight)
    n_premise = getattr(args, "n_premise", 0)
    if args.n_implicit or args.n_clarify or args.n_guarded or n_premise:  # embedded apart: the rest's cache is reused
        _, s_texts, s_y = load_synthetic(args.data_dir, aux_prompts, aux_texts, aux_y,
                                         args.n_implicit, args.n_clarify, args.n_guarded, n_premise)
        X_aux = np.vstack([X_aux, feats(s_texts)])
        aux_y = np.concatenate([aux_y, s_y])
        w_aux = np.concatenate([w_aux, np.full(len(s_y), args.synth_weight)])
        counts.update(synthetic_implicit_refusal=args.n_implicit, synthetic_clarification=args.n_clarify,
                      synthetic_guarded=len(s_y) - args.n_implicit - args.n_clarify - n_premise - n_premise // 2)
        if n_premise:
            counts["synthetic_premise"] = n_premise + n_premise // 2
    counts["chat_in_aux"] = len(dev["chat"]["y"]) if args.chat_weight > 0 else 0
    if counts["chat_in_aux"]:
        head_X, head_y = [X["chat"]], [dev["chat"]["y"]]
        if getattr(args, "chat_contrast", False):  # an experiment, not the recipe (see load_chat_contrast)
            dev["contrast"] = load_chat_contrast(args.data_dir, dev["chat"])
            X["contrast"] = feats(dev["contrast"]["texts"])
            head_X.append(X["contrast"])
            head_y.append(dev["contrast"]["y"])
            counts["chat_contrast"] = len(dev["contrast"]["y"])
            counts["chat_in_aux"] += counts["chat_contrast"]
        X_aux = np.vstack([*head_X, X_aux])
        aux_y = np.concatenate([*head_y, aux_y])
        w_aux = np.concatenate([np.full(counts["chat_in_aux"], args.chat_weight), w_aux])
    return dev, X, (X_aux, aux_y, w_aux), counts

