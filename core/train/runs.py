"""Where training runs live and what state each is in.

The studio keeps a dataset's runs in its workspace, ``<cache_root>/train_runs/<name>/`` (never in the dataset
folder); the CLI writes wherever ``--out`` says. A run folder is what :func:`core.train.trainer.train` writes,
plus, when a background job trains it, ``job.json`` (the job's state, written by the worker) and
``control.json`` (what the page asked: run, pause or cancel), see :mod:`core.train.jobs`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInput

RUNS_DIR = "train_runs"
JOB_FILE = "job.json"
CONTROL_FILE = "control.json"
REQUEST_FILE = "job_request.json"  # what the worker was asked to do (core.train.jobs)
WORKER_LOG = "worker.log"
JOB_FILES = (JOB_FILE, CONTROL_FILE, REQUEST_FILE, WORKER_LOG)  # what a background job keeps in its folder
# job states: a worker is working on it / waiting while paused / stopped by the user / reached its steps /
# stopped by an error / no job ever ran (e.g. a CLI run) / a worker's state says running but the worker is gone
STATES = ("starting", "running", "paused", "cancelled", "finished", "failed", "idle", "stopped")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def runs_root(cache_root: str | Path) -> Path:
    """The folder holding a dataset's runs: ``<cache_root>/train_runs``."""
    return Path(cache_root) / RUNS_DIR


def check_run_name(name: str) -> str:
    """A run name is a plain folder name: letters, digits, ``.``, ``_``, ``-`` (up to 64, not starting with a dot)."""
    name = str(name).strip()
    if not _NAME.match(name):
        raise InvalidInput(
            f"run name {name!r} is not accepted; use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit"
        )
    return name


@dataclass(frozen=True)
class RunInfo:
    """A run folder as the studio lists it.

    Attributes:
        path: the run folder; name: its folder name; kind, size, steps: from its config; step: the step of its
        latest complete checkpoint (0 when none); logged_step: the last step in its log; state: one of
        :data:`STATES`; message: the job's last message (an error, the ETA, ...).
    """

    path: Path
    name: str
    kind: str
    size: int
    steps: int
    step: int
    logged_step: int
    state: str
    message: str = ""

    @property
    def has_checkpoint(self) -> bool:
        return self.step > 0


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _last_logged_step(run_dir: Path) -> int:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return 0
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - 4096))
        tail = handle.read().decode("utf-8", "replace").splitlines()
    for line in reversed(tail):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def read_job(run_dir: str | Path) -> dict:
    """The worker's ``job.json`` (``{}`` when no job ever ran): state, pid, step, steps, message, eta_s, ..."""
    return _read_json(Path(run_dir) / JOB_FILE)


def run_info(run_dir: str | Path) -> RunInfo | None:
    """What a run folder holds, or ``None`` when it is not a run (no readable ``config.json``, nor the
    ``job_request.json`` of a job that has not written it yet)."""
    from core.train.jobs import job_state

    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json") or _read_json(run_dir / "job_request.json").get("config", {})
    if not isinstance(config, dict) or not config.get("kind"):
        return None
    ckpt = _read_json(run_dir / "checkpoint.json")
    state, message = job_state(run_dir)
    return RunInfo(run_dir, run_dir.name, str(config.get("kind")), int(config.get("size", 0)),
                   int(config.get("steps", 0)), int(ckpt.get("step", 0)), _last_logged_step(run_dir), state,
                   message)  # fmt: skip


def list_runs(root: str | Path) -> list[RunInfo]:
    """The runs under ``root`` (one folder each), newest first; folders that are not runs are left out."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [info for child in root.iterdir() if child.is_dir() and (info := run_info(child)) is not None]
    return sorted(found, key=lambda r: r.path.stat().st_ctime, reverse=True)


def free_name(root: str | Path, stem: str) -> str:
    """The first ``<stem>-1``, ``<stem>-2``, ... that names nothing in ``root`` (a default for a new run's name)."""
    root = Path(root)
    taken = {p.name for p in root.iterdir()} if root.is_dir() else set()
    n = 1
    while f"{stem}-{n}" in taken:
        n += 1
    return f"{stem}-{n}"
