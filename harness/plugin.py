"""The pytest plugin: options, collection-time generation, fixtures, terminal summary and report.

State lives in one ``HarnessSession`` kept in ``config.stash``. The plugin is inert (loads nothing) when
no collected test uses a safety suite, so it costs nothing in ordinary test runs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from harness.backends.vllm_backend import EXECUTOR_BACKENDS
from harness.core.errors import HarnessError
from harness.config.thresholds import THRESHOLD_ON
from harness.engine.session import HarnessSession, SuiteResult
from harness.config.settings import RunSettings, build_settings, parse_backend_args
from harness.models.templates import TEMPLATES

# Hooks that live in their own modules: pytest-xdist support (one generation, one report), the opt-in
# invariance suites, and regression gating against a baseline with --html/--markdown summaries.
pytest_plugins = ["harness.pytest_plugin.xdist", "harness.pytest_plugin.invariance", "harness.pytest_plugin.baseline"]

SESSION_KEY = pytest.StashKey[HarnessSession]()
REPORT_KEY = pytest.StashKey[Path]()
BACKENDS = ("auto", "vllm", "hf", "replay", "dummy")

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
]
_FLAGS = [("--allow-pickle", "allow_pickle"), ("--trust-remote-code", "trust_remote_code"), ("--no-cache", "no_cache"),
          ("--no-ref-loglik", "no_ref_loglik"), ("--no-adapter-sanity", "no_adapter_sanity")]


def pytest_addoption(parser):
    group = parser.getgroup("safety-harness", "safety regression suites")
    helps = {name: f.metadata.get("help", "") for name, f in RunSettings.__dataclass_fields__.items()}
    for flag, name, kind, choices in _OPTIONS:
        group.addoption(flag, dest=f"sh_{name}", type=kind, choices=choices, default=None, help=helps[name])
    for flag, name in _FLAGS:
        group.addoption(flag, dest=f"sh_{name}", action="store_true", default=None, help=helps[name])
    group.addoption("--backend-arg", dest="sh_backend_args", action="append", default=None, metavar="KEY=VALUE",
                    help=helps["backend_args"])
    group.addoption("--config", dest="sh_config", type=Path, default=None,
                    help="TOML file with [tool.safety-harness] settings, thresholds and suites.")


def pytest_configure(config):
    config.addinivalue_line("markers", "safety_suite(name): the test asserts on the named safety suite's results")
    cli = {name: config.getoption(f"sh_{name}") for _, name, _, _ in _OPTIONS}
    cli.update({name: config.getoption(f"sh_{name}") for _, name in _FLAGS})
    try:
        cli["backend_args"] = parse_backend_args(config.getoption("sh_backend_args"))
        settings = build_settings(cli=cli, rootdir=project_dir(config), config_file=config.getoption("sh_config"))
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = HarnessSession(settings)


def project_dir(config) -> Path:
    """The folder whose pyproject.toml holds ``[tool.safety-harness]``: pytest's configfile when that is a
    pyproject.toml, else the rootdir's. pytest derives the rootdir from every existing path on the command
    line, this plugin's option values included (it reads them before plugins load), so
    ``--replay ../elsewhere/report.parquet`` can move the rootdir above the project; when the rootdir has no
    pyproject.toml, the nearest one above the folder pytest was started from is used."""
    inipath = config.inipath
    if inipath is not None and Path(inipath).name == "pyproject.toml":
        return Path(inipath).parent
    root = Path(config.rootpath)
    if (root / "pyproject.toml").is_file():
        return root
    start = Path(config.invocation_params.dir)
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return root


def get_session(config) -> HarnessSession:
    return config.stash[SESSION_KEY]


def _marker_suite(node) -> str | None:
    marker = node.get_closest_marker("safety_suite")
    if marker is None:
        return None
    if not marker.args:
        raise pytest.UsageError(f"{node.nodeid}: @pytest.mark.safety_suite needs a suite name")
    return marker.args[0]


def item_suite(item) -> str | None:
    if isinstance(own := getattr(item, "safety_suite_name", None), str):  # items built by harness.pytest_plugin.baseline
        return own
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "safety_suite_name" in callspec.params:
        value = callspec.params["safety_suite_name"]
        return value if isinstance(value, str) else None  # NOTSET when no suite is configured
    return _marker_suite(item)


def pytest_generate_tests(metafunc):
    hs = get_session(metafunc.config)
    if "safety_suite_name" in metafunc.fixturenames:
        names = hs.settings.user_suites
        metafunc.parametrize("safety_suite_name", names, ids=names)
    if "safety_category" in metafunc.fixturenames:
        suite = _marker_suite(metafunc.definition)
        if suite is None:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: safety_category needs @pytest.mark.safety_suite")
        try:
            prompts = hs.load_suite(suite)
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
    if not names:
        return
    hs = get_session(config)
    capman = config.pluginmanager.getplugin("capturemanager")
    # The progress bar must reach the terminal past pytest's capture; -qq silences it.
    uncaptured = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
    try:
        with uncaptured:
            hs.run(names, progress=config.get_verbosity() > -2)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None


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
    from harness.reports.parquet import write_report

    try:
        config.stash[REPORT_KEY] = write_report(hs, path, {"exitstatus": int(exitstatus)})
    except OSError as exc:
        config.stash[REPORT_KEY] = None
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
        config.get_terminal_writer().line(f"safety-harness: could not write report {path}: {exc}", red=True)


def pytest_unconfigure(config):
    if SESSION_KEY in config.stash:
        get_session(config).close()  # the backend stayed up for tests' ad-hoc prompts


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if SESSION_KEY not in config.stash:
        return
    hs = get_session(config)
    if not hs.results and not hs.missing and not hs.extra_rows:
        return
    from harness.reports.summary import summary_lines

    terminalreporter.section("safety-harness summary")
    for line in summary_lines(hs, config.stash.get(REPORT_KEY, None)):
        terminalreporter.write_line(line, red=line.rstrip().endswith("FAIL"))
