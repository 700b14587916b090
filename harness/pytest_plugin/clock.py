"""The report phase of the run's clock: from where pytest starts finishing the session (the report, then the
--html, --markdown and junit XML outputs) to where every output is written.

One hook wrapper, the innermost (``trylast``): its start runs right before every plugin's
``pytest_sessionfinish``, its end right after them, before pytest's terminal reporter prints the summaries
(whose own work, e.g. another plugin importing itself for its summary, is no part of the report). The wall
time stops there too: what comes after (the summaries, closing the engine at unconfigure) is not counted.
On a pytest-xdist controller the report time also holds pytest-xdist's shutdown of its workers, which happens
in the same hook (`pytest suites/test_smoke.py --backend dummy --scorer refusal_patterns --limit 5 -n 2`: 0.6 s
of 17.8 s).
"""

from __future__ import annotations

import time

import pytest

from harness.pytest_plugin.state import SESSION_KEY


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_sessionfinish(session):
    config = session.config
    hs = config.stash.get(SESSION_KEY, None)
    if hs is None or hasattr(config, "workerinput"):  # xdist workers write nothing; their clocks are not read
        return (yield)
    hs.report_started = time.perf_counter()
    try:
        return (yield)
    finally:
        hs.stop_clock()
