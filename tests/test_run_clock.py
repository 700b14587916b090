"""Where a run's wall time went: every phase timed where it happens (harness.engine.session.RunStats), the wall
from the process's start (harness.core.clock), pytest-xdist workers merged without counting side-by-side work
twice, and the terminal summary's one `time:` line."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from harness.core import clock
from harness.engine.session import RunStats
from harness.engine.summary import recorded_time_line, time_line
from harness.reports.parquet import read_report
from tests.support import project

PHASES = ("startup_seconds", "data_seconds", "model_prep_seconds", "backend_start_seconds", "generation_seconds",
          "scoring_seconds", "report_seconds")


def test_a_run_times_every_phase_and_accounts_for_most_of_its_wall_time(harness_project):
    # A fresh process, as a user's run is: its clock starts when the interpreter started, not at the first hook.
    project(harness_project)
    result = harness_project.run("--backend", "dummy", subprocess=True)
    text = harness_project.text(result)
    assert result.ret in (0, 1), text
    stats = read_report(harness_project.report)[1]["stats"]
    assert all(stats[name] >= 0 for name in (*PHASES, "wall_seconds")), stats
    assert stats["startup_seconds"] > 0.1  # the interpreter and the imports before any plugin hook
    assert stats["data_seconds"] > 0 and stats["model_prep_seconds"] > 0 and stats["scoring_seconds"] > 0
    accounted = sum(stats[name] for name in PHASES)
    assert accounted <= stats["wall_seconds"]
    assert accounted >= 0.8 * stats["wall_seconds"], stats  # the rest: pytest's collection and the tests
    lines = [line for line in result.outlines if line.startswith("time: ")]
    assert len(lines) == 1, text
    match = re.fullmatch(r"time: ([\d.]+) s wall = startup [\d.]+ \+ data [\d.]+ \+ model [\d.]+ \+ engine start "
                         r"[\d.]+ \+ generation [\d.]+ \+ scoring [\d.]+ \+ report [\d.]+ \+ other [\d.]+ "
                         r"\(([\d.]+)% accounted\)", lines[0])
    assert match, lines[0]
    # The summary's wall goes on past the metadata's, to the last output written.
    assert float(match[1]) >= round(stats["wall_seconds"], 1) - 0.05
    # `safety-harness summary` of the report prints the line as the metadata recorded it.
    later = subprocess.run([sys.executable, "-m", "harness.cli.main", "summary", str(harness_project.report)],
                           capture_output=True, text=True, timeout=120)
    assert later.returncode == 0, later.stdout + later.stderr
    recorded = [line for line in later.stdout.splitlines() if line.startswith("time: ")]
    assert recorded == [recorded_time_line(read_report(harness_project.report)[1])], later.stdout
    assert recorded[0].startswith(f"time: {stats['wall_seconds']:.1f} s wall = startup {stats['startup_seconds']:.1f} + ")


def test_a_report_without_timed_phases_has_no_time_line():
    assert recorded_time_line({"stats": {"generation_seconds": 3.0}}) is None  # written before wall_seconds
    assert recorded_time_line({}) is None
    meta = {"stats": {"generation_seconds": 3.0, "wall_seconds": 4.0, "unknown": "x"},
            "suites": {"capability": {"capability": {"seconds": {"ref_loglik": 0.5}}}}}
    assert recorded_time_line(meta) == ("time: 4.0 s wall = startup 0.0 + data 0.0 + model 0.0 + engine start 0.0 + "
                                        "generation 3.0 + scoring 0.0 + log-likelihood 0.5 + report 0.0 + other 0.5 "
                                        "(87.5% accounted)")


def test_time_line_adds_the_phases_up_to_the_wall():
    stats = RunStats(startup_seconds=9.1, data_seconds=2.0, model_prep_seconds=12.3, backend_start_seconds=70.7,
                     generation_seconds=161.4, scoring_seconds=1.5, report_seconds=0.8, wall_seconds=277.6)
    assert time_line(stats, {"ref_loglik": 6.1}) == (
        "time: 277.6 s wall = startup 9.1 + data 2.0 + model 12.3 + engine start 70.7 + generation 161.4 + "
        "scoring 1.5 + log-likelihood 6.1 + report 0.8 + other 13.7 (95.1% accounted)")
    assert time_line(RunStats(), {}) is None  # the clock has not stopped: no line
    overlapping = RunStats(data_seconds=3.0, scoring_seconds=3.0, wall_seconds=5.0)
    assert time_line(overlapping, {}).endswith("report 0.0 (the phases overlap by 1.0 s: pytest-xdist workers run "
                                               "side by side)")


def test_workers_side_by_side_phases_count_once_and_wall_is_the_controllers():
    from harness.config.settings import RunSettings
    from harness.engine.session import HarnessSession
    from harness.engine.session_payload import merge_stats

    def worker(**seconds) -> dict:
        return {"stats": vars(RunStats(n_prompts=3, **seconds)), "stats_collection": vars(RunStats(n_prompts=3))}

    generating = worker(startup_seconds=2.0, data_seconds=0.5, model_prep_seconds=4.0, backend_start_seconds=30.0,
                        generation_seconds=60.0, scoring_seconds=1.0, backend_starts=1)
    waiting = worker(startup_seconds=2.5, data_seconds=0.4, model_prep_seconds=4.5, scoring_seconds=1.2)
    controller = HarnessSession(RunSettings(backend="dummy"))
    controller.stats.wall_seconds, controller.stats.report_seconds = 110.0, 0.7
    merged = merge_stats([generating, waiting], controller=controller)
    assert merged.backend_start_seconds == 30.0 and merged.generation_seconds == 60.0  # one worker at a time
    assert (merged.data_seconds, merged.model_prep_seconds, merged.scoring_seconds) == (0.5, 4.5, 1.2)
    assert merged.startup_seconds == pytest.approx(controller.own_startup_seconds + 2.5)
    assert (merged.wall_seconds, merged.report_seconds) == (110.0, 0.7)


def test_only_the_first_session_of_a_process_starts_at_the_process_start():
    from harness.config.settings import RunSettings
    from harness.engine.session import HarnessSession

    # This test process's own pytest session came first; a later one starts when it is created.
    before = time.perf_counter()
    hs = HarnessSession(RunSettings(backend="dummy"))
    assert hs.origin >= before and hs.stats.startup_seconds < time.perf_counter() - before + 0.01


@pytest.mark.skipif(clock.process_age() is None, reason="no /proc: the clock starts at the plugin's import")
def test_process_age_counts_from_the_interpreter_start():
    code = "import time; time.sleep(0.4); from harness.core.clock import PROCESS_START, process_age; " \
           "print(process_age(), time.perf_counter() - PROCESS_START)"
    age, since_start = map(float, subprocess.check_output([sys.executable, "-c", code], text=True).split())
    assert 0.4 <= age < 30 and 0.4 <= since_start < 30
