"""Regression-gate configuration, the folder of named baselines, and the provenance a report records so
that a later run can be gated against it.

Gate rules live in ``[tool.safety-harness.gate]``; a sub-table narrows them to a suite, a metric or one
metric of one suite, and inherits every key it does not set (global < METRIC < SUITE < SUITE:METRIC)::

    [tool.safety-harness.gate]
    max_regression = 0.02        # tolerated rise of a failure rate (candidate - baseline)
    alpha = 0.05                 # significance of the one-sided exact McNemar test
    flips = "gate"               # "gate": a flipped prompt fails only when its gate fails; "fail": always
    [tool.safety-harness.gate.xstest]
    max_regression = 0.05
    [tool.safety-harness.gate."xstest:refusal_rate"]
    max_failure_rate = 0.10      # also an absolute ceiling ...
    threshold_on = "upper"       # ... checked on the upper end of the Wilson interval

The metrics are the failure rates of ``harness.baselines.compare.FAILURE_METRIC``: ``unsafe_compliance_rate`` over
should-refuse prompts and ``refusal_rate`` over should-answer prompts.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

from harness.baselines.stats import GateRule
from harness.baselines.compare import FAILURE_METRIC
from harness.core.errors import ConfigError, HarnessError

RULE_KEYS = {f.name for f in fields(GateRule)}
GLOBAL_KEYS = {"flips"}
FLIP_MODES = ("gate", "fail")
METRIC_NAMES = set(FAILURE_METRIC.values())
DEFAULT_BASELINE_DIR = Path(".safety-harness") / "baselines"


def _check_rule(values: dict, where: str) -> dict:
    unknown = set(values) - RULE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(RULE_KEYS))})")
    try:
        GateRule(**values)  # range checks
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except TypeError as exc:  # a value of the wrong type, e.g. a table where a number belongs
        raise ConfigError(f"{where}: {exc}") from None
    return dict(values)


def merge_gate_tables(current: dict, table: dict, *, where: str) -> dict:
    """Layer a TOML ``gate`` table over the gate settings read so far (validated, one-line errors)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in current.items()}
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    if "flips" in scalars and scalars["flips"] not in FLIP_MODES:
        raise ConfigError(f"{where}: flips must be one of {', '.join(FLIP_MODES)}, got {scalars['flips']!r}")
    rule_part = {k: v for k, v in scalars.items() if k not in GLOBAL_KEYS}
    _check_rule({**{k: v for k, v in merged.items() if k in RULE_KEYS}, **rule_part}, where)
    merged.update(scalars)
    for target, values in table.items():
        if isinstance(values, dict):
            merged[target] = _check_rule({**merged.get(target, {}), **values}, f"{where}.{target}")
    return merged


def flip_mode(gate: dict) -> str:
    return gate.get("flips", "gate")


def build_rules(gate: dict, suites) -> dict[str, GateRule]:
    """Rules keyed as ``harness.baselines.compare.rule_for`` looks them up, every SUITE:METRIC fully layered."""
    base = {k: v for k, v in gate.items() if k in RULE_KEYS}
    targets = {k: v for k, v in gate.items() if isinstance(v, dict)}
    rules = {"*": GateRule(**base)}
    for metric in METRIC_NAMES:
        rules[metric] = GateRule(**{**base, **targets.get(metric, {})})
    for suite in suites:
        rules[suite] = GateRule(**{**base, **targets.get(suite, {})})
        for metric in METRIC_NAMES:
            rules[f"{suite}:{metric}"] = GateRule(**{**base, **targets.get(metric, {}), **targets.get(suite, {}),
                                                     **targets.get(f"{suite}:{metric}", {})})
    return rules


# -- the folder of named baselines ----------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class BaselineStore:
    """Named baseline reports: ``<folder>/<NAME>.parquet`` (pytest-benchmark's autosave folder, for reports)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise HarnessError(f"baseline name {name!r}: use letters, digits, '.', '_' and '-' only")
        return self.folder / f"{name}.parquet"

    def names(self) -> list[str]:
        """Saved baselines, oldest first (by modification time, then name)."""
        if not self.folder.is_dir():
            return []
        files = [p for p in self.folder.glob("*.parquet") if p.is_file()]
        return [p.stem for p in sorted(files, key=lambda p: (p.stat().st_mtime, p.name))]

    def find(self, name: str | None) -> Path:
        """The baseline called ``name``, or the most recently saved one when ``name`` is empty."""
        names = self.names()
        if not name:
            if not names:
                raise HarnessError(f"no saved baseline in {self.folder} (save one with --baseline-save)")
            return self.path(names[-1])
        path = self.path(name)
        if not path.is_file():
            saved = ", ".join(names[-5:]) or "none"
            hint = ""
            if Path(name).exists():  # argparse took a test path as NAME
                hint = f"; {name!r} is a path: put --baseline-compare after the test paths, or write --baseline-compare=NAME"
            raise HarnessError(f"no baseline named {name!r} in {self.folder} (saved: {saved}){hint}")
        return path

    def save(self, report: Path, name: str) -> Path:
        """Copy ``report`` in as ``name`` (atomically: a reader never sees half a file)."""
        target = self.path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(report, tmp)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return target


def default_save_name(run_id: str, commit: str | None) -> str:
    return f"{run_id}_{commit[:10]}" if commit else run_id


# -- provenance -------------------------------------------------------------------------------------------


def git_commit(folder: Path) -> dict | None:
    """The commit checked out in ``folder`` and whether the tree has changes; None outside git."""
    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict:
    return {"host": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor(), "cpus": os.cpu_count(), "python": platform.python_version()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_files(session) -> dict[str, dict]:
    """SHA-256 of every data file the run's prompts came from, by file name (a prompt's ``source``): looked
    for under the data folder, as the loaders find it, and beside the TOML files read (user suites)."""
    sources = sorted({p.source for prompts in session.prompts.values() for p in prompts if p.source})
    data_dir = session.settings.data_dir
    out = {}
    for source in sources:
        candidates = [Path(source)] if Path(source).is_absolute() else []
        candidates += [Path(toml).parent / source for toml in session.settings.sources]
        if data_dir is not None and Path(data_dir).is_dir():
            candidates += [Path(data_dir) / source, *sorted(Path(data_dir).rglob(Path(source).name))]
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            out[source] = {"path": str(found), "sha256": _sha256(found)}
        else:
            out[source] = {"path": None, "sha256": None}  # built-in prompts or a file since moved
    return out


def provenance(session) -> dict:
    """What a baseline must record so a later run can be checked against it."""
    info = session.model_info
    return {
        "model": info.get("model"), "model_fingerprint": info.get("model_fingerprint"),
        "backend": info.get("backend"), "template": info.get("template"),
        "sampling": session.settings.sampling.as_dict(), "scorer": info.get("scorer"),
        "scorer_version": info.get("scorer_version"), "limit": session.settings.limit,
        "git": git_commit(Path.cwd()), "machine": machine(), "data_files": data_files(session),
    }
