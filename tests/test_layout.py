"""The shape of the package: import contracts (layers, no circles, reports apart from the engine) checked by
import-linter, the installed package list, and that nothing importable is installed outside ``harness``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAPPED = {"harness.reports": "reports", "harness.trainers": "trainers", "harness.fixtures": "fixtures"}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


UNINSTALLED = ("research", "benchmarks")  # top-level packages of the checkout that the wheel leaves out


def _installed_layout(target: Path) -> Path:
    """The package as a wheel installs it: reports/, trainers/ and fixtures/ inside harness/; and beside it
    the checkout's research/ and benchmarks/, which the contracts keep harness from importing."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "harness", target / "harness", ignore=ignore)
    for package, folder in MAPPED.items():
        shutil.copytree(REPO / folder, target / "harness" / package.split(".")[1], ignore=ignore)
    for folder in UNINSTALLED:
        shutil.copytree(REPO / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "labels"))
    return target


def test_import_contracts_are_kept(tmp_path):
    pytest.importorskip("importlinter", reason="pip install import-linter (scripts/install.sh does)")
    src = _installed_layout(tmp_path / "src")
    env = {**os.environ, "PYTHONPATH": str(src)}
    # Run from the copy so that `harness` resolves to it, not to the checkout on sys.path[0].
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
         "--no-cache", str(REPO / "pyproject.toml")],
        cwd=src, env=env, capture_output=True, text=True, timeout=300,
    )
    report = result.stdout[result.stdout.find("Contracts"):]
    assert result.returncode == 0, report + result.stderr[-2000:]
    assert "BROKEN" not in report and report.count("KEPT") == len(_pyproject()["tool"]["importlinter"]["contracts"])


def test_every_package_in_the_tree_is_installed():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"] == MAPPED
    found = {".".join(p.relative_to(REPO).parent.parts) for p in (REPO / "harness").rglob("__init__.py")}
    found |= set(MAPPED)
    assert sorted(setuptools["packages"]) == sorted(found)


@pytest.mark.slow
def test_the_wheel_installs_nothing_outside_harness(tmp_path):
    """A generic top-level name (PyPI has a `fixtures`) in site-packages would shadow another distribution."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, timeout=600, capture_output=True)
    (wheel,) = tmp_path.glob("safety_harness-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"harness"}  # research/, benchmarks/ stay out
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"harness/fixtures/plugin.py", "harness/reports/parquet.py", "harness/trainers/train.py",
            "harness/scoring/refusal_head.json", "harness/data/smoke_prompts.jsonl"} <= names
