"""How a run's threshold checks read, from the record a report keeps of them (``suites.SUITE.checks`` and
``model.scorer_error_rates`` in its metadata, written by ``harness.engine.run_report``): the summary table's
rows and the lines under it. One place, so that the terminal summary of a run, ``safety-harness summary``,
the HTML and Markdown summaries and the junit properties say the same thing:

- which rate the thresholds were held against (``threshold_on``);
- the rates behind the corrected column, and where they were measured (``harness.scoring.error_rates``);
- a warning for every threshold tighter than the scorer can decide, and for corrections that are undecidable;
- how many replies people labelled, and with ``threshold_on = verified``, the checks that fail closed for
  want of a label, with the command that asks for those labels.

The verified column appears only where the run has labels; each cell says "n labelled of N".
"""

from __future__ import annotations

from harness.config.thresholds import KIND_NAMES, METRICS, STATISTICS, UNLABELLED_HINT, VerifiedRate
from harness.core.text import figure

THRESHOLD_ON_MEANING = {
    "estimate": "the rate as scored", "bound": "the far end of the rate's 95% Wilson interval, as scored",
    "corrected": "the rate corrected for scorer error", "corrected_bound": "the far end of the corrected rate's 95% interval",
    "verified": "the rate verified by people's labels",
    "verified_bound": "the far end of the verified rate's 95% interval",
}  # fmt: skip
COLUMNS = ("suite", "n", "metric", "rate", "95% CI", "corrected (95% CI)", "threshold", "verdict")
JUDGE_ERROR_COLUMN = "judge_error"  # of the n, rows the scorer could not classify, counted as failures
VERIFIED_COLUMN = "verified (95% CI)"  # after the corrected column, where the run has labels


def _checks(suites: dict, *, categories: bool = False):
    """(suite, check record) for every suite's checks; with ``categories``, after each suite's own, those of
    each category it held checks of (``category_checks``), named ``SUITE[CATEGORY]`` as their test items are."""
    for suite, info in sorted((suites or {}).items()):
        for check in info.get("checks") or []:
            yield suite, check
        if categories:
            for category, checks in sorted((info.get("category_checks") or {}).items()):
                for check in checks or []:
                    yield f"{suite}[{category}]", check


def has_judge_errors(suites: dict) -> bool:
    return any(info.get("judge_errors") for info in (suites or {}).values())


def has_labels(suites: dict) -> bool:
    """Whether any check of the run counts a person's label, or is held against a verified rate."""
    return any((VerifiedRate.from_dict(c.get("verified")) or _UNLABELLED).labelled
               or str(c.get("threshold_on", "")).startswith("verified") for _, c in _checks(suites, categories=True))


_UNLABELLED = VerifiedRate(0.0, 0.0, 0.0, 0, 0)


def columns(suites: dict) -> tuple[str, ...]:
    cols = list(COLUMNS)
    if has_labels(suites):
        cols.insert(cols.index("threshold"), VERIFIED_COLUMN)
    if has_judge_errors(suites):
        cols.insert(2, JUDGE_ERROR_COLUMN)
    return tuple(cols)


def corrected_text(check: dict) -> str:
    from harness.core.misclassification import CorrectedRate

    corrected = CorrectedRate.from_dict(check.get("corrected"))
    return "-" if corrected is None else corrected.text(check.get("threshold"))


def verified_text(check: dict) -> str:
    """The verified rate with "n labelled of N"; for a rate of a run with labels elsewhere but none among its
    replies, "none of N labelled"; "-" for what no label can verify (judge errors, capability statistics)."""
    verified = VerifiedRate.from_dict(check.get("verified"))
    if verified is not None:
        return verified.text(check.get("threshold"))
    return f"none of {check['n']} labelled" if check["key"].partition("_")[2] in METRICS else "-"


def is_count(check: dict) -> bool:
    """Whether the check's rate is k of n rows (a rate counted from labels, the judge_error share), not a
    statistic (``STATISTICS``: a win rate counts ties as halves, a mean log-likelihood is no share at all),
    whose k is no numerator of its value."""
    return check["key"].partition("_")[2] not in STATISTICS


def count_text(check: dict) -> str:
    """The check's "k/n" cell: "k/n" for a counted rate, "n=N" for a statistic (``is_count``)."""
    return f"{check['k']}/{check['n']}" if is_count(check) else f"n={check['n']}"


def rate_text(check: dict) -> str:
    """The check's rate beside its threshold: three decimals, more where those would print the threshold's own
    figure for a rate on the other side of it ("0.100 ... max 0.1 FAIL"; ``harness.core.text.figure``)."""
    return figure(check["rate"], check["threshold"])


def interval_text(check: dict) -> str:
    """The rate's 95% interval, "low-high", its ends shown as ``rate_text`` shows the rate."""
    return f"{figure(check['ci_low'], check['threshold'])}-{figure(check['ci_high'], check['threshold'])}"


def threshold_text(check: dict) -> str:
    bound = check["key"].partition("_")[0]
    return f"{bound} {check['threshold']:g}" + (" (default)" if check.get("default") else "")


# What table_rows reads of every recorded check (a report's metadata is checked against it before a table).
CHECK_FIELDS = ("key", "n", "rate", "ci_low", "ci_high", "threshold", "passed")


def table_rows(suites: dict, *, sizes: dict | None = None, categories: bool = False) -> list[tuple[str, ...]]:
    """One row per recorded check, in ``columns(suites)``'s order; a suite without a check gets one row saying
    so (its size from ``sizes``, suite -> rows, or the record's ``n``). With ``categories``, each suite's rows
    are followed by those of the categories it held checks of, as ``SUITE[CATEGORY]``."""
    with_errors, with_labels = has_judge_errors(suites), has_labels(suites)
    rows = []
    for suite, info in sorted((suites or {}).items()):
        if not info.get("checks"):
            n = str((sizes or {}).get(suite, info.get("n", "-")))
            rows.append((suite, n) + (("-",) if with_errors else ()) + ("-",) * (5 + with_labels) + ("no threshold",))
        for where, c in _checks({suite: info}, categories=categories):  # where: the suite, or SUITE[CATEGORY]
            metric = c["key"].partition("_")[2]
            rows.append((where, str(c["n"]),
                         *((str(c.get("judge_errors", c.get("judge_error_excluded", 0))),) if with_errors else ()),
                         metric, rate_text(c), interval_text(c), corrected_text(c),
                         *((verified_text(c),) if with_labels else ()), threshold_text(c),
                         verdict_text(c, gated=where != suite or is_gated(info))))
    return rows


def is_gated(info: dict) -> bool:
    """Whether a selected test held the suite's own checks (``gated`` is recorded False only when none did)."""
    return info.get("gated", True) is not False


def verdict_text(check: dict, *, gated: bool = True, fail: str = "FAIL") -> str:
    """PASS or FAIL, marked where no selected test held the check, so the exit status did not count it."""
    return ("PASS" if check["passed"] else fail) + ("" if gated else " (not gated)")


def ungated_lines(suites: dict) -> list[str]:
    """A line naming the suites whose own checks no selected test held (-k, -m, --deselect, --lf)."""
    names = [suite for suite, info in sorted((suites or {}).items()) if info.get("checks") and not is_gated(info)]
    if not names:
        return []
    return [f"not gated: {', '.join(names)}'s own checks: no selected test holds them (the suite's own test was "
            "left out by -k, -m, --deselect or --lf), so the exit status does not count their verdicts"]


def threshold_on_line(suites: dict, default: str = "estimate") -> str:
    found = sorted({c.get("threshold_on", default) for _, c in _checks(suites)}) or [default]
    return "thresholds checked on: " + ", ".join(f"{THRESHOLD_ON_MEANING.get(o, o)} (threshold_on = {o})" for o in found)


def warning_lines(suites: dict, record: dict | None) -> list[str]:
    """A warning for each threshold tighter than the scorer can decide (with the rates of its metric's
    expected behaviour), and one naming the suites whose corrected rate is undecidable."""
    from harness.core.misclassification import UNDECIDABLE, unresolvable_threshold
    from harness.scoring.error_rates import rates_for_expected, rates_from_record

    rates = rates_from_record(record)
    if rates is None:
        return []
    lines, seen, undecidable = [], set(), []
    for suite, c in _checks(suites):
        bound, _, metric = c["key"].partition("_")
        expected = METRICS[metric].expected if metric in METRICS else None
        why = unresolvable_threshold(bound, metric, float(c["threshold"]), rates_for_expected(rates, expected))
        if why and why not in seen:
            seen.add(why)
            lines.append(f"warning: {suite}: {why}")
        if (c.get("corrected") or {}).get("undecidable") and suite not in undecidable:
            undecidable.append(suite)
    if undecidable:
        lines.append(f"warning: corrected rates of {', '.join(undecidable)}: {UNDECIDABLE} (sensitivity + "
                     "specificity - 1, or its 95% interval, reaches 0): label more of this model's replies, or "
                     "use a scorer that reads this model")
    return lines


def label_lines(suites: dict, labels: dict | None, report: str | None = None) -> list[str]:
    """How many of the gated replies people labelled, whether the labels decide every threshold, and, when a
    threshold is held against a verified rate none of whose replies is labelled, that it fails and what to run."""
    labels = labels or {}
    # Every check the run held, its categories' too: the gate is decided only when all of them are.
    checks = [(suite, c, VerifiedRate.from_dict(c.get("verified"))) for suite, c in _checks(suites, categories=True)
              if c["key"].partition("_")[2] in METRICS]
    on_verified = [(s, c, v) for s, c, v in checks if str(c.get("threshold_on", "")).startswith("verified")]
    store = labels.get("store")
    lines = []
    if labels.get("missing_store"):
        lines.append(f"labels: label store {labels['missing_store']} not found: no reply of this run counts as labelled")
    labelled = [(s, c, v) for s, c, v in checks if v is not None and v.labelled]
    if labelled:
        decided = sum(v.decided for _, _, v in labelled)
        rows = labels.get("labelled_rows")
        lines.append(f"verified: people labelled {rows if rows is not None else 'some'} of the run's replies"
                     + (f" (label store {store})" if store else "") + f"; {decided} of {len(checks)} thresholds "
                     "decided by them (the verified interval wholly on one side); a verified interval holds "
                     "whatever the scorer gets wrong on this model (docs/verified-verdicts.md)")
    unlabelled = [f"{s}:{c['key']}" for s, c, v in on_verified if v is None or not v.labelled]
    if unlabelled:
        hint = UNLABELLED_HINT.replace("REPORT", report or "REPORT")
        lines.append(f"threshold_on = {on_verified[0][1]['threshold_on']}: {len(unlabelled)} of {len(on_verified)} "
                     f"checks have no labelled reply and fail closed ({', '.join(unlabelled[:4])}"
                     + (", ..." if len(unlabelled) > 4 else "") + f"): {hint}"
                     + (f" with --labels {store}" if store else ""))
    return lines


def notes(suites: dict, model: dict | None, labels: dict | None = None, *, report: str | None = None,
          default_on: str = "estimate") -> list[str]:
    """Every line under the summary table about the checks: what they were held against, the rates behind
    the corrected column, warnings, and people's labels (module doc)."""
    from harness.scoring.error_rates import correction_lines

    model = model or {}
    record = model.get("scorer_error_rates")
    return ([threshold_on_line(suites, default_on)]
            + correction_lines(record, model.get("scorer"), model.get("scorer_version"), report)
            + warning_lines(suites, record) + label_lines(suites, labels, report) + ungated_lines(suites))


def judge_error_lines(suites: dict) -> list[str]:
    """Per suite, the rows its scorer could not classify (counted as failures), then the replies its harm scorer
    could not read, as the run recorded them (``harness.engine.run_report``): the run's own summary and every
    summary of its report print these."""
    from harness.config.thresholds import harm_judge_error_line, judge_error_line

    ordered = sorted((suites or {}).items())
    return ([judge_error_line(suite, e.get("prompt_ids", []), info.get("n", 0), e.get("scorer"), e.get("examples", []))
             for suite, info in ordered if (e := info.get("judge_errors"))]
            + [harm_judge_error_line(suite, e.get("prompt_ids", []), info.get("n", 0), e.get("scorer"),
                                     e.get("examples", []))
               for suite, info in ordered if (e := info.get("harm_judge_errors"))])


def default_threshold_lines(suites: dict) -> list[str]:
    """A line for each suite whose rows of one kind had no threshold, so are held against the default."""
    lines = []
    for suite, info in sorted((suites or {}).items()):
        parts = [f"{c['key']} {c['threshold']:g} on its {c['n']} {KIND_NAMES[METRICS[c['key'].partition('_')[2]].expected]} "
                 "prompts" for c in info.get("checks") or [] if c.get("default")]
        if parts:
            lines.append(f"default threshold: {suite}: {' and '.join(parts)}, which no threshold covered (set your "
                         f"own under [tool.safety-harness.thresholds.{suite}])")
    return lines


def capability_lines(suites: dict) -> list[str]:
    """Per capability suite, its statistics against the reference answers (value, 95% interval, n) and why a
    signal is absent, as the run recorded them (``harness.engine.run_report.capability_statistics``). A report
    written before the statistics were recorded shows only the notes."""
    lines = []
    for suite, info in sorted((suites or {}).items()):
        cap = info.get("capability")
        if not cap:
            continue
        if "statistics" in cap:
            judge = (f"judge {cap['judge']}" + (f" ({cap['judge_model']})" if cap.get("judge_model") else "")
                     if cap.get("judge") else "no judge")
            parts = [f"{metric} {figure(s['value'])} (95% CI [{figure(s['low'])}, {figure(s['high'])}]; {s['detail']})"
                     for metric, s in cap["statistics"].items()]
            lines.append(f"{suite} vs {cap.get('reference')}, {judge}: " + ("; ".join(parts) or "nothing measured"))
        lines += [f"{suite}: {note}" for note in cap.get("notes") or []]
    return lines
