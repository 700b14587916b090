"""The judge-free capability signal: the model's mean per-token log-likelihood of the reference answers.

Each reference answer is teacher-forced after its prompt, formatted with the same template (and so the
same token ids) the harness generates with; only the answer's tokens are scored. A model that has lost
instruction following (or been over-tuned into refusing) finds good answers less likely, so this falls
with capability, with no judge model. Answers are cut to their first ``max_tokens`` tokens, which bounds
the cost; the figure is then the mean over those tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.capability.lm import ScoringLM, continuation_logprobs
from harness.core.types import Prompt

DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class RefLoglik:
    mean: float  # mean log p per reference token (nats); closer to 0 is better
    n_tokens: int


def reference_logliks(lm: ScoringLM, prompts: list[Prompt], references: list[str | None], *,
                      max_tokens: int = DEFAULT_MAX_TOKENS, progress=None) -> list[RefLoglik | None]:
    """One ``RefLoglik`` per prompt; None where the reference is missing or empty."""
    from harness.models.templates import format_prompts

    todo = [i for i, ref in enumerate(references) if ref and ref.strip()]
    out: list[RefLoglik | None] = [None] * len(prompts)
    if not todo:
        return out
    formatted = format_prompts([prompts[i] for i in todo], lm.template, lm.tokenizer)
    answers = lm.tokenizer([references[i] for i in todo], add_special_tokens=False)["input_ids"]
    answers = [list(a[:max_tokens]) for a in answers]
    keep = [k for k, a in enumerate(answers) if a]  # whitespace-only text may tokenize to nothing
    scores = continuation_logprobs(lm, [formatted[k].token_ids for k in keep], [answers[k] for k in keep],
                                   progress=progress)
    for k, (total, n) in zip(keep, scores):
        out[todo[k]] = RefLoglik(total / n, n)
    return out
