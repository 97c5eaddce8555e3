"""A small named registry, one per kind of pluggable thing (datasets, backbones, strategies, executors)."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name no registry entry answers to; the message lists what is available."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str, versioned: bool = False):
        """``versioned``: its entries compute numbers, so each must carry an int ``version``, which enters the
        key of everything made with it (``transfer_core/versions.py``)."""
        self.kind = kind
        self.versioned = versioned
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            version = getattr(entry, "version", None)
            if self.versioned and (not isinstance(version, int) or isinstance(version, bool)):
                raise TypeError(
                    f"{self.kind} {name!r} declares no version: give it `version = 1`, and raise it in any "
                    "change that moves its numbers"
                )
            self._entries[name] = entry
            return entry

        return decorator

    def register_class(self, name: str) -> Callable[[T], T]:
        """Registers a class under ``name`` and gives it that ``name`` attribute, so it knows what it is called."""

        def decorator(cls: T) -> T:
            cls.name = name
            return self.register(name)(cls)

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
