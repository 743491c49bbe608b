"""One decorator that turns engine errors into messages in the browser."""

from __future__ import annotations

import functools
import html
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from core.errors import StudioError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("segstudio.studio")


def shows_errors(fn: F) -> F:
    """Wrap an event handler so that a :class:`StudioError` appears as a ``gr.Error`` with its
    message (never a traceback); other exceptions are logged and shown as a short generic error."""

    def translate(exc: Exception) -> gr.Error:
        # duration=None: the message stays until the person closes it
        if isinstance(exc, StudioError):
            return gr.Error(html.escape(str(exc)), duration=None, print_exception=False)
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(
            html.escape(f"Unexpected error ({type(exc).__name__}): {exc}. Details are in the server log."), duration=None
        )

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise translate(exc) from None

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise translate(exc) from None

    return wrapper  # type: ignore[return-value]
