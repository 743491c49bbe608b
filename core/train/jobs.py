"""Training in a background process that a page (or anything else) can watch, pause, cancel and resume.

:func:`start_job` launches ``python -m core.train.jobs RUN`` detached from the caller; the worker trains with
:func:`core.train.trainer.train` and keeps ``RUN/job.json`` up to date (state, step, steps/s, ETA, last message).
:func:`start_experiment_job` does the same for the augmentation-value experiment
(:func:`core.task.experiment.run_experiment`); its "steps" are the experiment's runs (rows x repeats).
The caller steers it by writing ``RUN/control.json`` (:func:`request`): ``pause`` holds the worker between two
steps (its memory kept, continuing at once), ``cancel`` makes it write a checkpoint of the current step and exit,
``run`` lets a paused worker go on. A cancelled, failed or killed run is continued by :func:`start_job` with
``resume=True`` from its latest checkpoint. Both files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from core.errors import Cancelled, InvalidInput, StudioError
from core.io.atomic import atomic_write_text
from core.train.config import TrainConfig
from core.train.runs import CONTROL_FILE, JOB_FILE, REQUEST_FILE, WORKER_LOG, read_job

ACTIONS = ("run", "pause", "cancel")
LIVE_STATES = ("starting", "running", "paused")
PAUSE_POLL_S = 0.25


def _write_json(path: Path, doc: dict) -> None:
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live training worker (a reused pid running something else does not count)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ")
        except OSError:
            return False
        if not text:  # a zombie: exited, not yet reaped
            return False
        return b"core.train.jobs" in text
    return True


def job_state(run_dir: str | Path) -> tuple[str, str]:
    """``(state, message)`` of a run's job: one of :data:`core.train.runs.STATES` and its last message.

    A job whose file says it is live but whose worker is gone (killed, machine restarted) is ``stopped``.
    """
    job = read_job(run_dir)
    if not job:
        return "idle", ""
    state, message = str(job.get("state", "idle")), str(job.get("message", ""))
    if state in LIVE_STATES and not _pid_alive(int(job.get("pid", 0))):
        return "stopped", "the training process is gone (killed or crashed); resume continues from the last checkpoint"
    return state, message


def is_live(run_dir: str | Path) -> bool:
    return job_state(run_dir)[0] in LIVE_STATES


def request(run_dir: str | Path, action: str) -> None:
    """Ask a run's worker to ``run`` (go on after a pause), ``pause`` or ``cancel``.

    Raises:
        InvalidInput: ``action`` is unknown, or the run has no live worker to ask.
    """
    if action not in ACTIONS:
        raise InvalidInput(f"action {action!r} is unknown; accepted: {', '.join(ACTIONS)}")
    run_dir = Path(run_dir)
    if not is_live(run_dir):
        raise InvalidInput(f"{run_dir.name} has no training process running; resume it to start one")
    _write_json(run_dir / CONTROL_FILE, {"action": action, "at": time.time()})


def start_job(config: TrainConfig, run_dir: str | Path, *, resume: bool = False,
              cache_dir: str | Path | None = None) -> int:  # fmt: skip
    """Start training ``config`` into ``run_dir`` in a background process; returns its pid.

    Args:
        config: the settings (on resume only ``steps``, the intervals, device and amp may differ from the run's).
        run_dir: the run folder; must not hold a run unless ``resume``.
        resume: continue the run from its latest checkpoint.
        cache_dir: the dataset's workspace folder (where its index lives).

    Raises:
        InvalidInput: a worker is already training this run; the folder holds a run and ``resume`` is false.
    """
    run_dir = Path(run_dir)
    _check_startable(run_dir, "config.json", resume)
    request_doc = {"config": config.to_json(), "resume": bool(resume), "cache_dir": str(cache_dir) if cache_dir else None}
    return _launch(run_dir, request_doc, config.steps)


def start_experiment_job(config, exp_dir: str | Path, *, resume: bool = False) -> int:
    """Start (``resume``: continue) the augmentation-value experiment ``config``
    (:class:`core.task.experiment.ExperimentConfig`) in ``exp_dir`` in a background process; returns its pid.

    Raises:
        InvalidInput: a worker is already running it; the folder holds an experiment and ``resume`` is false.
    """
    from core.task.experiment import count_runs

    exp_dir = Path(exp_dir)
    _check_startable(exp_dir, "experiment.json", resume)
    request_doc = {"task": "experiment", "experiment": config.to_json(), "resume": bool(resume)}
    return _launch(exp_dir, request_doc, count_runs(config))


def start_render_job(job, *, resume: bool = False) -> int:
    """Start (``resume``: continue) a batch of renders (:class:`core.render.dataset.RenderJob`) in a background
    process writing into ``job.out``; returns its pid. Its "steps" are the samples.

    Raises:
        InvalidInput: a worker is already rendering there; the folder holds renders and ``resume`` is false.
    """
    out = Path(job.out)
    _check_startable(out, "manifest.jsonl", resume)
    return _launch(out, {"task": "render", "render": job.to_json(), "resume": bool(resume)}, job.count)


def _check_startable(folder: Path, marker: str, resume: bool) -> None:
    if is_live(folder):
        raise InvalidInput(f"{folder.name} is already running (pause or cancel it first)")
    if not resume and (folder / marker).exists():
        raise InvalidInput(f"{folder.name} already exists; choose another name or resume it")


def _launch(run_dir: Path, request_doc: dict, steps: int) -> int:
    """Write the request and control files and start the detached worker on ``run_dir``; returns its pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / REQUEST_FILE, request_doc)
    _write_json(run_dir / CONTROL_FILE, {"action": "run", "at": time.time()})
    _write_json(run_dir / JOB_FILE, {"state": "starting", "pid": 0, "step": 0, "steps": steps,
                                     "message": "starting", "updated": time.time()})  # fmt: skip
    log = open(run_dir / WORKER_LOG, "ab")  # noqa: SIM115 (handed to the child)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    project_root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(project_root), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen([sys.executable, "-m", "core.train.jobs", str(run_dir)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)  # fmt: skip
    log.close()
    job = read_job(run_dir)
    if job.get("state") == "starting" and not job.get("pid"):
        job["pid"] = proc.pid
        _write_json(run_dir / JOB_FILE, job)
    return proc.pid


class ControlFileToken:
    """A cancel token read from ``control.json``: ``cancelled`` is true once the page asked to cancel, and reading
    it blocks while the page asks to pause (so the trainer holds between two steps without knowing why)."""

    def __init__(self, run_dir: Path, on_pause, on_resume):
        self.run_dir, self.on_pause, self.on_resume = run_dir, on_pause, on_resume
        self._mtime, self._action = 0.0, "run"

    def _action_now(self) -> str:
        path = self.run_dir / CONTROL_FILE
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return "run"
        if mtime != self._mtime:
            try:
                self._action = str(json.loads(path.read_text(encoding="utf-8")).get("action", "run"))
            except (OSError, ValueError):
                return self._action  # being replaced this instant: keep the last answer
            self._mtime = mtime
        return self._action

    @property
    def cancelled(self) -> bool:
        action = self._action_now()
        if action == "pause":
            self.on_pause()
            while (action := self._action_now()) == "pause":
                time.sleep(PAUSE_POLL_S)
            if action != "cancel":
                self.on_resume()
        return action == "cancel"

    def cancel(self) -> None:
        _write_json(self.run_dir / CONTROL_FILE, {"action": "cancel", "at": time.time()})

    def raise_if_cancelled(self, what: str = "training") -> None:
        if self.cancelled:
            raise Cancelled(f"{what} was cancelled")


class _Reporter:
    """Writes ``job.json`` from the trainer's progress (at most twice a second, plus every state change)."""

    def __init__(self, run_dir: Path, steps: int, count_from_fraction: bool = False):
        # count_from_fraction: the step is floor(fraction x steps) (an experiment's finished runs), not the step
        # a "step N" message names (training)
        self.run_dir, self.started, self.count_from_fraction = run_dir, time.time(), count_from_fraction
        self.doc = {"state": "running", "pid": os.getpid(), "step": 0, "steps": steps, "message": "reading samples",
                    "started": self.started, "updated": self.started}  # fmt: skip
        self._last = 0.0
        self.write()

    def write(self, **changes) -> None:
        self.doc.update(changes, updated=time.time())
        _write_json(self.run_dir / JOB_FILE, self.doc)

    def progress(self, fraction: float | None, message: str = "") -> None:
        now = time.time()
        if self.count_from_fraction:
            step = int((fraction or 0.0) * self.doc["steps"] + 1e-9)
        elif message.startswith("step "):
            step = int(round((fraction or 0.0) * self.doc["steps"]))
        else:
            step = self.doc["step"]
        if now - self._last >= 0.5 or fraction == 1.0:
            self._last = now
            self.write(step=step, message=message)

    def pause(self) -> None:
        self.write(state="paused", message=f"paused at step {self.doc['step']}")

    def resume(self) -> None:
        self.write(state="running", message=f"running from step {self.doc['step']}")


def run_worker(run_dir: str | Path) -> int:
    """The worker's body: do what ``RUN/job_request.json`` asks (a GAN training, an experiment or a batch of renders)
    and record in ``job.json`` how it ended."""
    run_dir = Path(run_dir)
    req = json.loads((run_dir / REQUEST_FILE).read_text(encoding="utf-8"))
    task = {"experiment": _experiment_task, "render": _render_task}.get(req.get("task", ""), _train_task)
    steps, work = task(run_dir, req)
    reporter = _Reporter(run_dir, steps, count_from_fraction=task is not _train_task)
    token = ControlFileToken(run_dir, reporter.pause, reporter.resume)
    try:
        step, message = work(reporter.progress, token)
    except Cancelled as exc:
        reporter.write(state="cancelled", message=str(exc))
        return 0
    except StudioError as exc:
        reporter.write(state="failed", message=str(exc))
        return 1
    except Exception as exc:  # the page must learn why its job stopped, whatever it was
        reporter.write(state="failed", message=f"{type(exc).__name__}: {exc}")
        raise
    reporter.write(state="finished", step=step, message=message)
    return 0


# Each task: (steps the job counts, work(progress, cancel) -> (final step, finishing message)).


def _train_task(run_dir: Path, req: dict):
    from core.train.trainer import train

    config = TrainConfig.from_json(req["config"])

    def work(progress, cancel):
        result = train(config, run_dir, progress=progress, cancel=cancel, resume=bool(req.get("resume")),
                       cache_dir=Path(req["cache_dir"]) if req.get("cache_dir") else None)  # fmt: skip
        return result.step, f"finished at step {result.step} ({result.steps_per_second:.2f} steps/s)"

    return config.steps, work


def _experiment_task(run_dir: Path, req: dict):
    from core.task.experiment import ExperimentConfig, count_runs, run_experiment

    config = ExperimentConfig.from_json(req["experiment"])
    total = count_runs(config)

    def work(progress, cancel):
        result = run_experiment(config, run_dir, progress=progress, cancel=cancel)
        return total, (f"finished: {len(result.trained)} runs trained, {len(result.skipped)} already finished, in "
                       f"{result.seconds:.0f} s")  # fmt: skip

    return total, work


def _render_task(run_dir: Path, req: dict):
    from core.render.dataset import RenderJob

    job = RenderJob.from_json(req["render"])

    def work(progress, cancel):
        run = job.run(progress=progress, cancel=cancel)
        skipped = "; ".join(f"{i}: {why}" for i, why in run.skipped[:3])
        return job.count, (f"finished: {len(run.written)} rendered, {len(run.kept)} already there, "
                           f"{len(run.skipped)} skipped" + (f" ({skipped})" if skipped else ""))  # fmt: skip

    return job.count, work


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.jobs", description=run_worker.__doc__)
    parser.add_argument("run_dir")
    return run_worker(parser.parse_args(argv).run_dir)


if __name__ == "__main__":
    sys.exit(main())
