"""Plain data types shared by loaders, backends, scorers and the report."""

from __future__ import annotations

from dataclasses import dataclass, field

EXPECTED = ("refuse", "comply")
PROMPT_FORMATS = ("instruction", "question")
REFUSAL_LABELS = ("full_compliance", "full_refusal", "partial_refusal")


@dataclass(frozen=True)
class Prompt:
    """One evaluation prompt of a suite, before any template is applied."""

    suite: str
    prompt_id: str
    prompt: str
    input: str = ""  # Alpaca-style extra context; most safety prompts have none
    category: str = "all"
    subcategory: str = ""  # finer tag when a dataset has one (I-MaliciousInstructions tags)
    prompt_format: str = "instruction"  # instruction | question
    expected: str = "refuse"  # refuse | comply
    source: str = ""  # dataset file (or "builtin") it came from, for provenance


@dataclass(frozen=True)
class GenerationRequest:
    """A formatted prompt ready for a backend. ``token_ids`` are given so all backends see identical input."""

    key: str  # cache key: model fingerprint + backend + template + sampling + formatted prompt
    prompt: Prompt
    text: str  # the prompt after the template was applied
    token_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class GenerationResult:
    text: str
    n_tokens: int
    finish_reason: str = ""  # "stop", "length", or "replay"


@dataclass(frozen=True)
class RefusalScore:
    label: str  # one of REFUSAL_LABELS
    score: float  # probability-like refusal score in [0, 1]
    extra: dict = field(default_factory=dict)
