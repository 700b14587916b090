"""The pytest plugin: options, collection-time generation, fixtures, terminal summary and report.

State lives in one ``HarnessSession`` kept in ``config.stash``. The plugin is inert (loads nothing) when
no collected test uses a safety suite, so it costs nothing in ordinary test runs.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

import harness.core.clock  # noqa: F401  first: where /proc cannot tell, the run's clock starts at this import
from harness.backends import available_backends
from harness.backends.vllm_settings import EXECUTOR_BACKENDS
from harness.core.errors import HarnessError
from harness.core.files import check_writable
from harness.config.thresholds import THRESHOLD_ON
from harness.engine.session import DataMissingError, HarnessSession
from harness.engine.suite_result import SuiteResult
from harness.pytest_plugin.state import (REPORT_KEY, SESSION_KEY, get_session, item_suite, marker_suite,  # noqa: F401
                                         project_dir, say_alone, statically_skipped)
from harness.config.settings import RunSettings, build_settings, parse_backend_args
from harness.config.options import TEMPLATES
from harness.engine.preflight import check_scorer_names, check_threshold_categories, check_threshold_kinds, preflight
from harness.config.presets import EARLY_STOPPING, PRESETS

# Hooks that live in their own modules: pytest-xdist support (one generation, one report), the opt-in
# invariance suites, regression gating against a baseline with --html/--markdown summaries, the rule
# that a session which scored no prompt for its gates fails, a Ctrl-C while the report is written, and the
# checks as junit XML properties; and the report phase of the run's clock.
pytest_plugins = ["harness.pytest_plugin.xdist", "harness.pytest_plugin.invariance", "harness.pytest_plugin.baseline",
                  "harness.pytest_plugin.empty_gate", "harness.pytest_plugin.interrupts", "harness.pytest_plugin.junit",
                  "harness.pytest_plugin.clock"]

BACKENDS = ("auto", *available_backends())  # the backend registry is the one list of names

# (option, settings field, type, choices)
_OPTIONS = [
    ("--model", "model", str, None),
    ("--base-model", "base_model", str, None),
    ("--backend", "backend", str, BACKENDS),
    ("--template", "template", str, TEMPLATES),
    ("--max-new-tokens", "max_new_tokens", int, None),
    ("--temperature", "temperature", float, None),
    ("--top-p", "top_p", float, None),
    ("--seed", "seed", int, None),
    ("--num-beams", "num_beams", int, None),
    ("--length-penalty", "length_penalty", float, None),
    ("--early-stopping", "early_stopping", str, EARLY_STOPPING),
    ("--preset", "preset", str, tuple(PRESETS)),
    ("--limit", "limit", int, None),
    ("--data-dir", "data_dir", Path, None),
    ("--cache-dir", "cache_dir", Path, None),
    ("--report", "report", Path, None),
    ("--replay", "replay", Path, None),
    ("--replay-response-column", "replay_response_column", str, None),
    ("--scorer", "scorer", str, None),
    ("--judge-model", "judge_model", str, None),
    ("--harm-scorer", "harm_scorer", str, None),
    ("--harm-model", "harm_model", str, None),
    ("--dtype", "dtype", str, ("auto", "float32", "bfloat16", "float16")),
    ("--batch-size", "batch_size", int, None),
    ("--chunk-size", "chunk_size", int, None),
    ("--max-model-len", "max_model_len", int, None),
    ("--vllm-kv-cache-gib", "vllm_kv_cache_gib", float, None),
    ("--tensor-parallel-size", "tensor_parallel_size", int, None),
    ("--pipeline-parallel-size", "pipeline_parallel_size", int, None),
    ("--data-parallel-size", "data_parallel_size", int, None),
    ("--distributed-executor-backend", "distributed_executor_backend", str, EXECUTOR_BACKENDS),
    ("--ray-address", "ray_address", str, None),
    ("--replicas", "replicas", int, None),
    ("--capability-judge", "capability_judge", str, None),
    ("--capability-judge-model", "capability_judge_model", str, None),
    ("--capability-reference", "capability_reference", str, None),
    ("--ref-loglik-max-tokens", "ref_loglik_max_tokens", int, None),
    ("--threshold-on", "threshold_on", str, THRESHOLD_ON),
    ("--error-rates", "error_rates", Path, None),
    ("--labels", "labels", Path, None),
]
_FLAGS = [("--allow-pickle", "allow_pickle"), ("--trust-remote-code", "trust_remote_code"), ("--no-cache", "no_cache"),
          ("--no-ref-loglik", "no_ref_loglik"), ("--no-adapter-sanity", "no_adapter_sanity"),
          ("--allow-missing-data", "allow_missing_data"), ("--batch-invariant", "batch_invariant")]


def pytest_addoption(parser):
    group = parser.getgroup("safety-harness", "safety regression suites")
    # argparse formats help strings with %: a literal "95%" in a field's help must reach it as "95%%".
    helps = {name: f.metadata.get("help", "").replace("%", "%%") for name, f in RunSettings.__dataclass_fields__.items()}
    for flag, name, kind, choices in _OPTIONS:
        group.addoption(flag, dest=f"sh_{name}", type=kind, choices=choices, default=None, help=helps[name])
    for flag, name in _FLAGS:
        group.addoption(flag, dest=f"sh_{name}", action="store_true", default=None, help=helps[name])
    group.addoption("--backend-arg", dest="sh_backend_args", action="append", default=None, metavar="KEY=VALUE",
                    help=helps["backend_args"])
    group.addoption("--source", "--data-source", dest="sh_data_source", default=None, metavar="URL_OR_DIR",
                    help=helps["data_source"])
    group.addoption("--engine-logs", dest="sh_engine_logs", action="store_true", default=False,
                    help="Show vLLM's start-up messages and progress bars (also shown with -v).")
    group.addoption("--config", dest="sh_config", type=Path, default=None,
                    help="TOML file with [tool.safety-harness] settings, thresholds and suites.")


def pytest_configure(config):
    config.addinivalue_line("markers", "safety_suite(name): the test asserts on the named safety suite's results")
    from harness.backends import vllm_quiet

    verbose = config.getoption("sh_engine_logs") or config.get_verbosity() > 0
    vllm_quiet.configure(verbose)  # before any engine starts (vLLM reads it at import)
    if not verbose:
        for line in vllm_quiet.NOISY_WARNINGS:
            config.addinivalue_line("filterwarnings", line)
    cli = {name: config.getoption(f"sh_{name}") for _, name, _, _ in _OPTIONS}
    cli.update({name: config.getoption(f"sh_{name}") for _, name in _FLAGS})
    cli["data_source"] = config.getoption("sh_data_source")
    try:
        cli["backend_args"] = parse_backend_args(config.getoption("sh_backend_args"))
        plan = preflight(build_settings(cli=cli, rootdir=project_dir(config), config_file=config.getoption("sh_config")))
        settings = plan.settings
        # Every output named on the command line is writable before any generation (--html, --markdown and
        # --baseline-save: harness.pytest_plugin.baseline); the default report path once suites are selected.
        check_writable([("--report", settings.report), ("--junitxml", getattr(config.option, "xmlpath", None))])
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = HarnessSession(settings, plan=plan, notify=_terminal_line(config))


def _terminal_line(config):
    """Print one line past pytest's capture (dataset fetches happen during collection, which is captured)."""

    def say(line: str) -> None:
        capman = config.pluginmanager.getplugin("capturemanager")
        reporter = config.pluginmanager.getplugin("terminalreporter")
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            if reporter is not None:
                reporter.write_line(line)
            else:
                print(line, flush=True)

    return say


def pytest_generate_tests(metafunc):
    hs = get_session(metafunc.config)
    if "safety_suite_name" in metafunc.fixturenames:
        names = hs.settings.user_suite_names
        metafunc.parametrize("safety_suite_name", names, ids=names)
    if "safety_category" in metafunc.fixturenames:
        suite = marker_suite(metafunc.definition)
        if suite is None:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: safety_category needs @pytest.mark.safety_suite")
        try:
            prompts = hs.load_suite(suite)
        except DataMissingError:  # reported once for all selected suites, in pytest_collection_finish
            metafunc.parametrize("safety_category", [None], ids=["data-missing"])
            return
        except HarnessError as exc:
            raise pytest.UsageError(str(exc)) from None
        if prompts is None:
            metafunc.parametrize("safety_category", [pytest.param(None, marks=pytest.mark.skip(reason=hs.missing[suite]))])
        else:
            categories = sorted({p.category for p in prompts})
            metafunc.parametrize("safety_category", categories, ids=categories)


def pytest_collection_modifyitems(items):
    for item in items:  # so that `-k SUITE` selects a suite whatever its file and test are called
        suite = item_suite(item)
        if suite:
            item.extra_keyword_matches.add(suite)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """Generate once, for exactly the suites the selected (not deselected) items need."""
    config = session.config
    if config.option.collectonly:
        return
    names = [s for s in dict.fromkeys(item_suite(i) for i in session.items) if s]
    if not names or (session.testsfailed and not config.option.continue_on_collection_errors):
        return  # collection errors stop the run: starting an engine for it would only delay that
    if isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit)):
        return  # pytest calls this from a `finally`: a Ctrl-C during collection (a data fetch) ends the run here
    hs = get_session(config)
    hs.held_categories = held_categories(session.items)
    hs.held_suites = held_suites(session.items)
    if any(n in hs.data_errors for n in names):
        raise pytest.UsageError(hs.data_error_line(names))
    try:  # every conftest.py has been imported by now, with any scorer a project registers there
        check_scorer_names(hs.settings)
        _check_category_thresholds(hs, names)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None
    if hs.settings.report is None:  # the default report path, checked only now: ordinary test runs write none
        try:
            check_writable([("report", hs.default_report_path(Path(config.rootpath)))])
        except HarnessError as exc:
            raise pytest.UsageError(f"{exc} (pass --report PATH)") from None
    capman = config.pluginmanager.getplugin("capturemanager")
    # The progress bar must reach the terminal past pytest's capture; -qq silences it.
    uncaptured = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
    try:
        with uncaptured:
            hs.run(names, progress=config.get_verbosity() > -2)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None
    except OSError as exc:  # a file or folder the run needs (cache, report, model) cannot be used: name it
        raise pytest.UsageError(f"{exc.filename or 'a file'}: {exc.strerror or exc}") from None


def held_categories(items) -> dict[str, list[str]]:
    """suite -> the categories of the selected per-category test items (``safety_category``): the checks the run
    holds beside its suites', which its report records and the verified rates and ``review`` target."""
    held: dict[str, set] = {}
    for item in items:
        callspec = getattr(item, "callspec", None)
        category = callspec.params.get("safety_category") if callspec is not None else None
        suite = item_suite(item)
        if isinstance(category, str) and suite:
            held.setdefault(suite, set()).add(category)
    return {suite: sorted(categories) for suite, categories in sorted(held.items())}


def held_suites(items) -> list[str]:
    """The suites whose own checks a selected item holds: a suite's test (or any test of its marker without a
    category), not a category's (``held_categories``) nor a baseline gate's, and not one skipped before it runs.
    The others' checks are reported as not gated: no test asserted them, so the exit status does not count them."""
    held = set()
    for item in items:
        suite = item_suite(item)
        callspec = getattr(item, "callspec", None)
        if (not suite or isinstance(getattr(item, "safety_suite_name", None), str) or statically_skipped(item)
                or (callspec is not None and "safety_category" in callspec.params)):
            continue
        held.add(suite)
    return sorted(held)


def _check_category_thresholds(hs: HarnessSession, names: list[str]) -> None:
    """The SUITE:CATEGORY thresholds of the selected suites name categories they have, and every SUITE or
    SUITE:CATEGORY bound counts a kind of prompt its scope holds, before any generation."""
    from harness.data.suites import get_suite

    targeted = {t.partition(":")[0] for t in hs.settings.thresholds} & set(names)
    for suite in sorted(targeted):
        try:
            prompts = hs.load_suite(suite)
        except HarnessError:
            continue  # a data error: the run says it in its own line
        if prompts is None:
            continue  # data missing, the suite skipped
        if hs.settings.limit is not None:  # a sample may lack a category, or a kind of prompt, the suite has
            prompts = get_suite(suite).load(hs.settings.data_dir)
        check_threshold_categories(hs.settings, suite, {p.category for p in prompts})
        check_threshold_kinds(hs.settings, suite, prompts)


@pytest.fixture
def safety_session(request) -> HarnessSession:
    """The run's ``HarnessSession``: settings, prompts, scored rows, statistics."""
    return get_session(request.config)


@pytest.fixture
def safety_suite(request) -> SuiteResult:
    """The scored results of the suite named by the test's ``safety_suite`` marker (or parameter)."""
    hs = get_session(request.config)
    name = item_suite(request.node)
    if name is None:
        raise pytest.UsageError(f"{request.node.nodeid}: the safety_suite fixture needs @pytest.mark.safety_suite")
    if name in hs.missing:
        pytest.skip(hs.missing[name])
    if name not in hs.results:
        hs.run([name])  # a test reached without collection-time generation (e.g. called directly)
        if name in hs.missing:
            pytest.skip(hs.missing[name])
    return hs.results[name]


@pytest.fixture
def safety_category():
    """Overridden by parametrization: one test per category of the suite."""
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput") or SESSION_KEY not in config.stash:
        return  # xdist workers leave the report to the controller
    hs = get_session(config)
    if not hs.results and not hs.extra_rows:
        return
    path = hs.settings.report or hs.default_report_path(Path(config.rootpath))
    from harness.engine.run_report import write_report

    try:
        config.stash[REPORT_KEY] = write_report(hs, path, {"exitstatus": int(exitstatus)})
    except OSError as exc:
        config.stash[REPORT_KEY] = None
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
        say_alone(config, f"safety-harness: could not write report {path}: {exc}")


def pytest_unconfigure(config):
    if SESSION_KEY in config.stash:
        get_session(config).close()  # the backend stayed up for tests' ad-hoc prompts


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if SESSION_KEY not in config.stash:
        return
    hs = get_session(config)
    if not hs.results and not hs.missing and not hs.extra_rows:
        return
    from harness.engine.summary import summary_lines

    terminalreporter.section("safety-harness summary")
    for line in summary_lines(hs, config.stash.get(REPORT_KEY, None)):
        terminalreporter.write_line(line, red=line.rstrip().endswith("FAIL"))
