"""The Ray runner of an export: the same jobs as the local runner, made by a fixed set of Ray actors.

``run_export(..., runner="ray")`` calls :func:`execute_ray` exactly as it calls the local ``_execute``: it yields
``(job id, ok, record or error, files)`` as jobs finish, and the driver alone writes the ledger.

- Ray: ``ray.init(address=...)`` when an address is given, else ``RAY_ADDRESS`` when set, else a fresh local Ray
  with ``workers`` CPUs (no dashboard, quiet logs, temporary files in Ray's default ``/tmp/ray``). A Ray this
  process had initialised already is reused and left running; a Ray started here is shut down at the end.
- Workers: ``workers`` actors (fewer when the cluster has fewer CPUs, or GPUs for a diffusion step), each
  holding one :class:`~core.export.make.MakeContext` (the dataset store, the region libraries and, for
  ControlNet / T2I-Adapter, the loaded pipeline; a gan step's generator stays in the process's LRU of
  :mod:`core.generate.gan`) built once when the actor starts. An actor asks for one GPU when a pending job uses
  a diffusion or gan backend and the cluster has GPUs, otherwise one CPU.
- Each task is a chunk of jobs run by the local runner's ``_run_jobs``: the actor writes the image, label map and
  boxes straight into the output folder (a filesystem every node shares, like the dataset), and only ids, small
  provenance records and file checksums come back through the object store. Hence the same recipe gives the
  same files as the local runner, whatever the number of workers or nodes.
- Each actor has two chunks in flight, so it never waits on the driver. ``cancel`` is polled while waiting and
  between results; on cancel (or any error) the actors are killed at once, and the jobs not recorded yet stay
  pending for ``--resume``.
- Workers see the driver's ``SEGSTUDIO_*`` and Hugging Face settings (models folder, workspace, offline flags);
  on a cluster those paths must exist on every node.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from core.errors import InvalidInput, StudioError
from core.export.plan import Job
from core.progress import CancelToken, ProgressFn

DIFFUSION = ("controlnet", "t2i-adapter")
GPU_KINDS = (*DIFFUSION, "gan")  # backends whose actors ask for a GPU when the cluster has them
IN_FLIGHT = 2  # chunks queued per actor
POLL_S = 0.5  # how often a wait looks at the cancel token
FORWARDED_ENV = ("SEGSTUDIO_MODELS", "SEGSTUDIO_WORKSPACE", "SEGSTUDIO_ALLOW_DOWNLOADS", "SEGSTUDIO_MAX_PIXELS",
                 "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_HOME")  # fmt: skip


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise InvalidInput("the Ray runner needs Ray, which is not installed: pip install 'segstudio[ray]' "
                           "(or use --runner local)") from exc  # fmt: skip
    return ray


def connect(workers: int, address: str | None = None) -> bool:
    """Make sure this process is connected to Ray; returns whether Ray was started (or joined) here, i.e. whether
    the caller should shut it down.

    Args:
        workers: the CPUs of a local Ray started here (at least 1).
        address: a cluster address (``ray://host:10001``, ``host:6379``, ``auto``); else ``RAY_ADDRESS``; else a
            new local Ray.

    Raises:
        InvalidInput: Ray is not installed, or the cluster cannot be reached.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    target = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if target:
            ray.init(address=target, **quiet)
        else:  # "local": a new instance, never a stray `ray start` cluster of this machine
            ray.init(address="local", num_cpus=max(workers, 1), include_dashboard=False, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise InvalidInput(f"cannot start or reach Ray at {target or 'a local instance'}: {exc}; check --address "
                           "(or RAY_ADDRESS), or use --runner local") from exc  # fmt: skip
    return True


def actor_plan(pending: list[Job], workers: int, resources: dict) -> tuple[int, dict]:
    """How many actors to start and the options of each.

    Args:
        pending: the jobs to make.
        workers: the actors asked for.
        resources: ``ray.cluster_resources()`` (``{"CPU": 2.0, "GPU": 1.0, ...}``).

    Returns:
        ``(count, options)``: one GPU per actor when a pending job uses a diffusion or gan backend and the cluster has
        GPUs (then at most one actor per GPU), else one CPU per actor (at most one per CPU of the cluster).
    """
    gpus = int(resources.get("GPU", 0))
    cpus = max(int(resources.get("CPU", 1)), 1)
    if gpus and any(job.kind in GPU_KINDS for job in pending):
        return max(1, min(workers, gpus)), {"num_cpus": 1, "num_gpus": 1}
    return max(1, min(workers, cpus)), {"num_cpus": 1, "num_gpus": 0}


class Maker:
    """A Ray actor's state: the export's make context, built once (a failure to build it is raised by every
    :meth:`run`, so that the driver sees the :class:`StudioError` rather than a dead actor)."""

    def __init__(self, recipe_doc: dict, out: str, env: dict[str, str]):
        os.environ.update(env)
        self.recipe_doc, self.out = recipe_doc, out
        self.error: StudioError | None = None
        try:
            from core.export.runner import _context

            _context(recipe_doc)
        except StudioError as exc:
            self.error = exc

    def run(self, jobs: list[dict]) -> list[tuple[str, bool, dict | str, dict | None]]:
        """Make and write a chunk of jobs (``Job.to_json()`` documents); returns the small per-job results."""
        if self.error is not None:
            raise self.error
        from core.export.runner import _run_jobs

        return _run_jobs(self.recipe_doc, jobs, self.out)


def execute_ray(recipe_doc: dict, pending: list[Job], out: Path, workers: int, store, cancel: CancelToken | None,
                progress: ProgressFn, total: int, done_before: int, *,
                address: str | None = None) -> Iterator[tuple[str, bool, dict | str, dict | None]]:  # fmt: skip
    """Yield ``(job id, ok, record or error, files)`` as the jobs finish on Ray (see the module docstring).

    Raises:
        InvalidInput: Ray is not installed or cannot be reached.
        Cancelled: ``cancel`` was set.
        StudioError: the make context could not be built on a worker, or a worker died twice.
    """
    from core.export.runner import CHUNK, _progress_message

    if not pending:  # a resume with nothing left: no Ray to start
        return
    ray = _import_ray()
    started = connect(workers, address)
    actors: list = []
    running: dict = {}
    try:
        count, options = actor_plan(pending, workers, ray.cluster_resources())
        chunks = deque([j.to_json() for j in pending[i : i + CHUNK]] for i in range(0, len(pending), CHUNK))
        count = min(count, len(chunks))
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        remote = ray.remote(Maker).options(**options, max_restarts=1, max_task_retries=1)
        actors = [remote.remote(recipe_doc, str(out), env) for _ in range(count)]

        def submit(actor) -> None:
            if chunks:
                running[actor.run.remote(chunks.popleft())] = actor

        for _ in range(IN_FLIGHT):
            for actor in actors:
                submit(actor)
        done, by_id = done_before, {job.id: job for job in pending}
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            if cancel is not None:
                cancel.raise_if_cancelled("the export")
            for ref in ready:
                submit(running[ref])
                del running[ref]
                for item in _results(ray, ref):
                    if cancel is not None:
                        cancel.raise_if_cancelled("the export")
                    done += 1
                    progress(done / total, _progress_message(done, total, by_id.get(item[0])))
                    yield item
    finally:
        for ref in running:  # cancelled (or failed): no retries of what is in flight
            ray.cancel(ref)
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if started:
            ray.shutdown()


def _results(ray, ref) -> list:
    """A chunk's results; a worker's own error comes back as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, StudioError):
            raise exc.cause from None
        raise
    except ray.exceptions.RayActorError as exc:
        raise StudioError(f"a Ray worker of the export died ({exc}); the finished jobs are recorded: run the export "
                          "again with --resume") from exc  # fmt: skip
