"""Where a run's wall time starts, so that the report's timings can account for all of it.

A user waits from the moment the process starts, not from the first harness hook: the interpreter's start and
the imports (pytest, torch, vLLM) come first and can take seconds. Python keeps no portable record of when its
process started, and psutil is no dependency. Linux keeps one in /proc: the process's start in clock ticks since
boot (``/proc/self/stat`` field 22) and the seconds since boot (``/proc/uptime``), both on the boot clock, so
their difference is the process's age to a clock tick (10 ms), read without any package. Where /proc is absent
(macOS, Windows) the origin falls back to the moment this module was first imported, which the harness's pytest
plugin does before anything else of the harness; the time before that is then missing from the account (it
shows as less "startup", never as more).

Only the first run of a process starts at the process's start: a second run in the same process (pytest's
in-process runs in the project's tests, a second ``HarnessSession`` in a notebook) starts when it is created.
"""

from __future__ import annotations

import os
import time


def process_age() -> float | None:
    """Seconds since this process started, from /proc; None where /proc cannot tell."""
    try:
        with open("/proc/self/stat") as fh:
            stat = fh.read()
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        # The command name (field 2) is in parentheses and may hold spaces: count fields after its ")".
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


_IMPORTED = time.perf_counter()
_AGE = process_age()
# The process's start as a time.perf_counter() reading (the clock every phase of a run is measured on).
PROCESS_START = _IMPORTED - (_AGE if _AGE is not None else 0.0)
PROCESS_START_KNOWN = _AGE is not None
_claimed = False


def run_origin() -> float:
    """The perf_counter() reading a new run's wall time starts at: the process's start for the first run of the
    process, else now."""
    global _claimed
    if _claimed:
        return time.perf_counter()
    _claimed = True
    return PROCESS_START
