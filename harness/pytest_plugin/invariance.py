"""pytest wiring for the opt-in invariance suites (``suites/test_invariance.py``): the ``--run-invariance``
gate, the ``invariance`` fixture and the summary section. The checks themselves are in
``harness.engine.metamorphic``.

Opt-in because they cost minutes on a CPU, more than the rest of ``pytest suites/ --limit 20``: about
15 rewrites x the anchored bases in the sweep, plus up to ``--invariance-examples`` batched generations
per hypothesis property and its shrinking (figures in README, "Parallel runs, invariance suites and
multi-GPU").
"""

from __future__ import annotations

import pytest

from harness.engine.metamorphic import InvarianceRun, summary_lines

_RUN = pytest.StashKey[InvarianceRun]()
OPT_IN = "invariance suites are opt-in (minutes on a CPU): add --run-invariance"


def pytest_addoption(parser):
    group = parser.getgroup("safety-harness")
    group.addoption("--run-invariance", dest="sh_run_invariance", action="store_true", default=False,
                    help="Run the metamorphic invariance suites (tests marked invariance).")
    group.addoption("--invariance-examples", dest="sh_invariance_examples", type=int, default=None,
                    help="Hypothesis examples per invariance property (default 10).")


def pytest_configure(config):
    config.addinivalue_line("markers", "invariance: metamorphic invariance check; runs only with --run-invariance")
    examples = config.getoption("sh_invariance_examples")
    if examples is not None and examples < 1:  # 0 read as unset ran the default; below 0 failed after generating
        raise pytest.UsageError(f"--invariance-examples must be at least 1, got {examples}")


def pytest_collection_modifyitems(config, items):
    if config.getoption("sh_run_invariance"):
        return
    from harness.api import skip_marked

    skip_marked(items, "invariance", OPT_IN)


@pytest.fixture(scope="session")
def invariance(request) -> InvarianceRun:
    """The run's invariance checks, generating through the session's cache and backend."""
    from harness.pytest_plugin.state import get_session

    config = request.config
    if _RUN not in config.stash:
        config.stash[_RUN] = InvarianceRun(get_session(config), examples=config.getoption("sh_invariance_examples"))
    return config.stash[_RUN]


def pytest_terminal_summary(terminalreporter, config):
    from harness.pytest_plugin.state import SESSION_KEY

    if SESSION_KEY not in config.stash:
        return
    findings = config.stash[SESSION_KEY].extra_metadata.get("invariance")
    if findings:
        terminalreporter.section("safety-harness invariance")
        for line in summary_lines(findings):
            terminalreporter.write_line(line)
