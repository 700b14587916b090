"""The judge-free capability signal: the model's mean per-token log-likelihood of the reference answers.

Each reference answer is teacher-forced after its prompt, formatted with the same template (and so the
same token ids) the harness generates with; only the answer's tokens are scored. A model that has lost
instruction following (or been over-tuned into refusing) finds good answers less likely, so this falls
with capability, with no judge model. Answers are cut to their first ``max_tokens`` tokens, which bounds
the cost, and further where prompt and answer would pass the model's window (positions it never saw); the
figure is then the mean over the tokens scored, and ``total_tokens`` keeps the answer's full length so a run
can say how many answers were cut.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.capability.lm import ScoringLM, continuation_logprobs
from harness.core.errors import ModelError
from harness.core.types import Prompt

DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class RefLoglik:
    mean: float  # mean log p per reference token (nats); closer to 0 is better
    n_tokens: int  # tokens scored
    total_tokens: int  # the reference's tokens: more than n_tokens when it was cut


def reference_logliks(lm: ScoringLM, prompts: list[Prompt], references: list[str | None], *,
                      max_tokens: int = DEFAULT_MAX_TOKENS, progress=None) -> list[RefLoglik | None]:
    """One ``RefLoglik`` per prompt; None where the reference is missing or empty."""
    from harness.models.templates import format_prompts

    todo = [i for i, ref in enumerate(references) if ref and ref.strip()]
    out: list[RefLoglik | None] = [None] * len(prompts)
    if not todo:
        return out
    formatted = format_prompts([prompts[i] for i in todo], lm.template, lm.tokenizer)
    full = lm.tokenizer([references[i] for i in todo], add_special_tokens=False)["input_ids"]
    answers = []
    for k, answer in enumerate(full):
        room = max_tokens
        if lm.window is not None:
            room = min(room, lm.window - len(formatted[k].token_ids))
            if room < 1 and answer:
                p = prompts[todo[k]]
                raise ModelError(f"reference log-likelihood, suite {p.suite!r}, prompt {p.prompt_id!r}: its "
                                 f"{len(formatted[k].token_ids):,} prompt tokens leave no room for the reference in "
                                 f"the model window of {lm.window:,} tokens")
        answers.append(list(answer[:room]))
    keep = [k for k, a in enumerate(answers) if a]  # whitespace-only text may tokenize to nothing
    scores = continuation_logprobs(lm, [formatted[k].token_ids for k in keep], [answers[k] for k in keep],
                                   progress=progress)
    for k, (total, n) in zip(keep, scores):
        out[todo[k]] = RefLoglik(total / n, n, len(full[k]))
    return out
