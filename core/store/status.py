"""Per-sample annotation status: the annotator's work queue.

Every sample has one of four statuses:

- ``unlabelled``: no label map and no draft;
- ``draft``: no saved label map, but unsaved edits kept as a draft in the workspace (by any editor);
- ``done``: a saved label map (or one derived from another tool's annotation), or explicitly marked done;
- ``needs_review`` (shown as "needs review"): marked by the annotator, or set by the studio when a save
  carries flagged masks (an empty mask, or one that fills its whole box).

Only ``done`` and ``needs_review`` are ever *recorded* (explicit statuses); the others, and ``done`` for a
sample with a saved label map, are derived from the files on every call. Explicit statuses live in the
workspace (``status.sqlite``, SQLite in WAL mode, beside the index), never in the dataset folder.

An explicit status belongs to the saved version of the sample it was set on (its label map's file stamp
and its boxes): a save that changes the sample, made anywhere (another tab, another program), leaves the
mark behind, and the sample's status is derived again (``done``, since it now has a saved label map). A
save that writes nothing keeps the mark. Precedence: a current explicit mark, else ``done`` (label map),
else ``draft``, else ``unlabelled``.

Nothing here decodes an image or a label map: a status costs a few ``stat`` calls, and listing all of
them one SQLite query plus one listing of the drafts folder.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInput
from core.store.index import connect_sqlite

UNLABELLED = "unlabelled"
DRAFT = "draft"
DONE = "done"
NEEDS_REVIEW = "needs_review"
STATUSES = (UNLABELLED, DRAFT, DONE, NEEDS_REVIEW)
EXPLICIT = (DONE, NEEDS_REVIEW)
LABELS = {UNLABELLED: "unlabelled", DRAFT: "draft", DONE: "done", NEEDS_REVIEW: "needs review"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS status (
    sample_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    key TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    set_at REAL NOT NULL
);
"""


def normalise_status(value: str) -> str:
    """``"needs review"``, ``"Needs-Review"`` -> ``"needs_review"``.

    Raises:
        InvalidInput: not one of the four statuses.
    """
    name = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    if name not in STATUSES:
        raise InvalidInput(f"unknown status {value!r}; accepted: {', '.join(LABELS[s] for s in STATUSES)}")
    return name


@dataclass(frozen=True)
class StatusMark:
    """An explicit status as recorded.

    Attributes:
        sample_id: the sample.
        status: ``done`` or ``needs_review``.
        key: the saved version it was set on (see :meth:`core.store.DatasetStore.status_key`).
        note: why (``"marked by the annotator"``, ``"flagged: #2 empty mask"``).
        set_at: seconds since the epoch.
    """

    sample_id: str
    status: str
    key: str
    note: str
    set_at: float


class StatusBook:
    """The explicit statuses of one dataset, in a small SQLite table in its workspace folder.

    Args:
        db_path: the SQLite file (created with its folder); ``None``, or a workspace that cannot be written,
            keeps them in memory for this process (``persistent`` is then false).
    """

    def __init__(self, db_path: Path | None):
        self._lock = threading.Lock()
        self.path = db_path
        self._conn, self.persistent = self._connect(db_path)

    @staticmethod
    def _connect(db_path: Path | None) -> tuple[sqlite3.Connection, bool]:
        return connect_sqlite(db_path, SCHEMA)  # unwritable workspace: marks last as long as this process

    def get(self, sample_id: str) -> StatusMark | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT sample_id, status, key, note, set_at FROM status WHERE sample_id = ?", (sample_id,)
            ).fetchone()
        return StatusMark(*row) if row else None

    def all(self) -> dict[str, StatusMark]:
        """Every recorded mark, by sample id (one query)."""
        with self._lock:
            rows = self._conn.execute("SELECT sample_id, status, key, note, set_at FROM status").fetchall()
        return {row[0]: StatusMark(*row) for row in rows}

    def put(self, sample_id: str, status: str, key: str, note: str = "") -> StatusMark:
        if status not in EXPLICIT:
            raise InvalidInput(f"only {' and '.join(LABELS[s] for s in EXPLICIT)} can be recorded, not {status!r}")
        mark = StatusMark(sample_id, status, key, note, time.time())
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO status (sample_id, status, key, note, set_at) VALUES (?, ?, ?, ?, ?)",
                (mark.sample_id, mark.status, mark.key, mark.note, mark.set_at),
            )
        return mark

    def clear(self, sample_id: str) -> bool:
        """Forget a sample's mark; whether there was one."""
        with self._lock:
            cursor = self._conn.execute("DELETE FROM status WHERE sample_id = ?", (sample_id,))
        return cursor.rowcount > 0

    def data_version(self) -> int:
        """A number that changes when another connection (another process) commits a change."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
