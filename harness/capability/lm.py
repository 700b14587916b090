"""Batched transformers forward passes for capability scoring: the log-probability of a continuation
given a context (teacher forcing) and the log-probabilities of a few candidate next tokens.

Rows are left-padded with explicit position ids, so every row's last token sits in the last column;
``logits_to_keep`` then asks the model for the logits of the final columns only, which keeps the
(batch x positions x vocabulary) logits tensor small. Batches are formed from rows sorted by length
under a token budget, lm-evaluation-harness style.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import ModelError


@dataclass
class ScoringLM:
    """A causal LM loaded for forward passes, with the identity the report records."""

    net: object
    tokenizer: object
    template: str  # the prompt template this model's prompts are formatted with
    name: str
    fingerprint: str
    device: str = "cpu"
    window: int | None = None  # the model's longest sequence (harness.engine.prompt_window), None when unknown


def load_scoring_lm(spec: str, *, cache_dir: Path, template: str = "auto", base_model: str | None = None,
                    allow_pickle: bool = False, dtype: str = "auto", resolved=None) -> ScoringLM:
    """Resolve ``spec`` (alias, HF folder or LoRA adapter) with the harness's own model code and load it
    with the hf backend's loader (adapter and dtype handling included). Pass ``resolved`` to reuse a
    model the run already resolved."""
    from harness.backends.base import BackendOptions, SamplingConfig
    from harness.backends.hf import HFBackend
    from harness.models.window import model_window
    from harness.models.resolve import load_tokenizer, resolve_model
    from harness.models.templates import resolve_template

    model = resolved or resolve_model(spec, base_model=base_model, cache_dir=cache_dir, allow_pickle=allow_pickle)
    tokenizer = load_tokenizer(model)
    template = resolve_template(template, tokenizer=tokenizer, saved=model.template)
    backend = HFBackend(model=model, sampling=SamplingConfig(), options=BackendOptions(dtype=dtype))
    return ScoringLM(backend.net, tokenizer, template, spec, model.fingerprint, backend.device,
                     model_window(model.path))


# Tokens per forward pass (rows x widest row). On a CPU one sequence of a few hundred tokens already keeps
# the matrix units busy, so big batches buy nothing and their padding costs time (measured here: all 16
# references of 57-208 tokens in one batch took 2.4x as long as one per pass); a small budget still
# groups short rows of similar length. A GPU needs big batches to be busy.
CPU_TOKEN_BUDGET = 512
GPU_TOKEN_BUDGET = 8192


def default_token_budget(lm: ScoringLM) -> int:
    return GPU_TOKEN_BUDGET if lm.device == "cuda" else CPU_TOKEN_BUDGET


def _batches(lengths: list[int], tails: list[int], token_budget: int, logit_budget: int) -> list[list[int]]:
    """Indices grouped so that rows x widest row <= token_budget and rows x widest tail <= logit_budget."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], tails[i]))
    batches, current, width, tail = [], [], 0, 0
    for i in order:
        w, t = max(width, lengths[i]), max(tail, tails[i])
        if current and ((len(current) + 1) * w > token_budget or (len(current) + 1) * t > logit_budget):
            batches.append(current)
            current, w, t = [], lengths[i], tails[i]
        current.append(i)
        width, tail = w, t
    if current:
        batches.append(current)
    return batches


def _forward_tail(lm: ScoringLM, rows: list[list[int]], keep: int, *, normalize: bool = True):
    """Log-softmax over the vocabulary of the last ``keep`` positions of each left-padded row (float32); with
    ``normalize=False`` the logits themselves, in the model's precision, for callers that pick a few."""
    import torch

    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    args = dict(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), position_ids=positions.to(lm.device))
    with torch.inference_mode():
        try:
            logits = lm.net(**args, logits_to_keep=keep).logits
        except TypeError:  # an older or custom model without logits_to_keep: slice the full logits
            logits = lm.net(**args).logits
        logits = logits[:, -keep:, :]
        return torch.log_softmax(logits.float(), dim=-1).cpu() if normalize else logits


def continuation_logprobs(lm: ScoringLM, contexts: list[list[int]], continuations: list[list[int]], *,
                          token_budget: int | None = None, logit_budget: int | None = None,
                          progress=None) -> list[tuple[float, int]]:
    """(sum of log p(token | everything before it), number of tokens) of each continuation after its
    context, teacher-forced; continuations must be non-empty."""
    import torch

    if len(contexts) != len(continuations):
        raise ValueError("contexts and continuations differ in length")
    if any(not c for c in continuations):
        raise ModelError("continuation_logprobs: an empty continuation has no tokens to score")
    token_budget = token_budget or default_token_budget(lm)
    logit_budget = logit_budget or token_budget // 2  # bounds the (rows x kept positions x vocabulary) logits
    rows = [list(a) + list(b) for a, b in zip(contexts, continuations)]
    tails = [len(c) + 1 for c in continuations]
    out: list[tuple[float, int] | None] = [None] * len(rows)
    for batch in _batches([len(r) for r in rows], tails, token_budget, logit_budget):
        keep = max(tails[i] for i in batch)
        logits = _forward_tail(lm, [rows[i] for i in batch], keep, normalize=False)
        for j, i in enumerate(batch):
            cont = continuations[i]
            n = len(cont)
            # Kept column k holds the prediction for the token after it; the continuation's first token
            # is predicted by the column just before it. log p = logit - logsumexp(logits), in float32, on
            # this row's n positions only: no (rows x positions x vocabulary) log-softmax is written out.
            row = logits[j, keep - n - 1: keep - 1, :].float()
            picked = row.gather(-1, _tensor(cont).to(row.device).unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, dim=-1)
            out[i] = (float(picked.sum()), n)
        if progress:
            progress(len(batch))
    return out  # type: ignore[return-value]


def next_token_logprobs(lm: ScoringLM, contexts: list[list[int]], candidates: list[int], *,
                        token_budget: int | None = None, progress=None) -> list[list[float]]:
    """log p(candidate | context) for each context and each candidate token id."""
    token_budget = token_budget or default_token_budget(lm)
    out: list[list[float] | None] = [None] * len(contexts)
    for batch in _batches([len(c) for c in contexts], [1] * len(contexts), token_budget, token_budget):
        logprobs = _forward_tail(lm, [list(contexts[i]) for i in batch], 1)
        chosen = logprobs[:, 0, :][:, _tensor(candidates)]
        for j, i in enumerate(batch):
            out[i] = [float(x) for x in chosen[j]]
        if progress:
            progress(len(batch))
    return out  # type: ignore[return-value]


def _tensor(ids):
    import torch

    return torch.tensor(list(ids), dtype=torch.long)
