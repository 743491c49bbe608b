"""The Annotate tab: draw boxes with classes, refine them into masks, compare methods, touch up,
undo / redo, save a palette label map and VOC boxes."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np
from gradio_image_annotation import image_annotator

from core.errors import InvalidInput, StudioError
from core.io.dataset import load_sample_image, load_sample_label_map
from core.refine.compare import compare_methods
from core.refine.densecrf import DenseCRFParams
from core.refine.grabcut import GrabCutParams
from core.refine.methods import METHODS
from core.refine.refiner import BoxRefiner, RefineSettings
from core.refine.session import AnnotationSession
from core.types import Box, ClassSet
from core.viz import overlay
from studio.errors import shows_errors
from studio.session_store import SessionStore
from studio.tabs.dataset import sample_legend

if TYPE_CHECKING:
    from studio.app import StudioContext

TOUCH_UPS = {"Fill holes": "fill_holes", "Remove small blobs": "remove_small", "Open": "open", "Close": "close"}
ERASE = "erase (background)"
IGNORE = "ignore (255)"
CLASSIC_METHODS = ["auto", "grabcut-fast", "grabcut", "grabcut+crf", "densecrf"]


class AnnotateController:
    """The tab's logic, independent of the layout (so it can be tested without a browser)."""

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx
        self.refiner = BoxRefiner(ctx.registry)
        self.store = SessionStore(per_session=8, keep=lambda s: s.dirty)

    @property
    def classes(self) -> ClassSet:
        return self.ctx.dataset.classes

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

    def session(self, session_hash: str | None, sample_id: str) -> AnnotationSession:
        """The editing session of a sample for this browser session (opened from disk once)."""

        def open_sample() -> AnnotationSession:
            sample = self.ctx.dataset.get(sample_id)
            image = load_sample_image(sample)
            base = load_sample_label_map(self.ctx.dataset, sample, image.shape[:2])
            return AnnotationSession(image, self.classes, sample.boxes, base=base, refiner=self.refiner)

        if not sample_id:
            raise InvalidInput("pick a sample first")
        self.ctx.dataset.get(sample_id)
        return self.store.get(session_hash, sample_id, open_sample)

    # ---- conversions -----------------------------------------------------------------------

    def boxes_from_annotator(
        self, value: dict | None, default_class: str, shape: tuple[int, int]
    ) -> tuple[list[Box], list[str]]:
        """Boxes from the annotator's value (corners as drawn, half-open; labels by class name).

        Returns:
            ``(boxes, problems)``: usable boxes clipped to the image, and one message per box that was
            dropped (entirely outside the image, or of an unknown class), so that one bad box never
            loses the others.
        """
        height, width = shape
        boxes, problems = [], []
        for raw in (value or {}).get("boxes") or []:
            name = (raw.get("label") or default_class or "").strip()
            x0, x1 = sorted((float(raw["xmin"]), float(raw["xmax"])))
            y0, y1 = sorted((float(raw["ymin"]), float(raw["ymax"])))
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue  # a click, not a box
            try:
                box = Box.from_floats(x0, y0, x1, y1, self.classes.index_of(name)).clip(width, height)
            except InvalidInput as exc:
                problems.append(f"box dropped: {exc}")
                continue
            boxes.append(box)
        return boxes, problems

    def annotator_value(self, session: AnnotationSession, opacity: float) -> dict:
        """The annotator's value: the image with the label map overlaid, and the boxes."""
        view = overlay(session.image, session.label_map, self.classes, float(opacity))
        boxes = []
        for entry in session.entries:
            b = entry.box
            boxes.append({"xmin": b.x0, "ymin": b.y0, "xmax": b.x1, "ymax": b.y1,
                          "label": self.classes.names[b.label], "color": self.classes.color_of(b.label)})  # fmt: skip
        return {"image": view, "boxes": boxes}

    def status(self, session: AnnotationSession, sample_id: str) -> str:
        entries = session.entries
        refined = sum(e.refined for e in entries)
        methods = sorted({e.method for e in entries if e.refined})
        dirty = "unsaved changes" if session.dirty else "saved"
        last = session.history[-1]
        return (
            f"**{html.escape(sample_id)}** · {len(entries)} boxes, {refined} refined"
            f"{' (' + ', '.join(methods) + ')' if methods else ''} · {dirty} · last step: {html.escape(last)} · "
            f"{len(session.history) - 1} undo step(s){', redo available' if session.can_redo else ''}"
        )

    def legend(self, session: AnnotationSession) -> str:
        return sample_legend(self.classes, session.label_map, [e.box for e in session.entries])

    def settings(self, method: str, params: dict | None = None) -> RefineSettings:
        """Settings for a method with the parameters set in the tab (see :func:`settings_from_controls`)."""
        return settings_from_controls(method or "auto", params or {})

    def box_choices(self, session: AnnotationSession) -> list[tuple[str, int]]:
        """``("#1 person (15, 12)-(365, 512) · grabcut-fast", 0)`` per box, for the box picker."""
        out = []
        for index, entry in enumerate(session.entries):
            b = entry.box
            state = entry.method if entry.refined else "not refined"
            out.append(
                (f"#{index + 1} {self.classes.names[b.label]} ({b.x0}, {b.y0})-({b.x1}, {b.y1}) · {state}", index)
            )
        return out

    def outputs(self, session: AnnotationSession, sample_id: str, opacity: float):
        """The annotator value, status line, legend and box-picker update after any change."""
        choices = self.box_choices(session)
        picker = gr.Dropdown(choices=choices, value=choices[-1][1] if choices else None)
        return self.annotator_value(session, opacity), self.status(session, sample_id), self.legend(session), picker

    # ---- actions ---------------------------------------------------------------------------

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


def build(ctx: StudioContext, demo: gr.Blocks) -> AnnotateController:
    """Lay out the Annotate tab and wire its events."""
    controller = AnnotateController(ctx)
    object_classes = controller.object_classes()
    default_class = "person" if "person" in object_classes else object_classes[0]
    ids = ctx.dataset.ids
    sample_state = gr.State(None)
    params_state = gr.State({})

    with gr.Row():
        sample = gr.Dropdown(choices=ids, value=None, label="Sample", elem_id="annotate-sample", scale=2)
        new_class = gr.Dropdown(choices=object_classes, value=default_class, label="Class of new boxes",
                                elem_id="annotate-class", scale=1)  # fmt: skip
        method = gr.Dropdown(choices=controller.method_choices(), value="auto", label="Method", elem_id="annotate-method",
                             scale=1)  # fmt: skip
        auto_refine = gr.Checkbox(value=True, label="Refine boxes as I draw", elem_id="annotate-auto", scale=1)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=480):
            annotator = image_annotator(
                value=None, label_list=object_classes, label_colors=[ctx.dataset.classes.color_of(i) for i in range(1, len(ctx.dataset.classes))],
                use_default_label=True, image_type="filepath", sources=[], show_clear_button=False, show_remove_button=True,
                show_download_button=False, height=560, elem_id="annotator", box_min_size=3, boxes_alpha=0.0,
            )  # fmt: skip
            opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Mask opacity", elem_id="annotate-opacity")
            gr.Markdown(
                "Draw a box: press **C** (or the box button under the image) and drag; **D** moves and resizes boxes; "
                "double-click a box to change its class; the bin removes the selected box.",
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
                refine_one = gr.Button("Refine this box", elem_id="refine-one", scale=1)
            save = gr.Button("Save label map and boxes", variant="primary", elem_id="save")
            saved = gr.Markdown(elem_id="save-status")
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
                brush_value = gr.Dropdown(choices=[*object_classes, ERASE, IGNORE], value=default_class,
                                          label="Brush paints", elem_id="brush-value")  # fmt: skip
                editor = gr.ImageEditor(
                    type="numpy", label="Brush: paint strokes, then Apply", elem_id="brush-editor", sources=[],
                    transforms=(), layers=False, height=360, image_mode="RGBA",
                    brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=8),
                )  # fmt: skip
                with gr.Row():
                    apply_brush = gr.Button("Apply strokes", size="sm", elem_id="apply-brush")
                    clear_edits = gr.Button("Clear manual edits", size="sm")
            with gr.Accordion("Method parameters", open=False, elem_id="method-params"):
                controls = {
                    "iterations": gr.Slider(1, 20, value=6, step=1, label="GrabCut iterations (grabcut-fast)"),
                    "working_size": gr.Slider(
                        0, 640, value=160, step=40, label="Working size, px (0 = full resolution)"
                    ),
                    "center_prior": gr.Slider(0, 10, value=3, step=0.5, label="Centre prior strength"),
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
    with gr.Accordion("Compare methods", open=False, elem_id="compare"):
        with gr.Row():
            compare_methods_box = gr.CheckboxGroup(choices=[m for m in METHODS if m != "auto"], value=["grabcut-fast", "grabcut"],
                                                   label="Methods (two or three)", elem_id="compare-methods")  # fmt: skip
            compare_button = gr.Button("Compare on these boxes", elem_id="compare-run")
        compare_gallery = gr.Gallery(columns=4, height=320, label="Masks per method and their disagreement",
                                     elem_id="compare-gallery", allow_preview=True, buttons=[], object_fit="contain")  # fmt: skip
        compare_table = gr.Dataframe(
            label="IoU between methods (object pixels)", elem_id="compare-iou", interactive=False
        )

    view_outputs = [annotator, status, legend, box_pick]
    state_outputs = [*view_outputs, editor]

    def _session(request: gr.Request, sample_id: str) -> AnnotationSession:
        return controller.session(getattr(request, "session_hash", None), sample_id)

    def _editor_value(session: AnnotationSession) -> dict:
        view = overlay(session.image, session.label_map, controller.classes, 0.5)
        return {"background": view, "layers": [], "composite": view}

    @shows_errors
    def on_sample(sample_id: str, alpha: float, request: gr.Request):
        if not sample_id:
            return None, gr.skip(), "Pick a sample, then draw boxes on the image.", "", gr.skip(), gr.skip()
        session = _session(request, sample_id)
        return sample_id, *controller.outputs(session, sample_id, alpha), _editor_value(session)

    @shows_errors
    def on_boxes(value: dict | None, sample_id: str | None, cls: str, meth: str, auto: bool, alpha: float,
                 params: dict, request: gr.Request, progress=gr.Progress()):  # fmt: skip
        if not sample_id or value is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        session = _session(request, sample_id)
        boxes, problems = controller.boxes_from_annotator(value, cls, session.shape)
        for problem in problems:
            gr.Warning(html.escape(problem))
        if boxes == [e.box for e in session.entries] and not problems:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()  # our own update echoing back
        progress(None, desc="refining")
        try:
            session.set_boxes(boxes, refine=auto, settings=controller.settings(meth, params))
        except StudioError as exc:  # keep the drawing usable: warn and show the last good state
            gr.Warning(html.escape(str(exc)))
        return (*controller.outputs(session, sample_id, alpha), _editor_value(session))

    @shows_errors
    def on_refine_all(sample_id: str | None, meth: str, alpha: float, params: dict, request: gr.Request,
                      progress=gr.Progress()):  # fmt: skip
        session = _session(request, sample_id or "")
        progress(None, desc=f"refining {len(session.entries)} boxes with {meth}")
        session.refine(settings=controller.settings(meth, params))
        return (*controller.outputs(session, sample_id, alpha), _editor_value(session))

    @shows_errors
    def on_refine_one(sample_id: str | None, index: int | None, meth: str, alpha: float, params: dict,
                      request: gr.Request):  # fmt: skip
        session = _session(request, sample_id or "")
        if index is None:
            raise InvalidInput("pick a box in the Box list first")
        session.refine([int(index)], settings=controller.settings(meth, params))
        return (*controller.outputs(session, sample_id, alpha), _editor_value(session))

    def _step(action):
        @shows_errors
        def handler(sample_id: str | None, alpha: float, request: gr.Request):
            session = _session(request, sample_id or "")
            action(session)
            return (*controller.outputs(session, sample_id, alpha), _editor_value(session))

        return handler

    @shows_errors
    def on_touch(op: str, sample_id: str | None, kernel: float, area: float, alpha: float, request: gr.Request):
        session = _session(request, sample_id or "")
        session.touch_up(op, int(area) if op == "remove_small" else int(kernel))
        return (*controller.outputs(session, sample_id, alpha), _editor_value(session))

    @shows_errors
    def on_brush(editor_value: dict | None, paint_value: str, sample_id: str | None, alpha: float, request: gr.Request):
        session = _session(request, sample_id or "")
        stroke = stroke_from_editor(editor_value, session.shape)
        if not stroke.any():
            raise InvalidInput("no brush strokes to apply: paint on the brush image first")
        session.brush(stroke, brush_index(controller.classes, paint_value))
        return (*controller.outputs(session, sample_id, alpha), _editor_value(session))

    @shows_errors
    def on_options(rule: str, band: float, sample_id: str | None, alpha: float, request: gr.Request):
        if not sample_id:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        session = _session(request, sample_id)
        session.set_options(overlap=rule, ignore_band=int(band))
        return (*controller.outputs(session, sample_id, alpha), _editor_value(session))

    @shows_errors
    def on_opacity(sample_id: str | None, alpha: float, request: gr.Request):
        if not sample_id:
            return gr.skip()
        return controller.annotator_value(_session(request, sample_id), alpha)

    @shows_errors
    def on_save(sample_id: str | None, alpha: float, request: gr.Request):
        session = _session(request, sample_id or "")
        sample = ctx.dataset.get(sample_id)
        kept_map, kept_boxes = session.save(ctx.dataset, sample)
        kept = [str(p) for p in (kept_map, kept_boxes) if p is not None]
        note = (
            f"; previous versions kept in `{kept[0].rsplit('/.segstudio/', 1)[0]}/.segstudio/history/`" if kept else ""
        )
        message = f"Saved `{sample.label_path}` and the boxes{note}."
        gr.Info("Saved")
        return message, *controller.outputs(session, sample_id, alpha), _editor_value(session)

    @shows_errors
    def on_compare(sample_id: str | None, methods: list[str], params: dict, request: gr.Request,
                   progress=gr.Progress()):  # fmt: skip
        session = _session(request, sample_id or "")
        progress(None, desc="running " + ", ".join(methods))
        return controller.compare(session, methods, params)

    def on_unload(request: gr.Request):
        controller.store.drop(getattr(request, "session_hash", None))

    refine_kwargs = {"concurrency_id": "refine", "concurrency_limit": 2}
    sample.change(on_sample, inputs=[sample, opacity], outputs=[sample_state, *view_outputs, editor])
    new_class.change(lambda c: image_annotator(label_list=[c] + [n for n in object_classes if n != c]),
                     inputs=new_class, outputs=annotator)  # fmt: skip
    for name, control in controls.items():
        control.change(_param_setter(name), inputs=[params_state, control], outputs=params_state)
    annotator.change(on_boxes, inputs=[annotator, sample_state, new_class, method, auto_refine, opacity, params_state],
                     outputs=state_outputs, trigger_mode="always_last", **refine_kwargs)  # fmt: skip
    refine_all.click(on_refine_all, inputs=[sample_state, method, opacity, params_state], outputs=state_outputs,
                     **refine_kwargs)  # fmt: skip
    refine_one.click(on_refine_one, inputs=[sample_state, box_pick, method, opacity, params_state], outputs=state_outputs,
                     **refine_kwargs)  # fmt: skip
    undo.click(_step(lambda s: s.undo()), inputs=[sample_state, opacity], outputs=state_outputs)
    redo.click(_step(lambda s: s.redo()), inputs=[sample_state, opacity], outputs=state_outputs)
    clear_edits.click(_step(lambda s: s.clear_edits()), inputs=[sample_state, opacity], outputs=state_outputs)
    for label, op in TOUCH_UPS.items():
        touch_buttons[label].click(_touch_handler(on_touch, op), inputs=[sample_state, size, min_area, opacity],
                                   outputs=state_outputs)  # fmt: skip
    apply_brush.click(on_brush, inputs=[editor, brush_value, sample_state, opacity], outputs=state_outputs)
    overlap.change(on_options, inputs=[overlap, ignore_band, sample_state, opacity], outputs=state_outputs)
    ignore_band.release(on_options, inputs=[overlap, ignore_band, sample_state, opacity], outputs=state_outputs)
    opacity.release(on_opacity, inputs=[sample_state, opacity], outputs=annotator)
    save.click(on_save, inputs=[sample_state, opacity], outputs=[saved, *state_outputs])
    compare_button.click(on_compare, inputs=[sample_state, compare_methods_box, params_state],
                         outputs=[compare_gallery, compare_table],
                         **refine_kwargs)  # fmt: skip
    demo.unload(on_unload)
    return controller


def _param_setter(name: str):
    """An event handler storing one method-parameter control's value in the parameters state."""

    def handler(params: dict, value: float) -> dict:
        return {**(params or {}), name: value}

    return handler


def settings_from_controls(method: str, params: dict) -> RefineSettings:
    """:class:`RefineSettings` for ``method`` with the tab's parameter values (defaults where unset)."""
    grabcut = {k: params[k] for k in ("iterations", "working_size", "center_prior") if k in params}
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


def _touch_handler(on_touch, operation: str):
    """An event handler bound to one touch-up (annotated, so Gradio injects the request)."""

    def handler(sample_id: str | None, kernel: float, area: float, alpha: float, request: gr.Request):
        return on_touch(operation, sample_id, kernel, area, alpha, request)

    return handler


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
