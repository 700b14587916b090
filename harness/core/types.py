"""Plain data types shared by loaders, backends, scorers and the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

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


@dataclass
class ModelInfo:
    """What a run generated and scored with, as facts a report can hold (JSON). The live model object that
    produced them is kept apart (``HarnessSession.resolved_model``)."""

    model: str | None = None  # as the user named it: alias, folder or replay file
    model_fingerprint: str | None = None  # content hash of the weights (or of the replay file)
    backend: str | None = None
    template: str | None = None
    dtype: str | None = None  # the precision generation ran in ("auto" resolved); part of run_key
    run_key: str | None = None  # hash of everything a generation depends on besides the prompt
    scorer: str | None = None
    scorer_version: str | None = None
    # the scorer's validated agreement with human labels on unseen models ({"binary", "three_class", "protocol"})
    scorer_unseen_agreement: dict | None = None
    # the scorer error rates the corrected rates used: counts, method and source (shipped, or the user's file)
    scorer_error_rates: dict | None = None
    harm_scorer: str | None = None
    harm_scorer_version: str | None = None
    judge_errors: int = 0  # responses the judge could not classify, each counted as a failure

    def as_dict(self) -> dict:
        """The facts that are known (unset ones left out), as the report metadata records them."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def update_from(self, facts: dict) -> None:
        """Take the known facts of another process's ``as_dict`` (pytest-xdist workers)."""
        names = {f.name for f in fields(self)}
        for key, value in facts.items():
            if key in names and value is not None:
                setattr(self, key, value)
