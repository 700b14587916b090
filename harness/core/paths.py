"""Where the harness keeps things: the one place that reads the folder environment variables."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "SAFETY_HARNESS_DATA"  # folder holding the upstream datasets
CACHE_ENV = "SAFETY_HARNESS_CACHE"  # prepared models, fetched datasets and the generation cache
SOURCE_ENV = "SAFETY_HARNESS_DATA_SOURCE"  # a mirror URL or a local folder to fetch datasets from
OFFLINE_ENV = "SAFETY_HARNESS_OFFLINE"  # 1: never download a dataset (an explicit source is still used)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return cache_dir_from_env() or Path(base) / "safety-harness"


def cache_dir_from_env() -> Path | None:
    """The cache folder named by SAFETY_HARNESS_CACHE, if any."""
    value = os.environ.get(CACHE_ENV)
    return Path(value) if value else None


def data_dir_from_env() -> Path | None:
    """The datasets folder named by SAFETY_HARNESS_DATA, if any."""
    value = os.environ.get(DATA_ENV)
    return Path(value) if value else None


def data_dir_for_parser(parser, given: Path | str | None = None) -> Path:
    """``data_dir_or_fail`` for a command-line tool (a benchmark, a script): a missing folder is the parser's
    own one-line usage error (exit 2)."""
    from harness.core.errors import DataError

    try:
        return data_dir_or_fail(given)
    except DataError as exc:
        parser.error(str(exc))


def data_dir_or_fail(given: Path | str | None = None) -> Path:
    """The datasets folder of a tool that reads whole upstream folders (the scorer research under
    ``research/``, the benchmarks): ``given`` (its --data-dir), else SAFETY_HARNESS_DATA. Unlike a run, such a
    tool has no user cache to fall back on, so neither being an existing folder is a one-line DataError."""
    from harness.core.errors import DataError

    found = Path(given) if given else data_dir_from_env()
    if found is None:
        raise DataError(f"no data folder: pass --data-dir or set {DATA_ENV} to the folder holding the datasets")
    if not found.is_dir():
        raise DataError(f"data folder {found} is not an existing folder (given by --data-dir or {DATA_ENV})")
    return found


def data_source_from_env() -> str | None:
    return os.environ.get(SOURCE_ENV) or None


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
