"""A gate never passes on nothing: a session whose selected suite tests (threshold tests or baseline gate
items) scored zero prompts exits non-zero, with one line saying why.

Without this, ``pytest suites/ --data-dir no-such-dir`` ends "2 skipped" with exit status 0, and a CI job
gates a checkpoint with no prompt scored. The rule is session-wide, like pytest-benchmark's and syrupy's own
end-of-session verdicts: ``session.exitstatus`` set in ``pytest_sessionfinish`` plus a terminal summary line.
Items skipped before they run (opt-in suites without ``--run-invariance`` / ``--run-training``) gate
nothing and do not count. Under pytest-xdist each worker sends the suites its items gate; the controller,
which collects nothing itself, decides on those and on the merged rows.
"""

from __future__ import annotations

import pytest

_GATED = pytest.StashKey[set]()
_VERDICT = pytest.StashKey[str]()
PAYLOAD_KEY = "safety_harness_gated_suites"


def _session(config):
    from harness.pytest_plugin.plugin import SESSION_KEY

    return config.stash[SESSION_KEY] if SESSION_KEY in config.stash else None


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    from harness.pytest_plugin.state import item_suite, statically_skipped

    if session.config.option.collectonly:
        return
    gated = {s for item in session.items if not statically_skipped(item) and (s := item_suite(item))}
    session.config.stash[_GATED] = gated


def zero_prompt_verdict(gated: set, hs) -> str | None:
    """The line to print when the gated suites scored no prompt, else None."""
    if not gated or hs is None:
        return None
    scored = sum(len(hs.results[name].rows) for name in gated if name in hs.results)
    if scored:
        return None
    reasons = "; ".join(hs.missing[name] for name in sorted(gated) if name in hs.missing)
    return (f"safety-harness: FAIL: no prompt was scored for the selected suite(s) {', '.join(sorted(gated))}, "
            f"so no gate can pass" + (f" ({reasons})" if reasons else ""))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    gated = getattr(node, "workeroutput", {}).get(PAYLOAD_KEY)
    if gated is not None:
        node.config.stash.setdefault(_GATED, set()).update(gated)


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    gated = config.stash.get(_GATED, None)
    if gated is None:
        return
    if hasattr(config, "workerinput"):  # the controller decides; a worker reports what it gates
        config.workeroutput[PAYLOAD_KEY] = sorted(gated)
        return
    if session.exitstatus == pytest.ExitCode.USAGE_ERROR:
        return  # the run stopped on a usage error (under xdist, a worker's): that line says why nothing was scored
    verdict = zero_prompt_verdict(gated, _session(config))
    if verdict is None:
        return
    config.stash[_VERDICT] = verdict
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)  # the last line the user reads
def pytest_terminal_summary(terminalreporter, config):
    verdict = config.stash.get(_VERDICT, None)
    if verdict is not None:
        terminalreporter.write_line(verdict, red=True, bold=True)
