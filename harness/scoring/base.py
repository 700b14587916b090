"""Scorer interface and a name -> factory registry (inspect_ai style).

Scorers are looked up by name from config and the CLI, so new kinds (learned refusal classifiers, harm
scorers) only need ``@register_scorer("name")`` on a factory; nothing else in the harness changes.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from harness.core.errors import ConfigError
from harness.core.types import RefusalScore


@runtime_checkable
class RefusalScorer(Protocol):
    """Labels responses as full_compliance / full_refusal / partial_refusal (see ``REFUSAL_LABELS``).

    Batch in, batch out: learned scorers want batches, and rule-based ones lose nothing by it.
    ``name`` and ``version`` go into reports and cache keys, so bump ``version`` whenever labels can change.
    """

    name: str
    version: str

    def score(self, prompts: list[str], responses: list[str]) -> list[RefusalScore]: ...


class Registry:
    """Name -> factory, for one kind of scorer (refusal scorers here; harm scorers in ``harm``)."""

    def __init__(self, kind: str):
        # The built-in scorers register when their modules are imported, which importing the
        # ``harness.scoring`` package does (its __init__), before any name here can be used.
        self.kind, self._factories = kind, {}

    def register(self, name: str) -> Callable:
        def decorator(factory: Callable) -> Callable:
            old = self._factories.get(name)
            if old is not None and _qualname(old) != _qualname(factory):
                # Two plugins silently fighting over one name would make reports lie about what scored them.
                # (The same factory again, e.g. after importlib.reload, is fine.)
                raise ValueError(f"{self.kind} {name!r} is already registered by {_qualname(old)}")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def factory(self, name: str) -> Callable:
        if name not in self._factories:
            known = ", ".join(sorted(self._factories)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._factories[name]

    def get(self, name: str, **kwargs):
        """Build the factory registered as ``name``; an unknown name is a ``ConfigError`` naming the known ones."""
        return self.factory(name)(**kwargs)


def _qualname(factory) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


REFUSAL_SCORERS = Registry("scorer")
_REGISTRY = REFUSAL_SCORERS._factories  # the old module-level name, still used by tests and plugins


def register_scorer(name: str) -> Callable[[Callable[..., RefusalScorer]], Callable[..., RefusalScorer]]:
    """Register a scorer factory (a class or a function returning a scorer) under ``name``."""
    return REFUSAL_SCORERS.register(name)


def available_scorers() -> list[str]:
    """Sorted names of the registered scorers."""
    return REFUSAL_SCORERS.names()


def get_scorer(name: str, **kwargs) -> RefusalScorer:
    """Build the scorer registered as ``name``; an unknown name is a ``ConfigError`` naming the known ones."""
    return REFUSAL_SCORERS.get(name, **kwargs)
