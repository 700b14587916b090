"""User-facing errors: each carries a one-line message that names the file, line or field at fault.

The pytest plugin turns them into ``pytest.UsageError`` (one ``ERROR:`` line, no traceback) and the CLI
prints them to stderr with exit status 2.
"""


class HarnessError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class DataError(HarnessError):
    """A dataset or prompt file is missing, malformed, or lacks a needed column."""


class ModelError(HarnessError):
    """A model, adapter or base model cannot be found or is refused (e.g. pickled weights)."""


class BackendError(HarnessError):
    """A backend cannot be started or cannot answer (e.g. vLLM not installed, replay file incomplete)."""


class ConfigError(HarnessError):
    """A command-line option or a ``[tool.safety-harness]`` setting is invalid."""
