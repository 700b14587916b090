"""Plain data types shared by loaders, backends, scorers and the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

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


def _fact(meaning: str, default=None):
    """A ModelInfo field: its meaning is what docs/reference/report-metadata.md says of ``model.NAME``."""
    return field(default=default, metadata={"help": meaning})


@dataclass(frozen=True)
class ModelInfo:
    """What a run generated and scored with, as facts a report can hold (JSON), under ``model`` in the run
    metadata. The live model object that produced them is kept apart (``HarnessSession.resolved_model``).

    Frozen: a fact learnt later makes a new record (``dataclasses.replace``); the session changes its record
    in one place (``HarnessSession._record_model``), and an xdist worker's facts join through ``merged``."""

    # A copy for the report: the model as the run named it comes from ``RunSettings.model`` (the source), set
    # here once the backend is known (the replay file, for the replay backend).
    model: str | None = _fact("The model as the run named it: an alias, a folder, or the replay file.")
    model_fingerprint: str | None = _fact("Content hash of the weights (of the replay file for replay; the backend's "
                                          "name for dummy).")
    backend: str | None = _fact("The backend that generated (`auto` resolved).")
    template: str | None = _fact("The prompt template applied (`raw` for model-free backends).")
    dtype: str | None = _fact("The precision generation ran in (`auto` resolved); part of `run_key`. Absent for "
                              "replay and dummy.")
    run_key: str | None = _fact("Hash of everything a generation depends on besides the prompt (the cache key's "
                                "first half).")
    scorer: str | None = _fact("The refusal scorer that labelled the responses.")
    scorer_version: str | None = _fact("Its version (a changed scorer makes the baseline gate refuse the pair).")
    scorer_unseen_agreement: dict | None = _fact(
        "The scorer's validated agreement with human labels on unseen models (`binary`, `three_class`, `protocol`).")
    scorer_error_rates: dict | None = _fact(
        "The scorer error rates the corrected rates used: counts, method and `source` (shipped, transport, or "
        "the `--error-rates` file).")
    harm_scorer: str | None = _fact("The harm scorer (absent with `--harm-scorer none`).")
    harm_scorer_version: str | None = _fact("Its version.")
    judge_errors: int = _fact("Responses the judge could not classify, each counted as a failure.", 0)

    def as_dict(self) -> dict:
        """The facts that are known (unset ones left out), as the report metadata records them."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, facts: dict) -> "ModelInfo":
        """The record of a report's ``model`` metadata (``as_dict`` read back); an unknown key is a ValueError."""
        unknown = sorted(set(facts) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"model metadata has unknown key(s): {', '.join(unknown)}")
        return cls(**facts)

    def merged(self, facts: dict) -> "ModelInfo":
        """A new record with the known facts of another process's ``as_dict`` (pytest-xdist workers) taken over."""
        names = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in facts.items() if k in names and v is not None})
