"""A model's longest sequence, read from its config.json: what generation (harness.engine.prompt_window) and
reference scoring (harness.capability.lm) both must stay within."""

from __future__ import annotations

import json
from pathlib import Path

_WINDOW_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def model_window(model_path: str | Path) -> int | None:
    """The model's longest sequence from its config.json, or None when it does not say."""
    try:
        config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for source in (config, config.get("text_config") or {}):
        for key in _WINDOW_KEYS:
            if isinstance(source.get(key), int) and source[key] > 0:
                return source[key]
    return None
