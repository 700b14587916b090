"""Scorer interface and a name -> factory registry (inspect_ai style).

Scorers are looked up by name from config and the CLI, so new kinds (learned refusal classifiers, harm
scorers) only need ``@register_scorer("name")`` on a factory; nothing else in the harness changes.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from harness.errors import ConfigError
from harness.types import RefusalScore


@runtime_checkable
class RefusalScorer(Protocol):
    """Labels responses as full_compliance / full_refusal / partial_refusal (see ``REFUSAL_LABELS``).

    Batch in, batch out: learned scorers want batches, and rule-based ones lose nothing by it.
    ``name`` and ``version`` go into reports and cache keys, so bump ``version`` whenever labels can change.
    """

    name: str
    version: str

    def score(self, prompts: list[str], responses: list[str]) -> list[RefusalScore]: ...


_REGISTRY: dict[str, Callable[..., RefusalScorer]] = {}


def register_scorer(name: str) -> Callable[[Callable[..., RefusalScorer]], Callable[..., RefusalScorer]]:
    """Register a scorer factory (a class or a function returning a scorer) under ``name``."""

    def decorator(factory: Callable[..., RefusalScorer]) -> Callable[..., RefusalScorer]:
        old = _REGISTRY.get(name)
        if old is not None and _qualname(old) != _qualname(factory):
            # Two plugins silently fighting over one name would make reports lie about what scored them.
            # (The same factory again, e.g. after importlib.reload, is fine.)
            raise ValueError(f"scorer {name!r} is already registered by {_qualname(old)}")
        _REGISTRY[name] = factory
        return factory

    return decorator


def _qualname(factory) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


def available_scorers() -> list[str]:
    """Sorted names of the registered scorers."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_scorer(name: str, **kwargs) -> RefusalScorer:
    """Build the scorer registered as ``name``; an unknown name is a ``ConfigError`` naming the known ones."""
    _load_builtin()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise ConfigError(f"unknown scorer {name!r}; known scorers: {known}") from None
    return factory(**kwargs)


def _load_builtin() -> None:
    # Imported lazily so ``from harness.scoring.base import ...`` inside scorer modules is not circular.
    from harness.scoring import refusal  # noqa: F401
