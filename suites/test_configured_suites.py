"""Users' own suites, declared in [tool.safety-harness.suites.NAME] of pyproject.toml or a --config
file: one test per suite, selected with ``-k NAME``."""

from harness.api import test_configured_suite  # noqa: F401  (pytest collects the imported test)
