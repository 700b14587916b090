"""Where the research reads its inputs: the upstream datasets (one resolver, harness's own) and the human
labels this project made (``research/labels/``, README.md there)."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import DataError
from harness.core.paths import data_dir_or_fail

LABELS = Path(__file__).resolve().with_name("labels")


def data_dir_arg(given: Path | None) -> Path:
    """An entry point's ``--data-dir`` resolved (else SAFETY_HARNESS_DATA), or exit with one ``error:`` line."""
    try:
        return data_dir_or_fail(given)
    except DataError as exc:
        raise SystemExit(f"error: {exc}") from None
