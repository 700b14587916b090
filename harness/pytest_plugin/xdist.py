"""pytest-xdist support: one generation for the whole run, one report, one summary table.

How a ``pytest -n N`` run goes:

* Every worker collects the same items, so every worker's ``HarnessSession.run`` wants the same prompts.
  The first worker to take the per-run-key file lock (``GenerationCache.generation_lock``) generates them;
  the others wait on the lock, then find every response in the SQLite cache and never start a backend.
  So the model is loaded once and generation is one batched call, whatever N is.
* Workers score their rows and run the assertions of the tests xdist hands them, in parallel.
* At the end each worker sends its session (its scored rows, its share of the statistics) to the controller
  in ``workeroutput``; the controller rebuilds its own session from them (harness.engine.session_payload),
  which then writes the one Parquet report and prints the one summary table exactly as a serial run does
  (see ``harness.pytest_plugin.plugin``).

The hooks here are ``optionalhook``s, so this module is harmless when xdist is not installed.
"""

from __future__ import annotations

import json

import pytest

from harness.backends.base import MODEL_FREE, resolve_backend_name
from harness.baselines.layout import check_one_layout
from harness.engine.session_payload import has_payload, merge_payloads, to_payload

PAYLOAD_KEY = "safety_harness"
ERROR_KEY = "safety_harness_usage_error"
_COLLECTION_STATS = pytest.StashKey[dict]()
_PAYLOADS = pytest.StashKey[list]()
_USAGE_ERROR = pytest.StashKey[str]()


def is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def is_controller(config) -> bool:
    return not is_worker(config) and getattr(config.option, "dist", "no") != "no" and bool(getattr(config.option, "tx", None))


def _session(config):
    from harness.pytest_plugin.state import SESSION_KEY

    return config.stash[SESSION_KEY] if SESSION_KEY in config.stash else None


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    hs = _session(config)
    if hs is None or not is_controller(config):
        return
    s = hs.settings
    if s.no_cache and resolve_backend_name(s.backend) not in MODEL_FREE:
        # Workers hand generations to each other through the cache; without it each would load the model.
        raise pytest.UsageError("--no-cache cannot be combined with pytest-xdist (-n): workers share one "
                                "generation through the cache; drop -n or --no-cache")


# -- worker side -------------------------------------------------------------------------------------

@pytest.hookimpl(wrapper=True, tryfirst=True)  # around every other wrapper (harness.pytest_plugin.baseline's)
def pytest_collection_finish(session):
    """A usage error at the collection-time run (a bad model, a malformed prompt file, a refused baseline) stops
    a worker cleanly. Raised there, it would kill the worker after xdist sent its items, and the controller would
    end in an INTERNALERROR traceback ("assert not crashitem") instead of the serial run's one line: so the
    worker runs no test, stops, and hands the line to the controller, which prints it and exits 4."""
    try:
        return (yield)
    except pytest.UsageError as exc:
        if not is_worker(session.config):
            raise
        session.config.stash[_USAGE_ERROR] = str(exc)
        session.shouldstop = str(exc)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item):
    if _USAGE_ERROR in item.config.stash:
        return True  # the worker stopped at collection: its items are not run
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """Remember the statistics of the collection-time generation, which every worker repeats (all but
    one from the cache), apart from what tests add later (ad-hoc prompts), which only one worker does."""
    hs = _session(session.config)
    if hs is not None and is_worker(session.config):
        session.config.stash[_COLLECTION_STATS] = vars(hs.stats).copy()


@pytest.hookimpl(tryfirst=True)  # the usage error's exit status before harness.pytest_plugin.empty_gate reads it
def pytest_sessionfinish(session):
    config = session.config
    if is_worker(config) and _USAGE_ERROR in config.stash:
        config.workeroutput[ERROR_KEY] = config.stash[_USAGE_ERROR]
        return
    if not is_worker(config) and _USAGE_ERROR in config.stash:
        session.exitstatus = pytest.ExitCode.USAGE_ERROR  # as the serial run's, not "interrupted"
        return
    hs = _session(config)
    if hs is None or not is_worker(config) or not has_payload(hs):
        return
    config.workeroutput[PAYLOAD_KEY] = to_payload(hs, config.stash.get(_COLLECTION_STATS, None))


# -- controller side ---------------------------------------------------------------------------------

@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    config = node.config
    usage_error = getattr(node, "workeroutput", {}).get(ERROR_KEY)  # not the hook's own `error` argument
    if usage_error is not None:
        config.stash.setdefault(_USAGE_ERROR, usage_error)  # every worker stops on the same line: print it once
    hs = _session(config)
    raw = getattr(node, "workeroutput", {}).get(PAYLOAD_KEY)
    if hs is None or raw is None:
        return  # a worker that crashed sends nothing; the others hold every suite's rows too
    payloads = config.stash.setdefault(_PAYLOADS, [])
    payloads.append(json.loads(raw))
    check_one_layout([p.get("layout") for p in payloads])
    merge_payloads(hs, payloads)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    if not is_worker(config) and _USAGE_ERROR in config.stash:
        terminalreporter.write_line(f"ERROR: {config.stash[_USAGE_ERROR]}", red=True)
