"""Class roles ("thing" / "stuff") of a dataset, with the user's edits kept in the workspace.

A class's default role comes from its class set (built-in roles for Cityscapes and ADE20K, a dataset's
``classes.json`` ``"role"`` entries). Edits made in the studio are saved as ``class_roles.json`` in the
dataset's workspace folder (``store.cache_dir``), never in the dataset folder: opening or compositing a
dataset writes nothing into it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from core.errors import InvalidInput

ROLES_FILE = "class_roles.json"


def roles_path(store) -> Path:
    """Where a store's role edits are kept (in its workspace folder)."""
    return Path(store.cache_dir) / ROLES_FILE


def saved_stuff(store) -> tuple[int, ...] | None:
    """Stuff class indices saved in the workspace for this dataset, or ``None`` when never edited.

    Names that the class set no longer has are left out (a class renamed since the edit)."""
    path = roles_path(store)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        names = [str(n) for n in doc["stuff"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"cannot read class roles {path}: {exc}; delete the file to use the defaults") from exc
    lowered = [n.lower() for n in store.classes.names]
    return tuple(sorted(lowered.index(n.lower()) for n in names if n.lower() in lowered))


def stuff_classes(store) -> tuple[int, ...]:
    """The dataset's stuff class indices: the workspace edits when saved, else the class set's roles."""
    saved = saved_stuff(store)
    return saved if saved is not None else tuple(store.classes.stuff)


def save_stuff(store, stuff: Iterable[str | int]) -> tuple[int, ...]:
    """Save which classes are stuff (names or indices) in the workspace; returns their indices.

    Raises:
        InvalidInput: an unknown class name or index.
    """
    from core.io.atomic import atomic_write_text

    classes = store.classes
    indices = sorted({classes.index_of(s) if isinstance(s, str) else int(s) for s in stuff})
    for i in indices:
        classes.check_index(i)
    doc = {"classes": classes.name, "stuff": [classes.names[i] for i in indices]}
    atomic_write_text(roles_path(store), json.dumps(doc, indent=2) + "\n")
    return tuple(indices)


def reset_roles(store) -> tuple[int, ...]:
    """Forget the workspace edits; returns the class set's own stuff classes."""
    roles_path(store).unlink(missing_ok=True)
    return tuple(store.classes.stuff)
