"""Errors raised by the engine.

Every error a user can cause is a :class:`StudioError` whose message names the bad value and what
would have been accepted. The studio shows the message as it is (never a traceback); the command
line prints it and exits non-zero.
"""

from __future__ import annotations


class StudioError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidInput(StudioError, ValueError):
    """An argument, file or setting is malformed, out of range or contradictory."""


class ImageLoadError(InvalidInput):
    """An image or label-map file cannot be read as what it claims to be."""


class SampleProblem(InvalidInput):
    """One sample's files cannot be used for an operation (no usable label map, say); batch operations skip
    the sample, report it and go on."""


class ModelUnavailable(StudioError):
    """A model's weights are not where the registry looks, and downloads are not allowed."""


class Cancelled(StudioError):
    """Long-running work stopped because its cancel token was set."""


def require_all(checks: list[tuple[bool, str]], prefix: str = "") -> None:
    """Raise :class:`InvalidInput` with the first failing check's message (``prefix: message``).

    Args:
        checks: ``(condition, message)`` pairs, the message saying what is wrong and what is accepted.
    """
    for ok, message in checks:
        if not ok:
            raise InvalidInput(f"{prefix}: {message}" if prefix else message)


def refuse_unknown_keys(cls, doc: dict, subject: str) -> None:
    """Raise :class:`InvalidInput` when ``doc`` has keys that are not fields of the dataclass ``cls``
    (``"<subject> unknown keys [...]; accepted: [...]"``, ``subject`` e.g. ``"training config has"``)."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InvalidInput(f"{subject} unknown keys {unknown}; accepted: {sorted(known)}")
