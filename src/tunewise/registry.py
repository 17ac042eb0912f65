"""One generic registry: bind a name to an implementation once, look it up with did-you-mean."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from tunewise.errors import TunewiseError

T = TypeVar("T")


def did_you_mean(given: str, allowed: Iterable[str]) -> str:
    """A ' Did you mean X?' suffix for the closest allowed name, or ''."""
    close = difflib.get_close_matches(given, allowed, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


class Registry(Generic[T]):
    """A named table of implementations of one kind (backbone sources, tasks, strategies).

    Args:
        kind: what the entries are, used in error messages ("strategy").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that binds `name` to the decorated object; a name is bound once."""

        def bind(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return bind

    def add(self, obj: T) -> T:
        """Decorator that registers `obj` under its own `name` attribute, so the name is written once."""
        return self.register(obj.name)(obj)  # type: ignore[attr-defined]

    def unregister(self, name: str) -> None:
        """Remove `name` (a plugin's or a test's registration)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry for `name`.

        Raises:
            TunewiseError: unknown name; the message lists the known ones and the closest.
        """
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            raise TunewiseError(
                f"unknown {self.kind} {name!r}.{did_you_mean(name, known)} "
                f"Known: {', '.join(known)}."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
