"""The scorer research (research/) as a package: its modules import as ``research.X`` from the checkout's root
with no ``sys.path`` edits, its entry points run as ``python -m research.NAME``, and it and the benchmarks find
the data folder through harness's one resolver (``harness.core.paths.data_dir_or_fail``). That harness never
imports it is an import contract (tests/test_layout.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import DataError
from harness.core.paths import DATA_ENV, data_dir_or_fail

REPO = Path(__file__).resolve().parents[1]
RESEARCH = sorted(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                  for p in (REPO / "research").rglob("*.py"))
OWN_WAYS = {  # how a module used to find its inputs before the resolver; none may come back
    "a sys.path edit": re.compile(r"sys\.path\.(insert|append)"),
    "its own read of the data variable": re.compile(r"environ(\.get\(|\[)\s*[\"']SAFETY_HARNESS_DATA[\"']"),
    "a guessed data folder": re.compile(r"[\"']shared[\"']\s*/\s*[\"']data[\"']"),
}


def test_the_data_folder_is_given_else_the_variable_else_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DataError, match=rf"^no data folder: pass --data-dir or set {DATA_ENV} "):
        data_dir_or_fail(None)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_dir_or_fail(None) == tmp_path
    given = tmp_path / "given"
    given.mkdir()
    assert data_dir_or_fail(given) == given  # --data-dir wins over the variable
    with pytest.raises(DataError, match=r"data folder .*missing is not an existing folder \(given by --data-dir"):
        data_dir_or_fail(tmp_path / "missing")
    (tmp_path / "file").touch()
    with pytest.raises(DataError, match="is not an existing folder"):
        data_dir_or_fail(tmp_path / "file")


def test_no_research_or_benchmark_module_finds_its_files_its_own_way():
    paths = [*(REPO / "research").rglob("*.py"), *(REPO / "benchmarks").glob("*.py"), *(REPO / "scripts").glob("*.py")]
    found = [f"{p.relative_to(REPO)}:{n}: {what}" for p in paths
             for n, line in enumerate(p.read_text("utf-8").splitlines(), 1)
             for what, pattern in OWN_WAYS.items() if pattern.search(line)]
    assert not found, "\n".join(found)


def test_every_research_module_imports_from_the_root_and_an_entry_point_fails_in_one_line():
    env = {k: v for k, v in os.environ.items() if k not in (DATA_ENV, "PYTHONPATH")}
    imported = subprocess.run([sys.executable, "-c", "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)",
                               *RESEARCH], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr[-3000:]
    run = subprocess.run([sys.executable, "-m", "research.eval_refusal_scorer"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and run.stdout == "", run.stdout + run.stderr
    assert run.stderr.splitlines() == [f"error: no data folder: pass --data-dir or set {DATA_ENV} to the folder "
                                       "holding the datasets"], run.stderr
