"""What a vLLM run prints. By default only errors: vLLM's start-up warnings (CPU tuning hints, "Model
Runner V2 requires Triton", ...), its weight-loading bars and torch's C++ notices from the engine's worker
processes are hidden, so that a run's output is pytest's; so are the lines of the Ray instance that
``--replicas`` starts. ``pytest -v`` or ``--engine-logs`` (or ``VLLM_LOGGING_LEVEL`` set by the user) brings
them back.

These are environment variables because the engine core and its workers are separate processes that
read them when they start; each is set only when the user has not set it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

# Warnings that vLLM's and torch's own code raise in this process; pytest would list them in its warnings
# summary. (pytest filterwarnings syntax: action:message:category:module.)
NOISY_WARNINGS = (
    "ignore::DeprecationWarning:vllm.*",
    "ignore::FutureWarning:vllm.*",
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning",
    # Hypothesis, imported by its pytest plugin at the end of a run, registers trio's random generator (trio
    # comes with vLLM) and looks for what refers to it; the engine's gc.freeze() hid trio's module from
    # that search (harness.backends.vllm_backend.get_engine), so it warns of a weak reference that is not one.
    "ignore:It looks like `register_random` was passed an object",
)

_verbose: bool | None = None  # None until configured: library use (no pytest) is quiet too


def configure(verbose: bool) -> None:
    """Choose before vLLM is imported (its logger reads VLLM_LOGGING_LEVEL at import)."""
    global _verbose
    _verbose = verbose
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose else "ERROR")
    if not verbose:
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # e.g. the workers' "NUMA binding" notice
        # transformers' "Loading weights" bar (the capability suite's scoring model); read at its import
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
        # torch warns once per process when vLLM's CPU platform looks for Triton kernels and triton is absent
        # (scripts/install.sh removes it on CPU); harmless: vLLM uses its C++ kernels there.
        logging.getLogger("torch._library.triton").setLevel(logging.ERROR)


def engine_output_kwargs() -> dict:
    """Set the environment (if nobody chose yet) and return the ``vllm.LLM`` arguments that go with it."""
    if _verbose is None:
        configure(False)
    return {} if _verbose else {"use_tqdm_on_load": False}  # no per-shard weight-loading bars


def ray_logging_level() -> int:
    """The level of Ray's logger in this process, for ``ray.init(logging_level=...)``: errors only unless
    verbose. Ray (2.60) says "Started a local Ray instance" and "Token authentication is enabled for
    this Ray cluster" at every start of the pool's private instance; neither asks anything of the user."""
    if _verbose is None:
        configure(False)
    return logging.INFO if _verbose else logging.ERROR


@contextlib.contextmanager
def engine_start_env():
    """The environment the engine-core and worker processes are started with, while ``vllm.LLM`` starts
    them: quiet, their own Python warnings (vLLM scanning torch.distributed's deprecated names) and torch's
    log warnings are silenced there too. Restored afterwards, so this process's other children are as the
    user set them."""
    # The resource tracker (a process the engine's processes share) unlinks a shared-memory segment that
    # vLLM's worker message queue leaves at exit, and says so with a UserWarning: cleaned up, so not shown.
    extra = {} if _verbose else {
        "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning,"
                          "ignore::UserWarning:multiprocessing.resource_tracker",
        "TORCH_LOGS": "-torch"}
    saved = {name: os.environ.get(name) for name in extra}
    for name, value in extra.items():
        if saved[name] is None:  # the user's own setting wins
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
