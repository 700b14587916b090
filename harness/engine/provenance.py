"""What a report records so that a later run can be gated against it: model, template, sampling, scorer,
the git commit, the machine and the SHA-256 of every data file the prompts came from."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from harness.data.integrity import file_hash  # memoised: the run hashed its data files when it read them



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
            out[source] = {"path": str(found), "sha256": file_hash(found)}
        else:
            out[source] = {"path": None, "sha256": None}  # built-in prompts or a file since moved
    return out


def provenance(session) -> dict:
    """What a baseline must record so a later run can be checked against it."""
    info = session.model_info
    return {
        "model": info.model, "model_fingerprint": info.model_fingerprint,
        "backend": info.backend, "template": info.template,
        "sampling": session.settings.sampling.as_dict(), "scorer": info.scorer,
        "scorer_version": info.scorer_version, "limit": session.settings.limit,
        "git": git_commit(Path.cwd()), "machine": machine(), "data_files": data_files(session),
    }
