"""The export ledger: one SQLite file (WAL) in the output folder, one row per job.

Only the driver writes it. A job's row becomes ``done`` in a transaction committed after its files were
renamed into place, so after a crash a ``done`` row always has its files, and a job whose files exist without
a ``done`` row is simply made again (it writes the same bytes).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from core.errors import InvalidInput
from core.export.plan import Job

LEDGER_FILE = "segstudio-export.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    job TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    record TEXT,
    files TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL
);
CREATE INDEX IF NOT EXISTS jobs_position ON jobs (position);
"""
STATES = ("pending", "done", "failed")


class Ledger:
    """The jobs of one export and their states.

    Args:
        out: the output folder (the ledger file is ``out/segstudio-export.sqlite``).
    """

    def __init__(self, out: Path):
        self.path = Path(out) / LEDGER_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # ---- identity ----------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def claim(self, recipe_digest: str, fingerprint: str, recipe_json: dict, *, resume: bool) -> None:
        """Make this ledger the one of ``recipe_digest`` over a dataset with ``fingerprint``.

        Raises:
            InvalidInput: the folder holds another recipe's export; or the same one without ``resume``; or the
                dataset changed since the export began.
        """
        known = self.meta("recipe_digest")
        if known is None:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                for key, value in (("recipe_digest", recipe_digest), ("fingerprint", fingerprint),
                                   ("recipe", json.dumps(recipe_json, sort_keys=True)), ("created", str(time.time()))):  # fmt: skip
                    self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return
        if known != recipe_digest:
            raise InvalidInput(f"{self.path.parent} holds the export of another recipe ({known}); choose an empty folder, "
                               "or pass --force to replace it")  # fmt: skip
        if not resume:
            raise InvalidInput(f"{self.path.parent} holds this recipe's export already; pass --resume to finish it "
                               "(finished jobs are kept), or --force to start again")  # fmt: skip
        if self.meta("fingerprint") != fingerprint:
            raise InvalidInput("the dataset changed since this export began (label maps or boxes saved since); resuming "
                               "would mix two versions of it. Pass --force to start again")  # fmt: skip

    # ---- jobs --------------------------------------------------------------------------------

    def add_jobs(self, jobs: list[Job]) -> None:
        """Record the plan (jobs already known keep their state)."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR IGNORE INTO jobs (id, position, job) VALUES (?, ?, ?)",
                [(j.id, j.position, json.dumps(j.to_json(), sort_keys=True)) for j in jobs],
            )

    def states(self) -> dict[str, tuple[str, dict | None]]:
        """Job id -> ``(state, files)``."""
        rows = self.conn.execute("SELECT id, state, files FROM jobs").fetchall()
        return {r[0]: (r[1], json.loads(r[2]) if r[2] else None) for r in rows}

    def done(self, job: Job, record: dict, files: dict[str, dict]) -> None:
        """Mark a job done, with its provenance record and its files (``relative path -> {sha1, size}``)."""
        with self.conn:
            self.conn.execute(
                "UPDATE jobs SET state = 'done', error = NULL, record = ?, files = ?, attempts = attempts + 1, "
                "updated = ? WHERE id = ?",
                (json.dumps(record, sort_keys=True), json.dumps(files, sort_keys=True), time.time(), job.id),
            )

    def failed(self, job: Job, error: str) -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE jobs SET state = 'failed', error = ?, attempts = attempts + 1, updated = ? WHERE id = ?",
                (error, time.time(), job.id),
            )

    def done_records(self) -> list[dict]:
        """The records of finished jobs, in plan order."""
        rows = self.conn.execute("SELECT record FROM jobs WHERE state = 'done' ORDER BY position").fetchall()
        return [json.loads(r[0]) for r in rows]

    def failures(self) -> list[tuple[str, str]]:
        """``(output id, error)`` of failed jobs, in plan order."""
        rows = self.conn.execute("SELECT job, error FROM jobs WHERE state = 'failed' ORDER BY position").fetchall()
        return [(json.loads(r[0])["output_id"], r[1] or "") for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | {r[0]: r[1] for r in rows}
