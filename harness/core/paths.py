"""Where the harness keeps things: the one place that reads the folder environment variables."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "SAFETY_HARNESS_DATA"  # folder holding the upstream datasets
CACHE_ENV = "SAFETY_HARNESS_CACHE"  # prepared models, fetched datasets and the generation cache
SOURCE_ENV = "SAFETY_HARNESS_DATA_SOURCE"  # a mirror URL or a local folder to fetch datasets from
OFFLINE_ENV = "SAFETY_HARNESS_OFFLINE"  # 1: never download a dataset (an explicit source is still used)


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "safety-harness"


def data_dir_from_env() -> Path | None:
    """The datasets folder named by SAFETY_HARNESS_DATA, if any."""
    value = os.environ.get(DATA_ENV)
    return Path(value) if value else None


def data_source_from_env() -> str | None:
    return os.environ.get(SOURCE_ENV) or None


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
