"""One registry pattern for every pluggable kind: fine-tune methods, deploy engines, metrics, stores.

Adding an entry is one module plus one registration (peft's register-by-name)::

    @METRICS.register("my_metric")
    class MyMetric(Metric): ...

Third-party packages register the same way through an entry point group ``ragtune.<kind>``
(``[project.entry-points."ragtune.metrics"] my_metric = "pkg.mod:MyMetric"``); built-ins and plugins
are looked up alike (simonw/llm's "built-ins through the plugin path"). Entry points are loaded on
the first lookup of a name that is not built in, so ``import ragtune`` stays cheap.
"""
from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry. ``what`` names the kind in errors ("fine-tune method", "metric", ...)."""

    def __init__(self, what: str, entry_point_group: str | None = None,
                 builtins: Callable[[], object] | None = None):
        """``builtins``: imports the modules whose registrations are the built-in entries (run on
        the first lookup, so a registry can live below the modules that fill it)."""
        self.what = what
        self.group = entry_point_group
        self._entries: dict[str, T] = {}
        self._builtins = builtins
        self._plugins_loaded = entry_point_group is None
        self._lock = threading.RLock()   # first look-ups from two threads must not see a half-filled registry
        self._loading = False

    @overload
    def register(self, name: str, entry: None = None) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, entry: T) -> T: ...

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """``REG.register("x", obj)`` or ``@REG.register("x")`` on a class or function."""
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ConfigError(f"{self.what} '{name}' is already registered ({self._entries[name]!r})")
            self._entries[name] = obj
            return obj

        return add(entry) if entry is not None else add

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name is an error listing the valid ones."""
        self._load_builtins()
        if name not in self._entries:
            self._load_plugins()
        if name not in self._entries:
            raise ConfigError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: object) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.what} '{name}'{hint}. Valid: {', '.join(self.names())}"

    def names(self) -> list[str]:
        self._load_builtins()
        self._load_plugins()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load_builtins()
        self._load_plugins()
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def _load_builtins(self) -> None:
        if self._builtins is None:
            return
        with self._lock:   # another thread waits here until the built-ins are in
            if self._builtins is None or self._loading:
                return     # done, or a re-entrant call from the imports of this very loading
            self._loading = True
            try:
                self._builtins()
            finally:
                self._loading = False
                self._builtins = None

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        with self._lock:
            if self._plugins_loaded:
                return
            from importlib.metadata import entry_points

            for ep in entry_points(group=self.group or ""):
                if ep.name not in self._entries:
                    self._entries[ep.name] = ep.load()
            self._plugins_loaded = True

    def __repr__(self) -> str:
        return f"Registry({self.what}: {', '.join(self._entries)})"
