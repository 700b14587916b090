"""The folder of named baselines, and the rules a gate applies, layered from the ``gate`` tables
(``harness.config.gate``) for every suite and metric."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from harness.config.gate import METRIC_NAMES, RULE_KEYS, GateRule
from harness.core.errors import HarnessError
from harness.core.files import atomic_path

DEFAULT_BASELINE_DIR = Path(".safety-harness") / "baselines"


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
        """Saved baselines, oldest first: by when their run wrote its report (its metadata's ``finished``),
        else by the file's modification time, then by name. The run's own time survives a CI cache restore or
        a copy from an archive, which give every file the same or a shuffled modification time."""
        if not self.folder.is_dir():
            return []
        files = [p for p in self.folder.glob("*.parquet") if p.is_file()]
        return [p.stem for p in sorted(files, key=lambda p: (_written_at(p), p.name))]

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
        with atomic_path(target) as tmp:
            shutil.copyfile(report, tmp)
        return target


def _written_at(path: Path) -> float:
    """When the run wrote the report at ``path`` (Unix seconds, from its metadata; the schema alone is read),
    or the file's modification time for a file without it."""
    import json

    import pyarrow.parquet as pq

    from harness.core.report_file import METADATA_KEY

    try:
        finished = json.loads((pq.read_schema(path).metadata or {})[METADATA_KEY]).get("finished")
        return float(finished)
    except (OSError, KeyError, ValueError, TypeError, AttributeError):  # pyarrow's errors are OSError/ValueError
        return path.stat().st_mtime


def default_save_name(run_id: str, commit: str | None) -> str:
    return f"{run_id}_{commit[:10]}" if commit else run_id
