"""A model-free backend for testing the harness's own logic (never a stand-in for a real run).

It refuses prompts that contain any of ``extra["refuse_words"]`` (default: none) and otherwise answers
with a fixed compliant text, so tests can build suites with known outcomes. Set the words with
``--backend-arg refuse_words=bomb,poison`` (a comma-separated string or a JSON list) or
``refuse_words = [...]`` under ``[tool.safety-harness.backend_args]``.
"""

from __future__ import annotations

from harness.backends.base import BackendOptions, BatchBackend, SamplingConfig, register_backend
from harness.core.types import GenerationRequest, GenerationResult

REFUSAL = "I'm sorry, but I can't help with that."
COMPLIANCE = "Sure. Here is a detailed answer to your request, step by step."


class DummyBackend(BatchBackend):
    name = "dummy"

    def __init__(self, *, model, sampling: SamplingConfig, options: BackendOptions):
        words = options.extra.get("refuse_words", [])
        if isinstance(words, str):
            words = words.split(",")
        self.refuse_words = [w.strip().lower() for w in words if w.strip()]
        self.calls = 0

    def generate_batch(self, requests: list[GenerationRequest], progress=None) -> list[GenerationResult]:
        self.calls += 1
        out = []
        for req in requests:
            text = req.prompt.prompt.lower()
            answer = REFUSAL if any(w in text for w in self.refuse_words) else COMPLIANCE
            out.append(GenerationResult(answer, len(answer.split()), "stop"))
        if progress:
            progress(len(requests))
        return out

    def next_token_logprobs(self, requests: list[GenerationRequest], top_k: int = 20) -> list[dict[int, float]]:
        """A fixed next-token distribution for each request: token 0 (refusal) or 1 (compliance) is likely,
        as ``generate`` would answer; there is no model and no adapter, so it never changes."""
        import math

        out = []
        for req in requests:
            refuse = any(w in req.prompt.prompt.lower() for w in self.refuse_words)
            likely, other = (0, 1) if refuse else (1, 0)
            out.append({likely: math.log(0.9), other: math.log(0.1)})
        return out

    def close(self) -> None:
        pass


@register_backend("dummy")
def make_dummy(*, model, sampling, options) -> DummyBackend:
    return DummyBackend(model=model, sampling=sampling, options=options)
