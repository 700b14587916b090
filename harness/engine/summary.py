"""The terminal summary of a finished session: one line per threshold check (``harness.scoring.check_summary``,
as every summary of a report shows them), then the capability statistics, the replicas' work and faults, the
skipped suites, the model, the generation statistics and where the wall time went."""

from __future__ import annotations

from harness.scoring import check_summary
from harness.core.records import JUDGE_ERROR
from harness.core.text import format_table
from harness.scoring.unseen import unseen_agreement_note


def has_judge_errors(session) -> bool:
    return any(r.score.label == JUDGE_ERROR for result in session.results.values() for r in result.rows)


def check_lines(session, suites: dict, report_path=None) -> list[str]:
    """The table of checks and the lines under it, as ``harness.scoring.check_summary`` writes them for every
    summary of a report: the rates behind the corrected column, warnings, people's labels. With each suite's
    rows, those of the categories it held checks of (``SUITE[CATEGORY]``, as ``safety-harness summary`` lists
    them): the labels line counts them among the thresholds decided, so a reader must see which they are."""
    from harness.engine.run_report import label_record

    lines = (format_table(check_summary.columns(suites), check_summary.table_rows(suites, categories=True))
             if suites else [])
    lines += check_summary.default_threshold_lines(suites)
    lines += check_summary.judge_error_lines(suites)
    if any(info["checks"] for info in suites.values()):
        model = {**session.model_info.as_dict(), "scorer": session.model_info.scorer or session.settings.scorer}
        lines += check_summary.notes(suites, model, label_record(session),
                                     report=str(report_path) if report_path else None,
                                     default_on=session.settings.threshold_on)
    return lines


def replica_lines(session) -> list[str]:
    """``--replicas``: how many, their shards, and every fault and what was done about it (the pool's
    record in the run metadata, harness.backends.replicas.ReplicaStats)."""
    info = session.extra_metadata.get("replicas")
    if not info:
        return []
    lines = [f"replicas {info['replicas']}: {info['shards']} shards, {info['replica_failures']} replica failure(s), "
             f"{info['shards_rerun']} shard(s) generated again"]
    lines += [f"  {event}" for event in info["events"]]
    return lines


def summary_lines(session, report_path=None) -> list[str]:
    from harness.engine.run_report import suite_records

    suites = suite_records(session)
    lines = check_lines(session, suites, report_path)
    lines += check_summary.capability_lines(suites)  # as the report records them, for every summary of it
    lines += replica_lines(session)
    for name, why in sorted(session.missing.items()):
        lines.append(f"{name}: skipped, {why}")
    s = session.stats
    info = session.model_info
    if info.model:  # a run that loaded no model (every selected suite missing) has no model facts to print
        lines.append(
            f"model {info.model} ({(info.model_fingerprint or '')[:12]}), backend {info.backend}"
            + (f" ({info.dtype})" if info.dtype else "") + ", "
            f"template {info.template}, scorer {info.scorer}" + unseen_agreement_note(info.scorer_unseen_agreement)
        )
    ignored = getattr(getattr(session, "plan", None), "ignored_backend_args", ())
    if ignored:
        lines.append(f"warning: backend {info.backend or session.settings.backend} does not read backend_args "
                     f"{', '.join(ignored)}: they were ignored")
    sanity = session.extra_metadata.get("adapter_sanity") or {}
    if sanity.get("warning"):
        lines.append(f"warning: {sanity['warning']}")
    if info.judge_errors and not has_judge_errors(session):  # outside every suite (e.g. an invariance search)
        lines.append(f"{JUDGE_ERROR}: {info.judge_errors} responses the scorer could not classify, each counted as a "
                     "failure")
    if s.n_prompts:
        line = f"prompts {s.n_prompts}: generated {s.n_generated}, from cache {s.n_cached}"
        shared = s.n_prompts - s.n_cached - s.n_generated  # prompts whose text another prompt has: one reply
        if shared > 0 and s.n_generated:
            line += f" ({shared} with the text of another prompt, sharing its reply)"
        if s.n_generated == 0:
            line += " (nothing generated: every response came from the cache)"
        elif s.generation_seconds > 0:
            line += (f"; {s.n_response_tokens_generated} tokens in {s.generation_seconds:.1f} s "
                     f"({s.n_response_tokens_generated / s.generation_seconds:.1f} tokens/s)")
        lines.append(line)
    timing = time_line(s, capability_seconds(session))
    if timing:
        lines.append(timing)
    if report_path:
        lines.append(f"report: {report_path}")
    return lines


# The run's phases in the order a run goes through them: (label, RunStats field). No two overlap.
PHASES = (("startup", "startup_seconds"), ("data", "data_seconds"), ("model", "model_prep_seconds"),
          ("engine start", "backend_start_seconds"), ("generation", "generation_seconds"),
          ("scoring", "scoring_seconds"))
# The capability suite's own timings (CapabilityResult.seconds), which come after scoring.
CAPABILITY_PHASES = (("log-likelihood", "ref_loglik"), ("capability judge", "judge"))


def capability_seconds(session) -> dict[str, float]:
    """The capability suites' timed steps (reference log-likelihood, judge), summed over suites."""
    return _summed_steps(getattr(getattr(result, "capability", None), "seconds", None)
                         for result in session.results.values())


def _summed_steps(per_suite) -> dict[str, float]:
    """Each step's seconds summed over the suites' ``{step: seconds}`` records (None: a suite without any)."""
    out: dict[str, float] = {}
    for seconds in per_suite:
        for step, value in (seconds or {}).items():
            if isinstance(value, (int, float)):
                out[step] = out.get(step, 0.0) + value
    return out


def recorded_time_line(meta: dict) -> str | None:
    """The ``time:`` line of a finished run, from its report's metadata (``safety-harness summary``): the
    phases as the metadata recorded them, so up to the report's write, not the last output after it."""
    from dataclasses import fields

    from harness.engine.session import RunStats

    recorded = meta.get("stats") or {}
    stats = RunStats(**{f.name: recorded[f.name] for f in fields(RunStats)
                        if isinstance(recorded.get(f.name), (int, float))})
    capability = _summed_steps(((suite or {}).get("capability") or {}).get("seconds")
                               for suite in (meta.get("suites") or {}).values())
    return time_line(stats, capability)


def time_line(stats, capability: dict[str, float]) -> str | None:
    """One line: the wall time and each phase's share of it, what no phase accounts for as "other", and the
    share accounted for. None before the run's clock stopped (``HarnessSession.stop_clock``)."""
    wall = stats.wall_seconds
    if wall <= 0:
        return None
    parts = [(label, getattr(stats, name)) for label, name in PHASES]
    parts += [(label, capability[step]) for label, step in CAPABILITY_PHASES if step in capability]
    parts.append(("report", stats.report_seconds))
    accounted = sum(seconds for _, seconds in parts)
    line = f"time: {wall:.1f} s wall = " + " + ".join(f"{label} {seconds:.1f}" for label, seconds in parts)
    other = wall - accounted
    if other >= 0:
        return line + f" + other {other:.1f} ({100 * accounted / wall:.1f}% accounted)"
    # Only pytest-xdist workers overlap: each runs data, model and scoring at the same time as the others.
    return line + f" (the phases overlap by {-other:.1f} s: pytest-xdist workers run side by side)"
