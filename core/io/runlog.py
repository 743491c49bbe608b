"""A training run's ``log.jsonl``: one JSON object per line, appended as steps finish.

A process killed mid-write can leave a cut last line; readers skip lines that are not JSON rather than fail.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_log_lines(path: str | Path) -> list[tuple[str, dict]]:
    """``(raw line, record)`` for every readable line of a JSONL log, in order (``[]`` when the file is missing)."""
    path = Path(path)
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append((line, json.loads(line)))
            except json.JSONDecodeError:
                continue  # a line cut by a crash
    return out


def read_log(path: str | Path) -> list[dict]:
    """The records of a JSONL log, oldest first; lines cut by a crash are skipped."""
    return [record for _, record in read_log_lines(path)]


def log_up_to(path: str | Path, up_to: int) -> tuple[list[str], float]:
    """Log lines with ``step <= up_to`` (what a run resumed at ``up_to`` keeps) and the ``seconds`` reached by the
    last of them."""
    kept, seconds = [], 0.0
    for line, record in read_log_lines(path):
        if record.get("step", up_to + 1) <= up_to:
            kept.append(line)
            seconds = float(record.get("seconds", seconds))
    return kept, seconds
