"""Unsaved edits kept in the workspace, one draft per sample and editor (a browser, a user).

A draft is a JSON document written atomically after every change, so edits survive a refresh, a
closed tab, a killed server. What goes inside is up to the editor (``payload``); this module only
stores, lists and removes drafts. A draft that cannot be read is moved aside (``*.unreadable``),
never deleted, and reported as absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from core.io.atomic import atomic_write_text


@dataclass(frozen=True)
class DraftInfo:
    """Where a draft is and what it is of."""

    owner: str
    sample_id: str
    saved_at: float
    path: Path


def _safe(owner: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", owner)[:64] or "anonymous"


class DraftStore:
    """Drafts under ``folder/<owner>/<hash of sample id>.json``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @staticmethod
    def digest(sample_id: str) -> str:
        """The draft file's name (without ``.json``) for a sample id."""
        return hashlib.sha1(sample_id.encode("utf-8")).hexdigest()[:20]

    def path(self, owner: str, sample_id: str) -> Path:
        return self.folder / _safe(owner) / f"{self.digest(sample_id)}.json"

    def has_any(self, sample_id: str) -> bool:
        """Whether any editor has a draft of the sample (the drafts are not read)."""
        try:
            return any(self.folder.glob(f"*/{self.digest(sample_id)}.json"))
        except OSError:
            return False

    def drafted(self) -> set[str]:
        """The :meth:`digest` of every sample that has a draft by any editor (one listing of the folder; the
        drafts are not read)."""
        try:
            return {path.stem for path in self.folder.glob("*/*.json")}
        except OSError:
            return set()

    def save(self, owner: str, sample_id: str, payload: dict) -> Path:
        """Write (replace) the draft of ``sample_id`` by ``owner``."""
        path = self.path(owner, sample_id)
        doc = {"owner": owner, "sample_id": sample_id, "saved_at": time.time(), "payload": payload}
        atomic_write_text(path, json.dumps(doc), durable=False)  # atomic; a power cut may lose the last change
        return path

    def load(self, owner: str, sample_id: str) -> dict | None:
        """The draft's payload, or ``None`` when there is none (or it was unreadable and moved aside)."""
        doc = self._read(self.path(owner, sample_id))
        if doc is None or doc.get("sample_id") != sample_id:
            return None
        return doc.get("payload")

    def info(self, owner: str, sample_id: str) -> DraftInfo | None:
        path = self.path(owner, sample_id)
        doc = self._read(path)
        if doc is None:
            return None
        return DraftInfo(owner, sample_id, float(doc.get("saved_at", 0)), path)

    def drop(self, owner: str, sample_id: str) -> None:
        self.path(owner, sample_id).unlink(missing_ok=True)

    def drafts_of(self, sample_id: str) -> list[DraftInfo]:
        """Every editor's draft of one sample, newest first."""
        out = []
        if not self.folder.is_dir():
            return out
        name = self.path("x", sample_id).name
        for owner_dir in self.folder.iterdir():
            doc = self._read(owner_dir / name)
            if doc is not None and doc.get("sample_id") == sample_id:
                out.append(DraftInfo(str(doc.get("owner")), sample_id, float(doc.get("saved_at", 0)), owner_dir / name))
        return sorted(out, key=lambda d: -d.saved_at)

    @staticmethod
    def _read(path: Path) -> dict | None:
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return doc
        except (OSError, UnicodeDecodeError, ValueError):
            try:
                os.replace(path, path.with_suffix(".unreadable"))
            except OSError:
                pass
            return None
