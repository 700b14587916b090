"""Every option a user can type, read from where the options are declared: the `safety-harness` parser
(built from ``harness.cli.registry``) and the ``pytest_addoption`` hooks of the harness's pytest plugins
(found through the package's ``pytest11`` entry points and their ``pytest_plugins``). The option tables of
tests/test_cli_options.py and tests/test_pytest_options.py are checked against these lists, so an option
added anywhere without a table entry fails a test."""

from __future__ import annotations

import argparse
import importlib
from importlib.metadata import entry_points


def cli_options() -> list[str]:
    """Each `safety-harness` command ("calibrate fit") and each of its options, as "calibrate fit --out";
    every spelling of an option counts. Positional arguments belong to their command's own entry."""
    from harness.cli.main import build_parser

    found: list[str] = []
    stack = [("", build_parser())]
    while stack:
        prefix, parser = stack.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    path = f"{prefix} {name}".strip()
                    if not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                        found.append(path)  # a command that runs (not a group of subcommands)
                    stack.append((path, sub))
            elif prefix and not isinstance(action, argparse._HelpAction):
                found += [f"{prefix} {flag}" for flag in action.option_strings]
    return sorted(found)


class _OptionRecorder:
    """Stands in for pytest's parser and its groups: records every spelling passed to ``addoption``."""

    def __init__(self):
        self.names: list[str] = []

    def getgroup(self, *args, **kwargs):
        return self

    def addoption(self, *names, **kwargs):
        self.names += names

    def addini(self, *args, **kwargs):
        pass


def harness_pytest_plugins() -> list[str]:
    """The harness's pytest plugin modules: its ``pytest11`` entry points and the plugins they load."""
    todo = [ep.value for ep in entry_points(group="pytest11") if ep.value.startswith("harness.")]
    seen: list[str] = []
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.append(name)
            todo += list(getattr(importlib.import_module(name), "pytest_plugins", []))
    return sorted(seen)


def pytest_options() -> list[str]:
    """Every option the harness adds to pytest, each spelling once (``--source`` and ``--data-source``)."""
    recorder = _OptionRecorder()
    for name in harness_pytest_plugins():
        hook = getattr(importlib.import_module(name), "pytest_addoption", None)
        if hook is not None:
            hook(recorder)
    return sorted(set(recorder.names))
