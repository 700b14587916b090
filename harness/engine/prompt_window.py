"""One rule for prompts longer than the model's window, whatever the backend: the run stops before any
generation with one line naming the prompt, its length and the window.

Why an error rather than truncation: cutting a prompt changes the question being asked (a safety prompt
whose request falls past the cut reads as harmless), so a score on the cut prompt would not measure what the
suite claims. The window is what the backend can hold: for hf, the model's ``max_position_embeddings``
(past it a model produces unchecked output, and a 1 MB prompt asks for a terabyte of attention memory); for
vLLM, ``--max-model-len`` capped by the same. A prompt fits when its tokens plus ``--max-new-tokens`` do.
Model-free backends (dummy, replay) have no window.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import DataError
from harness.models.window import model_window


def backend_window(backend: str, model_path: str | Path, max_model_len: int) -> int | None:
    window = model_window(model_path)
    if backend == "vllm":
        return min(max_model_len, window) if window else max_model_len
    return window


def check_prompt_lengths(requests, *, window: int | None, max_new_tokens: int, backend: str) -> None:
    """Raise one ``DataError`` naming the first prompt (by suite and id) that does not fit ``window``."""
    if window is None:
        return
    for req in requests:
        n = len(req.token_ids) if req.token_ids is not None else None
        if n is not None and n + max_new_tokens > window:
            p = req.prompt
            raise DataError(
                f"suite {p.suite!r}, prompt {p.prompt_id!r}: {n:,} prompt tokens + {max_new_tokens} new tokens "
                f"exceed the {backend} model window of {window:,} tokens; shorten or drop the prompt, or lower "
                "--max-new-tokens" + (" (or raise --max-model-len)" if backend == "vllm" else ""))
