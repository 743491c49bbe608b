"""The Export tab: a recipe (YAML, saved in the workspace) edited and checked in place, an export run with
progress (rate and time left), cancel and resume, a per-step table of what was made, and the review queue
(generated samples beside their label maps and sources; accept / reject / skip with the keys A / R / S).

Everything the tab does goes through :class:`ExportController` (plain Python, tested without a browser); the
Gradio wiring in :func:`build` only moves values between it and the components.
"""

from __future__ import annotations

import html
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np

from core.errors import Cancelled, InvalidInput, StudioError
from core.io.atomic import atomic_write_text
from core.progress import CancelToken
from studio.errors import shows_errors

if TYPE_CHECKING:  # the export engine is imported on first use, not at start-up
    from core.export.ledger import Ledger
    from core.export.recipe import Recipe
    from core.export.review import ReviewItem
    from core.export.runner import ExportSummary
    from studio.context import StudioContext

RECIPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SAMPLE_MESSAGE = re.compile(r"sample (\d+)/(\d+)")
THUMB_SIDE = 160
GALLERY_LIMIT = 120  # thumbnails shown in the queue grid (the queue itself is not limited)
RESTART_CONFIRM_S = 15.0
MODES = ("run", "resume", "restart")

# Keys A / R / S press the review buttons while the Export tab is shown, unless the focus is in a text field
# or the recipe editor (CodeMirror is contenteditable) or a modifier key is held.
REVIEW_KEYS_JS = """
() => {
  if (window.__segstudioReviewKeys) return;
  window.__segstudioReviewKeys = true;
  const buttons = {a: 'export-accept', r: 'export-reject', s: 'export-skip'};
  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || !event.key) return;
    const target = event.target;
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)
                   || (target.closest && target.closest('.cm-editor')))) return;
    const id = buttons[event.key.toLowerCase()];
    const button = id && document.getElementById(id);
    if (!button || button.offsetParent === null || button.disabled) return;  // not on the Export tab
    event.preventDefault();
    button.click();
  });
}
"""


# ---- progress -----------------------------------------------------------------------------------


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressAdapter:
    """The runner's ``progress(fraction, message)`` turned into ``sink(fraction, text)`` with the rate and the
    time left, measured over the samples made in this run (a resumed run's earlier samples do not count).

    Args:
        sink: receives ``(fraction in [0, 1] or None, text)``; for the tab, ``gr.Progress``.
        detail: returns a short per-step line (``step 1 composite 4/20``), asked at most every ``detail_every`` s.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, sink, detail=None, clock=time.monotonic, detail_every: float = 1.0):
        self.sink = sink
        self.detail = detail
        self.clock = clock
        self.detail_every = detail_every
        self.done: int | None = None
        self.total: int | None = None
        self.rate: float | None = None
        self._phase_at = clock()
        self._start: tuple[float, int] | None = None
        self._detail_text = ""
        self._detail_at = -1e9

    def __call__(self, fraction: float | None, message: str = "") -> None:
        now = self.clock()
        counted = SAMPLE_MESSAGE.match(message or "")
        if not counted:
            self._phase_at = now
            self.sink(fraction, message or "")
            return
        done, total = int(counted[1]), int(counted[2])
        if self._start is None:  # the first sample of this run began when the last phase ended
            self._start = (self._phase_at, done - 1)
        self.done, self.total = done, total
        parts = [f"sample {done}/{total}"]
        if self.detail is not None:
            if now - self._detail_at >= self.detail_every:
                self._detail_at = now
                try:
                    self._detail_text = self.detail() or ""
                except (OSError, StudioError, ValueError):  # a busy ledger: keep the last line
                    pass
            if self._detail_text:
                parts.append(self._detail_text)
        made, elapsed = done - self._start[1], now - self._start[0]
        if made > 0 and elapsed > 0:
            self.rate = made / elapsed
            speed = f"{self.rate:.1f} samples/s" if self.rate >= 1 else f"{1 / self.rate:.1f} s per sample"
            parts += [speed, f"about {_clock_text((total - done) / self.rate)} left"]
        self.sink(fraction if fraction is not None else done / max(total, 1), " · ".join(parts))


# ---- messages -----------------------------------------------------------------------------------


ADVICE = (  # the engine's command-line advice -> the tab's buttons (first match wins per place)
    (r"\b([Pp])ass --force to start again", r"\1ress Start again"),
    (r"\bor --force to start again", "or press Start again"),
    (r"\b([Pp])ass --resume", r"\1ress Resume"),
    (r"\b([Pp])ass --force", r"\1ress Start again"),
    (r"\bor --force", "or press Start again"),
    (r"\brun the export with --resume", "press Finish export"),
    (r"--retry-failed", "Retry failed"),
    (r"--resume", "Resume"),
    (r"--force", "Start again"),
)


def tab_wording(message: str) -> str:
    """The engine's command-line advice (``pass --resume``) said with the tab's buttons."""
    for pattern, words in ADVICE:
        message = re.sub(pattern, words, message)
    return message


def notice(text: str, kind: str = "info") -> str:
    """An inline message that stays until replaced (``kind``: info, warning, error); ``text`` is HTML."""
    if not text:
        return ""
    icon = {"info": "ℹ", "warning": "⚠", "error": "✖"}[kind]
    return f"<div class='notice notice-{kind}'>{icon} {text}</div>"


def _md(text: str) -> str:
    """Escape text for HTML, keeping ``**bold**`` and backticks readable."""
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


@dataclass
class RunOutcome:
    """What a run from the tab ended with.

    Attributes:
        message: a short HTML paragraph (summary line, failures, what waits for review, or the cancel note).
        summary: the runner's summary, ``None`` when cancelled.
        cancelled: the run stopped at the Cancel button.
        waiting: samples waiting for review in the export now.
    """

    message: str
    summary: ExportSummary | None = None
    cancelled: bool = False
    waiting: int = 0


@dataclass
class ReviewView:
    """One queued sample, ready to show: ``image``, ``labels`` (coloured) and ``source`` are
    ``H x W x 3 uint8`` (``source`` ``None`` when the sample has no real source)."""

    item: ReviewItem
    image: np.ndarray
    labels: np.ndarray
    source: np.ndarray | None
    info: str


# ---- controller ---------------------------------------------------------------------------------


class ExportController:
    """The Export tab's logic, independent of the layout.

    Recipes live in ``<dataset workspace>/recipes/<name>.yaml``; exports go by default to
    ``<outputs>/exports/<recipe name>``; nothing is written into the dataset folder.
    """

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[CancelToken, float]] = {}

    # ---- recipes ------------------------------------------------------------------------------

    @property
    def recipes_dir(self) -> Path:
        return self.ctx.config.workspace.cache_root / "recipes"

    @property
    def exports_dir(self) -> Path:
        return self.ctx.config.workspace.output_root / "exports"

    def default_out(self, name: str | None) -> str:
        return str(self.exports_dir / (name if name and RECIPE_NAME.match(name) else "default"))

    def default_recipe_text(self) -> str:
        """A recipe for the open dataset: its real samples, 20 composites, an 80/20 split, VOC and COCO."""
        root = self.ctx.config.workspace.dataset_root
        return (
            f"# Export recipe for {root.name}: what to make (checked when you press Check, Save or Run).\n"
            f"source: {json.dumps(str(root))}\n"
            "seed: 0\n"
            "real: include              # include | exclude the dataset's labelled samples\n"
            "generate:                  # steps, run in order\n"
            "  - backend: composite     # composite | recombine | controlnet | t2i-adapter | gan (model: run folder)\n"
            "    count: 20              # or: balance: {n_balance: 50}\n"
            "    options: {blending: gaussian}\n"
            "split: {train: 0.8, val: 0.2}\n"
            "quality: {min_score: 0.0}  # boundary score gate (0: score only); clip: true adds CLIP\n"
            "review: false              # true: generated samples wait for accept / reject below\n"
            "formats: [voc, coco]       # voc | coco | cityscapes | yolo-seg | mmseg | hf\n"
        )

    def saved_recipes(self) -> list[str]:
        """Names of the recipes saved in the workspace, sorted."""
        if not self.recipes_dir.is_dir():
            return []
        return sorted(p.stem for p in self.recipes_dir.glob("*.yaml") if RECIPE_NAME.match(p.stem))

    def _recipe_path(self, name: str) -> Path:
        name = (name or "").strip()
        if not RECIPE_NAME.match(name):
            raise InvalidInput(f"recipe name {name!r}: letters, digits, '.', '_' or '-' (up to 64), starting with a "
                               "letter or digit")  # fmt: skip
        return self.recipes_dir / f"{name}.yaml"

    def parse(self, text: str) -> Recipe:
        """Validate a recipe's YAML text.

        Raises:
            InvalidInput: YAML that does not parse (with the line and column), or a recipe error naming the key
                and what it accepts.
        """
        import yaml

        from core.export.recipe import Recipe

        try:
            doc = yaml.safe_load(text or "")
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise InvalidInput(f"recipe: the YAML does not parse{where}: {problem}") from None
        return Recipe.from_dict(doc, base=self.recipes_dir)

    def save_recipe(self, name: str, text: str) -> Path:
        """Check the recipe and save its text (comments kept) as ``recipes/<name>.yaml``; returns the path."""
        path = self._recipe_path(name)
        self.parse(text)
        atomic_write_text(path, text if text.endswith("\n") else text + "\n")
        return path

    def load_recipe(self, name: str) -> str:
        """The text of a saved recipe."""
        path = self._recipe_path(name)
        if not path.is_file():
            known = ", ".join(self.saved_recipes()) or "none yet"
            raise InvalidInput(f"no saved recipe {name!r} in {self.recipes_dir}; saved: {known}")
        return path.read_text(encoding="utf-8")

    def check(self, text: str, out: str | None = None) -> str:
        """Validate, plan and preflight (models, classes, disk space) a recipe; returns what it would make."""
        from core.export.plan import plan_jobs
        from core.export.preflight import preflight

        recipe = self.parse(text)
        store = self._store(recipe.source)
        jobs = plan_jobs(recipe, store)
        space = preflight(recipe, store, jobs, self.resolve_out(out, "default"))
        real = sum(1 for j in jobs if j.kind == "real")
        steps = [
            f"step {i + 1} {s.backend}: {sum(1 for j in jobs if j.step == i + 1)}"
            for i, s in enumerate(recipe.generate)
        ]
        split = ", ".join(f"{k} {v:g}" for k, v in recipe.split.items())
        review = "generated samples wait for your review" if recipe.review else "no review"
        return (f"Recipe OK: {len(jobs)} samples ({real} real{'; ' if steps else ''}{'; '.join(steps)}), split {split}, "
                f"formats {', '.join(recipe.formats)}, {review}; about {space['bytes_needed'] / 1e6:.1f} MB.")  # fmt: skip

    def _store(self, source: str):
        from core.store import open_store

        if Path(source).resolve() == Path(self.ctx.config.workspace.dataset_root).resolve():
            return self.ctx.store
        return open_store(source)

    # ---- runs ---------------------------------------------------------------------------------

    def resolve_out(self, out: str | None, name: str | None = None) -> Path:
        text = (out or "").strip()
        return Path(text or self.default_out(name)).expanduser().resolve()

    def running(self, out: str | Path) -> bool:
        with self._lock:
            return str(self.resolve_out(str(out))) in self._runs

    def cancel(self, out: str | None) -> str:
        """Ask the export running into ``out`` to stop after the sample it is making."""
        key = str(self.resolve_out(out))
        with self._lock:
            run = self._runs.get(key)
        if run is None:
            return f"No export is running into {key}."
        run[0].cancel()
        return "Cancelling after the current sample…"

    def run(self, text: str, out: str | None, *, workers: int = 1, mode: str = "run", retry_failed: bool = False,
            progress=None, runner: str = "local", address: str | None = None) -> RunOutcome:  # fmt: skip
        """Run the recipe into ``out`` (``mode``: run | resume | restart); one run per folder at a time.

        ``runner``: ``local`` (this machine's processes) or ``ray`` (the Ray cluster at ``address``, or a local Ray).

        ``progress(fraction, text)`` receives the runner's progress with rate and time left.

        Raises:
            InvalidInput: a bad recipe, a folder that holds an export (said with the tab's buttons), or an export
                into the same folder already running.
        """
        from core.export.runner import run_export

        if mode not in MODES:
            raise InvalidInput(f"mode {mode!r}: one of {', '.join(MODES)}")
        recipe = self.parse(text)
        target = self.resolve_out(out)
        key = str(target)
        token = CancelToken()
        with self._lock:
            if key in self._runs:
                started = time.strftime("%H:%M:%S", time.localtime(self._runs[key][1]))
                raise InvalidInput(f"an export into {key} is running already (started {started}, from this or another "
                                   "page); wait for it to finish or press Cancel, or choose another output folder")  # fmt: skip
            self._runs[key] = (token, time.time())
        adapter = ProgressAdapter(progress or (lambda f, m="": None), detail=lambda: self.step_line(target))
        own = Path(recipe.source).resolve() == Path(self.ctx.config.workspace.dataset_root).resolve()
        try:
            summary = run_export(recipe, target, workers=max(1, int(workers or 1)), resume=mode == "resume",
                                 force=mode == "restart", retry_failed=bool(retry_failed), progress=adapter, cancel=token,
                                 store=self.ctx.store if own else None, runner=runner,
                                 address=(address or "").strip() or None)  # fmt: skip
        except Cancelled:
            done, total = self._made(target)
            return RunOutcome(f"Cancelled after {done} of {total} samples; <b>Resume</b> finishes it (the samples "
                              "made are kept).", None, True, self._waiting(target))  # fmt: skip
        except InvalidInput as exc:
            raise InvalidInput(tab_wording(str(exc))) from None
        finally:
            with self._lock:
                self._runs.pop(key, None)
        return RunOutcome(self._summary_html(summary), summary, False, summary.waiting)

    def _summary_html(self, summary: ExportSummary) -> str:
        parts = [_md(summary.line() + ".")]
        if summary.failures:
            shown = "".join(
                f"<li><code>{html.escape(o)}</code>: {html.escape(e)}</li>" for o, e in summary.failures[:20]
            )
            more = f"<li>… and {len(summary.failures) - 20} more</li>" if len(summary.failures) > 20 else ""
            parts.append(
                f"Failed (tick <b>Retry failed</b> and press <b>Resume</b> to make them again):<ul>{shown}{more}</ul>"
            )
        if summary.waiting:
            parts.append(f"<b>{summary.waiting}</b> generated samples wait for review below; <b>Finish export</b> "
                         "writes the final files with the accepted ones.")  # fmt: skip
        return "<br>".join(parts)

    def has_export(self, out: str | Path | None) -> bool:
        from core.export.ledger import LEDGER_FILE

        return (self.resolve_out(str(out or "")) / LEDGER_FILE).is_file()

    def _ledger(self, out: Path) -> Ledger | None:
        from core.export.ledger import LEDGER_FILE, Ledger

        return Ledger(out) if (out / LEDGER_FILE).is_file() else None

    def _made(self, out: Path) -> tuple[int, int]:
        ledger = self._ledger(out)
        if ledger is None:
            return 0, 0
        try:
            counts = ledger.counts()
        finally:
            ledger.close()
        return counts["done"] + counts["failed"] + counts["rejected"], sum(counts.values())

    def _waiting(self, out: Path) -> int:
        ledger = self._ledger(out)
        if ledger is None:
            return 0
        try:
            return ledger.review_counts()["pending"]
        finally:
            ledger.close()

    def step_rows(self, out: str | Path) -> list[list]:
        """Per step: ``[step, made by, jobs, in the export, waiting for review, rejected, failed, not made yet]``."""
        target = self.resolve_out(str(out))
        ledger = self._ledger(target)
        if ledger is None:
            return []
        try:
            jobs, states = ledger.jobs(), ledger.states()
            waiting = {row["job"].id for row in ledger.review_rows("pending")}
        finally:
            ledger.close()
        rows: dict[int, list] = {}
        for job in jobs:
            row = rows.setdefault(job.step, [job.step, "real" if job.step == 0 else job.kind, 0, 0, 0, 0, 0, 0])
            state = states.get(job.id, ("pending", None))[0]
            row[2] += 1
            column = {"done": 4 if job.id in waiting else 3, "rejected": 5, "failed": 6}.get(state, 7)
            row[column] += 1
        return [rows[step] for step in sorted(rows)]

    def step_line(self, out: Path) -> str:
        """The step being made now, ``step 1 composite 4/20`` (the first step with samples not made yet)."""
        for row in self.step_rows(out):
            step, kind, jobs, pending = row[0], row[1], row[2], row[7]
            if pending:
                return f"{'real' if step == 0 else f'step {step} {kind}'} {jobs - pending}/{jobs}"
        return ""

    def out_status(self, text: str, out: str | None) -> str:
        """A line about the output folder: empty, this recipe's export (how far), or another recipe's."""
        target = self.resolve_out(out)
        if self.running(target):
            done, total = self._made(target)
            return f"An export into `{target}` is running now ({done} of {total} samples made)."
        ledger = self._ledger(target)
        if ledger is None:
            return f"`{target}` holds no export yet: **Run** starts one."
        try:
            digest, counts, review = ledger.meta("recipe_digest"), ledger.counts(), ledger.review_counts()
        finally:
            ledger.close()
        try:
            same = self.parse(text).digest() == digest
        except StudioError:
            same = None
        made, total = counts["done"] + counts["failed"] + counts["rejected"], sum(counts.values())
        facts = f"{made} of {total} samples made" + (f", {counts['failed']} failed" if counts["failed"] else "") + (
            f", {review['pending']} wait for review" if review["pending"] else "")  # fmt: skip
        if same is False:
            return (f"`{target}` holds the export of another recipe ({facts}): choose another folder, or **Start again** "
                    "to replace it.")  # fmt: skip
        if made < total or review["pending"]:
            return (
                f"`{target}` holds this recipe's export ({facts}): **Resume** finishes it; **Start again** replaces it."
            )
        return f"`{target}` holds this recipe's finished export ({facts}). **Start again** replaces it."

    def restart_warning(self, out: str | None) -> str:
        """What Start again would delete (empty when the folder holds no export)."""
        target = self.resolve_out(out)
        done, total = self._made(target)
        if not total:
            return ""
        return (f"Start again deletes the export in {target} ({done} samples made, review decisions included). "
                "Press <b>Start again</b> once more to confirm.")  # fmt: skip

    # ---- review -------------------------------------------------------------------------------

    def queue(self, out: str | None, step: int | None = None, low: float | None = None,
              high: float | None = None) -> list[ReviewItem]:  # fmt: skip
        """Samples waiting for review, filtered by step (``None`` or 0: every step) and score range."""
        low = None if low is None or low <= 0 else float(low)
        high = None if high is None or high >= 1 else float(high)
        from core.export.review import review_queue

        return review_queue(self.resolve_out(out), step=step or None, min_score=low, max_score=high)

    def review_steps(self, out: str | None) -> list[tuple[str, int]]:
        """Choices for the step filter: ``("all steps", 0)`` and each generation step of the export."""
        return [("all steps", 0)] + [
            (f"step {row[0]} · {row[1]}", row[0]) for row in self.step_rows(out or "") if row[0]
        ]

    def _classes(self, out: Path):
        from core.types import ClassSet

        path = out / "classes.json"
        return ClassSet.load(path) if path.is_file() else self.ctx.classes

    def view(self, out: str | None, item: ReviewItem) -> ReviewView:
        """The sample's image, its label map in the dataset's colours and its source sample's image."""
        from core.io.images import load_image, load_label_map
        from core.viz import colorize
        from studio.tabs.dataset import sample_legend

        target = self.resolve_out(out)
        classes = self._classes(target)
        image = load_image(item.image)
        label_map = load_label_map(item.label, classes)
        labels = colorize(label_map, classes)
        source = None
        if item.source and item.source in self.ctx.store.ids:
            source = self.ctx.store.image(item.source)
        score = "–" if item.score is None else f"{item.score:.3f}"
        clip = "–" if item.clip is None else f"{item.clip:.3f}"
        seg = "" if item.segmenter is None else f" · segmenter mIoU <b>{item.segmenter:.3f}</b>"
        where = f"source <code>{html.escape(item.source)}</code>" if item.source else "no source sample"
        info = (f"<b>{html.escape(item.output_id)}</b> · step {item.step} ({html.escape(item.kind)}) · boundary score "
                f"<b>{score}</b> · CLIP {clip}{seg} · {where}{sample_legend(classes, label_map, [])}")  # fmt: skip
        return ReviewView(item, image, labels, source, info)

    @staticmethod
    def thumbnail(path: Path) -> np.ndarray:
        from PIL import Image

        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMB_SIDE, THUMB_SIDE))
            return np.asarray(img)

    def thumbnails(self, items: list[ReviewItem]) -> list[tuple[np.ndarray, str]]:
        out = []
        for item in items[:GALLERY_LIMIT]:
            score = "–" if item.score is None else f"{item.score:.2f}"
            try:
                out.append(
                    (self.thumbnail(item.image), f"#{item.output_id.rsplit('_', 1)[-1].lstrip('0') or '0'} · {score}")
                )
            except OSError:
                out.append((np.zeros((8, 8, 3), np.uint8), f"{item.output_id} · file missing"))
        return out

    def decide(self, out: str | None, job_id: str, decision: str) -> str:
        """Accept, reject or skip a waiting sample (recorded in the export's ledger); returns what was done."""
        if not job_id:
            raise InvalidInput("no sample is shown: the review queue is empty (or not loaded)")
        from core.export.review import decide

        return decide(self.resolve_out(out), job_id, decision)


def next_current(old_ids: list[str], current: str | None, new_ids: list[str], *, advance: bool) -> str | None:
    """The sample to show after the queue changed: the current one if it still waits (and ``advance`` is off),
    else the first one after it in the old order that still waits, else the first."""
    if not new_ids:
        return None
    if current in new_ids and not advance:
        return current
    if current in old_ids:
        position = old_ids.index(current)
        for job_id in old_ids[position + 1 :] + old_ids[:position]:
            if job_id in new_ids and job_id != current:
                return job_id
    return new_ids[0] if new_ids[0] != current or len(new_ids) == 1 else new_ids[1]


# ---- layout -------------------------------------------------------------------------------------


STEP_HEADERS = ("step", "made by", "jobs", "in the export", "to review", "rejected", "failed", "to do")


def steps_html(rows: list[list]) -> str:
    """The per-step table (see :meth:`ExportController.step_rows`) as HTML; empty without an export."""
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in STEP_HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table class='models-table export-steps'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build(ctx: StudioContext, demo: gr.Blocks, live: gr.State) -> ExportController:
    """Lay out the Export tab and wire its events (``live`` changes when the dataset does)."""
    controller = ExportController(ctx)
    cpus = max(1, os.cpu_count() or 1)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=420):
            recipe = gr.Code(controller.default_recipe_text(), language="yaml", lines=14, max_lines=30,
                             label="Recipe (YAML)", elem_id="export-recipe")  # fmt: skip
            with gr.Row():
                name = gr.Textbox(value="default", label="Recipe name (saved in the workspace)", elem_id="export-name")
                saved = gr.Dropdown(choices=controller.saved_recipes(), value=None, label="Saved recipes",
                                    elem_id="export-saved")  # fmt: skip
            with gr.Row():
                check = gr.Button("Check", size="md", elem_id="export-check")
                save = gr.Button("Save", size="md", elem_id="export-save")
                load = gr.Button("Load saved", size="md", elem_id="export-load")
            recipe_note = gr.HTML(elem_id="export-recipe-note")
        with gr.Column(scale=4, min_width=360):
            out = gr.Textbox(value=controller.default_out("default"), label="Output folder", elem_id="export-out")
            with gr.Row():
                workers = gr.Slider(
                    1, cpus, value=1, step=1, label="Worker processes", elem_id="export-workers", scale=3
                )
                retry = gr.Checkbox(value=False, label="Retry failed", elem_id="export-retry", scale=1)
            with gr.Row():
                runner = gr.Radio([("this machine", "local"), ("Ray", "ray")], value="local", label="Runner",
                                  elem_id="export-runner", scale=1)  # fmt: skip
                address = gr.Textbox(label="Ray address", placeholder="empty: a local Ray (or RAY_ADDRESS)",
                                     elem_id="export-ray-address", scale=2)  # fmt: skip
            with gr.Row():
                run = gr.Button("Run", variant="primary", size="md", elem_id="export-run", min_width=80)
                resume = gr.Button("Resume", size="md", elem_id="export-resume", min_width=80)
                restart = gr.Button("Start again", size="md", elem_id="export-restart", min_width=110)
                cancel = gr.Button("Cancel", variant="stop", size="md", elem_id="export-cancel", min_width=80)
            out_status = gr.Markdown(elem_id="export-out-status")
            run_note = gr.HTML(elem_id="export-run-note", min_height=64)
            steps_table = gr.HTML(elem_id="export-steps")
    with gr.Group(elem_id="export-review"):
        gr.Markdown("### Review queue\nGenerated samples of a recipe with `review: true` wait here. Keys: **A** accept · "
                    "**R** reject (the next run makes a replacement with the next seed) · **S** skip.")  # fmt: skip
        with gr.Row():
            step_filter = gr.Dropdown(choices=[("all steps", 0)], value=0, label="Step", elem_id="export-step")
            low = gr.Slider(0, 1, value=0, step=0.01, label="Boundary score from", elem_id="export-low")
            high = gr.Slider(0, 1, value=1, step=0.01, label="to", elem_id="export-high")
        with gr.Row(equal_height=True):
            queue_count = gr.Markdown(elem_id="export-queue-count")
            refresh = gr.Button("Refresh queue", size="sm", elem_id="export-refresh", scale=0, min_width=140)
        with gr.Row(equal_height=True):
            gen_image = gr.Image(label="Generated image", type="numpy", interactive=False, height=300,
                                 elem_id="export-gen-image", buttons=[])  # fmt: skip
            gen_labels = gr.Image(label="Its label map", type="numpy", interactive=False, height=300,
                                  elem_id="export-gen-labels", buttons=[])  # fmt: skip
            source_image = gr.Image(label="Source sample", type="numpy", interactive=False, height=300,
                                    elem_id="export-source", buttons=[])  # fmt: skip
        item_info = gr.HTML(elem_id="export-item-info")
        with gr.Row():
            accept = gr.Button("Accept (A)", variant="primary", elem_id="export-accept")
            reject = gr.Button("Reject (R)", variant="stop", elem_id="export-reject")
            skip = gr.Button("Skip (S)", elem_id="export-skip")
            finish = gr.Button("Finish export", elem_id="export-finish")
        review_note = gr.HTML(elem_id="export-review-note")
        thumbs = gr.Gallery(label="Waiting (click one to show it)", columns=12, height=160, allow_preview=False,
                            object_fit="contain", elem_id="export-queue", buttons=[], fit_columns=False)  # fmt: skip
    queue_ids = gr.State([])
    current = gr.State(None)
    restart_armed = gr.State(0.0)
    previous_name = gr.State("default")  # the output folder follows the recipe name while it is the default one

    # ---- handlers ------------------------------------------------------------------------------

    def steps_frame(out_path: str) -> str:
        return steps_html(controller.step_rows(out_path))

    @shows_errors
    def on_check(text: str, out_path: str):
        try:
            return notice(_md(controller.check(text, out_path)), "info")
        except StudioError as exc:
            return notice(_md(str(exc)), "error")

    @shows_errors
    def on_save(recipe_name: str, text: str):
        try:
            path = controller.save_recipe(recipe_name, text)
        except StudioError as exc:
            return notice(_md(f"Not saved: {exc}"), "error"), gr.skip()
        return (notice(_md(f"Saved as `{path}`."), "info"),
                gr.Dropdown(choices=controller.saved_recipes(), value=path.stem))  # fmt: skip

    @shows_errors
    def on_load(chosen: str | None, text: str, out_path: str, recipe_name: str):
        if not chosen:
            return notice("Pick a saved recipe first.", "warning"), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            loaded = controller.load_recipe(chosen)
        except StudioError as exc:
            return notice(_md(str(exc)), "error"), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        keep_out = out_path.strip() and out_path.strip() != controller.default_out(recipe_name)
        return (notice(_md(f"Loaded `{chosen}`."), "info"), loaded, chosen,
                gr.skip() if keep_out else controller.default_out(chosen), chosen)  # fmt: skip

    def on_name(recipe_name: str, previous_out: str, previous_name: str):
        if previous_out.strip() in ("", controller.default_out(previous_name)):
            return controller.default_out(recipe_name), recipe_name
        return gr.skip(), recipe_name

    @shows_errors
    def on_status(text: str, out_path: str):
        return controller.out_status(text, out_path), steps_frame(out_path)

    def run_with(mode: str):
        @shows_errors
        def handler(text, out_path, n_workers, retry_failed, runner_kind, ray_address, progress=gr.Progress()):
            def sink(fraction, message):
                progress(fraction, desc=message)

            target = controller.resolve_out(out_path)
            yield "", f"Running into `{target}`… (**Cancel** stops it after the current sample)", gr.skip(), gr.skip()
            try:
                outcome = controller.run(text, out_path, workers=int(n_workers), mode=mode, retry_failed=retry_failed,
                                         progress=sink, runner=runner_kind or "local", address=ray_address)  # fmt: skip
            except StudioError as exc:
                yield (notice(_md(str(exc)), "error"), controller.out_status(text, out_path), steps_frame(out_path),
                       0.0)  # fmt: skip
                return
            kind = "warning" if outcome.cancelled or (outcome.summary and outcome.summary.failures) else "info"
            yield notice(outcome.message, kind), controller.out_status(text, out_path), steps_frame(out_path), 0.0

        return handler

    run_restart = run_with("restart")

    @shows_errors
    def on_restart(text, out_path, n_workers, retry_failed, runner_kind, ray_address, armed: float,
                   progress=gr.Progress()):  # fmt: skip
        warning = controller.restart_warning(out_path)
        if warning and time.time() - (armed or 0) > RESTART_CONFIRM_S:
            yield notice(warning, "warning"), gr.skip(), gr.skip(), time.time()
            return
        yield from run_restart(text, out_path, n_workers, retry_failed, runner_kind, ray_address, progress)

    def on_cancel(out_path: str):
        return notice(html.escape(controller.cancel(out_path)), "warning")

    def show(out_path, ids: list[str], shown: str | None, step, lo, hi, advance: bool = False, note: str = ""):
        if not controller.has_export(out_path):
            return ([], [], None, None, None, None, "", "No export in the output folder yet.", "", gr.skip())
        try:
            items = controller.queue(out_path, int(step or 0), lo, hi)
        except StudioError as exc:
            empty = (None, None, None, "")
            return ([], [], None, *empty, "", notice(_md(str(exc)), "info"), gr.skip())
        new_ids = [i.job_id for i in items]
        chosen = next_current(ids or [], shown, new_ids, advance=advance)
        choices = controller.review_steps(out_path)
        step_update = gr.Dropdown(choices=choices, value=step if step in [c[1] for c in choices] else 0)
        total = len(controller.queue(out_path)) if (step or lo or (hi is not None and hi < 1)) else len(items)
        count = (f"**{len(items)}** waiting for review" + (f" (of {total}, filtered)" if total != len(items) else "")
                 + ("" if items else " · nothing to review here"))  # fmt: skip
        if chosen is None:
            return ([], [], None, None, None, None, "", count, notice(note, "info"), step_update)
        view = controller.view(out_path, next(i for i in items if i.job_id == chosen))
        position = new_ids.index(chosen) + 1
        info = f"{position} of {len(items)} · {view.info}"
        shown_index = position - 1 if position <= GALLERY_LIMIT else None
        gallery = gr.Gallery(value=controller.thumbnails(items), selected_index=shown_index)
        return (gallery, new_ids, chosen, view.image, view.labels, view.source, info, count,
                notice(note, "info") if note else "", step_update)  # fmt: skip

    review_outputs = [thumbs, queue_ids, current, gen_image, gen_labels, source_image, item_info, queue_count,
                      review_note, step_filter]  # fmt: skip

    @shows_errors
    def on_show(out_path, ids, shown, step, lo, hi):
        return show(out_path, ids, shown, step, lo, hi)

    def decide_with(decision: str):
        @shows_errors
        def handler(out_path, ids, shown, step, lo, hi):
            try:
                message = controller.decide(out_path, shown, decision)
            except StudioError as exc:
                text = str(exc)
                if "not waiting for review" in text:
                    text += " (decided on another page?); the queue was refreshed"
                return show(out_path, ids, shown, step, lo, hi, advance=False, note=_md(text))
            return show(out_path, ids, shown, step, lo, hi, advance=True, note=_md(message))

        return handler

    @shows_errors
    def on_pick(evt: gr.SelectData, out_path, ids, step, lo, hi):
        if evt.index is None or not 0 <= int(evt.index) < len(ids or []):
            raise gr.Error("That sample is no longer listed; press Refresh queue.")
        return show(out_path, ids, ids[int(evt.index)], step, lo, hi)

    @shows_errors
    def on_page_load(text: str, out_path: str):
        return (gr.Dropdown(choices=controller.saved_recipes()), controller.out_status(text, out_path),
                steps_frame(out_path))  # fmt: skip

    # ---- wiring --------------------------------------------------------------------------------

    run_inputs = [recipe, out, workers, retry, runner, address]
    run_outputs = [run_note, out_status, steps_table, restart_armed]
    review_inputs = [out, queue_ids, current, step_filter, low, high]
    quiet = {"show_progress": "hidden", "api_visibility": "private"}
    demo.load(on_page_load, inputs=[recipe, out], outputs=[saved, out_status, steps_table], **quiet)
    demo.load(on_show, inputs=review_inputs, outputs=review_outputs, **quiet)
    demo.load(None, js=REVIEW_KEYS_JS)
    check.click(on_check, inputs=[recipe, out], outputs=recipe_note)
    save.click(on_save, inputs=[name, recipe], outputs=[recipe_note, saved])
    load.click(
        on_load, inputs=[saved, recipe, out, name], outputs=[recipe_note, recipe, name, out, previous_name]
    ).then(on_status, inputs=[recipe, out], outputs=[out_status, steps_table])
    name.submit(on_name, inputs=[name, out, previous_name], outputs=[out, previous_name])
    name.blur(on_name, inputs=[name, out, previous_name], outputs=[out, previous_name])
    out.submit(on_status, inputs=[recipe, out], outputs=[out_status, steps_table]).then(
        on_show, inputs=review_inputs, outputs=review_outputs
    )
    out.blur(on_status, inputs=[recipe, out], outputs=[out_status, steps_table])
    recipe.blur(on_status, inputs=[recipe, out], outputs=[out_status, steps_table])
    common = {"concurrency_id": "export", "concurrency_limit": 4, "show_progress_on": [run_note]}
    for button, handler in ((run, run_with("run")), (resume, run_with("resume")), (finish, run_with("resume"))):
        button.click(handler, inputs=run_inputs, outputs=run_outputs, **common).then(
            on_show, inputs=review_inputs, outputs=review_outputs
        )
    restart.click(on_restart, inputs=[*run_inputs, restart_armed], outputs=run_outputs, **common).then(
        on_show, inputs=review_inputs, outputs=review_outputs
    )
    cancel.click(on_cancel, inputs=out, outputs=run_note, queue=False)
    refresh.click(on_show, inputs=review_inputs, outputs=review_outputs)
    for control in (step_filter, low, high):
        control.input(on_show, inputs=review_inputs, outputs=review_outputs)
    for button, decision in ((accept, "accept"), (reject, "reject"), (skip, "skip")):
        button.click(decide_with(decision), inputs=review_inputs, outputs=review_outputs, show_progress="hidden")
    thumbs.select(on_pick, inputs=[out, queue_ids, step_filter, low, high], outputs=review_outputs)
    live.change(on_status, inputs=[recipe, out], outputs=[out_status, steps_table], show_progress="hidden",
                api_visibility="private")  # fmt: skip
    return controller
