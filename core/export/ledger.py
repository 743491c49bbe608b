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
    updated REAL,
    review TEXT,
    score REAL,
    coco TEXT
);
CREATE INDEX IF NOT EXISTS jobs_position ON jobs (position);
"""
STATES = ("pending", "done", "failed", "rejected")
REVIEW_STATES = ("pending", "accepted", "rejected")


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
        # NORMAL in WAL mode: a commit survives a killed process (what resume relies on); only a power cut may lose
        # the last few rows, whose jobs are then made again with the same bytes.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(jobs)")}
        for column, kind in (("review", "TEXT"), ("score", "REAL"), ("coco", "TEXT")):  # ledgers of earlier versions
            if column not in columns:
                self.conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

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

    def jobs(self) -> list[Job]:
        """Every job of the export (the plan and the replacements of rejected samples), in order."""
        rows = self.conn.execute("SELECT job FROM jobs ORDER BY position").fetchall()
        return [Job.from_json(json.loads(r[0])) for r in rows]

    def done(self, job: Job, record: dict, files: dict[str, dict], *, review: str | None = None,
             coco: dict | None = None) -> None:  # fmt: skip
        """Mark a job done, with its provenance record and its files (``relative path -> {sha1, size}``);
        ``review="pending"`` when it waits for a person's decision; ``coco``: its COCO entries, when computed."""
        score = (record.get("quality") or {}).get("score")
        with self.conn:
            self.conn.execute(
                "UPDATE jobs SET state = 'done', error = NULL, record = ?, files = ?, attempts = attempts + 1, "
                "updated = ?, review = ?, score = ?, coco = ? WHERE id = ?",
                (json.dumps(record, sort_keys=True), json.dumps(files, sort_keys=True), time.time(), review, score,
                 None if coco is None else json.dumps(coco, sort_keys=True), job.id),
            )

    def coco_entries(self) -> dict[str, dict]:
        """Output id -> COCO entries of the finished jobs that have them."""
        rows = self.conn.execute("SELECT job, coco FROM jobs WHERE state = 'done' AND coco IS NOT NULL").fetchall()
        return {json.loads(job)["output_id"]: json.loads(coco) for job, coco in rows}

    def rejected(self, job_id: str, reason: str, record: dict | None = None, *, review: str | None = None) -> None:
        """Mark a job rejected (by the quality gate, or by a person when ``review="rejected"``); its files are gone."""
        score = ((record or {}).get("quality") or {}).get("score")
        with self.conn:
            self.conn.execute(
                "UPDATE jobs SET state = 'rejected', error = ?, record = COALESCE(?, record), files = NULL, "
                "updated = ?, review = ?, score = COALESCE(?, score), attempts = attempts + 1 WHERE id = ?",
                (reason, None if record is None else json.dumps(record, sort_keys=True), time.time(), review, score,
                 job_id),
            )

    def accept(self, job_id: str, record: dict, files: dict[str, dict]) -> None:
        """A person accepted a job's sample: its files moved to the final tree."""
        with self.conn:
            self.conn.execute(
                "UPDATE jobs SET review = 'accepted', record = ?, files = ?, updated = ? WHERE id = ?",
                (json.dumps(record, sort_keys=True), json.dumps(files, sort_keys=True), time.time(), job_id),
            )

    def row(self, job_id: str) -> dict | None:
        """One job's row: ``{job, state, error, record, files, review, score}`` (JSON columns decoded)."""
        found = self.conn.execute("SELECT job, state, error, record, files, review, score FROM jobs WHERE id = ?",
                                  (job_id,)).fetchone()  # fmt: skip
        if found is None:
            return None
        job, state, error, record, files, review, score = found
        return {"job": Job.from_json(json.loads(job)), "state": state, "error": error,
                "record": json.loads(record) if record else None, "files": json.loads(files) if files else None,
                "review": review, "score": score}  # fmt: skip

    def review_rows(self, review: str = "pending") -> list[dict]:
        """Rows of done jobs whose review is ``review``, in plan order (see :meth:`row`)."""
        ids = self.conn.execute("SELECT id FROM jobs WHERE state = 'done' AND review = ? ORDER BY position",
                                (review,)).fetchall()  # fmt: skip
        return [self.row(r[0]) for r in ids]

    def step_rows(self) -> list[tuple[int, int, str]]:
        """``(step, index, state)`` of every job."""
        rows = self.conn.execute("SELECT job, state FROM jobs ORDER BY position").fetchall()
        return [(json.loads(j)["step"], json.loads(j)["index"], s) for j, s in rows]

    def failed(self, job: Job, error: str) -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE jobs SET state = 'failed', error = ?, attempts = attempts + 1, updated = ? WHERE id = ?",
                (error, time.time(), job.id),
            )

    def done_records(self) -> list[dict]:
        """The records of finished jobs that belong in the output (not waiting for review), in plan order."""
        rows = self.conn.execute(
            "SELECT record, review FROM jobs WHERE state = 'done' AND (review IS NULL OR review = 'accepted') "
            "ORDER BY position"
        ).fetchall()
        return [{**json.loads(record), "review": review or "not required"} for record, review in rows]

    def review_counts(self) -> dict[str, int]:
        """How many generated samples wait for review, were accepted, were rejected by a person or by the gate."""
        rows = self.conn.execute("SELECT state, review, COUNT(*) FROM jobs WHERE review IS NOT NULL OR state = "
                                 "'rejected' GROUP BY state, review").fetchall()  # fmt: skip
        counts = {"pending": 0, "accepted": 0, "rejected": 0, "gate": 0}
        for state, review, n in rows:
            key = "gate" if state == "rejected" and review is None else review
            if state in ("done", "rejected") and key in counts:
                counts[key] += n
        return counts

    def failures(self) -> list[tuple[str, str]]:
        """``(output id, error)`` of failed jobs, in plan order."""
        rows = self.conn.execute("SELECT job, error FROM jobs WHERE state = 'failed' ORDER BY position").fetchall()
        return [(json.loads(r[0])["output_id"], r[1] or "") for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | {r[0]: r[1] for r in rows}
