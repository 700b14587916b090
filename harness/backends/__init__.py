"""Generation backends. Importing this package registers the built-in ones (cheaply: each imports its
heavy library only when created)."""

from harness.backends import dummy, hf, replay, vllm_backend  # noqa: F401  (registration side effects)
from harness.backends.base import (
    Backend,
    BackendOptions,
    SamplingConfig,
    available_backends,
    create_backend,
    register_backend,
    resolve_backend_name,
)

__all__ = [
    "Backend",
    "BackendOptions",
    "SamplingConfig",
    "available_backends",
    "create_backend",
    "register_backend",
    "resolve_backend_name",
]
