"""Preflight: a run's settings (parsed and checked field by field in ``harness.config``) turned into a
checked run plan, before any model loads.

Here the settings meet the packages they speak of: the user's own suites are registered with the suite
registry, the checks that need another package run (the backend's decoding, the parallel settings, the
replica pool, the capability judge, a user's error-rates file, batch invariance), and each part of the run
gets its own options object (``SamplingConfig``, ``BackendOptions``, ``ParallelOptions``, ``ScorerOptions``),
so no backend or scorer factory reads ``RunSettings``. Each failed check is one ``ConfigError`` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from harness.backends.base import resolve_backend_name
from harness.config.options import BackendOptions, ParallelOptions, SamplingConfig
from harness.config.settings import RunSettings, UserSuite
from harness.core.errors import ConfigError
from harness.scoring.factory import ScorerOptions


@dataclass(frozen=True)
class RunPlan:
    """The checked settings and the options each part of the run receives."""

    settings: RunSettings = field(metadata={"help": "The settings, parallel ones adopted from backend_args."})
    sampling: SamplingConfig = field(metadata={"help": "Decoding: the backends' and the cache key's."})
    backend_options: BackendOptions = field(metadata={"help": "What the generation backend is built with."})
    parallel: ParallelOptions = field(metadata={"help": "vLLM's parallel settings and the replica pool's."})
    output_backend_args: dict = field(metadata={"help": "Backend settings that can change responses (cache key)."})
    ignored_backend_args: tuple = field(metadata={
        "help": "backend_args keys the chosen backend does not read (warned)."})
    scorer_options: ScorerOptions = field(metadata={"help": "What the refusal and harm scorers are built with."})


def preflight(settings: RunSettings) -> RunPlan:
    """Register the user's suites, run the checks across packages (in the order a run meets them) and build
    the run's options. Raises ConfigError (one line) for settings no run could use."""
    from harness.backends import vllm_settings
    from harness.backends.replicas import validate_replicas
    from harness.capability.judges import check_capability_options

    check_backend_name(settings)
    for suite in settings.user_suites:
        register_user_suite(suite)
    check_threshold_targets(settings)
    check_gate_targets(settings)
    check_statistic_thresholds(settings)
    if resolve_backend_name(settings.backend) == "vllm":
        vllm_settings.check_sampling(settings.sampling)  # e.g. an early stop vLLM's beam search lacks
    check_capability_options(settings.capability_judge, settings.ref_loglik_max_tokens)  # before any generation
    check_capability_reference(settings.capability_reference)
    if resolve_backend_name(settings.backend) == "dummy":
        check_refuse_words(settings.backend_args.get("refuse_words", []))
    if settings.error_rates is not None:  # a file the user named must hold this scorer's rates, before any generation
        from harness.scoring.error_rates import check_user_file

        check_user_file(settings.error_rates, settings.scorer)
    if settings.labels is not None and settings.labels.is_dir():  # else read as "no store yet": labels silently unused
        raise ConfigError(f"labels {settings.labels} is a folder; name the label store's SQLite file (safety-harness "
                          "review creates it)")
    parallel = vllm_settings.normalize_parallel(parallel_options(settings), settings.backend_args, settings.backend)
    settings = replace(settings, **{name: getattr(parallel, name) for name in vllm_settings.PARALLEL_FIELDS})
    if settings.batch_invariant:  # a platform without it: one line, before any model loads
        vllm_settings.check_batch_invariant(resolve_backend_name(settings.backend))
    validate_replicas(parallel, settings.backend)  # Ray missing or a bad count: one line, before any model loads
    return RunPlan(settings, settings.sampling, backend_options(settings), parallel,
                   output_backend_args(settings), ignored_backend_args(settings), scorer_options(settings))


def register_user_suite(suite: UserSuite) -> None:
    """Add a TOML-declared suite to the suite registry; its loader reads the file when the suite is loaded."""
    from harness.data.suites import SuiteSpec, add_suite

    def load(data_dir, file=suite.file, name=suite.name, expected=suite.expected, column=suite.prompt_column):
        from harness.core.errors import DataError
        from harness.data.loaders import load_prompt_file

        if not file.is_file():  # name the TOML table that points at it, not the bare relative path
            raise DataError(f"{suite.where}: path {file} {'is a folder' if file.is_dir() else 'not found'}")
        return load_prompt_file(file, suite=name, expected=expected, prompt_column=column)

    # No thresholds of its own here: its table's thresholds come through settings.thresholds[name], and each
    # kind of row it holds (whatever its `expected` column says) that none covers is checked against the
    # default bound for that kind, marked as a default in the summary (harness.config.thresholds).
    try:
        add_suite(SuiteSpec(suite.name, suite.description, load, {}, builtin=False))
    except ConfigError as exc:  # e.g. a built-in suite's name: say which file declared it
        raise ConfigError(f"{suite.where}: {exc}") from None


def check_backend_name(settings: RunSettings) -> None:
    """A backend named in TOML (the command line's --backend has argparse's choices) is a registered one, before
    any model loads: else the run loaded the data and the model first, and the line named no file."""
    from harness.backends import available_backends

    if settings.backend != "auto" and settings.backend not in available_backends():
        where = " or ".join(settings.sources) or "the settings"
        raise ConfigError(f"{where}: unknown backend {settings.backend!r} "
                          f"(choose one of: auto, {', '.join(available_backends())})")


def check_threshold_targets(settings: RunSettings) -> None:
    """Every thresholds table names a suite the run knows (built in or declared): a misspelt one would
    otherwise be read by no check, and the suite gated by its defaults instead of the user's bounds."""
    from harness.config.settings import threshold_source
    from harness.data.suites import all_suites

    known = all_suites()
    for target in settings.thresholds:
        suite = target.partition(":")[0]
        if suite not in known:
            raise ConfigError(f"{threshold_source(settings, target)}: unknown suite {suite!r} "
                              f"(known: {', '.join(sorted(known))})")


def check_gate_targets(settings: RunSettings) -> None:
    """Every gate sub-table names a suite the run knows, a failure metric, or SUITE:METRIC: a rule under a
    misspelt name (or a category, which the gate does not split by) would be read by no gate, and the suite
    judged by the default margin instead of the one set."""
    from harness.config.gate import METRIC_NAMES
    from harness.config.settings import gate_source
    from harness.data.suites import all_suites

    known, metrics = all_suites(), ", ".join(sorted(METRIC_NAMES))
    for target, values in settings.gate.items():
        if not isinstance(values, dict) or target in METRIC_NAMES:
            continue  # a rule key of the whole gate, or a metric's rules
        suite, sep, metric = target.partition(":")
        if suite not in known:
            raise ConfigError(f"{gate_source(settings, target)}: unknown suite {suite!r} (known: "
                              f"{', '.join(sorted(known))}; or a metric: {metrics})")
        if sep and metric not in METRIC_NAMES:
            raise ConfigError(f"{gate_source(settings, target)}: unknown metric {metric!r} (gate rules apply to SUITE, "
                              f"METRIC or SUITE:METRIC; metrics: {metrics})")


def check_capability_reference(reference: str) -> None:
    """A known reference name or a file, before any generation (the capability scoring would say it only after,
    in the same words)."""
    from pathlib import Path

    from harness.capability.references import REFERENCES
    from harness.core.errors import DataError

    if reference not in REFERENCES and not Path(reference).is_file():
        raise DataError(f"capability reference {reference!r}: neither a known name ({', '.join(REFERENCES)}) nor "
                        "an existing file")


def check_refuse_words(words) -> None:
    """The dummy backend's refuse_words are a list of words or one comma-separated string; anything else (a
    number, a list holding one) was a TypeError traceback when the backend started."""
    if not isinstance(words, str) and not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
        raise ConfigError("backend_args refuse_words (dummy backend) must be a list of words or one comma-separated "
                          f"string, e.g. --backend-arg 'refuse_words=[\"bomb\"]', got {words!r}")


def check_threshold_categories(settings: RunSettings, suite: str, categories) -> None:
    """Every ``SUITE:CATEGORY`` thresholds table of ``suite`` names one of its ``categories`` (all of the suite's,
    not only those a --limit sample holds): a misspelt category's bounds would be read by no check. Called once
    the suite's prompts are loaded (harness.pytest_plugin.plugin)."""
    from harness.config.settings import threshold_source

    for target in settings.thresholds:
        name, sep, category = target.partition(":")
        if sep and name == suite and category not in categories:
            raise ConfigError(f"{threshold_source(settings, target)}: suite {suite!r} has no category {category!r} "
                              f"(its categories: {', '.join(sorted(categories))})")


def check_threshold_kinds(settings: RunSettings, suite: str, prompts) -> None:
    """Every bound the user set on ``suite`` or one of its categories counts a kind of prompt (should-refuse,
    should-answer) that scope holds: a bound on a kind it has none of is skipped by every check, so the user's
    number would go unused while the rows are gated by their default. ``prompts`` are all of the suite's, not
    only those a --limit sample holds. Called once the suite's prompts are loaded (harness.pytest_plugin.plugin)."""
    from harness.config.settings import threshold_source
    from harness.config.thresholds import KIND_NAMES, METRICS

    for target, values in sorted(settings.thresholds.items()):
        name, sep, category = target.partition(":")
        if name != suite:
            continue
        held = [p.expected for p in prompts if not sep or p.category == category]
        for key in sorted(values):
            metric = METRICS.get(key.partition("_")[2])
            if metric is None or metric.expected in held:
                continue  # a capability statistic, or a bound with rows to check
            scope = f"category {category!r} of suite {suite!r}" if sep else f"suite {suite!r}"
            kinds = " and ".join(KIND_NAMES.get(k, repr(k)) for k in sorted(set(held)))
            its = (f"its {len(held)} prompt{' is' if len(held) == 1 else 's are'} {kinds}" if held
                   else "it has no prompts")
            raise ConfigError(f"{threshold_source(settings, target)}: {key} counts {KIND_NAMES[metric.expected]} "
                              f"prompts, and {scope} has none ({its}), so no test would check it; set a bound on a "
                              "metric of the prompts it holds, or drop it")


def check_statistic_thresholds(settings: RunSettings) -> None:
    """A threshold on a capability statistic (win_rate, lc_win_rate, mean_ref_loglik) for another suite would be
    checked by no one, since only the capability suite computes them, and that suite would pass: refuse it
    before any generation."""
    from harness.config.settings import threshold_source
    from harness.config.thresholds import STATISTICS

    for target, values in settings.thresholds.items():
        wrong = [key for key in values if key.partition("_")[2] in STATISTICS]
        if wrong and target.partition(":")[0] != "capability":
            raise ConfigError(f"{threshold_source(settings, target)}: {wrong[0]} is computed for the capability "
                              "suite only, so here it could never fail; move it to thresholds.capability or drop it")


def check_scorer_names(settings: RunSettings) -> None:
    """The refusal and harm scorers the settings name are registered, and a --harm-model exists. Not part of
    ``preflight``: a project may register its own scorer in a conftest.py that pytest imports during collection,
    so the plugin calls this once collection is done, before any generation (else a misspelt --scorer or
    --harm-model costs a whole generation first)."""
    from harness.scoring.factory import check_one_judge_model, harm_scorer_name, refusal_scorer_factory
    from harness.scoring.harm import HARM_SCORERS

    refusal_scorer_factory(settings.scorer)
    harm = harm_scorer_name(scorer_options(settings))
    if harm is not None:
        HARM_SCORERS.factory(harm)
        check_one_judge_model(scorer_options(settings))
    if harm == "reward_model" and settings.harm_model:  # loaded only to score the replies, after generation
        from harness.models.resolve import check_model_found

        check_model_found(settings.harm_model)


def parallel_options(settings: RunSettings) -> ParallelOptions:
    return ParallelOptions(settings.tensor_parallel_size, settings.pipeline_parallel_size, settings.data_parallel_size,
                           settings.distributed_executor_backend, settings.ray_address, settings.replicas)


# The backend_args keys each built-in backend reads; a backend not named here (vLLM takes any engine argument,
# a user's registered backend its own) is taken to read them all.
BACKEND_ARGS_READ = {"dummy": ("refuse_words",), "hf": (), "replay": ()}


def ignored_backend_args(settings: RunSettings) -> tuple[str, ...]:
    """The backend_args keys the chosen backend never reads (e.g. vLLM's ``quantization`` in a pyproject.toml,
    on a run with ``--backend hf``): the summary warns of them, and they stay out of the cache key, whose
    entries would otherwise claim a setting the replies were not made with. Parallel settings are checked
    against the backend on their own (``normalize_parallel``)."""
    from harness.backends.vllm_settings import PARALLEL_FIELDS

    read = BACKEND_ARGS_READ.get(resolve_backend_name(settings.backend))
    if read is None:
        return ()
    return tuple(sorted(k for k in settings.backend_args if k not in read and k not in PARALLEL_FIELDS))


def output_backend_args(settings: RunSettings) -> dict:
    """The backend settings that can change responses: what the generation cache key includes."""
    from harness.backends.vllm_settings import PARALLEL_FIELDS, output_parallel_args

    # Parallel settings enter only through output_parallel_args, whichever way they were spelled.
    ignored = set(ignored_backend_args(settings))
    others = {k: v for k, v in settings.backend_args.items() if k not in PARALLEL_FIELDS and k not in ignored}
    return {**others, **output_parallel_args(parallel_options(settings))}


def backend_options(settings: RunSettings) -> BackendOptions:
    from harness.backends.vllm_settings import parallel_args
    from harness.scoring.judge import GENERATION_SHARE_BESIDE_JUDGE

    extra = {**parallel_args(parallel_options(settings)), **settings.backend_args}
    # On one GPU a judge model's engine runs beside the generation engine: generation leaves it room
    # (harness.scoring.judge; a gpu_memory_utilization backend_arg still wins).
    share = {"gpu_memory_utilization": GENERATION_SHARE_BESIDE_JUDGE} if settings.judge_model else {}
    return BackendOptions(
        **share,
        dtype=settings.dtype,
        batch_size=settings.batch_size,
        max_model_len=settings.max_model_len,
        kv_cache_gib=settings.vllm_kv_cache_gib,
        replay_path=str(settings.replay) if settings.replay else None,
        replay_response_column=settings.replay_response_column,
        trust_remote_code=settings.trust_remote_code,
        batch_invariant=settings.batch_invariant,
        extra=extra,
    )


def scorer_options(settings: RunSettings) -> ScorerOptions:
    return ScorerOptions(scorer=settings.scorer, harm_scorer=settings.harm_scorer, harm_model=settings.harm_model,
                         judge_model=settings.judge_model, backend=settings.backend, cache_dir=settings.cache_dir,
                         allow_pickle=settings.allow_pickle, batch_size=settings.batch_size, seed=settings.seed,
                         backend_options=backend_options(settings))
