"""The store's index: facts about a dataset's files, kept in SQLite (WAL) in the workspace.

Each fact is keyed by the file's path and its *stamp* (inode, size, modification time), so a fact is
reused until the file changes and recomputed after. Nothing here is ever written into the dataset
folder. When the workspace cannot be written, the index lives in memory for the process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS facts (
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    stamp TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (path, kind)
);
"""


def file_stamp(path: Path) -> str | None:
    """``"inode:size:mtime_ns"`` of a file, or ``None`` when it does not exist.

    Atomic saves replace the file (new inode), so two versions written within one clock tick still differ.
    """
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"


def connect_sqlite(db_path: Path | None, schema: str) -> tuple[sqlite3.Connection, bool]:
    """A workspace SQLite database (WAL, shared across threads) holding ``schema``, and whether it is on disk:
    an in-memory one when ``db_path`` is ``None`` or cannot be opened (an unwritable workspace)."""
    if db_path is not None:
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(db_path, timeout=10, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(schema)
            return conn, True
        except (OSError, sqlite3.Error):
            pass
    conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    conn.executescript(schema)
    return conn, False


class FactIndex:
    """``get(path, kind, stamp)`` / ``put(path, kind, stamp, data)`` over a small SQLite table.

    Args:
        db_path: the SQLite file (created with its folder); ``None`` keeps the index in memory.
    """

    def __init__(self, db_path: Path | None):
        self._lock = threading.Lock()
        self.path = db_path
        self._conn = self._connect(db_path)

    @staticmethod
    def _connect(db_path: Path | None) -> sqlite3.Connection:
        return connect_sqlite(db_path, SCHEMA)[0]  # unwritable workspace: facts recomputed per process instead

    def get(self, path: Path | str, kind: str, stamp: str | None) -> dict | None:
        """The fact recorded for this version of the file, or ``None``."""
        if stamp is None:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT stamp, data FROM facts WHERE path = ? AND kind = ?", (str(path), kind)
            ).fetchone()
        if row is None or row[0] != stamp:
            return None
        return json.loads(row[1])

    def put(self, path: Path | str, kind: str, stamp: str | None, data: dict) -> None:
        if stamp is None:
            return
        text = json.dumps(data, sort_keys=True)
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO facts (path, kind, stamp, data) VALUES (?, ?, ?, ?)",
                    (str(path), kind, stamp, text),
                )
            except sqlite3.Error:
                pass  # the index is a cache: a failed write only costs a recomputation

    def close(self) -> None:
        with self._lock:
            self._conn.close()
