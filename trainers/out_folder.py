"""``train --out``: checked before any data is read or any step is trained, so a mistake costs nothing.

- ``--out`` must be a folder (or not exist yet), and its parent must be writable;
- a folder that already holds an adapter trained with another config is not overwritten silently: the
  user names another folder or passes ``--overwrite``. The same config retrains (or resumes) in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.core.errors import ConfigError
from harness.models.resolve import ADAPTER_META
from harness.trainers.config import TrainConfig


def check_out(out: Path, config: TrainConfig, *, overwrite: bool = False) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; --out names the folder the adapter is written to")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {existing} is not writable")
    meta = out / ADAPTER_META
    if not meta.is_file() or overwrite:
        return
    try:
        saved = json.loads(meta.read_text(encoding="utf-8")).get("train_config")
    except (OSError, ValueError, AttributeError):
        saved = None
    wanted = json.loads(json.dumps(config.as_dict()))  # tuples as lists, like the saved JSON
    if saved != wanted:
        changed = sorted(k for k in set(wanted) | set(saved or {}) if (saved or {}).get(k) != wanted.get(k))
        what = f"differs in {', '.join(changed)}" if saved else "is unreadable"
        raise ConfigError(f"--out {out} holds an adapter whose training config {what}; "
                          "name another --out or pass --overwrite")
