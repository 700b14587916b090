"""`safety-harness --help` and every subcommand's help read as help: a description, and a help line for
every option and argument (no module docstrings, no bare metavars)."""

import argparse

from harness.cli.main import build_parser


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_top_level_help_describes_the_tool():
    text = build_parser().format_help()
    assert text.splitlines()[2].startswith("safety-harness: safety regression tests")
    assert "``" not in text and "@command" not in text and "pytest suites/" in text and "examples:" in text


def test_every_subcommand_and_option_has_help():
    seen = []
    stack = list(_subparsers(build_parser()))
    while stack:
        name, parser = stack.pop()
        seen.append(name)
        assert parser.description, f"{name}: no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack += [(f"{name} {n}", p) for n, p in action.choices.items()]
            elif not isinstance(action, argparse._HelpAction):
                assert action.help, f"safety-harness {name}: {action.option_strings or action.dest} has no help"
    assert {"data", "data fetch", "data list", "data verify", "train", "score"} <= set(seen)


def test_console_script_runs_outside_the_checkout(tmp_path):
    """The installed command imports only installed packages (``harness.trainers``, not a ``trainers`` folder
    that happens to be on sys.path when run from the repository)."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "safety-harness"
    if not exe.is_file():
        import pytest

        pytest.skip("the safety-harness console script is not installed")
    proc = subprocess.run([str(exe), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "safety-harness" in proc.stdout
