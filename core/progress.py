"""Progress reporting and cancellation for long-running work.

Long operations take two optional keyword arguments:

- ``progress``: a callable ``progress(fraction, message)`` with ``fraction`` in ``[0, 1]`` (or
  ``None`` when unknown). The studio adapts it to ``gr.Progress``; the command line to tqdm.
- ``cancel``: a :class:`CancelToken`. The work calls :meth:`CancelToken.raise_if_cancelled` at safe
  points (between boxes, between denoising steps, between samples), which raises
  :class:`core.errors.Cancelled`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

from core.errors import Cancelled

T = TypeVar("T")


class ProgressFn(Protocol):
    """Receives progress updates: ``fraction`` in ``[0, 1]`` or ``None``, and a short message."""

    def __call__(self, fraction: float | None, message: str = "") -> None: ...


def no_progress(fraction: float | None, message: str = "") -> None:
    """A progress callback that ignores every update."""


class CancelToken:
    """A thread-safe flag that one side sets and long-running work polls."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the work to stop at its next safe point."""
        self._event.set()

    def reset(self) -> None:
        """Clear a previous cancel request so the token can be reused."""
        self._event.clear()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` has been called (and not reset)."""
        return self._event.is_set()

    def raise_if_cancelled(self, what: str = "the operation") -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled(f"{what} was cancelled")


def track(
    items: Iterable[T],
    total: int | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    message: str = "",
) -> Iterator[T]:
    """Yield ``items``, reporting progress before each one and honouring ``cancel``.

    Args:
        items: the work items.
        total: their count; taken from ``len(items)`` when it has one.
        progress: callback receiving ``(done / total, message)``.
        cancel: token checked before each item.
        message: prefix for the progress messages.
    """
    report = progress or no_progress
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    done = 0
    for item in items:
        if cancel is not None:
            cancel.raise_if_cancelled(message or "the operation")
        fraction = done / total if total else None
        report(fraction, f"{message} {done + 1}/{total}" if total else message)
        yield item
        done += 1
    report(1.0, f"{message} done" if message else "done")
