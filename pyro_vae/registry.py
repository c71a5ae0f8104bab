"""A name -> factory registry, the one mechanism behind every swappable piece."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry"]

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Map names to factories.

    Parameters
    ----------
    kind : str
        What the entries are ("prior", "elbo", ...); used in error messages.

    Examples
    --------
    >>> PRIORS = Registry("prior")
    >>> @PRIORS.register("normal")
    ... def normal(latent_dim): ...
    >>> PRIORS.get("normal") is normal
    True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator adding ``factory`` under ``name``; a name may be registered once."""

        def decorate(factory: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = factory
            return factory

        return decorate

    def get(self, name: str) -> F:
        """The factory registered as ``name``; ``ValueError`` listing valid names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
