"""The machinery of the option tables (tests/test_cli_options.py, tests/test_pytest_options.py): a table
maps each option to a scenario (one real run of a command, shared by the options it exercises) and to a
check of the option's effect on that run: a line in the output, a file written, a value in the report's
columns or metadata, an exit status.

An entry is one line: ``"--limit": effect("dummy", rows_of("alpha", 3))``. A scenario runs once per
process, the first time an entry needs it; scenarios may use other scenarios' runs.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable
from unittest import mock

import pytest


@dataclass
class Run:
    """What a command did: its exit status, its output (stdout and stderr together), the folder it worked
    in, the Parquet report it wrote (if any), and facts the scenario gathered (other runs to compare with)."""

    ret: int
    out: str
    folder: Path
    report: Path | None = None
    facts: dict = field(default_factory=dict)

    @cached_property
    def table(self):
        from harness.reports.parquet import read_report

        assert self.report is not None and self.report.is_file(), f"no report written: {self.out[-3000:]}"
        return read_report(self.report)

    @property
    def rows(self) -> list[dict]:
        return self.table[0].to_pylist()

    @property
    def meta(self) -> dict:
        return self.table[1]


@dataclass(frozen=True)
class Effect:
    scenario: str
    checks: tuple[Callable[[Run], object], ...]


def effect(scenario: str, *checks: Callable[[Run], object]) -> Effect:
    return Effect(scenario, checks)


# -- checks: each takes the Run and asserts ------------------------------------------------------------------

def exits(status: int):
    def check(run: Run):
        assert run.ret == status, f"exit {run.ret}, expected {status}: {run.out[-3000:]}"
    return check


def said(*texts: str):
    def check(run: Run):
        missing = [t for t in texts if t not in run.out]
        assert not missing, f"{missing} not in the output: {run.out[-3000:]}"
    return check


def not_said(*texts: str):
    def check(run: Run):
        found = [t for t in texts if t in run.out]
        assert not found, f"{found} in the output: {run.out[-3000:]}"
    return check


def wrote(*names: str):
    """Files (or folders) the run made, relative to its folder."""
    def check(run: Run):
        missing = [n for n in names if not (run.folder / n).exists()]
        assert not missing, f"{missing} not written under {run.folder}: {run.out[-2000:]}"
    return check


def column(name: str, expected):
    """Every report row's ``name`` equals ``expected`` (or, when callable, ``expected(values)`` holds)."""
    def check(run: Run):
        values = [r[name] for r in run.rows]
        assert values, "the report has no rows"
        assert expected(values) if callable(expected) else set(values) == {expected}, (name, values)
    return check


def meta(path: str, expected):
    """The report metadata at a dotted ``path`` equals ``expected`` (or satisfies it, when callable)."""
    def check(run: Run):
        value = run.meta
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        assert expected(value) if callable(expected) else value == expected, (path, value)
    return check


def on(name: str, *checks: Callable[[Run], object]):
    """``checks`` on another run the scenario made beside its own (``run.facts[name]``)."""
    def check(run: Run):
        other = run.facts.get(name)
        assert isinstance(other, Run), f"the scenario made no run {name!r}"
        for c in checks:
            c(other)
    return check


def fact(name: str, expected):
    """A fact the scenario gathered equals ``expected`` (or satisfies it, when callable)."""
    def check(run: Run):
        value = run.facts.get(name)
        assert expected(value) if callable(expected) else value == expected, (name, value)
    return check


# -- scenarios -------------------------------------------------------------------------------------------------

class Scenarios:
    """Named runs, each made once per process. ``@scenarios("name", pytest.mark.vllm)`` registers
    ``make(ctx) -> Run``; its marks go to every table entry that uses it."""

    def __init__(self):
        self.makers: dict[str, Callable] = {}
        self.marks: dict[str, tuple] = {}
        self.done: dict[str, Run] = {}

    def __call__(self, name: str, *marks):
        def register(make):
            self.makers[name] = make
            self.marks[name] = marks
            return make
        return register

    def run(self, name: str, ctx) -> Run:
        if name not in self.done:
            self.done[name] = self.makers[name](ctx)
        return self.done[name]


def params(table: dict[str, Effect], scenarios: Scenarios) -> list:
    """The table's options as pytest parameters, carrying their scenario's marks."""
    unknown = sorted({e.scenario for e in table.values()} - set(scenarios.makers))
    assert not unknown, f"table entries name scenarios that do not exist: {unknown}"
    return [pytest.param(option, marks=scenarios.marks[table[option].scenario], id=option) for option in sorted(table)]


def missing_and_stale(table: dict[str, Effect], options: list[str]) -> tuple[list[str], list[str]]:
    return sorted(set(options) - set(table)), sorted(set(table) - set(options))


@contextlib.contextmanager
def environment(**values):
    """Environment variables for one run (None: unset), restored after it."""
    with mock.patch.dict(os.environ):
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        yield


def run_cli(argv: list[str], folder: Path, *, report: Path | None = None, **facts) -> Run:
    """`safety-harness ARGV` in this process (the parser and the command's code, as the console script
    runs them), with its output captured."""
    from harness.cli.main import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            ret = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's own refusals
            ret = exc.code if isinstance(exc.code, int) else 2
    return Run(ret, buffer.getvalue(), folder, report, dict(facts))
