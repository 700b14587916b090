"""A pytest plugin that tests/test_interrupts.py loads into the run it interrupts (``-p tests.interrupt_phases``):
it writes the name of each phase the run enters to the pipe whose descriptor is in $SAFETY_HARNESS_TEST_PHASE_FD,
so that the test sends its signal on that event instead of after a guessed delay. The phase's own code runs
unchanged. Inert without the variable. (The data fetch needs no note: the test's mirror says when a download
is under way.)"""

from __future__ import annotations

import functools
import os

PHASE_FD_ENV = "SAFETY_HARNESS_TEST_PHASE_FD"


def _note(phase: str) -> None:
    os.write(int(os.environ[PHASE_FD_ENV]), f"{phase}\n".encode())


def _announce(owner, name: str, phase: str, *, after: bool = False) -> None:
    """Wrap ``owner.name`` so that calling it notes ``phase`` (before the call, or once it returned)."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def announced(*args, **kwargs):
        if not after:
            _note(phase)
        result = original(*args, **kwargs)
        if after:
            _note(phase)
        return result

    setattr(owner, name, announced)


def pytest_configure(config):
    if PHASE_FD_ENV not in os.environ:
        return
    from harness.backends import vllm_backend
    from harness.engine import cache, response_scoring, run_report
    from harness.models import resolve

    _announce(resolve, "_convert_gguf", "model preparation")  # the GGUF of the embedded model -> a model folder
    # vllm.LLM is about to start: the interrupt lands while vLLM imports, loads the model and sizes its KV
    # cache (in this process on CPU; in the engine processes it spawns on a GPU or for a parallel split)
    _announce(vllm_backend, "interruptible_start", "engine start", after=True)
    _announce(cache.GenerationCache, "put_many", "generation", after=True)  # a chunk of responses is in the cache
    _announce(response_scoring.ResponseScoring, "score", "scoring")
    _announce(run_report, "write_report", "report")
