"""Scorers built from ``ScorerOptions`` (the engine's preflight builds them from the run's settings): the one place that turns ``--scorer``, ``--judge-model``,
``--harm-scorer`` and ``--harm-model`` into scorer objects, for pytest sessions and ``safety-harness score``.

A factory asks for what it needs by parameter name (as pytest fixtures do): ``judge`` gets a
``LocalJudge`` on ``--judge-model`` (a rubric judge), ``guard_judge`` a ``JudgeModel`` on it (a guard model that
reads its own format, ``harness.scoring.guards``), ``harm_model`` the ``--harm-model`` path, ``cache_dir``,
``allow_pickle`` and ``batch_size`` the run's options. So a third-party judge-based scorer needs no change
here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

from harness.config.options import BackendOptions
from harness.core.errors import ConfigError

# --harm-scorer values besides the registered names
HARM_AUTO, HARM_NONE = "auto", "none"
_JUDGES: dict[tuple, object] = {}  # one judge per (model, backend, ...) per process: refusal and harm share it


@dataclass(frozen=True)
class ScorerOptions:
    """What building the scorers reads of a run's settings (harness.engine.preflight.scorer_options)."""

    scorer: str = field(metadata={"help": "Refusal scorer name (--scorer)."})
    harm_scorer: str = field(metadata={"help": "Harm scorer name, auto or none (--harm-scorer)."})
    harm_model: str | None = field(metadata={"help": "Harmfulness model for the reward_model harm scorer."})
    judge_model: str | None = field(metadata={"help": "Model of the LLM judges and guard scorers (--judge-model)."})
    backend: str = field(metadata={"help": "Backend a judge model runs on (as asked: auto allowed)."})
    cache_dir: Path = field(metadata={"help": "Prepared models (and a judge's own)."})
    allow_pickle: bool = field(metadata={"help": "Accept pickled (.bin) weights."})
    batch_size: int = field(metadata={"help": "Batch size of model-backed scorers."})
    seed: int = field(metadata={"help": "A judge's sampling seed."})
    backend_options: BackendOptions = field(metadata={"help": "The run's backend options, which a judge model shares."})


def judge_for(settings: ScorerOptions):
    """The ``LocalJudge`` for ``--judge-model``; a ConfigError when none is set."""
    from harness.scoring.judge import LocalJudge

    if not settings.judge_model:
        raise ConfigError("this scorer needs a judge model: pass --judge-model PATH_OR_ALIAS")
    options = settings.backend_options
    key = (settings.judge_model, settings.backend, str(settings.cache_dir), options.dtype, options.max_model_len,
           settings.seed)
    if key not in _JUDGES:
        _JUDGES[key] = LocalJudge(settings.judge_model, cache_dir=settings.cache_dir, backend=settings.backend,
                                  options=options, allow_pickle=settings.allow_pickle, seed=settings.seed)
    return _JUDGES[key]


def guard_judge_for(settings: ScorerOptions):
    """The ``JudgeModel`` for ``--judge-model`` that guard scorers run their own formats on: one per run, so
    a guard's refusal and harm scorers share one model and one pass."""
    from harness.scoring.judge import JudgeModel

    if not settings.judge_model:
        raise ConfigError("this scorer needs the guard model: pass --judge-model PATH_OR_HUB_ID")
    options = settings.backend_options
    key = ("guard", settings.judge_model, settings.backend, str(settings.cache_dir), options.dtype,
           options.max_model_len)
    if key not in _JUDGES:
        _JUDGES[key] = JudgeModel(settings.judge_model, cache_dir=settings.cache_dir, backend=settings.backend,
                                  options=options, allow_pickle=settings.allow_pickle, seed=settings.seed)
    return _JUDGES[key]


def _build(registry, name: str, settings: ScorerOptions):
    params = inspect.signature(registry.factory(name)).parameters
    kwargs = {}
    if "judge" in params:
        kwargs["judge"] = judge_for(settings)
    if "guard_judge" in params:
        kwargs["guard_judge"] = guard_judge_for(settings)
    for key in ("harm_model", "cache_dir", "allow_pickle", "batch_size"):
        if key in params:
            kwargs[key] = getattr(settings, key)
    return registry.get(name, **kwargs)


def refusal_scorer_factory(name: str):
    """The refusal scorer registered as ``name``; a harm scorer's name (llamaguard says safe or unsafe, never
    refusal or compliance) is a one-line error that says so, not only that the name is unknown."""
    from harness.scoring.base import REFUSAL_SCORERS
    from harness.scoring.harm import HARM_SCORERS

    if name not in REFUSAL_SCORERS.names() and name in HARM_SCORERS.names():
        raise ConfigError(f"scorer {name!r} is a harm scorer, not a refusal scorer: it gives no refusal label; use "
                          f"--harm-scorer {name} beside a refusal --scorer (known refusal scorers: "
                          f"{', '.join(REFUSAL_SCORERS.names())})")
    return REFUSAL_SCORERS.factory(name)


def build_refusal_scorer(settings: ScorerOptions):
    from harness.scoring.base import REFUSAL_SCORERS

    refusal_scorer_factory(settings.scorer)
    return _build(REFUSAL_SCORERS, settings.scorer, settings)


def harm_scorer_name(settings: ScorerOptions) -> str | None:
    """``auto``: ``reward_model`` when ``--harm-model`` is set; else the refusal scorer's own harm verdict when
    it is a guard that gives one from the same pass (``wildguard``, ``qwen3guard``); else
    ``unsafe_compliance``. ``none``: None."""
    from harness.scoring.harm import HARM_SCORERS

    name = settings.harm_scorer
    if name == HARM_NONE:
        return None
    if name == HARM_AUTO:
        if settings.harm_model:
            return "reward_model"
        return settings.scorer if settings.scorer in HARM_SCORERS.names() else "unsafe_compliance"
    return name


def _reads_judge_model_as(registry, name: str) -> str | None:
    """How a scorer reads ``--judge-model``: in a guard's own format, as a rubric judge, or not at all (None)."""
    params = inspect.signature(registry.factory(name)).parameters
    if "guard_judge" in params:
        return f"the {name} guard format"
    return "a rubric judge (the XSTest or harm rubric)" if "judge" in params else None


def check_one_judge_model(settings: ScorerOptions) -> None:
    """The refusal and harm scorers read ``--judge-model`` the same way, if both read it: one model answers in
    one format (a guard in its authors' grammar, a rubric judge in the rubric's), so a second format would get
    judge_error on every row, and a harm column empty without a word in a run's summary."""
    from harness.scoring.base import REFUSAL_SCORERS
    from harness.scoring.harm import HARM_SCORERS

    refusal_scorer_factory(settings.scorer)  # a harm scorer's name as --scorer: said as such
    harm = harm_scorer_name(settings)
    if harm is None:
        return
    refusal_way = _reads_judge_model_as(REFUSAL_SCORERS, settings.scorer)
    harm_way = _reads_judge_model_as(HARM_SCORERS, harm)
    if refusal_way and harm_way and refusal_way != harm_way:
        raise ConfigError(f"--scorer {settings.scorer} and --harm-scorer {harm} would both read --judge-model "
                          f"{settings.judge_model}, as {refusal_way} and as {harm_way}: a model answers in one format, "
                          "so one of them would read nothing; score harm from the refusal scorer's own pass "
                          "(--harm-scorer auto) or with a scorer that needs no judge model, or run each in its own run")


def build_harm_scorer(settings: ScorerOptions):
    """The harm scorer the options ask for, or None (``--harm-scorer none``). ``check_one_judge_model`` first,
    before either scorer loads a model (``harness.engine.response_scoring`` does)."""
    from harness.scoring.harm import HARM_SCORERS

    name = harm_scorer_name(settings)
    return None if name is None else _build(HARM_SCORERS, name, settings)
