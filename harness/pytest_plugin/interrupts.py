"""A Ctrl-C after the tests ran, while the run's report is written or its summary printed: one line and
pytest's exit status for an interrupt (2), not a traceback. And a Ctrl-C at any moment: pytest's own report
of it must not fail (``pytest_keyboard_interrupt`` below).

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


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo):
    """Unlink the traceback entries that have no line number, before pytest formats the interrupt.

    Why: on CPython 3.11+ a SIGINT can land on an instruction that has no line number (seen while the
    embedded model is prepared from its GGUF), and the traceback entry made there reads ``tb_lineno`` None.
    pytest's report of the interrupt computes ``tb_lineno - 1`` and fails with a TypeError, so the run ends
    with exit status 1 and a page of pytest's own traceback instead of 2 and one line. Such an entry names
    no line to show; the entries around it stay."""
    seen: set[int] = set()
    exc = excinfo.value  # its __traceback__ is excinfo.tb (pytest takes both from sys.exc_info())
    while exc is not None and id(exc) not in seen:  # the exception and those it was raised from or during
        seen.add(id(exc))
        _unlink_unnumbered(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def _unlink_unnumbered(tb) -> None:
    # The first entry is the frame that caught the exception, always at a line; the rest can be unlinked.
    while tb is not None and tb.tb_next is not None:
        if tb.tb_next.tb_lineno is None:
            tb.tb_next = tb.tb_next.tb_next
        else:
            tb = tb.tb_next
