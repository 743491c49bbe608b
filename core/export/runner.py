"""Running an export: plan, make every pending job (in this process or in worker processes), record each in the
ledger once its files are in place, then write the split lists, COCO files and provenance.

Workers only make and write samples; the driver alone writes the ledger. A run killed at any moment and
started again with ``resume`` skips the finished jobs and ends with the same files as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InvalidInput, StudioError
from core.export.ledger import Ledger
from core.export.make import MakeContext, make
from core.export.plan import Job, dataset_fingerprint, plan_jobs
from core.export.preflight import preflight
from core.export.quality import passes
from core.export.quality import score as quality_score
from core.export.recipe import Recipe
from core.export.writers import (
    clear_temporaries,
    coco_entries,
    files_intact,
    remove_export,
    write_coco,
    write_sample,
    write_splits,
)
from core.io.atomic import atomic_write_text
from core.progress import CancelToken, ProgressFn, no_progress
from core.store import DatasetStore

CHUNK = 8  # jobs per task sent to a worker
LOCK_FILE = "segstudio-export.lock"
REVIEW_DIR = "review"  # generated samples waiting for a person's decision
MAX_TRIES = 3  # a step makes at most 3x its planned count while replacing rejected samples


@dataclass
class ExportSummary:
    """What a run did: jobs made now, skipped (done before), failed (with reasons), and the files written."""

    out: Path
    made: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0
    rejected: int = 0
    waiting: int = 0
    problems: list[dict] = field(default_factory=list)

    def line(self) -> str:
        failed = f", {len(self.failures)} failed" if self.failures else ""
        bad = len({p.get("sample") or p["path"] for p in self.problems})
        skipped = f"; {bad} dataset samples skipped (unreadable files)" if bad else ""
        rejected = f", {self.rejected} turned down by the quality gate" if self.rejected else ""
        waiting = f"; {self.waiting} wait for review" if self.waiting else ""
        return (f"{self.total} samples planned: {self.made} made now, {self.skipped} done before{failed}{rejected}"
                f"{waiting}{skipped}; output {self.out}")


def split_of(source: str, seed: int, shares: dict[str, float]) -> str:
    """The split of a source sample (every sample made from one photo shares it): a stable hash of the source
    and the seed, placed on the cumulative shares."""
    value = int.from_bytes(hashlib.sha1(f"{seed}|{source}".encode()).digest()[:8], "big") / 2**64
    cumulative = 0.0
    for name, share in shares.items():
        cumulative += share
        if value < cumulative:
            return name
    return list(shares)[-1]


def _run_jobs(recipe_doc: dict, jobs: list[dict], out: str) -> list[tuple[str, bool, dict | str, dict | None]]:
    """Make, score and write a chunk of jobs (in a worker or here).

    Returns ``(job id, ok, record or error, files)`` per job; ``files`` is ``None`` for a sample the quality gate
    turned down (its record holds the reason under ``gate``). Generated samples of a recipe with ``review`` are
    written under ``review/`` until a person accepts them.
    """
    context = _context(recipe_doc)
    results = []
    for doc in jobs:
        job = Job.from_json(doc)
        try:
            results.append((job.id, True, *_make_one(job, context, Path(out))))
        except StudioError as exc:
            results.append((job.id, False, str(exc), None))
        except Exception as exc:  # noqa: BLE001 - one job's failure, whatever it is, must not stop the run
            results.append((job.id, False, f"{type(exc).__name__}: {exc}", None))
    return results


def _make_one(job: Job, context: MakeContext, out: Path) -> tuple[dict, dict | None]:
    made = make(job, context)
    record = {"source": made.source, **made.record}
    classes = context.store.classes
    if job.kind != "real":
        record["quality"] = quality_score(made.image, made.label_map, classes, context.clip(), context.segmenter())
        passed, reason = passes(record["quality"], context.recipe.quality)
        if not passed:
            return {**record, "gate": reason}, None
    if "coco" in context.recipe.formats:  # encoded here, in the worker, so that the final write only joins them
        record["_coco"] = coco_entries(made.label_map, classes)
    if not (context.recipe.review and job.kind != "real"):
        return record, write_sample(out, job.output_id, made, classes)
    files = write_sample(out / REVIEW_DIR, job.output_id, made, classes)
    return record, {f"{REVIEW_DIR}/{path}": facts for path, facts in files.items()}


_CONTEXTS: dict[str, MakeContext] = {}


def _context(recipe_doc: dict) -> MakeContext:
    key = json.dumps(recipe_doc, sort_keys=True)
    if key not in _CONTEXTS:
        recipe = Recipe.from_dict({**recipe_doc, "generate": recipe_doc.get("generate", [])})
        _CONTEXTS.clear()
        _CONTEXTS[key] = MakeContext(recipe)
    return _CONTEXTS[key]


def _recipe_doc(recipe: Recipe) -> dict:
    """The recipe as a document ``Recipe.from_dict`` accepts again (for worker processes)."""
    doc = recipe.to_json()
    doc["generate"] = [{k: v for k, v in step.items() if v is not None and not (k == "options" and not v)}
                       for step in doc["generate"]]  # fmt: skip
    return doc


def run_export(
    recipe: Recipe,
    out: str | Path,
    *,
    workers: int = 1,
    runner: str = "local",
    address: str | None = None,
    resume: bool = False,
    force: bool = False,
    retry_failed: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    store: DatasetStore | None = None,
) -> ExportSummary:
    """Run (or resume) an export into ``out``.

    Args:
        workers: processes making samples (1: this process); with Ray, concurrent tasks.
        runner: ``"local"`` (this machine) or ``"ray"`` (a Ray cluster: ``address``, or a local Ray).
        resume: finish an interrupted export of the same recipe (finished jobs are kept).
        force: replace another recipe's export in ``out``.
        retry_failed: make the jobs that failed last time again.
        store: the source dataset's store when the caller has it open (the studio), else one is opened.

    Raises:
        InvalidInput: the recipe cannot run (see the message), or ``out`` holds another export.
        Cancelled: ``cancel`` was set (finished jobs stay recorded; resume later).
    """
    out = Path(out).expanduser().resolve()
    if Path(recipe.source).resolve() in (out, *out.parents):
        raise InvalidInput(f"the output folder {out} is inside the dataset {recipe.source}; choose a folder outside it")
    progress = progress or no_progress
    store = store or DatasetStore(recipe.source)
    progress(None, "planning")
    jobs = plan_jobs(recipe, store)
    progress(None, "checking models, classes and disk space")
    preflight(recipe, store, jobs, out)
    out.mkdir(parents=True, exist_ok=True)
    with export_lock(out):
        if force:
            remove_export(out)
        return _run_locked(recipe, out, store, jobs, workers, runner, address, resume, retry_failed, progress, cancel)


@contextmanager
def export_lock(out: Path):
    """Hold ``OUT/segstudio-export.lock`` for a run: a second run into the same folder (another page, another
    process) is refused while one is going.

    Raises:
        InvalidInput: another run holds the folder.
    """
    import fcntl

    handle = open(out / LOCK_FILE, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidInput(f"an export into {out} is running already; wait for it to finish, cancel it, or choose "
                               "another output folder") from None  # fmt: skip
        yield
    finally:
        handle.close()


def _run_locked(recipe: Recipe, out: Path, store: DatasetStore, jobs: list[Job], workers: int, runner: str,
                address: str | None, resume: bool, retry_failed: bool, progress: ProgressFn,
                cancel: CancelToken | None) -> ExportSummary:  # fmt: skip
    ledger = Ledger(out)
    execute = None
    try:
        ledger.claim(recipe.digest(), dataset_fingerprint(store), recipe.to_json(), resume=resume)
        ledger.add_jobs(jobs)
        clear_temporaries(out)
        store.classes.save(out / "classes.json")
        planned = Counter(j.step for j in jobs)
        summary = ExportSummary(out)
        execute = _execute if runner == "local" else _RayRun(address)
        first = True
        while first or _add_replacements(ledger, recipe.digest(), planned):
            all_jobs, states = ledger.jobs(), ledger.states()
            pending = [j for j in all_jobs if not _finished(states.get(j.id), out, retry_failed)]
            summary.total = len(all_jobs)
            if first:
                summary.skipped, first = len(all_jobs) - len(pending), False
            by_id = {j.id: j for j in pending}
            for job_id, ok, result, files in execute(_recipe_doc(recipe), pending, out, workers, store, cancel, progress,
                                                      len(all_jobs), len(all_jobs) - len(pending)):  # fmt: skip
                _record_result(ledger, by_id[job_id], ok, result, files, recipe, summary)
        summary.failures = ledger.failures()
        summary.problems = [p.to_json() for p in store.problems]  # samples the plan left out, with the reason
        summary.waiting = len(ledger.review_rows("pending"))
        progress(None, "writing splits and indexes")
        finish(out, ledger, recipe, store)
        progress(1.0, "done")
        return summary
    finally:
        if isinstance(execute, _RayRun):
            execute.close()
        ledger.close()


def _record_result(ledger: Ledger, job: Job, ok: bool, result, files: dict | None, recipe: Recipe,
                   summary: ExportSummary) -> None:  # fmt: skip
    if not ok:
        ledger.failed(job, result)
    elif files is None:
        ledger.rejected(job.id, f"quality gate: {result['gate']}", _record(job, result, None, recipe))
        summary.rejected += 1
    else:
        review = "pending" if recipe.review and job.kind != "real" else None
        coco = result.pop("_coco", None)
        ledger.done(job, _record(job, result, files, recipe), files, review=review, coco=coco)
        summary.made += 1


def _add_replacements(ledger: Ledger, digest: str, planned: Counter) -> list[Job]:
    """Plan a new job for each rejected sample of a generation step that has fewer live samples than planned
    (at most ``MAX_TRIES`` times the planned count per step); returns the jobs added."""
    jobs, states = ledger.jobs(), ledger.states()
    added: list[Job] = []
    for step, wanted in sorted(planned.items()):
        if step == 0:
            continue
        of_step = sorted((j for j in jobs if j.step == step), key=lambda j: j.index)
        rejected = [j for j in of_step if states[j.id][0] == "rejected"]
        missing = wanted - (len(of_step) - len(rejected))
        room = MAX_TRIES * wanted - len(of_step)
        replaced = len(of_step) - wanted  # replacements planned before, for the first rejected jobs
        for offset, gone in enumerate(rejected[replaced : replaced + min(missing, room)]):
            index = of_step[-1].index + 1 + offset
            added.append(gone.replacement(digest, index, len(jobs) + len(added)))
    ledger.add_jobs(added)
    return added


def _finished(state, out: Path, retry_failed: bool) -> bool:
    if state is None:
        return False
    name, files = state
    if name == "done":
        return files_intact(out, files)
    return name == "rejected" or (name == "failed" and not retry_failed)


def _record(job: Job, result: dict, files: dict | None, recipe: Recipe) -> dict:
    """The manifest line of a job: the job, its split, provenance, files and checksums."""
    split = split_of(result.get("source") or job.output_id, recipe.seed, recipe.split)
    record = {**job.to_json(), "split": split, "provenance": result, "files": sample_files(files or {}),
              "checksums": files or {}}  # fmt: skip
    if "quality" in result:
        record["quality"] = result["quality"]
    return record


def sample_files(files: dict) -> dict:
    """``{"image", "label", "boxes"}`` paths of a sample's files (relative to the export)."""
    named = {}
    for path in sorted(files):
        folder = Path(path).parent.name
        key = {"JPEGImages": "image", "SegmentationClass": "label", "Annotations": "boxes"}.get(folder)
        if key:
            named[key] = path
    return named


def _execute(recipe_doc: dict, pending: list[Job], out: Path, workers: int, store: DatasetStore,
             cancel: CancelToken | None, progress: ProgressFn, total: int, done_before: int) -> Iterable:  # fmt: skip
    """Yield ``(job id, ok, record or error, files)`` as jobs finish."""
    done = done_before
    chunks = [[j.to_json() for j in pending[i : i + CHUNK]] for i in range(0, len(pending), CHUNK)]
    if workers <= 1:
        _CONTEXTS[json.dumps(recipe_doc, sort_keys=True)] = MakeContext(Recipe.from_dict(recipe_doc), store)
        for job in pending:  # one at a time, so that a cancel waits for one sample at most
            if cancel is not None:
                cancel.raise_if_cancelled("the export")
            for item in _run_jobs(recipe_doc, [job.to_json()], str(out)):
                done += 1
                progress(done / total, _progress_message(done, total, job))
                yield item
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        queued = iter(chunks)
        running = {pool.submit(_run_jobs, recipe_doc, chunk, str(out)) for chunk in _take(queued, workers * 2)}
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                for item in future.result():
                    done += 1
                    progress(done / total, f"sample {done}/{total}")
                    yield item
            if cancel is not None and cancel.cancelled:
                for future in running:
                    future.cancel()
                cancel.raise_if_cancelled("the export")
            running |= {pool.submit(_run_jobs, recipe_doc, chunk, str(out)) for chunk in _take(queued, len(finished))}


class _RayRun:
    """The Ray runner's ``_execute`` (same arguments and yields) for one export: Ray is imported only when asked
    for, connected once on the first call with jobs to make (replacement rounds reuse it), shut down by
    :meth:`close` when it was started here."""

    def __init__(self, address: str | None):
        self.address = address
        self.started = False
        self.connected = False

    def __call__(self, recipe_doc, pending, out, workers, *rest):
        from core.export.ray_runner import connect, execute_ray

        if pending and not self.connected:
            self.started, self.connected = connect(workers, self.address), True
        return execute_ray(recipe_doc, pending, out, workers, *rest, address=self.address)

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def _progress_message(done: int, total: int, job: Job | None = None) -> str:
    """``sample 5/200 · step 1 composite``: the count first (the command line's bar reads it)."""
    return f"sample {done}/{total}" + (f" · step {job.step} {job.kind}" if job is not None else "")


def _take(iterator, n: int) -> list:
    out = []
    for _ in range(n):
        try:
            out.append(next(iterator))
        except StopIteration:
            break
    return out


def finish(out: Path, ledger: Ledger, recipe: Recipe, store: DatasetStore) -> None:
    """Write what depends on every job: split lists, COCO files, ``manifest.jsonl``, ``export.json``."""
    records = ledger.done_records()
    splits = list(recipe.split)
    write_splits(out, records, splits)
    if "coco" in recipe.formats:
        write_coco(out, records, splits, store.classes, ledger.coco_entries())
    others = [f for f in recipe.formats if f not in ("voc", "coco")]
    if others:
        from core.export.formats import write_formats

        write_formats(out, records, splits, store.classes, others)
    atomic_write_text(out / "manifest.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    counts = {split: sum(1 for r in records if r["split"] == split) for split in splits}
    summary = {"recipe": recipe.to_json(), "recipe_digest": recipe.digest(), "samples": len(records),
               "splits": counts, "formats": list(recipe.formats), "failures": [list(f) for f in ledger.failures()],
               "review": ledger.review_counts(), "dataset_problems": [p.to_json() for p in store.problems],
               "versions": _versions()}  # fmt: skip
    atomic_write_text(out / "export.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")


def _versions() -> dict:
    import sys
    from importlib.metadata import PackageNotFoundError, version

    import cv2
    import numpy
    import PIL

    try:
        segstudio = version("segstudio")
    except PackageNotFoundError:  # a source checkout that was never installed
        segstudio = "source"
    return {"segstudio": segstudio, "numpy": numpy.__version__, "pillow": PIL.__version__, "opencv": cv2.__version__,
            "python": sys.version.split()[0]}  # fmt: skip
