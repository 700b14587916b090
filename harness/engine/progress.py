"""The generation progress bar, one tick per finished request (one-engine and replica runs alike)."""

from __future__ import annotations

import sys


def generation_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="safety-harness: generating", unit="prompt", file=sys.stderr,
                disable=not enabled, dynamic_ncols=True)
