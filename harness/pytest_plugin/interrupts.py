"""A Ctrl-C after the tests ran, while the run's report is written or its summary printed: one line and
pytest's exit status for an interrupt (2), not a traceback.

Until then pytest reports a KeyboardInterrupt itself, in one line. ``pytest_sessionfinish`` is the
exception: pytest calls it outside its own KeyboardInterrupt handling, so an interrupt there would end the
process with a Python traceback. This wrapper is outermost (``tryfirst``), so it also covers the terminal
summary, which pytest prints from inside the same hook. The report is written through a temporary file
(``harness.core.files.atomic_path``): an interrupted write leaves no report, never a partial one.
"""

from __future__ import annotations

import pytest

from harness.pytest_plugin.state import REPORT_KEY


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session):
    try:
        return (yield)
    except KeyboardInterrupt:
        session.exitstatus = pytest.ExitCode.INTERRUPTED
        report = session.config.stash.get(REPORT_KEY, None)
        where = f"after writing report {report}" if report else "while writing the report; no report written"
        session.config.get_terminal_writer().line(f"safety-harness: KeyboardInterrupt {where}", red=True)
        return None
