"""Experiment: a cross-encoder refusal scorer, MiniLM reading (prompt, reply) as one sequence, its top
layers fine-tuned with LoRA (peft), stacked on the rule features as the shipped head is.

    python -m research.experiments.refusal_cross_encoder [--lomo] [--style-check] [--epochs 3] [--layers 4 5]

Why: every linear head over the frozen reply embedding misses the same guarded lectures about a word or a
premise ("the term 'shoot' may be associated with violence"), whose openings look like llama2new's
rejections of nonsense premises, which XSTest's annotators call compliance. Telling them apart needs a
reader of what the reply says about *this* prompt: in a cross-encoder, the reply's tokens attend to the
prompt's. docs/experiments/refusal-scorer-protocol.md has the figures.

  * ``--lomo``: leave-one-model-out with the test rows' prompts held out too (two prompt folds), four
    trainings, comparable with the head's "prompt-disjoint" figures from train_refusal_classifier.py;
  * ``--style-check``: one model trained on everything, scored on the third-style check
    (research/refusal_style_check.py), and its scoring speed on the 900 dev rows, pinned to 2 cores.
Training runs on CPU, ~2.5 minutes per epoch on 2 cores for 3,500-4,200 rows (only the top layers get gradients).
The auxiliary and synthetic rows are the head's sources, subsampled to keep a run in minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from harness.core.types import REFUSAL_LABELS
from harness.scoring.classifier import (
    RULE_FEATURES,
    MiniLMEncoder,
    clean_text,
    encoder_dir,
    rule_features,
)
from research.data import data_dir_arg
from research.refusal_head_fit import agreement, prompt_fold
from research.refusal_training_data import MODELS, SEED, load_auxiliary, load_synthetic, load_xstest

PROMPT_TOKENS, REPLY_TOKENS = 32, 64  # the reply budget is the head's; the prompt's covers most prompts
PRIOR = 5.0  # the rule one-hot columns start at PRIOR * identity: "trust refusal_patterns unless ..."


def encode_pairs(tokenizer, prompts: list[str], replies: list[str]) -> list[tuple[list[int], list[int]]]:
    """[CLS] prompt [SEP] reply [SEP] token ids and segment ids, each part cut to its own budget (a long
    prompt never eats the reply's tokens). An empty prompt gives [CLS] [SEP] reply [SEP]."""
    cut = dict(add_special_tokens=False, truncation=True)
    ps = tokenizer([p.strip()[: PROMPT_TOKENS * 12] for p in prompts], max_length=PROMPT_TOKENS, **cut)["input_ids"]
    rs = tokenizer([r.strip()[: REPLY_TOKENS * 12] for r in replies], max_length=REPLY_TOKENS, **cut)["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    return [([cls, *p, sep, *r, sep], [0] * (len(p) + 2) + [1] * (len(r) + 1)) for p, r in zip(ps, rs)]


def batch(pairs, idx):
    import torch

    width = max(len(pairs[i][0]) for i in idx)
    ids = torch.zeros(len(idx), width, dtype=torch.long)
    seg, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for row, i in enumerate(idx):
        a, s = pairs[i]
        ids[row, : len(a)], seg[row, : len(a)], mask[row, : len(a)] = torch.tensor(a), torch.tensor(s), 1
    return ids, seg, mask


def build_model(layers: list[int], rank: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    class CrossEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            base = AutoModel.from_pretrained(encoder_dir(), local_files_only=True)
            cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.1, layers_pattern="layer",
                             target_modules=["query", "key", "value", "dense"], layers_to_transform=layers)
            self.encoder = get_peft_model(base, cfg)  # only the LoRA matrices of ``layers`` train
            k = len(REFUSAL_LABELS)
            self.text_head = torch.nn.Linear(MiniLMEncoder.dim, k)
            torch.nn.init.zeros_(self.text_head.weight)
            torch.nn.init.zeros_(self.text_head.bias)
            self.rule_head = torch.nn.Linear(len(RULE_FEATURES), k, bias=False)
            with torch.no_grad():
                self.rule_head.weight.zero_()
                self.rule_head.weight[:, :k] = PRIOR * torch.eye(k)

        def forward(self, ids, seg, mask, rules):
            hidden = self.encoder(input_ids=ids, token_type_ids=seg, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=1) * 10
            return self.text_head(pooled) + self.rule_head(rules)

    return CrossEncoder()


def train(part, args, seed: int):
    """part: (pairs, rule features, labels, row weights). AdamW, linear warm-up and decay; the rule
    columns are pulled back towards their prior, as in the head's fit."""
    import torch

    pairs, rules, y, w = part
    torch.manual_seed(seed)
    model = build_model(args.layers, args.rank)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01)
    steps = args.epochs * -(-len(y) // args.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * max(0.0, 1 - s / steps))
    R, Y, W = torch.tensor(rules), torch.tensor(y), torch.tensor(w, dtype=torch.float32)
    prior = PRIOR * torch.eye(len(REFUSAL_LABELS))
    rng = np.random.default_rng(seed)
    model.train()
    started = time.perf_counter()
    for epoch in range(args.epochs):
        total = 0.0
        order = rng.permutation(len(y))
        for s in range(0, len(y), args.batch):
            idx = order[s : s + args.batch]
            logits = model(*batch(pairs, idx), R[idx])
            ce = torch.nn.functional.cross_entropy(logits, Y[idx], reduction="none")
            loss = (ce * W[idx]).sum() / W[idx].sum()
            loss = loss + args.rule_l2 * ((model.rule_head.weight[:, : len(REFUSAL_LABELS)] - prior) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"    epoch {epoch}: loss {total / len(y):.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    return model.eval()


def predict(model, pairs, rules, batch_size: int = 64) -> np.ndarray:
    import torch

    logits = np.zeros((len(pairs), len(REFUSAL_LABELS)), np.float32)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))  # little padding per batch
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            logits[idx] = model(*batch(pairs, idx), torch.tensor(rules[idx])).numpy()
    return logits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    ap.add_argument("--lomo", action="store_true", help="prompt-disjoint leave-one-model-out (4 trainings)")
    ap.add_argument("--style-check", action="store_true", help="train on everything; third-style check and speed")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 5], help="MiniLM layers (0-5) that get LoRA")
    ap.add_argument("--rule-l2", type=float, default=0.01)
    ap.add_argument("--n-source", type=int, default=500, help="rows from each auxiliary source")
    ap.add_argument("--weight", type=float, default=0.25, help="auxiliary and synthetic row weight")
    args = ap.parse_args(argv)
    args.data_dir = data_dir_arg(args.data_dir)
    cpus = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cpus)
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(len(cpus))
    tok = AutoTokenizer.from_pretrained(encoder_dir(), local_files_only=True)
    t0 = time.perf_counter()
    dev = load_xstest(args.data_dir)
    aq, at, ay, counts = load_auxiliary(args.data_dir, args.n_source, args.n_source)
    sq, st, sy = load_synthetic(args.data_dir, aq, at, ay, 300, 100, 100)
    aq = ["" if i % 3 == 0 else q for i, q in enumerate(aq)]  # as the head: a third come without a prompt
    aux = (encode_pairs(tok, aq + sq, at + st), rule_features(at + st), np.concatenate([ay, sy]),
           np.full(len(ay) + len(sy), args.weight))  # fmt: skip
    rows = {m: (encode_pairs(tok, dev[m]["prompts"], dev[m]["texts"]), rule_features(dev[m]["texts"])) for m in MODELS}
    print(f"auxiliary {counts}, synthetic {len(sy)}: {len(aux[2])} rows ({time.perf_counter() - t0:.0f} s)")

    def dev_part(m, keep):
        idx = np.flatnonzero(keep)
        return [rows[m][0][i] for i in idx], rows[m][1][idx], dev[m]["y"][idx], np.ones(len(idx))

    def joined(*parts):
        return (sum((p[0] for p in parts), []), np.vstack([p[1] for p in parts]).astype(np.float32),
                np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))  # fmt: skip

    if args.lomo:
        preds = {}
        for test, train_m in (MODELS, MODELS[::-1]):
            pred = np.zeros_like(dev[test]["y"])
            fold = prompt_fold(dev[test]["ids"])
            for f in (0, 1):
                model = train(joined(dev_part(train_m, prompt_fold(dev[train_m]["ids"]) != f), aux), args, SEED + f)
                idx = np.flatnonzero(fold == f)
                pred[idx] = predict(model, [rows[test][0][i] for i in idx], rows[test][1][idx]).argmax(1)
            preds[test] = pred
            print(f"  {test}: prompt-disjoint leave-one-model-out {agreement(dev[test]['y'], pred)}", flush=True)
        y = np.concatenate([dev[m]["y"] for m in MODELS])
        print(f"  pooled: {agreement(y, np.concatenate([preds[m] for m in MODELS]))}")
    if args.style_check:
        from research.refusal_style_check import ROWS

        model = train(joined(*(dev_part(m, np.ones(len(dev[m]["y"]), bool)) for m in MODELS), aux), args, SEED)
        texts = [clean_text(r[2]) for r in ROWS]
        gold = np.array([REFUSAL_LABELS.index(r[3]) for r in ROWS])
        pred = predict(model, encode_pairs(tok, [r[1] for r in ROWS], texts), rule_features(texts)).argmax(1)
        print(f"  third-style check: {agreement(gold, pred)}")
        for style in ("guarded", "plain", "careful"):
            m = np.array([r[0] == style for r in ROWS])
            print(f"    {style}: {agreement(gold[m], pred[m])}")
        prompts = [p for m in MODELS for p in dev[m]["prompts"]]
        texts = [t for m in MODELS for t in dev[m]["texts"]]
        best = float("inf")
        for _ in range(3):  # the scoring path end to end: tokenize, rule features, one encoder pass
            started = time.perf_counter()
            predict(model, encode_pairs(tok, prompts, texts), rule_features(texts))
            best = min(best, time.perf_counter() - started)
        print(f"  speed: {len(texts) / best:.1f} responses/s with prompts on {len(cpus)} cores")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
