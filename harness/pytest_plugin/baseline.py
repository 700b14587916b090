"""The pytest side of regression gating: ``--baseline PATH``, ``--baseline-save [NAME]``,
``--baseline-compare [NAME]``, and ``--html`` / ``--markdown`` summaries of a run.

With a baseline, collection adds deterministic items, computed from the baseline file and the collected
suites only, so pytest-xdist workers collect identically. They are added before ``-k``/``-m`` deselection
and carry their suite (and a flip its category) as keywords: ``-k "not baseline"`` drops them, ``-k
baseline`` keeps only them.

- ``baseline-flip[SUITE:PROMPT_ID]`` for every prompt that passed in the baseline: it fails when the prompt
  fails now, with the prompt and both responses in the message. Under ``flips = "gate"`` (the default) a
  flip whose gate holds is reported as xfailed (noise the gate tolerates), not failed;
- ``baseline-gate[SUITE:METRIC]`` for each failure metric of each suite: it fails when the regression is
  significant and larger than the margin (``harness.baselines.store`` reads the rules).

The comparison itself is ``harness.baselines.compare.compare_reports`` on the baseline and this run's rows, made
once right after generation; runs that cannot be compared stop the session with a usage error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.baselines.compare import (BASELINE, Comparison, ComparisonRefused, Report, gate_outcome, load_report,
                                      only_suites)
from harness.baselines.flips import label_counts, label_counts_text
from harness.core.records import FAILURE_METRIC
from harness.core.errors import HarnessError
from harness.core.files import check_writable
from harness.core.text import one_line
from harness.pytest_plugin.state import REPORT_KEY, get_session, item_suite, project_dir


@dataclass
class BaselineState:
    store_dir: Path
    save_name: str | None  # None: do not save; "": the default name
    baseline_path: Path | None = None
    baseline: Report | None = None
    allow_mismatch: bool = False
    flips: str = "gate"
    html: Path | None = None
    markdown: Path | None = None
    comparison: Comparison | None = None
    outputs: list[str] = field(default_factory=list)  # lines for the terminal summary
    # SUITE:METRIC of the baseline-gate items selected (None: not known); a gate whose item -k, -m, --deselect
    # or --lf left out is still compared and printed, but no test asserts it
    selected_gates: set[str] | None = None


STATE_KEY = pytest.StashKey[BaselineState]()
NODE_PREFIX = "baseline"  # node ids "baseline::baseline-gate[...]": junit XML's classname is "baseline"


def pytest_addoption(parser):
    group = parser.getgroup("safety-harness", "safety regression suites")
    group.addoption("--baseline", dest="sh_baseline", type=Path, default=None, metavar="PATH",
                    help="gate this run against an earlier Parquet report (flips and per-metric gate items)")
    group.addoption("--baseline-compare", dest="sh_baseline_compare", nargs="?", const="", default=None,
                    metavar="NAME", help="gate against a saved baseline (default: the most recently saved); "
                                         "put it after the test paths or write --baseline-compare=NAME")
    group.addoption("--baseline-save", dest="sh_baseline_save", nargs="?", const="", default=None, metavar="NAME",
                    help="save this run's report as a named baseline (default name: run id and git commit)")
    group.addoption("--baseline-dir", dest="sh_baseline_dir", type=Path, default=None, metavar="DIR",
                    help="folder of saved baselines (default .safety-harness/baselines; TOML: baseline_dir)")
    group.addoption("--baseline-allow-mismatch", dest="sh_baseline_allow_mismatch", action="store_true",
                    help="compare the shared prompts even if prompts, template, sampling or scorer differ")
    group.addoption("--baseline-fail-flips", dest="sh_baseline_fail_flips", action="store_true",
                    help="every prompt that flipped to failing fails, even when its gate holds (TOML: gate.flips)")
    for flag, dest, what in (("html", "sh_html", "a self-contained HTML"), ("markdown", "sh_markdown", "a Markdown")):
        text = f"write {what} summary of the run (with the comparison when a baseline is set)"
        try:  # --html is pytest-html's option when that plugin is installed; --safety-html always works
            group.addoption(f"--{flag}", f"--safety-{flag}", dest=dest, type=Path, default=None, metavar="PATH", help=text)
        except ValueError:
            group.addoption(f"--safety-{flag}", dest=dest, type=Path, default=None, metavar="PATH", help=text)


@pytest.hookimpl(trylast=True)  # after harness.pytest_plugin.plugin has built the session's settings
def pytest_configure(config):
    settings = get_session(config).settings
    opt = config.getoption
    store_dir = opt("sh_baseline_dir") or settings.baseline_dir or project_dir(config) / ".safety-harness" / "baselines"
    state = BaselineState(Path(store_dir), opt("sh_baseline_save"), allow_mismatch=opt("sh_baseline_allow_mismatch"),
                          flips="fail" if opt("sh_baseline_fail_flips") else settings.gate.get("flips", "gate"),
                          html=opt("sh_html"), markdown=opt("sh_markdown"))
    from harness.baselines.store import BaselineStore

    try:
        if opt("sh_baseline") is not None and opt("sh_baseline_compare") is not None:
            raise HarnessError("give either --baseline PATH or --baseline-compare [NAME], not both")
        if opt("sh_baseline") is not None:
            state.baseline_path = opt("sh_baseline")
        elif opt("sh_baseline_compare") is not None:
            state.baseline_path = BaselineStore(state.store_dir).find(opt("sh_baseline_compare"))
        outputs = [("--html", state.html), ("--markdown", state.markdown)]
        if state.save_name is not None:  # a bad name or an unwritable folder fails now, not after the run
            store = BaselineStore(state.store_dir)
            outputs.append(("--baseline-save", store.path(state.save_name) if state.save_name
                            else store.folder / "default-name.parquet"))  # the default name: its folder
        check_writable(outputs)
        if state.baseline_path is not None:
            state.baseline = load_report(state.baseline_path, "baseline")
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE_KEY] = state


def _state(config) -> BaselineState | None:
    return config.stash.get(STATE_KEY, None)


# -- collection: deterministic items from the baseline ------------------------------------------------------


class BaselineItem(pytest.Item):
    """An item that checks this run against the baseline; its failure text is the whole message."""

    def __init__(self, *, suite: str, key: str, category: str = "", **kw):
        super().__init__(**kw)
        self.suite, self.key = suite, key
        self.safety_suite_name = suite  # harness.pytest_plugin.plugin.item_suite: generate it even when -k keeps only these
        self.extra_keyword_matches.update({suite, "baseline"} | ({category} if category else set()))

    def reportinfo(self):
        return self.path, None, self.name

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, GateFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def _comparison(self) -> Comparison:
        comparison = _state(self.config).comparison
        if comparison is None or self.suite not in get_session(self.config).results:
            pytest.skip(f"suite {self.suite} produced no results to compare")
        return comparison

    def _gate(self, comparison: Comparison, metric: str):
        try:
            return comparison.group(self.suite, metric=metric)
        except StopIteration:  # with --baseline-allow-mismatch, no shared prompt of this metric
            pytest.skip(f"no prompt of {self.suite}:{metric} in both runs")


class GateFailed(AssertionError):
    pass


class FlipItem(BaselineItem):
    def runtest(self):
        comparison = self._comparison()
        row = comparison.cand.rows.get((self.suite, self.key))
        pair = comparison.pairs.get((self.suite, self.key))
        if row is None or pair is None:
            pytest.skip(f"{self.suite}/{self.key} is not in this run")
        if pair.human is not None:
            self.user_properties += [("labels", pair.human), ("baseline_human_label", pair.base_label or ""),
                                     ("candidate_human_label", pair.cand_label or "")]
        # A judge_error now fails closed: it is a flip (flips.gate_outcome); where people labelled both replies,
        # their labels decide (a scored flip whose labels agree passes).
        if pair.cand or not pair.base:
            return
        base = comparison.base.rows[(self.suite, self.key)]
        gate = self._gate(comparison, FAILURE_METRIC.get(base.get("expected"), ""))
        message = flip_message(base, row, gate.name, gate.stats.verdict, pair)
        self.user_properties.append(("flip", "regression"))
        if _state(self.config).flips == "fail" or gate.stats.failed:
            raise GateFailed(message)
        pytest.xfail(f"tolerated by gate {gate.name} ({gate.stats.verdict}): {message}")


class GateItem(BaselineItem):
    def runtest(self):
        gate = self._gate(self._comparison(), self.key)
        s = gate.stats
        self.user_properties += [("verdict", s.verdict), ("p_regression", f"{s.test.p_regression:.4g}"),
                                 ("baseline_failure_rate", f"{s.base.estimate:.4f}"),
                                 ("candidate_failure_rate", f"{s.cand.estimate:.4f}")]
        counts = self._flip_labels(gate)
        self.user_properties += [(f"flips_{state.replace(' ', '_')}", str(n)) for state, n in counts.items()]
        if s.failed:
            raise GateFailed(f"baseline-gate[{gate.name}] {s.verdict}: {s.reason} "
                             f"(baseline {_state(self.config).baseline.name}); flips: {label_counts_text(counts)}")

    def _flip_labels(self, gate) -> dict[str, int]:
        """What people's labels made of this gate's flips (harness.baselines.flips)."""
        comparison = self._comparison()
        mine = {k: p for k, p in comparison.pairs.items() if k[0] == self.suite
                and FAILURE_METRIC.get(comparison.base.rows[k].get("expected")) == self.key}
        return label_counts(mine)


def flip_message(base: dict, cand: dict, gate: str, verdict: str, pair=None) -> str:
    what = "an unsafe request answered" if base.get("expected") == "refuse" else "a safe request refused"
    if cand.get("passed") is None:
        what = "the judge could not read the reply, counted as a failure"
    before = ("passed in the baseline" if base.get("passed") is not None
              else "had no outcome in the baseline (judge_error, counted as passed)")
    if pair is not None and pair.labelled:
        what += (f"; {pair.human} by people's labels: baseline {pair.base_label}, candidate {pair.cand_label}")
    elif pair is not None:
        what += "; not labelled by people on both sides"
    return (f"{base['suite']}/{base['prompt_id']} {before} and fails now ({what}; gate {gate}: {verdict})\n"
            f"  prompt:    {one_line(base.get('prompt'), 400)}\n"
            f"  baseline:  [{base.get('refusal_label')}] {one_line(base.get('response'), 400)}\n"
            f"  candidate: [{cand.get('refusal_label')}] {one_line(cand.get('response'), 400)}")


def _item(cls, session, name: str, suite: str, key: str, category: str = "") -> BaselineItem:
    return cls.from_parent(session, name=name, nodeid=f"{NODE_PREFIX}::{name}", suite=suite, key=key,
                           category=category)


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, so that `-k baseline`, `-k "not baseline"` work
def pytest_collection_modifyitems(session, config, items):
    state = _state(config)
    if state is None or state.baseline is None:
        return
    hs = get_session(config)
    base_rows = state.baseline.rows
    added = []
    for suite in [s for s in dict.fromkeys(item_suite(i) for i in items) if s]:
        try:
            prompts = hs.load_suite(suite)
        except HarnessError as exc:
            raise pytest.UsageError(str(exc)) from None
        in_base = [p for p in prompts or [] if (suite, p.prompt_id) in base_rows]
        for p in in_base:
            if gate_outcome(base_rows[(suite, p.prompt_id)], BASELINE):
                added.append(_item(FlipItem, session, f"baseline-flip[{suite}:{p.prompt_id}]", suite, p.prompt_id,
                                   p.category))
        for metric in sorted({FAILURE_METRIC[p.expected] for p in in_base if p.expected in FAILURE_METRIC}):
            added.append(_item(GateItem, session, f"baseline-gate[{suite}:{metric}]", suite, metric))
    items.extend(added)


@pytest.hookimpl(wrapper=True)
def pytest_collection_finish(session):
    """Once harness.pytest_plugin.plugin has generated and scored the run, compare it with the baseline (refused runs stop
    the session here, before any test runs)."""
    result = yield
    config = session.config
    state, hs = _state(config), get_session(config)
    if state is not None and state.baseline is not None:
        state.selected_gates = {f"{i.suite}:{i.key}" for i in session.items if isinstance(i, GateItem)}
    if state is None or state.baseline is None or config.option.collectonly or not hs.results:
        return result
    try:
        state.comparison = compare_with_baseline(state, hs)
    except HarnessError as exc:
        raise pytest.UsageError(f"baseline {state.baseline_path}: {exc}") from None
    return result


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """The xdist controller collects nothing itself: the gate items a worker selected come from its node ids."""
    state = _state(node.config)
    if state is None or state.baseline is None:
        return
    prefix = f"{NODE_PREFIX}::baseline-gate["
    selected = {i[len(prefix):-1] for i in ids if i.startswith(prefix) and i.endswith("]")}
    state.selected_gates = (state.selected_gates or set()) | selected


def compare_with_baseline(state: BaselineState, hs) -> Comparison:
    """``compare_reports`` on the baseline's rows of the suites that ran and this run's rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from harness.baselines.store import build_rules
    from harness.baselines.compare import compare_reports
    from harness.engine.run_report import report_rows
    from harness.core.report_file import SCHEMA

    ran = sorted(hs.results)
    b = state.baseline
    held = sorted({suite for suite, _ in b.rows})
    if not set(ran) & set(held):  # else every field of the empty selection "differs", which says nothing
        raise HarnessError(f"holds no row of the suite(s) this run scored ({', '.join(ran)}); it holds "
                           f"{', '.join(held) or 'no rows'}: gate against a report of the same suites")
    base = only_suites(b, ran)
    from harness.engine.run_report import run_layout

    meta = {"run_id": hs.run_id, "model": hs.model_info.as_dict(), "layout": run_layout(hs)}
    table = pa.table(report_rows(hs), schema=SCHEMA)  # extra rows (invariance) are no suite of the gate
    cand = load_report(table.filter(pc.is_in(table["suite"], pa.array(ran))), "this run")
    cand.meta = meta
    from harness.baselines.flips import row_key
    from harness.engine.human_labels import labels_for

    keys = {row_key(r) for r in base.rows.values()} | {row_key(r) for r in cand.rows.values()}
    try:
        comparison = compare_reports(base, cand, rules=build_rules(hs.settings.gate, ran),
                                     allow_mismatch=state.allow_mismatch, gate_levels=("metric",),
                                     error_rates=hs.settings.error_rates, labels=labels_for(hs, keys))
    except ComparisonRefused as exc:  # its hint names the CLI's flag; pytest's is --baseline-allow-mismatch
        raise ComparisonRefused(str(exc).replace("(--allow-mismatch ", "(--baseline-allow-mismatch ")) from None
    comparison.warnings += changed_data_files(b.meta, hs)
    return comparison


def changed_data_files(base_meta: dict, hs) -> list[str]:
    """Data files whose hash differs from the baseline's record. Not a refusal: the prompts compared are
    the same (that is checked), but a changed file is worth a line in the summary."""
    from harness.engine.provenance import data_files

    recorded = (base_meta.get("provenance") or {}).get("data_files") or {}
    out = []
    for name, now in data_files(hs).items():
        then = (recorded.get(name) or {}).get("sha256")
        if then and now["sha256"] and then != now["sha256"]:
            out.append(f"data file {name} differs (sha256 {then[:12]} in the baseline, {now['sha256'][:12]} now)")
    return out


# -- after the run: flips table, saved baseline, summaries ---------------------------------------------------


# After harness.pytest_plugin.plugin's (tryfirst) wrote the report, and last, so that session.exitstatus holds
# every verdict (empty_gate's too) when it decides whether the run may become a baseline.
@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    state = _state(config)
    if state is None or hasattr(config, "workerinput"):
        return
    report = config.stash.get(REPORT_KEY, None)
    if report is None:
        return
    from harness.baselines.store import BaselineStore, default_save_name
    from harness.engine.provenance import git_commit

    try:
        hs = get_session(config)
        if state.comparison is None and state.baseline is not None and hs.results:
            # The xdist controller: the comparison ran on the workers; their rows reached this session since.
            state.comparison = compare_with_baseline(state, hs)
        if state.comparison is not None:
            from harness.baselines.compare import write_flips

            flips = write_flips(state.comparison, report.with_name(report.stem + ".flips.parquet"))
            state.outputs.append(f"flips: {flips}")
        # A failed, regressed or interrupted run is no good checkpoint: saved, it would be the latest baseline,
        # and the next --baseline-compare would gate against it. A failed comparison counts even where -k
        # deselected the gate items.
        why = (f"this run failed (exit status {int(session.exitstatus)})" if session.exitstatus != pytest.ExitCode.OK
               else "its comparison with the baseline failed" if state.comparison is not None
               and not state.comparison.passed else None)
        if state.save_name is not None and why:
            state.outputs.append(f"baseline not saved: {why}; only a passing run becomes a baseline "
                                 f"(--baseline {report} gates against it anyway)")
        elif state.save_name is not None:
            commit = (git_commit(Path.cwd()) or {}).get("commit")
            name = state.save_name or default_save_name(hs.run_id, commit)
            saved = BaselineStore(state.store_dir).save(report, name)
            state.outputs.append(f"baseline saved: {saved} (--baseline-compare={name})")
        if state.html or state.markdown:
            from harness.core.report_file import read_report
            from harness.reports.summary import write_run_summaries

            if state.comparison is not None:  # the candidate's checks as its report recorded them, for the summaries
                state.comparison.cand.meta, state.comparison.cand.name = read_report(report)[1], report.name

            state.outputs += write_run_summaries(state.comparison or report, html=state.html, markdown=state.markdown)
    except (OSError, HarnessError) as exc:
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
        state.outputs.append(f"FAILED to write: {exc}")


@pytest.hookimpl(trylast=True)  # below the safety-harness summary
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = _state(config)
    if state is None or (state.comparison is None and not state.outputs):
        return
    if state.comparison is not None:
        from harness.baselines.comparison_text import comparison_lines

        terminalreporter.section(f"safety-harness baseline: {state.baseline_path}")
        c = state.comparison
        report = config.stash.get(REPORT_KEY, None) or "REPORT"
        review = f"safety-harness review {report} --baseline {state.baseline_path}"
        for line in comparison_lines(c, more_flips="all of them are in the flips table written beside the report",
                                     review=review):
            terminalreporter.write_line(line, red=line.startswith("gate: FAIL") or line.rstrip().endswith("REGRESSION"))
        unselected = [g.name for g in c.failures
                      if state.selected_gates is not None and g.name not in state.selected_gates]
        if unselected:
            terminalreporter.write_line(
                f"not gated: {', '.join(f'baseline-gate[{name}]' for name in unselected)}: no selected test holds "
                f"{'this gate' if len(unselected) == 1 else 'these gates'} (left out by -k, -m, --deselect or --lf), "
                "so the exit status does not count the FAIL above", yellow=True)
        improvements = [f for f in c.flips.to_pylist() if f["direction"] == "improvement"]
        if improvements:
            terminalreporter.write_line(f"improvements ({len(improvements)}): " + ", ".join(
                f"{f['suite']}/{f['prompt_id']}" for f in improvements[:50]) + (" ..." if len(improvements) > 50 else ""),
                green=True)
    for line in state.outputs:
        terminalreporter.write_line(line, red=line.startswith("FAILED"))
