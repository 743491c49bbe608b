"""The Annotate tab: draw boxes with classes, refine them into masks, compare methods, touch up,
undo / redo, save a palette label map and the boxes through the dataset store.

Each browser is an *editor* (an id kept in its local storage). Its editing sessions live in server memory
while in use and as drafts in the workspace after every change, so a refresh, a closed tab or a restarted
server gives the same unsaved state back. Saves name the revision they started from; a sample saved
elsewhere in the meantime gets the choice to reload theirs, overwrite (theirs kept in history) or save a copy.

The tab is also a work queue: each sample's status (unlabelled, draft, done, needs review; see
:mod:`core.store.status`) and the progress are shown, *Save and next* opens the next unlabelled sample, and
keyboard shortcuts (:data:`SHORTCUTS`, wired in the page by :data:`SHORTCUTS_JS`) save and move on.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import html
import json
import threading
import time
import uuid
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np

from core.errors import InvalidInput, StudioError
from core.refine.compare import compare_methods
from core.refine.densecrf import DenseCRFParams
from core.refine.grabcut import GrabCutParams
from core.refine.methods import METHODS
from core.refine.pool import PooledRefiner
from core.refine.refiner import RefineSettings
from core.refine.session import REST_CHOICES, AnnotationSession
from core.store import STATUS_LABELS, SaveConflict
from core.store.status import DONE, NEEDS_REVIEW, UNLABELLED
from core.types import Box, ClassSet
from core.viz import overlay
from studio.components import BoxAnnotator, forget_previews
from studio.errors import shows_errors
from studio.session_store import SessionStore
from studio.tabs.dataset import sample_legend

if TYPE_CHECKING:
    from studio.context import StudioContext

TOUCH_UPS = {"Fill holes": "fill_holes", "Remove small blobs": "remove_small", "Open": "open", "Close": "close"}
ERASE = "erase (background)"
IGNORE = "ignore (255)"
OBJECT_FIX = "✚ object: re-cut the box"
NOT_OBJECT_FIX = "✖ not object: re-cut the box"
CORRECTIONS = (OBJECT_FIX, NOT_OBJECT_FIX)  # brush choices that re-run the box's method instead of painting
MAX_STROKE_POINTS = 4000  # a painted correction is sampled to at most this many brush positions
CLASSIC_METHODS = ["auto", "grabcut-fast", "grabcut", "grabcut+crf", "densecrf"]
DISPLAY_MAX_SIDE = 1280  # the annotator shows larger images downscaled (boxes are converted both ways)
IDLE_S = 40.0  # editing sessions unused this long leave memory (their drafts stay in the workspace)
SWEEP_S = 10.0  # how often idle sessions are looked for
REST_LABELS = {"unknown": "unknown (255, ignored in training)", "background": "background (0)"}

# ---- keyboard shortcuts -----------------------------------------------------------------------
# key -> the element id a press clicks. Ctrl (or Cmd) shortcuts work everywhere in the tab; single keys are off
# while typing in a text field or a dropdown. C, D, E, Space and Delete belong to the box annotator itself.
CORRECTION_TOGGLE_ID = "annotate-correction-mode"  # the correction-strokes control, when the tab has one
SHORTCUTS = {
    "ctrl+s": "save",
    "ctrl+enter": "save-next",
    "n": "annotate-next-sample",
    "p": "annotate-prev-sample",
    "b": "annotate-next-box",
    "m": "annotate-cycle-method",
    "x": CORRECTION_TOGGLE_ID,  # does nothing until an element with this id exists (a checkbox or a button)
}
SHORTCUT_HELP = {
    "ctrl+s": "save", "ctrl+enter": "save and next unlabelled", "n": "next sample", "p": "previous sample",
    "b": "next box", "m": "next method", "x": "correction brush (object ⇄ not object)",
}  # fmt: skip
# Installed once per page (studio/app.py adds it to the page's script). Acts only while the Annotate tab is shown.
SHORTCUTS_JS = """
(() => {
  const keys = __KEYS__;
  const typing = (el) => !!el && (el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName));
  const shown = (el) => !!el && (el.checkVisibility ? el.checkVisibility() : el.offsetParent !== null);
  const press = (id) => {
    const el = document.getElementById(id);
    if (!el) return false;
    const target = el.matches('button, input') ? el : el.querySelector('input[type=checkbox], button');
    if (!target || target.disabled) return false;
    target.click();
    return true;
  };
  window.addEventListener('keydown', (event) => {
    if (event.repeat || event.altKey || !shown(document.getElementById('save'))) return;
    const mod = event.ctrlKey || event.metaKey;
    if (!mod && typing(event.target)) return;  // typing in a text box or a dropdown
    const name = (mod ? 'ctrl+' : '') + (event.key || '').toLowerCase();
    const id = keys[name];
    if (id && press(id)) {
      event.preventDefault();
      event.stopPropagation();
    }
  }, true);
})();
""".replace("__KEYS__", json.dumps(SHORTCUTS))


def _key_name(key: str) -> str:
    """``"ctrl+enter"`` -> ``"Ctrl+Enter"``, ``"n"`` -> ``"N"``."""
    return "+".join(part.capitalize() if len(part) > 1 else part.upper() for part in key.split("+"))


def shortcut_help(correction: bool = False) -> str:
    """The help line listing the shortcuts (the correction-mode key only when the tab has that control)."""
    shown = {k: v for k, v in SHORTCUT_HELP.items() if correction or k != "x"}
    keys = " · ".join(f"<kbd>{_key_name(k)}</kbd> {html.escape(v)}" for k, v in shown.items())
    return f"<div class='shortcuts'>Keys: {keys} · single keys are off while you type in a field</div>"


_RELEASED_AT = [0.0]
RELEASE_EVERY_S = 10.0  # a full collection costs milliseconds: not on every closed tab


def _release_memory() -> None:
    """Give freed memory back to the operating system (glibc keeps it otherwise), at most every few seconds."""
    now = time.monotonic()
    if now - _RELEASED_AT[0] < RELEASE_EVERY_S:
        return
    _RELEASED_AT[0] = now
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class AnnotateController:
    """The tab's logic, independent of the layout (so it can be tested without a browser).

    Sessions are keyed by *editor* (a browser's id, or the Gradio session for API clients) and sample id.
    """

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx
        self.refiner = PooledRefiner(ctx.registry)  # cuts in worker processes: every core serves people
        self.sessions = SessionStore(per_session=8, keep=lambda s: s.dirty)
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.annotator: BoxAnnotator | None = None
        self._sweeper: threading.Thread | None = None

    def start_sweeping(self) -> None:
        """Free idle sessions in the background (API clients and crashed browsers never say goodbye)."""
        if self._sweeper is not None:
            return

        def sweep() -> None:
            while True:
                time.sleep(SWEEP_S)
                try:
                    self.free_idle()
                except Exception:  # noqa: BLE001 - the sweeper must outlive any one failure
                    continue

        self._sweeper = threading.Thread(target=sweep, name="segstudio-annotate-sweeper", daemon=True)
        self._sweeper.start()

    @property
    def store(self):
        return self.ctx.store

    @property
    def classes(self) -> ClassSet:
        return self.ctx.store.classes

    def object_classes(self) -> list[str]:
        return list(self.classes.names[1:])

    def method_choices(self) -> list[tuple[str, str]]:
        """Methods with SAM marked unavailable (greyed by name) when its weights are missing."""
        sam = self.ctx.registry.status("sam-vit-base")
        out = []
        for name in METHODS:
            label = name if not name.startswith("sam") or sam.available else f"{name} (weights missing)"
            out.append((label, name))
        return out

    # ---- sessions --------------------------------------------------------------------------

    def lock(self, editor: str, sample_id: str) -> threading.Lock:
        """One lock per editing session: two events of one editor never change a session at once."""
        with self._locks_guard:
            return self._locks.setdefault((editor, sample_id), threading.Lock())

    def session(self, editor: str, sample_id: str) -> AnnotationSession:
        """The editor's session on a sample: in memory, else its draft, else opened from disk.

        Raises:
            InvalidInput: no sample picked, an unknown sample, or its image cannot be read.
        """
        if not sample_id:
            raise InvalidInput("pick a sample first")
        self.store.get(sample_id)
        self.free_idle()
        return self.sessions.get(editor, sample_id, lambda: self.open(editor, sample_id))

    def free_idle(self) -> None:
        """Drop sessions unused for a while (their drafts stay on disk) with their preview files."""
        dropped = self.sessions.drop_idle(IDLE_S)
        for editor, sample_id, _ in dropped:
            forget_previews(self._annotator().GRADIO_CACHE, f"{editor}|{sample_id}")
            self._forget_lock(editor, sample_id)
        if dropped:
            _release_memory()

    def drop_editor(self, editor: str | None) -> None:
        """Free an editor's sessions and preview files (its drafts stay)."""
        for sample_id, _ in self.sessions.drop(editor):
            forget_previews(self._annotator().GRADIO_CACHE, f"{editor}|{sample_id}")
            self._forget_lock(editor, sample_id)
        _release_memory()

    def _forget_lock(self, editor: str, sample_id: str) -> None:
        lock = self._locks.get((editor, sample_id))
        if lock is not None and not lock.locked():
            with self._locks_guard:
                self._locks.pop((editor, sample_id), None)

    def open(self, editor: str, sample_id: str) -> AnnotationSession:
        """A session on the sample as saved, with the editor's draft restored when there is one."""
        data = self.store.read(sample_id)
        session = AnnotationSession(data.image, self.classes, data.sample.boxes, base=data.label_map,
                                    refiner=self.refiner, revision=data.revision)  # fmt: skip
        session.preview_owner = f"{editor}|{sample_id}"  # type: ignore[attr-defined]
        session.label_problem = data.label_problem  # type: ignore[attr-defined]
        draft = self.store.drafts.load(editor, sample_id)
        if draft is not None:
            try:
                session.restore_draft(draft)
            except (InvalidInput, KeyError, TypeError, ValueError):
                self.store.drafts.drop(editor, sample_id)
        return session

    def forget(self, editor: str, sample_id: str, *, drop_draft: bool = True) -> None:
        """Discard the editor's session (and draft) on a sample; the next use opens it from disk."""
        self.sessions.discard(editor, sample_id)
        forget_previews(self._annotator().GRADIO_CACHE, f"{editor}|{sample_id}")
        if drop_draft:
            self.store.drafts.drop(editor, sample_id)

    def persist(self, editor: str, sample_id: str, session: AnnotationSession) -> bool:
        """Keep unsaved work as a draft in the workspace (or remove the draft when nothing is unsaved).

        Returns:
            whether the draft appeared or went (the sample's status may have changed with it).
        """
        had = self.store.drafts.path(editor, sample_id).is_file()
        if session.dirty:
            self.store.drafts.save(editor, sample_id, session.to_draft())
            return not had
        self.store.drafts.drop(editor, sample_id)
        return had

    # ---- conversions -----------------------------------------------------------------------

    @staticmethod
    def display_scale(shape: tuple[int, int]) -> float:
        return min(1.0, DISPLAY_MAX_SIDE / max(shape))

    def boxes_from_annotator(
        self, value: dict | None, default_class: str, session: AnnotationSession
    ) -> tuple[list[Box], list[str]]:
        """Boxes from the annotator's value (display pixels, half-open; labels by class name).

        A box whose display corners equal those of an existing box keeps that box's exact corners, so
        downscaled display never moves a box by rounding.

        Returns:
            ``(boxes, problems)``: usable boxes clipped to the image, and one message per box that was
            dropped (entirely outside the image, or of an unknown class).
        """
        height, width = session.shape
        scale = self.display_scale(session.shape)
        known = {_display_corners(e.box, scale): e.box for e in session.entries}
        boxes, problems = [], []
        for raw in (value or {}).get("boxes") or []:
            name = (raw.get("label") or default_class or "").strip()
            x0, x1 = sorted((float(raw["xmin"]), float(raw["xmax"])))
            y0, y1 = sorted((float(raw["ymin"]), float(raw["ymax"])))
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue  # a click, not a box
            try:
                label = self.classes.index_of(name)
                same = known.get((round(x0), round(y0), round(x1), round(y1)))
                box = same.with_label(label) if same else Box.from_floats(x0 / scale, y0 / scale, x1 / scale, y1 / scale, label)
                boxes.append(box.clip(width, height))
            except InvalidInput as exc:
                problems.append(f"box dropped: {exc}")
        return boxes, problems

    def annotator_value(self, session: AnnotationSession, opacity: float) -> dict:
        """The annotator's value: a preview file of the image with the label map overlaid (at display size,
        written once per state and opacity), and the boxes in display pixels."""
        scale = self.display_scale(session.shape)
        key = (session.state_key, round(float(opacity), 2))
        previews = session.__dict__.setdefault("previews", {})
        path = previews.get(key)
        if path is None:
            view = overlay(session.image, session.label_map, self.classes, float(opacity), skip_ignore=not session.labelled)
            view = _draw_corrections(view, session)
            if scale < 1:
                from PIL import Image

                size = (max(1, round(view.shape[1] * scale)), max(1, round(view.shape[0] * scale)))
                view = np.asarray(Image.fromarray(view).resize(size, Image.Resampling.BILINEAR))
            path = self._annotator().preview_file(view, owner=session.preview_owner)
            previews.clear()  # one preview per session: the newest
            previews[key] = path
        boxes = []
        for entry in session.entries:
            x0, y0, x1, y1 = _display_corners(entry.box, scale)
            boxes.append({"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1,
                          "label": self.classes.names[entry.box.label], "color": self.classes.color_of(entry.box.label)})  # fmt: skip
        return {"image": path, "boxes": boxes}

    def _annotator(self) -> BoxAnnotator:
        if self.annotator is None:  # a controller used without the layout (tests)
            self.annotator = BoxAnnotator(render=False)
        return self.annotator

    def status(self, session: AnnotationSession, sample_id: str) -> str:
        entries = session.entries
        refined = sum(e.refined for e in entries)
        methods = sorted({e.method for e in entries if e.refined})
        dirty = "unsaved changes (kept as a draft)" if session.dirty else "saved"
        last = session.history[-1]
        flags = session.flagged()
        warn = (" · ⚠ " + ", ".join(f"#{n} {flag}" for n, flag in flags)) if flags else ""
        return (
            f"**{html.escape(sample_id)}** · {len(entries)} boxes, {refined} refined"
            f"{' (' + ', '.join(methods) + ')' if methods else ''} · {dirty} · last step: {html.escape(last)} · "
            f"{len(session.history) - 1} undo step(s){', redo available' if session.can_redo else ''}{warn}"
        )

    def legend(self, session: AnnotationSession) -> str:
        legend = sample_legend(self.classes, session.label_map, [e.box for e in session.entries])
        if not session.labelled:  # on an image without a saved map, 255 means not labelled yet
            legend = legend.replace("data-class='ignore'>", "data-class='ignore' title='not labelled yet'>", 1)
            legend = legend.replace("></span>ignore <small>", "></span>unknown (255) <small>", 1)
        return legend

    def settings(self, method: str, params: dict | None = None) -> RefineSettings:
        """Settings for a method with the parameters set in the tab (see :func:`settings_from_controls`)."""
        return settings_from_controls(method or "auto", params or {})

    def box_choices(self, session: AnnotationSession) -> list[tuple[str, int]]:
        """``("#1 person (15, 12)-(365, 512) · grabcut-fast", 1)`` per box (value: the box's number)."""
        out = []
        for entry in sorted(session.entries, key=lambda e: e.number):
            b = entry.box
            state = entry.method if entry.refined else ("saved pixels" if entry.from_disk else "not refined")
            flag = f" · ⚠ {entry.flag}" if entry.flag else ""
            fixes = f" · {len(entry.strokes)} correction{'s' if len(entry.strokes) != 1 else ''}" if entry.strokes else ""
            out.append((f"#{entry.number} {self.classes.names[b.label]} ({b.x0}, {b.y0})-({b.x1}, {b.y1}) · "
                        f"{state}{fixes}{flag}", entry.number))  # fmt: skip
        return out

    # ---- actions ---------------------------------------------------------------------------

    def save(self, session: AnnotationSession, sample_id: str, on_conflict: str = "refuse"):
        """Save through the store (only what changed), naming the revision the session started from.

        A save that writes something makes the sample ``done``, or ``needs review`` when it carries flagged
        masks (an empty mask, or one filling its whole box: :meth:`AnnotationSession.flagged`).

        Raises:
            SaveConflict: the sample changed since; nothing was written.
        """
        flags = session.flagged()
        label_map, boxes = session.save_payload()
        result = self.store.save(sample_id, label_map=label_map, boxes=boxes, base_revision=session.revision,
                                 on_conflict=on_conflict)  # fmt: skip
        session.mark_saved(result.revision if result.sample_id == sample_id else self.store.revision(sample_id))
        if result.changed and flags:
            note = "flagged: " + ", ".join(f"#{number} {flag}" for number, flag in flags)
            self.store.set_status(result.sample_id, NEEDS_REVIEW, note)
        return result

    # ---- the work queue --------------------------------------------------------------------

    def next_unlabelled(self, sample_id: str | None) -> str | None:
        """The next unlabelled sample after ``sample_id`` in the dataset's (natural) order, wrapping round;
        ``None`` when no other sample is unlabelled."""
        return self.store.next_with_status(sample_id, (UNLABELLED,))

    def save_and_next(self, session: AnnotationSession, sample_id: str, on_conflict: str = "refuse"):
        """Save (see :meth:`save`), then pick the next unlabelled sample.

        Returns:
            ``(result, next_id)``; ``next_id`` is ``None`` when no unlabelled sample is left.

        Raises:
            SaveConflict: the sample changed since; nothing was written and nothing is picked.
        """
        result = self.save(session, sample_id, on_conflict)
        return result, self.next_unlabelled(result.sample_id)

    def mark(self, session: AnnotationSession | None, sample_id: str, status: str, on_conflict: str = "refuse"):
        """Mark a sample ``done`` or ``needs_review``. Unsaved edits in ``session`` are saved first, so the mark
        sits on the version holding them (a later save that changes the sample replaces the mark).

        Returns:
            the save's result, or ``None`` when nothing needed saving.

        Raises:
            SaveConflict: saving the edits first was refused; nothing was marked.
        """
        result = None
        if session is not None and session.dirty:
            result = self.save(session, sample_id, on_conflict)
            sample_id = result.sample_id
        note = "marked by the annotator" if status == NEEDS_REVIEW else "marked done by the annotator"
        self.store.set_status(sample_id, status, note)
        return result

    def progress(self, sample_id: str | None = None) -> str:
        """``"**3 / 4 done** · 1 unlabelled · 0 draft · 0 needs review"``, and the open sample's status."""
        counts = self.store.status_counts()
        total = sum(counts.values())
        rest = " · ".join(f"{counts[s]} {STATUS_LABELS[s]}" for s in counts if s != DONE)
        line = f"**Progress: {counts[DONE]} / {total} done** · {rest}"
        if sample_id and sample_id in self.store.ids:
            current = self.store.status(sample_id)
            mark = self.store.status_mark(sample_id)
            why = f" ({html.escape(mark.note)})" if mark is not None and mark.note and current == NEEDS_REVIEW else ""
            line += f" · this sample: **{STATUS_LABELS[current]}**{why}"
        return line

    def next_box(self, session: AnnotationSession, current: int | None, step: int = 1) -> int | None:
        """The number of the box after ``current`` in the box list (wrapping round), ``None`` without boxes."""
        numbers = sorted(e.number for e in session.entries)
        if not numbers:
            return None
        if current is None or int(current) not in numbers:
            return numbers[0] if step > 0 else numbers[-1]
        return numbers[(numbers.index(int(current)) + step) % len(numbers)]

    def next_method(self, current: str | None, step: int = 1) -> str:
        """The method after ``current`` in the method list (wrapping round), skipping models without weights."""
        usable = [value for label, value in self.method_choices() if label == value]
        if current not in usable:
            return usable[0]
        return usable[(usable.index(current) + step) % len(usable)]

    def compare(self, session: AnnotationSession, methods: list[str], params: dict | None = None):
        """Side-by-side overlays per method, the disagreement map, and pairwise IoU rows."""
        if not 2 <= len(methods) <= 3:
            raise InvalidInput(f"pick two or three methods to compare, got {len(methods)}")
        boxes = [e.box for e in session.entries]
        if not boxes:
            raise InvalidInput("draw at least one box to compare methods on")
        result = compare_methods(self.refiner, session.image, boxes, [self.settings(m, params) for m in methods],
                                 overlap=session.overlap)  # fmt: skip
        gallery = [(overlay(session.image, lm, self.classes, 0.6), f"{name} · {sec:.2f} s")
                   for name, lm, sec in zip(result.names, result.label_maps, result.seconds, strict=True)]  # fmt: skip
        highlight = session.image.copy()
        highlight[result.disagreement] = (255, 0, 255)
        share = result.disagreement.mean()
        gallery.append((highlight, f"disagreement (magenta): {100 * share:.1f}% of pixels"))
        rows = [[a, *[f"{result.iou[i][j]:.3f}" for j in range(len(result.names))]] for i, a in enumerate(result.names)]
        return gallery, gr.Dataframe(value=rows, headers=["IoU", *result.names])


def _display_corners(box: Box, scale: float) -> tuple[int, int, int, int]:
    return round(box.x0 * scale), round(box.y0 * scale), round(box.x1 * scale), round(box.y1 * scale)


def _notice(text: str, kind: str = "info") -> str:
    """An inline message kept until dismissed or replaced (``kind``: info, warning, error)."""
    if not text:
        return ""
    icon = {"info": "ℹ", "warning": "⚠", "error": "✖"}[kind]
    return f"<div class='notice notice-{kind}'>{icon} {text}</div>"


def build(ctx: StudioContext, demo: gr.Blocks, live: gr.State, editor_id: gr.BrowserState,
          last_sample: gr.BrowserState) -> AnnotateController:  # fmt: skip
    """Lay out the Annotate tab and wire its events.

    Args:
        live: the page's dataset version (changes when the dataset does).
        editor_id, last_sample: kept in the browser (made outside the tabs: a browser state inside a tab that
            is not shown first is not read at page load): the editor's id and the sample it had open.
    """
    controller = AnnotateController(ctx)
    object_classes = controller.object_classes()
    default_class = "person" if "person" in object_classes else object_classes[0]
    sample_state = gr.State(None)
    params_state = gr.State({})
    brush_open = gr.State(False)

    with gr.Row():
        sample = gr.Dropdown(choices=ctx.store.ids, value=None, label="Sample", elem_id="annotate-sample", scale=2)
        new_class = gr.Dropdown(choices=object_classes, value=default_class, label="Class of new boxes",
                                elem_id="annotate-class", scale=1)  # fmt: skip
        method = gr.Dropdown(choices=controller.method_choices(), value="auto", label="Method", elem_id="annotate-method",
                             scale=1)  # fmt: skip
        auto_refine = gr.Checkbox(value=True, label="Refine new boxes as I draw", elem_id="annotate-auto", scale=1)
    with gr.Row(equal_height=True, elem_id="annotate-queue"):
        queue_progress = gr.Markdown("", elem_id="annotate-progress", scale=4)  # filled on page load, not at build
        prev_sample = gr.Button("◀ Previous sample", size="sm", elem_id="annotate-prev-sample", scale=0, min_width=150)
        next_sample = gr.Button("Next sample ▶", size="sm", elem_id="annotate-next-sample", scale=0, min_width=150)
    cycle_method = gr.Button("Next method", visible="hidden", elem_id="annotate-cycle-method")
    correction_mode = gr.Button("Correction brush", visible="hidden", elem_id=CORRECTION_TOGGLE_ID)  # key X
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=480):
            with gr.Row(elem_id="annotate-notice-row", visible=False) as notice_row:
                notice = gr.HTML(elem_id="annotate-notice", scale=8)
                dismiss = gr.Button("Dismiss", size="sm", elem_id="annotate-dismiss", scale=0, min_width=90)
            with gr.Group(visible=False, elem_id="annotate-conflict") as conflict_box:
                conflict_text = gr.Markdown(elem_id="annotate-conflict-text")
                with gr.Row():
                    reload_theirs = gr.Button("Reload theirs (discard my edits)", elem_id="conflict-reload")
                    overwrite = gr.Button("Overwrite (theirs kept in history)", variant="stop", elem_id="conflict-overwrite")
                    save_copy = gr.Button("Save mine as a copy", variant="primary", elem_id="conflict-copy")
            discard_draft = gr.Button("Discard my unsaved edits", size="sm", visible=False, elem_id="annotate-discard")
            annotator = BoxAnnotator(
                value=None, label_list=object_classes, label_colors=[ctx.store.classes.color_of(i) for i in range(1, len(ctx.store.classes))],
                use_default_label=True, image_type="filepath", sources=[], show_clear_button=False, show_remove_button=True,
                show_download_button=False, height=560, elem_id="annotator", box_min_size=3, boxes_alpha=0.0,
            )  # fmt: skip
            controller.annotator = annotator
            opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Mask opacity", elem_id="annotate-opacity")
            gr.Markdown(
                "Draw a box: press **C** (or the box button under the image) and drag; **D** moves and resizes boxes; "
                "in that mode double-click a box to change its class (or use *Box* and *Set class* on the right); the "
                "bin removes the selected box. Boxes that came with the sample keep their saved pixels until you "
                "refine them.",
                elem_classes=["hint"],
            )
            status = gr.Markdown("Pick a sample, then draw boxes on the image.", elem_id="annotate-status")
            legend = gr.HTML(elem_id="annotate-legend")
        with gr.Column(scale=2, min_width=320):
            with gr.Row():
                refine_all = gr.Button("Refine all boxes", variant="primary", elem_id="refine-all")
                undo = gr.Button("↶ Undo", elem_id="undo")
                redo = gr.Button("↷ Redo", elem_id="redo")
            with gr.Row():
                box_pick = gr.Dropdown(choices=[], label="Box", elem_id="box-pick", scale=3)
                with gr.Column(scale=1, min_width=120):
                    refine_one = gr.Button("Refine this box", elem_id="refine-one", size="sm")
                    next_box = gr.Button("Next box", elem_id="annotate-next-box", size="sm")
            with gr.Row():
                box_class = gr.Dropdown(choices=object_classes, value=None, label="Class of this box",
                                        elem_id="box-class", scale=3)  # fmt: skip
                set_class = gr.Button("Set class", elem_id="set-class", scale=1)
            with gr.Row():
                save = gr.Button("Save label map and boxes", variant="primary", elem_id="save")
                save_next = gr.Button("Save and next unlabelled", variant="primary", elem_id="save-next")
            with gr.Row():
                mark_review = gr.Button("Mark needs review", size="sm", elem_id="mark-review")
                mark_done = gr.Button("Mark done", size="sm", elem_id="mark-done")
            saved = gr.Markdown(elem_id="save-status")
            gr.HTML(shortcut_help(correction=True), elem_id="annotate-shortcuts")
            with gr.Accordion("Touch-up", open=True):
                with gr.Row():
                    size = gr.Slider(1, 41, value=5, step=2, label="Open / close kernel (px)", elem_id="kernel-size")
                    min_area = gr.Slider(
                        10, 5000, value=200, step=10, label="Smallest blob kept (px)", elem_id="min-area"
                    )
                with gr.Row():
                    touch_buttons = {
                        label: gr.Button(label, size="sm", elem_id=f"touch-{op}") for label, op in TOUCH_UPS.items()
                    }
            with gr.Accordion("Brush", open=False, elem_id="brush") as brush_box:
                brush_value = gr.Dropdown(choices=[*CORRECTIONS, *object_classes, ERASE, IGNORE], value=default_class,
                                          label="Brush paints (or corrects: the box's method re-cuts with the strokes)",
                                          elem_id="brush-value")  # fmt: skip
                editor = gr.ImageEditor(
                    type="numpy", label="Brush: paint strokes, then Apply", elem_id="brush-editor", sources=[],
                    transforms=(), layers=False, height=360, image_mode="RGBA",
                    brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=8),
                )  # fmt: skip
                with gr.Row():
                    apply_brush = gr.Button("Apply strokes", size="sm", elem_id="apply-brush")
                    clear_edits = gr.Button("Clear manual edits", size="sm")
                    clear_fixes = gr.Button("Clear this box's corrections", size="sm", elem_id="clear-corrections")
            with gr.Accordion("Method parameters", open=False, elem_id="method-params"):
                controls = {
                    "iterations": gr.Slider(1, 20, value=6, step=1, label="GrabCut iterations (grabcut-fast)"),
                    "working_size": gr.Slider(
                        0, 640, value=160, step=40, label="Working size, px (0 = full resolution)"
                    ),
                    "center_prior": gr.Slider(0, 10, value=3, step=0.5, label="Centre prior strength"),
                    "tight_prior": gr.Checkbox(value=True, label="Tight box: every row and column of the box holds "
                                                                "object (grabcut-fast)"),  # fmt: skip
                    "opencv_iterations": gr.Slider(1, 20, value=5, step=1, label="OpenCV GrabCut iterations"),
                    "crf_iterations": gr.Slider(1, 20, value=5, step=1, label="CRF iterations"),
                    "bilateral_sxy": gr.Slider(5, 200, value=60, step=5, label="CRF appearance kernel width (px)"),
                    "bilateral_srgb": gr.Slider(1, 50, value=10, step=1, label="CRF appearance kernel colour width"),
                    "bilateral_compat": gr.Slider(0, 20, value=5, step=0.5, label="CRF appearance kernel weight"),
                    "gaussian_sxy": gr.Slider(1, 20, value=3, step=1, label="CRF smoothness kernel width (px)"),
                    "gaussian_compat": gr.Slider(0, 20, value=3, step=0.5, label="CRF smoothness kernel weight"),
                }
            with gr.Accordion("Options", open=False):
                overlap = gr.Radio(
                    ["smaller", "larger", "order"], value="smaller", label="Where masks overlap, who wins"
                )
                ignore_band = gr.Slider(0, 10, value=0, step=1, label="Ignore band on class borders (px)")
                rest = gr.Radio([(REST_LABELS[c], c) for c in REST_CHOICES], value="unknown", elem_id="annotate-rest",
                                label="Pixels no box covers, on an image without a label map")  # fmt: skip
    with gr.Accordion("Compare methods", open=False, elem_id="compare"):
        with gr.Row():
            compare_methods_box = gr.CheckboxGroup(choices=[m for m in METHODS if m != "auto"], value=["grabcut-fast", "grabcut"],
                                                   label="Methods (two or three)", elem_id="compare-methods")  # fmt: skip
            compare_button = gr.Button("Compare on these boxes", elem_id="compare-run")
        compare_gallery = gr.Gallery(columns=4, height="auto", label="Masks per method and their disagreement",
                                     elem_id="compare-gallery", allow_preview=True, buttons=[], object_fit="contain")  # fmt: skip
        compare_table = gr.Dataframe(
            label="IoU between methods (object pixels)", elem_id="compare-iou", interactive=False
        )

    outputs = [annotator, status, legend, box_pick, box_class, notice, notice_row, editor, saved, conflict_box,
               conflict_text, discard_draft, sample, sample_state, overlap, ignore_band, rest, queue_progress]  # fmt: skip

    def with_notice_row(handler):
        """Show the notice row exactly when a handler leaves a notice in it."""

        @functools.wraps(handler)  # Gradio reads the handler's signature (where to put the request)
        def event(*args, **kwargs):
            updates = handler(*args, **kwargs)
            if isinstance(updates, dict) and notice in updates:
                updates[notice_row] = gr.Row(visible=bool(updates[notice]))
            return updates

        return event

    def editor_of(browser: str | None, request: gr.Request) -> str:
        return browser or getattr(request, "session_hash", None) or "anonymous"

    def editor_value(session: AnnotationSession) -> dict:
        view = overlay(session.image, session.label_map, controller.classes, 0.5, skip_ignore=not session.labelled)
        return {"background": view, "layers": [], "composite": view}

    def view(session: AnnotationSession, sample_id: str, alpha: float, brush: bool, extra: dict | None = None) -> dict:
        """Updates after any change: the annotator, status, legend, box list and (when open) the brush image."""
        choices = controller.box_choices(session)
        numbers = {e.number: e for e in session.entries}
        picked = session.focus if session.focus in numbers else (choices[-1][1] if choices else None)
        updates = {
            annotator: controller.annotator_value(session, alpha), status: controller.status(session, sample_id),
            legend: controller.legend(session), box_pick: gr.Dropdown(choices=choices, value=picked),
            box_class: controller.classes.names[numbers[picked].box.label] if picked is not None else None,
            discard_draft: gr.Button(visible=session.dirty),
        }  # fmt: skip
        if brush:
            updates[editor] = editor_value(session)
        updates.update(extra or {})
        return updates

    def failed(exc: StudioError) -> dict:
        return {notice: _notice(html.escape(str(exc)), "error")}

    def editing(action, *, persist: bool = True):
        """Wrap a change to the editor's session: lock it, apply, keep the draft, render; errors inline."""

        def handler(sample_id, browser, alpha, brush, request: gr.Request, *args):  # request: put here by Gradio
            if not sample_id:
                return {notice: _notice("Pick a sample first.", "warning")}
            who = editor_of(browser, request)
            try:
                with controller.lock(who, sample_id):
                    session = controller.session(who, sample_id)
                    extra = action(session, *args)
                    extra = dict(extra) if isinstance(extra, dict) else {}
                    if persist and controller.persist(who, sample_id, session):  # a draft appeared or went
                        extra[queue_progress] = controller.progress(sample_id)
                    return view(session, sample_id, alpha, brush, extra)
            except StudioError as exc:
                return failed(exc)

        return handler

    def opened_notes(session: AnnotationSession, sample_id: str, who: str) -> str:
        notes = []
        problem = getattr(session, "label_problem", None)
        if problem:
            notes.append(_notice(f"The saved label map cannot be used: {html.escape(problem)}. The image is open; "
                                 "draw the boxes again and save to replace it (the bad file is kept in history).", "warning"))  # fmt: skip
        if session.dirty:  # reopened after a refresh, a closed tab or a restart: the edits are offered back
            info = controller.store.drafts.info(who, sample_id)
            when = time.strftime("%H:%M:%S", time.localtime(info.saved_at)) if info else "this session"
            moved = session.revision != controller.store.revision(sample_id)
            extra = " The sample was saved elsewhere since; saving will ask what to do." if moved else ""
            notes.append(_notice(f"Restored your unsaved edits ({len(session.history) - 1} steps, last change "
                                 f"{when}). Save them, or discard them with the button below.{extra}"))  # fmt: skip
        if not session.labelled and not problem:
            notes.append(_notice("This image has no label map yet: pixels no mask covers are unknown (255), not "
                                 "background, unless you choose otherwise under Options."))  # fmt: skip
        return "".join(notes)

    def on_sample(sample_id: str | None, browser: str | None, alpha: float, brush: bool, request: gr.Request):
        if not sample_id:
            return {sample_state: None, status: "Pick a sample, then draw boxes on the image.", notice: ""}
        who = editor_of(browser, request)
        try:
            with controller.lock(who, sample_id):
                session = controller.session(who, sample_id)
                return view(session, sample_id, alpha, brush, {
                    sample_state: sample_id, notice: opened_notes(session, sample_id, who), saved: "",
                    conflict_box: gr.Group(visible=False), overlap: session.overlap, ignore_band: session.ignore_band,
                    rest: session.rest, queue_progress: controller.progress(sample_id)})  # fmt: skip
        except StudioError as exc:  # nothing of the previous sample stays on screen
            return {sample_state: None, **failed(exc), status: f"**{html.escape(sample_id)}** could not be opened.",
                    queue_progress: controller.progress(),
                    annotator: None, legend: "", box_pick: gr.Dropdown(choices=[], value=None), box_class: None,
                    discard_draft: gr.Button(visible=False)}  # fmt: skip

    def on_boxes(sample_id, browser, alpha, brush, value, cls, meth, auto, params, request: gr.Request):
        if not sample_id or value is None:
            return {status: gr.skip()}
        who = editor_of(browser, request)
        try:
            with controller.lock(who, sample_id):
                session = controller.session(who, sample_id)
                boxes, problems = controller.boxes_from_annotator(value, cls, session)
                if boxes == [e.box for e in session.entries] and not problems:
                    return {status: gr.skip()}  # our own update echoing back
                session.set_boxes(boxes, refine=auto, settings=controller.settings(meth, params))
                extra = {notice: _notice(html.escape("; ".join(problems)), "warning")} if problems else {}
                if controller.persist(who, sample_id, session):  # a draft appeared or went
                    extra[queue_progress] = controller.progress(sample_id)
                return view(session, sample_id, alpha, brush, extra)
        except StudioError as exc:
            return failed(exc)

    def on_refine_all(session, meth, params):
        session.refine(settings=controller.settings(meth, params))

    def on_refine_one(session, number, meth, params):
        if number is None:
            raise InvalidInput("pick a box in the Box list first")
        session.refine([int(number)], settings=controller.settings(meth, params))

    def on_set_class(session, number, name):
        if number is None or not name:
            raise InvalidInput("pick a box in the Box list and a class first")
        session.set_class(int(number), controller.classes.index_of(name))

    def on_touch(operation):
        def action(session, kernel, area):
            session.touch_up(operation, int(area) if operation == "remove_small" else int(kernel))

        return action

    def on_brush(session, editor_image, paint_value, picked):
        stroke = stroke_from_editor(editor_image, session.shape)
        if not stroke.any():
            raise InvalidInput("no brush strokes to apply: paint on the brush image first")
        if paint_value in CORRECTIONS:
            add_corrections(session, stroke, paint_value == OBJECT_FIX, picked)
        else:
            session.brush(stroke, brush_index(controller.classes, paint_value))
        return {editor: editor_value(session)}

    def on_clear_corrections(session, number):
        if number is None:
            raise InvalidInput("pick a box in the Box list first")
        session.clear_corrections(int(number))

    def on_correction_mode(current, sample_id, browser, request: gr.Request):
        """Key X: switch the brush to object corrections, then between object and not object."""
        chosen = NOT_OBJECT_FIX if current == OBJECT_FIX else OBJECT_FIX
        image = gr.skip()
        if sample_id:
            try:
                image = editor_value(controller.session(editor_of(browser, request), sample_id))
            except StudioError:
                pass
        return chosen, gr.Accordion(open=True), True, image

    def on_options(session, rule, band, rest_choice):
        session.set_options(overlap=rule, ignore_band=int(band), rest=rest_choice)

    def saving(sample_id, browser, alpha, brush, request: gr.Request, choice: str = "refuse", mark: str | None = None):
        """Save the editor's session (and with ``mark``, mark the sample after); ``(updates, saved id or None)``."""
        if not sample_id:
            return {notice: _notice("Pick a sample first.", "warning")}, None
        who = editor_of(browser, request)
        try:
            with controller.lock(who, sample_id):
                session = controller.session(who, sample_id)
                try:
                    if mark is None:
                        result = controller.save(session, sample_id, choice)
                    else:
                        result = controller.mark(session, sample_id, mark, choice)
                except SaveConflict as exc:
                    return {conflict_box: gr.Group(visible=True), conflict_text: f"**Not saved.** {html.escape(str(exc))}",
                            saved: "Not saved: the sample changed since you opened it (see the choices above)."}, None  # fmt: skip
                if result is None:  # a mark on a sample without unsaved edits
                    message = f"Marked **{html.escape(sample_id)}** {STATUS_LABELS[mark]}."
                    return view(session, sample_id, alpha, brush, {
                        saved: message, queue_progress: controller.progress(sample_id)}), sample_id  # fmt: skip
                controller.forget(who, sample_id)
                if result.sample_id != sample_id:  # saved as a copy: continue on the copy
                    controller.sessions.put(who, result.sample_id, session)
                    message = f"Saved your version as a new sample **{html.escape(result.sample_id)}**; {html.escape(sample_id)} is theirs, untouched."
                    return view(session, result.sample_id, alpha, brush, {
                        saved: message, conflict_box: gr.Group(visible=False), notice: _notice(message),
                        sample: gr.Dropdown(choices=controller.store.ids, value=result.sample_id),
                        sample_state: result.sample_id, queue_progress: controller.progress(result.sample_id)}), result.sample_id  # fmt: skip
                controller.sessions.put(who, sample_id, session)
                message = _save_message(result)
                if mark is not None:
                    message += f" Marked {STATUS_LABELS[mark]}."
                elif result.changed and controller.store.status(sample_id) == NEEDS_REVIEW:
                    message += " Marked **needs review**: " + ", ".join(f"#{n} {flag}" for n, flag in session.flagged()) + "."
                gr.Info("Saved" if result.changed else "Nothing to save")
                return view(session, sample_id, alpha, brush, {saved: message, conflict_box: gr.Group(visible=False),
                                                               queue_progress: controller.progress(sample_id)}), sample_id  # fmt: skip
        except StudioError as exc:
            return {**failed(exc), saved: f"Not saved: {html.escape(str(exc))}"}, None

    def on_save(sample_id, browser, alpha, brush, request: gr.Request, choice: str = "refuse"):
        return saving(sample_id, browser, alpha, brush, request, choice)[0]

    def on_save_next(sample_id, browser, alpha, brush, request: gr.Request):
        updates, saved_id = saving(sample_id, browser, alpha, brush, request)
        if saved_id is None:
            return updates
        following = controller.next_unlabelled(saved_id)
        if following is None:
            counts = controller.store.status_counts()
            left = ", ".join(f"{counts[s]} {STATUS_LABELS[s]}" for s in counts if s != UNLABELLED)
            updates[notice] = _notice(f"No unlabelled sample is left ({left}); {html.escape(saved_id)} stays open.")
            return updates
        opened = on_sample(following, browser, alpha, brush, request)
        opened[sample] = gr.Dropdown(choices=controller.store.ids, value=following)
        opened[saved] = f"**{html.escape(saved_id)}**: {updates.get(saved, '')}"
        opened[notice] = _notice(f"Next unlabelled sample: <b>{html.escape(following)}</b> (after {html.escape(saved_id)})."
                                 ) + opened.get(notice, "")  # fmt: skip
        return opened

    def on_mark(status_name: str):
        def handler(sample_id, browser, alpha, brush, request: gr.Request):
            return saving(sample_id, browser, alpha, brush, request, mark=status_name)[0]

        return handler

    def on_step(step: int):
        def handler(sample_id, browser, alpha, brush, request: gr.Request):
            target = controller.store.neighbour(sample_id, step)
            if target is None:
                return {status: gr.skip()}
            updates = on_sample(target, browser, alpha, brush, request)
            updates[sample] = gr.Dropdown(choices=controller.store.ids, value=target)
            return updates

        return handler

    def on_next_box(sample_id, browser, current, request: gr.Request):
        if not sample_id:
            return gr.skip(), gr.skip()
        session = controller.sessions.peek(editor_of(browser, request), sample_id)
        number = controller.next_box(session, current) if session is not None else None
        if number is None:
            return gr.skip(), gr.skip()
        session.focus = number  # the list keeps following it after the next change
        entry = next(e for e in session.entries if e.number == number)
        return number, controller.classes.names[entry.box.label]

    def on_reload(sample_id, browser, alpha, brush, request: gr.Request):
        if not sample_id:
            return {status: gr.skip()}
        who = editor_of(browser, request)
        with controller.lock(who, sample_id):
            controller.forget(who, sample_id)
        updates = on_sample(sample_id, browser, alpha, brush, request)
        updates[notice] = _notice("Reloaded the saved version; your edits were discarded.")
        updates[conflict_box] = gr.Group(visible=False)
        return updates

    def on_live(sample_id, browser, alpha, brush, request: gr.Request):
        """The dataset changed somewhere: refresh the sample list and check the open sample."""
        updates = {sample: gr.Dropdown(choices=controller.store.ids)}
        if not sample_id or sample_id not in controller.store.ids:
            updates[queue_progress] = controller.progress()
            return updates
        updates[queue_progress] = controller.progress(sample_id)
        who = editor_of(browser, request)
        session = controller.sessions.peek(who, sample_id)
        if session is None or session.revision == controller.store.revision(sample_id):
            return updates
        if not session.dirty:
            reloaded = on_reload(sample_id, browser, alpha, brush, request)
            reloaded[notice] = _notice("This sample was saved elsewhere; you now see that version.")
            return {**updates, **reloaded}
        updates[notice] = _notice("This sample was saved elsewhere since you opened it. Your edits are kept; saving "
                                  "will ask whether to reload theirs, overwrite, or save yours as a copy.", "warning")  # fmt: skip
        return updates

    def on_opacity(sample_id, browser, alpha, request: gr.Request):
        if not sample_id:
            return gr.skip()
        who = editor_of(browser, request)
        try:
            return controller.annotator_value(controller.session(who, sample_id), alpha)
        except StudioError:
            return gr.skip()

    def on_compare(sample_id, browser, methods, params, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        session = controller.session(editor_of(browser, request), sample_id or "")
        progress(None, desc="running " + ", ".join(methods))
        gallery, table = controller.compare(session, methods, params)
        # one column per picture, so every caption (method, seconds, disagreement) stays in view
        return gr.Gallery(value=gallery, columns=len(gallery)), table

    def on_discard(sample_id, browser, alpha, brush, request: gr.Request):
        updates = on_reload(sample_id, browser, alpha, brush, request)
        updates[notice] = _notice("Discarded your unsaved edits; this is the saved version.")
        return updates

    def on_brush_open(sample_id, browser, request: gr.Request):
        if not sample_id:
            return True, gr.skip()
        try:
            return True, editor_value(controller.session(editor_of(browser, request), sample_id))
        except StudioError:
            return True, gr.skip()

    def on_box_pick(number, sample_id, browser, request: gr.Request):
        if number is None or not sample_id:
            return gr.skip()
        session = controller.sessions.peek(editor_of(browser, request), sample_id)
        for entry in session.entries if session is not None else ():
            if entry.number == int(number):
                return controller.classes.names[entry.box.label]
        return gr.skip()

    def on_load(browser, last):
        known = last if last in controller.store.ids else None
        return browser or uuid.uuid4().hex, gr.Dropdown(choices=controller.store.ids, value=known)

    def on_reopen(sample_id, browser, alpha, brush, request: gr.Request):
        if not sample_id:
            return {status: gr.skip(), queue_progress: controller.progress()}
        return on_sample(sample_id, browser, alpha, brush, request)

    def on_unload(request: gr.Request):
        # a closed tab: free what its session held (drafts stay on disk); editors known by browser id are
        # freed when idle instead, since another tab of the same browser may still use them
        controller.drop_editor(getattr(request, "session_hash", None))

    base = [sample_state, editor_id, opacity, brush_open]
    refine_kwargs = {"concurrency_id": "refine", "concurrency_limit": 2}
    demo.load(on_load, inputs=[editor_id, last_sample], outputs=[editor_id, sample], api_visibility="private").then(
        with_notice_row(on_reopen), inputs=[sample, editor_id, opacity, brush_open], outputs=outputs, api_visibility="private"
    )  # a refresh comes back to the sample it showed, with its unsaved edits
    sample.input(with_notice_row(on_sample), inputs=[sample, editor_id, opacity, brush_open], outputs=outputs, api_name="annotate_open",
                 concurrency_limit=4)  # fmt: skip
    sample_state.change(lambda sid: sid, inputs=sample_state, outputs=last_sample, api_visibility="private")
    new_class.change(lambda c: BoxAnnotator(label_list=[c] + [n for n in object_classes if n != c]),
                     inputs=new_class, outputs=annotator, api_visibility="private")  # fmt: skip
    for name, control in controls.items():
        control.change(_param_setter(name), inputs=[params_state, control], outputs=params_state,
                       api_visibility="private")  # fmt: skip
    annotator.change(with_notice_row(on_boxes), inputs=[*base, annotator, new_class, method, auto_refine, params_state], outputs=outputs,
                     trigger_mode="always_last", api_name="annotate_boxes", show_progress="minimal", **refine_kwargs)  # fmt: skip
    refine_all.click(with_notice_row(editing(on_refine_all)), inputs=[*base, method, params_state], outputs=outputs, **refine_kwargs)
    refine_one.click(with_notice_row(editing(on_refine_one)), inputs=[*base, box_pick, method, params_state], outputs=outputs,
                     **refine_kwargs)  # fmt: skip
    set_class.click(with_notice_row(editing(on_set_class)), inputs=[*base, box_pick, box_class], outputs=outputs)
    box_pick.input(on_box_pick, inputs=[box_pick, sample_state, editor_id], outputs=box_class, api_visibility="private")
    undo.click(with_notice_row(editing(lambda s: s.undo())), inputs=base, outputs=outputs)
    redo.click(with_notice_row(editing(lambda s: s.redo())), inputs=base, outputs=outputs)
    clear_edits.click(with_notice_row(editing(lambda s: s.clear_edits())), inputs=base, outputs=outputs)
    for label, op in TOUCH_UPS.items():
        touch_buttons[label].click(with_notice_row(editing(on_touch(op))), inputs=[*base, size, min_area], outputs=outputs)
    apply_brush.click(with_notice_row(editing(on_brush)), inputs=[*base, editor, brush_value, box_pick], outputs=outputs,
                      **refine_kwargs)  # fmt: skip
    clear_fixes.click(with_notice_row(editing(on_clear_corrections)), inputs=[*base, box_pick], outputs=outputs,
                      **refine_kwargs)  # fmt: skip
    correction_mode.click(on_correction_mode, inputs=[brush_value, sample_state, editor_id],
                          outputs=[brush_value, brush_box, brush_open, editor], api_visibility="private")  # fmt: skip
    option_inputs = [*base, overlap, ignore_band, rest]
    overlap.input(with_notice_row(editing(on_options)), inputs=option_inputs, outputs=outputs)
    ignore_band.release(with_notice_row(editing(on_options)), inputs=option_inputs, outputs=outputs)
    rest.input(with_notice_row(editing(on_options)), inputs=option_inputs, outputs=outputs)
    opacity.release(on_opacity, inputs=[sample_state, editor_id, opacity], outputs=annotator, api_visibility="private")
    save.click(with_notice_row(on_save), inputs=base, outputs=outputs, api_name="annotate_save")
    save_next.click(with_notice_row(on_save_next), inputs=base, outputs=outputs, api_name="annotate_save_next")
    mark_review.click(with_notice_row(on_mark(NEEDS_REVIEW)), inputs=base, outputs=outputs, api_name="annotate_mark_review")
    mark_done.click(with_notice_row(on_mark(DONE)), inputs=base, outputs=outputs, api_name="annotate_mark_done")
    next_sample.click(with_notice_row(on_step(1)), inputs=base, outputs=outputs, api_visibility="private", concurrency_limit=4,
                      trigger_mode="always_last")  # a press while the last one runs is not lost
    prev_sample.click(with_notice_row(on_step(-1)), inputs=base, outputs=outputs, api_visibility="private", concurrency_limit=4,
                      trigger_mode="always_last")  # a press while the last one runs is not lost
    next_box.click(on_next_box, inputs=[sample_state, editor_id, box_pick], outputs=[box_pick, box_class], api_visibility="private")
    cycle_method.click(controller.next_method, inputs=method, outputs=method, api_visibility="private")
    reload_theirs.click(with_notice_row(on_reload), inputs=base, outputs=outputs)
    overwrite.click(with_notice_row(_resolving(on_save, "overwrite")), inputs=base, outputs=outputs)
    save_copy.click(with_notice_row(_resolving(on_save, "copy")), inputs=base, outputs=outputs)
    discard_draft.click(with_notice_row(on_discard), inputs=base, outputs=outputs)
    dismiss.click(lambda: ("", gr.Row(visible=False)), outputs=[notice, notice_row], api_visibility="private")
    brush_box.expand(on_brush_open, inputs=[sample_state, editor_id], outputs=[brush_open, editor], api_visibility="private")
    brush_box.collapse(lambda: False, outputs=brush_open, api_visibility="private")
    live.change(with_notice_row(on_live), inputs=base, outputs=outputs, show_progress="hidden", api_visibility="private")
    compare_button.click(shows_errors(on_compare), inputs=[sample_state, editor_id, compare_methods_box, params_state],
                         outputs=[compare_gallery, compare_table], **refine_kwargs)  # fmt: skip
    demo.unload(on_unload)
    controller.start_sweeping()
    return controller


def _resolving(on_save, choice: str):
    """The save handler resolving a conflict with ``overwrite`` or ``copy``."""

    def event(sample_id, browser, alpha, brush, request: gr.Request):
        return on_save(sample_id, browser, alpha, brush, request, choice)

    return event


def _save_message(result) -> str:
    if not result.changed:
        return "Nothing to save: the files on disk already hold this state (nothing was written)."
    written = ", ".join(f"`{p.name}`" for p in result.written)
    kept = "; previous versions kept in `.segstudio/history/`" if result.kept else ""
    prefix = "Overwrote their version (kept in history) with yours: " if result.resolution == "overwrote" else "Saved "
    return f"{prefix}{written}{kept}."


def _param_setter(name: str):
    """An event handler storing one method-parameter control's value in the parameters state."""

    def handler(params: dict, value: float) -> dict:
        return {**(params or {}), name: value}

    return handler


def settings_from_controls(method: str, params: dict) -> RefineSettings:
    """:class:`RefineSettings` for ``method`` with the tab's parameter values (defaults where unset)."""
    grabcut = {k: params[k] for k in ("iterations", "working_size", "center_prior", "tight_prior") if k in params}
    if "tight_prior" in grabcut:
        grabcut["tight_prior"] = bool(grabcut["tight_prior"])
    if "working_size" in grabcut:
        grabcut["working_size"] = int(grabcut["working_size"])
    if "iterations" in grabcut:
        grabcut["iterations"] = int(grabcut["iterations"])
    crf_names = {"crf_iterations": "iterations", "bilateral_sxy": "bilateral_sxy", "bilateral_srgb": "bilateral_srgb",
                 "bilateral_compat": "bilateral_compat", "gaussian_sxy": "gaussian_sxy", "gaussian_compat": "gaussian_compat"}  # fmt: skip
    crf = {field: params[key] for key, field in crf_names.items() if key in params}
    if "iterations" in crf:
        crf["iterations"] = int(crf["iterations"])
    return RefineSettings(
        method, grabcut=GrabCutParams(**grabcut), crf=DenseCRFParams(**crf),
        opencv_iterations=int(params.get("opencv_iterations", 5)),
    )  # fmt: skip


STROKE_COLORS = {True: (40, 220, 60), False: (235, 40, 40)}  # object: green, not object: red


def _draw_corrections(view: np.ndarray, session: AnnotationSession) -> np.ndarray:
    """``view`` (``H x W x 3 uint8``) with every box's correction strokes shown: object green, not object red."""
    from core.refine.corrections import rasterize_strokes

    strokes = [stroke for entry in session.entries for stroke in entry.strokes]
    if not strokes:
        return view
    shown = view.copy()
    for positive, mask in zip((True, False), rasterize_strokes(strokes, *session.shape), strict=True):
        shown[mask] = (0.3 * shown[mask] + 0.7 * np.array(STROKE_COLORS[positive])).astype(np.uint8)
    return shown


def add_corrections(session: AnnotationSession, painted: np.ndarray, positive: bool, picked: int | None) -> None:
    """Add the painted pixels (``H x W bool``) to a box as correction strokes (one per connected piece) and
    re-cut it. The box is the one under the strokes' centre, else the one picked in the Box list. Object
    strokes are clipped to the box (a mask never leaves its box); not-object strokes may lie anywhere."""
    ys, xs = np.nonzero(painted)
    number = session.box_at(float(xs.mean()), float(ys.mean()))
    if number is None:
        number = int(picked) if picked is not None else None
    if number is None:
        raise InvalidInput("draw the correction over a box (or pick its box in the Box list): a correction "
                           "re-cuts one box's mask")  # fmt: skip
    box = next(e.box for e in session.entries if e.number == number)
    if positive:
        inside = np.zeros_like(painted)
        inside[box.y0 : box.y1, box.x0 : box.x1] = True
        painted = painted & inside
        if not painted.any():
            raise InvalidInput(f"the object strokes lie outside box #{number} ({box.x0}, {box.y0})-({box.x1}, {box.y1}); "
                               "draw them inside it, or enlarge the box")  # fmt: skip
    for stroke in strokes_from_painted(painted, positive):
        session.add_correction(number, stroke)


def strokes_from_painted(painted: np.ndarray, positive: bool) -> list:
    """One :class:`core.refine.corrections.Stroke` per 8-connected piece of ``painted`` (``H x W bool``): its
    pixels sampled on a grid (at most :data:`MAX_STROKE_POINTS` positions) drawn with a brush as wide as the
    grid step, so the stroke covers what was painted (and at most a step more)."""
    import cv2

    from core.refine.corrections import Stroke

    count, pieces = cv2.connectedComponents(painted.astype(np.uint8), connectivity=8)
    strokes = []
    for piece in range(1, count):
        ys, xs = np.nonzero(pieces == piece)
        step = max(1, int(np.ceil(np.sqrt(len(xs) / MAX_STROKE_POINTS))))
        keep = (xs % step == 0) & (ys % step == 0)
        if not keep.any():
            keep[0] = True
        points = tuple(zip(xs[keep].tolist(), ys[keep].tolist(), strict=True))
        strokes.append(Stroke(points, positive=positive, radius=step if step > 1 else 0))
    return strokes


def brush_index(classes: ClassSet, choice: str) -> int:
    """The label value a brush choice paints."""
    if choice == ERASE:
        return 0
    if choice == IGNORE:
        return classes.ignore_index
    return classes.index_of(choice)


def stroke_from_editor(value: dict | None, shape: tuple[int, int]) -> np.ndarray:
    """``H x W bool``: the pixels painted in the brush editor (its layers' alpha, else where the
    composite differs from the background), resized to ``shape`` when the editor resized the image."""
    from PIL import Image

    if not value:
        return np.zeros(shape, dtype=bool)
    painted = None
    for layer in value.get("layers") or []:
        if layer is not None and np.ndim(layer) == 3 and layer.shape[2] == 4:
            alpha = layer[:, :, 3] > 0
            painted = alpha if painted is None else painted | alpha
    if painted is None and value.get("composite") is not None and value.get("background") is not None:
        composite, background = np.asarray(value["composite"]), np.asarray(value["background"])
        if composite.shape == background.shape:
            painted = np.any(composite[..., :3] != background[..., :3], axis=-1)
    if painted is None:
        return np.zeros(shape, dtype=bool)
    if painted.shape != tuple(shape):
        resized = Image.fromarray(painted.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
        painted = np.asarray(resized) > 127
    return painted
