"""safety-harness: pytest-style safety regression tests for instruction-tuned language models."""

__version__ = "0.1.0"
