"""The state the safety-harness plugins share through ``config.stash``: the one ``HarnessSession`` of a pytest
run and the report it wrote, plus how an item names its suite. The sibling plugins (baseline, invariance,
xdist, fixtures) import this module, not each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.engine.session import HarnessSession

SESSION_KEY = pytest.StashKey[HarnessSession]()
REPORT_KEY = pytest.StashKey[Path]()


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


def marker_suite(node) -> str | None:
    marker = node.get_closest_marker("safety_suite")
    if marker is None:
        return None
    if not marker.args:
        raise pytest.UsageError(f"{node.nodeid}: @pytest.mark.safety_suite needs a suite name")
    return marker.args[0]


def statically_skipped(item) -> bool:
    """Skipped before it runs (a skip mark, or skipif on a literal True): such an item holds no check."""
    # skipif with a string condition is left out: it is evaluated only when the item runs.
    return any(m.name == "skip" or (m.name == "skipif" and any(a is True for a in m.args))
               for m in item.iter_markers())


def item_suite(item) -> str | None:
    if isinstance(own := getattr(item, "safety_suite_name", None), str):  # items built by harness.pytest_plugin.baseline
        return own
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "safety_suite_name" in callspec.params:
        value = callspec.params["safety_suite_name"]
        return value if isinstance(value, str) else None  # NOTSET when no suite is configured
    return marker_suite(item)


def say_alone(config, line: str) -> None:
    """A red line on its own at the end of a run: the progress dots may have left the cursor mid-line, where
    the terminal writer's ``line`` would glue it on (``[100%]safety-harness: ...``)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line, red=True)  # starts a new line first where needed
    else:
        config.get_terminal_writer().line(line, red=True)
