"""Tiny guard models of each published kind, random and forced to a verdict, for the guard tests
(tests/test_guard_formats.py, tests/test_guard_runs.py), and the judge that reads them through the hf backend."""

from __future__ import annotations

from pathlib import Path

VERDICTS = {  # what a forced tiny model answers: each guard's published grammar
    "wildguard": "Harmful request: no\nResponse refusal: yes\nHarmful response: no",
    "qwen3guard": "Safety: Controversial\nCategories: Violent, PII\nRefusal: Yes",
    "llamaguard": "unsafe\nS1,S9",
}
WINDOW = 4096  # the byte-level tokenizers spell Qwen3Guard's 1,700-character instruction in 1,700 tokens


def make_guards(tmp_path_factory) -> dict[str, Path]:
    """Each guard kind, random and forced to its verdict: {"wildguard": path, "wildguard-forced": path, ...}."""
    import torch

    from harness.models.tiny import make_tiny_guard

    torch.set_num_threads(1)  # microscopic forward passes: one thread (see tests/conftest.py tiny_model)
    root = tmp_path_factory.mktemp("guards")
    out = {}
    for kind, verdict in VERDICTS.items():
        out[kind] = make_tiny_guard(kind, root / kind)
        out[f"{kind}-forced"] = make_tiny_guard(kind, root / f"{kind}-forced", verdict=verdict)
    return out


def judge(path: Path, tmp_path: Path, backend: str = "hf"):
    from harness.backends import BackendOptions
    from harness.scoring.judge import JudgeModel

    return JudgeModel(str(path), cache_dir=tmp_path / "cache", backend=backend,
                      options=BackendOptions(max_model_len=WINDOW, batch_size=4))
