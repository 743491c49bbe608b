"""The review queue of an export: generated samples waiting under ``OUT/review/`` for a person's decision.

- accept: the sample's files move into the export's tree (renames, so a kill leaves them in one place or the
  other; a second accept finds them moved and only records it);
- reject: the files are deleted and the job is marked rejected; the next run (``--resume``, or Finish in the
  Export tab) plans a replacement with the step's next seed while the step has fewer samples than planned;
- skip: nothing changes.

Decisions go to the ledger, so they survive restarts and are shared by every page looking at the export.
The split lists, COCO files and other formats hold accepted samples only, and are rewritten by the next run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInput
from core.export.ledger import LEDGER_FILE, Ledger

DECISIONS = ("accept", "reject", "skip")


@dataclass(frozen=True)
class ReviewItem:
    """One sample waiting for review.

    Attributes:
        job_id: the ledger's job id.
        output_id: the sample's id in the export.
        step: the generation step (1 = the recipe's first ``generate`` entry).
        kind: the backend that made it.
        source: the real sample it was made from, if any.
        score: the boundary score (``None`` when the label map has one class only).
        clip: the CLIP score, when computed.
        segmenter: the segmenter's mIoU against the label map, when the recipe names a segmenter.
        image: the image file (under ``OUT/review/``).
        label: the label-map file.
    """

    job_id: str
    output_id: str
    step: int
    kind: str
    source: str | None
    score: float | None
    clip: float | None
    image: Path
    label: Path
    segmenter: float | None = None


def open_ledger(out: str | Path) -> Ledger:
    """The ledger of the export in ``out``.

    Raises:
        InvalidInput: ``out`` holds no export.
    """
    out = Path(out).expanduser()
    if not (out / LEDGER_FILE).is_file():
        raise InvalidInput(f"{out} holds no export (no {LEDGER_FILE}); run the export first")
    return Ledger(out)


def review_queue(out: str | Path, *, step: int | None = None, min_score: float | None = None,
                 max_score: float | None = None) -> list[ReviewItem]:  # fmt: skip
    """The samples waiting for review, in plan order, filtered by step and score range (a sample without a score
    passes score filters)."""
    out = Path(out).expanduser()
    ledger = open_ledger(out)
    try:
        rows = ledger.review_rows("pending")
    finally:
        ledger.close()
    items = [_item(out, row) for row in rows]
    return [i for i in items if (step is None or i.step == step) and _in_range(i.score, min_score, max_score)]


def _in_range(score: float | None, low: float | None, high: float | None) -> bool:
    if score is None:
        return True
    return (low is None or score >= low) and (high is None or score <= high)


def _item(out: Path, row: dict) -> ReviewItem:
    job, record = row["job"], row["record"] or {}
    quality = record.get("quality") or {}
    files = record.get("files") or {}
    return ReviewItem(job.id, job.output_id, job.step, job.kind, (record.get("provenance") or {}).get("source"),
                      quality.get("score"), quality.get("clip"), out / files.get("image", ""), out / files.get("label", ""),
                      quality.get("segmenter"))  # fmt: skip


def decide(out: str | Path, job_id: str, decision: str) -> str:
    """Apply a person's ``decision`` (accept | reject | skip) to a waiting sample; returns what was done.

    Raises:
        InvalidInput: an unknown decision, an unknown job, or a job that is not waiting for review.
    """
    if decision not in DECISIONS:
        raise InvalidInput(f"decision {decision!r}: one of {', '.join(DECISIONS)}")
    out = Path(out).expanduser()
    ledger = open_ledger(out)
    try:
        row = ledger.row(job_id)
        if row is None:
            raise InvalidInput(f"job {job_id} is not part of the export in {out}")
        if row["state"] != "done" or row["review"] != "pending":
            raise InvalidInput(f"{row['job'].output_id} is not waiting for review (it is {row['review'] or row['state']})")
        if decision == "skip":
            return f"{row['job'].output_id}: skipped"
        if decision == "reject":
            for path in row["files"] or {}:
                (out / path).unlink(missing_ok=True)
            ledger.rejected(job_id, "rejected in review", review="rejected")
            return f"{row['job'].output_id}: rejected"
        files = _move_into_tree(out, row["files"] or {})
        record = {**row["record"], "files": _renamed(row["record"]["files"]), "checksums": files}
        ledger.accept(job_id, record, files)
        return f"{row['job'].output_id}: accepted"
    finally:
        ledger.close()


def _final_path(path: str) -> str:
    return path.split("/", 1)[1] if path.startswith("review/") else path


def _renamed(named: dict) -> dict:
    return {key: _final_path(path) for key, path in named.items()}


def _move_into_tree(out: Path, files: dict[str, dict]) -> dict[str, dict]:
    """Rename staged files into the export's folders; returns ``final path -> facts``."""
    moved = {}
    for path, facts in files.items():
        final = _final_path(path)
        source, target = out / path, out / final
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.exists():
            os.replace(source, target)
        elif not (target.exists() and target.stat().st_size == facts["size"]):
            raise InvalidInput(f"{path} is missing from the review folder; run the export with --resume to make it again")
        moved[final] = facts
    return moved
