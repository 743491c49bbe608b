"""Large per-browser-session objects (images, editing sessions) kept on the server, keyed by Gradio's
session hash, so that ``gr.State`` stays small and deep-copyable. Freed when the browser session ends."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

ANONYMOUS = "anonymous"  # events called without a browser session (API clients, tests)


class SessionStore:
    """``store.get(session, key, make)`` returns the object for ``(session, key)``, making it once.

    Args:
        per_session: how many objects one session keeps; beyond that the least recently used one
            that ``keep`` does not protect is dropped.
        keep: objects for which this returns True are never dropped to make room (unsaved work).
    """

    def __init__(self, per_session: int = 8, keep: Callable[[Any], bool] | None = None):
        self.per_session = per_session
        self.keep = keep or (lambda _: False)
        self._data: dict[str, OrderedDict[str, Any]] = {}
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, session: str | None, key: str, make: Callable[[], Any]) -> Any:
        session = session or ANONYMOUS
        with self._lock:
            self._used[session] = time.monotonic()
            items = self._data.setdefault(session, OrderedDict())
            if key in items:
                items.move_to_end(key)
                return items[key]
        value = make()
        with self._lock:
            items = self._data.setdefault(session, OrderedDict())
            items[key] = value
            self._trim(items)
        return value

    def peek(self, session: str | None, key: str) -> Any | None:
        with self._lock:
            return self._data.get(session or ANONYMOUS, {}).get(key)

    def put(self, session: str | None, key: str, value: Any) -> None:
        with self._lock:
            self._used[session or ANONYMOUS] = time.monotonic()
            items = self._data.setdefault(session or ANONYMOUS, OrderedDict())
            items[key] = value
            items.move_to_end(key)
            self._trim(items)

    def _trim(self, items: OrderedDict[str, Any]) -> None:
        for key in list(items):
            if len(items) <= self.per_session:
                return
            if not self.keep(items[key]):
                del items[key]

    def drop(self, session: str | None) -> list[tuple[str, Any]]:
        """Free everything of one session (called when its browser tab closes); returns ``(key, object)``
        of what was freed."""
        with self._lock:
            items = self._data.pop(session or ANONYMOUS, OrderedDict())
            self._used.pop(session or ANONYMOUS, None)
        return list(items.items())

    def discard(self, session: str | None, key: str) -> None:
        """Forget one object of a session."""
        with self._lock:
            self._data.get(session or ANONYMOUS, OrderedDict()).pop(key, None)

    def drop_idle(self, max_idle_s: float) -> list[tuple[str, str, Any]]:
        """Free the sessions not used for ``max_idle_s`` seconds (API clients never say goodbye); returns
        ``(session, key, object)`` of what was freed."""
        now = time.monotonic()
        freed = []
        with self._lock:
            idle = [s for s, used in self._used.items() if now - used > max_idle_s]
            for session in idle:
                items = self._data.pop(session, OrderedDict())
                self._used.pop(session, None)
                freed += [(session, key, value) for key, value in items.items()]
        return freed

    def sessions(self) -> list[str]:
        with self._lock:
            return list(self._data)
