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

import os
import signal
import threading

import pytest

from harness.pytest_plugin.state import REPORT_KEY

_SIGTERM_BEFORE = pytest.StashKey[object]()


def _terminate_as_interrupt(signum, frame):
    """SIGTERM (a CI job cancelled, ``kill PID``, a container stopped) ends the run as a Ctrl-C does.

    Why: Python's default for SIGTERM exits at once, running no cleanup: a vLLM engine process on a GPU
    is left holding its memory (vLLM's engine does not watch for its parent's death), and the run prints
    nothing. Through the SIGINT handler in force (Python's KeyboardInterrupt, or the harness's guard while
    an engine starts) it takes the path every Ctrl-C takes, tested phase by phase (tests/test_interrupts.py):
    engines shut down, one line, exit status 2. Where SIGINT is ignored, SIGTERM keeps its default."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def pytest_configure(config):
    # Only where Python's default is in force (a user's or an embedding program's own handler wins), and only
    # from the main thread, the one signal handlers can be set from.
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        config.stash[_SIGTERM_BEFORE] = signal.signal(signal.SIGTERM, _terminate_as_interrupt)


def pytest_unconfigure(config):
    before = config.stash.get(_SIGTERM_BEFORE, None)
    if before is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, before)


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
