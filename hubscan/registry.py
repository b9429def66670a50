"""One registry type for everything hubscan looks up by name: metrics, their options, readers,
quantization schemes, sources and reference schemes.

As in timm's model registry, each entry records the module that registered it, so that

* registering a name again is never silent: a :class:`RegistryWarning` names the module whose entry
  wins (the newer one) and the one it replaces;
* the modules outside hubscan that registered something (plugins: a user's source, reader or metric)
  can be listed (:func:`plugin_modules`) and imported in another process (:func:`load_plugins`) — a
  survey's Ray actors do this, so they know what the driver's process registered.

Standard library only: every room, the pure ``esd`` included, may import this module.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import warnings
from collections.abc import Mapping
from typing import Generic, Iterator, TypeVar

__all__ = ["Registry", "Entry", "RegistryWarning", "registries", "plugin_modules", "load_plugins"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class RegistryWarning(UserWarning):
    """A name registered again (the newer entry wins), or a suffix taken over by another reader."""


@dataclasses.dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: its value and the module that registered it."""

    name: str
    value: T
    module: str


_ALL: list["Registry"] = []


class Registry(Mapping, Generic[T]):
    """Name → value, in registration order, each entry with its module (a read-only mapping).

    Parameters
    ----------
    kind : str
        What the entries are (``metric``, ``reader`` …), for messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._generation = 0
        _ALL.append(self)

    def register(self, name: str, value: T, module: str | None = None) -> T:
        """Add ``value`` under ``name``; returns ``value`` (so it can end a decorator).

        Parameters
        ----------
        name : str
        value
        module : str, optional
            The registering module; default ``value.__module__`` (a function or class), else the
            module of its type.

        Warns
        -----
        RegistryWarning
            ``name`` was registered before (by another value): the new entry wins, and the warning
            says which module's entry replaces which.
        """
        module = module or getattr(value, "__module__", None) or type(value).__module__
        old = self._entries.get(name)
        if old is not None and old.value is not value:
            warnings.warn(f"{self.kind} {name!r} registered again: {module}'s entry replaces {old.module}'s",
                          RegistryWarning, stacklevel=3)
        self._entries[name] = Entry(name, value, module)
        self._generation += 1
        return value

    def unregister(self, name: str) -> None:
        """Remove ``name`` (e.g. a test's toy entry).

        Raises
        ------
        KeyError
            Not registered.
        """
        del self._entries[name]
        self._generation += 1

    def __getitem__(self, name: str) -> T:
        return self._entries[name].value

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> Entry[T]:
        """The :class:`Entry` of ``name`` (raises KeyError)."""
        return self._entries[name]

    def entries(self) -> list[Entry[T]]:
        """Every entry, in registration order."""
        return list(self._entries.values())

    def module_of(self, name: str) -> str:
        """The module that registered ``name`` (raises KeyError)."""
        return self._entries[name].module

    @property
    def generation(self) -> int:
        """A number that changes whenever an entry is added, replaced or removed (a cache key)."""
        return self._generation

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def registries() -> list[Registry]:
    """Every registry made in this process."""
    return list(_ALL)


def plugin_modules() -> list[str]:
    """The modules outside the hubscan package that registered an entry in any registry, sorted: what a
    process that did not run them (a survey's Ray actor) imports with :func:`load_plugins`."""
    mods = {e.module for r in _ALL for e in r.entries()}
    return sorted(m for m in mods if m != "__main__" and m != "hubscan" and not m.startswith("hubscan."))


def load_plugins(modules) -> None:
    """Import modules by name (each registers its entries on import); see :func:`plugin_modules`.

    A module this process cannot import is logged and left out: what it registers is then unknown here
    (a model of its source fails with "unknown source", one line each) and the rest goes on.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.warning("plugin module %s cannot be imported here: %s", name, exc)
