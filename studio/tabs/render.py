"""Render tab: path-traced renders of 3D meshes with exact label maps, previewed in seconds, rendered in batches in
the background.

Meshes are the bundled procedural ones or a folder (one sub-folder per class, or a ``meshes.json``). The labels are
the dataset's classes (mesh folders named after them) or the meshes' own. Backgrounds are the dataset's images
(labelled ones keep their labels outside the objects; unlabelled ones get 255), a background-only folder (0), or a
procedural backdrop. Batches are written to the workspace (``<workspace>/output/renders/<name>``, a VOC folder with
``manifest.jsonl``; use it as a synthetic source in the experiment or an export), never to the dataset folder.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np

from core.errors import InvalidInput
from core.render.dataset import MANIFEST, RenderJob, load_background
from core.render.engine import INSTALL_HINT, renderer_installed
from core.render.scene import TEXTURES, RenderSettings
from core.train.jobs import job_state, request, start_render_job
from core.train.runs import JOB_FILE, REQUEST_FILE, check_run_name, free_name, read_job
from studio.context import StudioContext
from studio.errors import shows_errors

TICK_S = 2.0
PREVIEW_SAMPLES = 8
SIZES = (128, 256, 384, 512, 768, 1024)
STATE_WORDS = {"starting": "starting", "running": "rendering", "paused": "paused", "cancelled": "cancelled",
               "finished": "finished", "failed": "failed", "idle": "not running", "stopped": "stopped"}  # fmt: skip


class RenderController:
    """The tab's logic, without widgets (tests drive it directly)."""

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx

    @property
    def root(self) -> Path:
        return self.ctx.config.workspace.output_root / "renders"

    def batches(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if (p / JOB_FILE).is_file() or (p / MANIFEST).is_file()]
        return [p.name for p in sorted(found, key=lambda p: p.stat().st_ctime, reverse=True)]

    def choices(self) -> list[tuple[str, str]]:
        out = []
        for name in self.batches():
            job = read_job(self.root / name)
            state = job_state(self.root / name)[0]
            out.append((f"{name} · {job.get('step', 0)}/{job.get('steps', '?')} · {STATE_WORDS.get(state, state)}", name))
        return out

    def default_name(self) -> str:
        return free_name(self.root, "renders")

    def job_from_form(self, values: dict, name: str = "preview", count: int = 1, seed: int = 0) -> RenderJob:
        """A :class:`RenderJob` from the form. ``values``: meshes (folder or empty), label_classes ("dataset" or
        "meshes"), dataset_backgrounds (bool), backgrounds (folder or empty), size, samples, objects_min/max,
        size_min/max, truncation, visible, distance_min/max, elevation_min/max, focal_min/max, lights_max, textures."""
        settings = RenderSettings(
            size=(int(values["size"]), int(values["size"])), samples=int(values.get("samples") or 64),
            objects=(int(values.get("objects_min") or 1), int(values.get("objects_max") or 4)),
            object_size=(float(values.get("size_min") or 0.2), float(values.get("size_max") or 0.5)),
            max_truncation=float(values.get("truncation") if values.get("truncation") is not None else 0.3),
            min_visible=float(values.get("visible") or 0.25),
            camera_distance=(float(values.get("distance_min") or 4), float(values.get("distance_max") or 8)),
            camera_elevation=(float(values.get("elevation_min") or 0), float(values.get("elevation_max") or 60)),
            focal_mm=(float(values.get("focal_min") or 35), float(values.get("focal_max") or 70)),
            lights=(1, max(1, int(values.get("lights_max") or 3))),
            textures=tuple(values.get("textures") or ("none",)),
        )  # fmt: skip
        meshes = str(values.get("meshes") or "").strip()
        if meshes and not Path(meshes).is_dir():
            raise InvalidInput(f"mesh folder {meshes} does not exist; give a folder with one sub-folder of mesh files "
                               "per class, or leave it empty for the bundled meshes")  # fmt: skip
        backgrounds = str(values.get("backgrounds") or "").strip()
        store = self.ctx.store
        return RenderJob(out=str(self.root / check_run_name(name)), count=int(count), seed=int(seed),
                         settings=settings.to_json(), meshes=meshes, data=str(store.root),
                         cache_dir=str(store.cache_dir), backgrounds=backgrounds,
                         dataset_classes=values.get("label_classes") == "dataset",
                         dataset_backgrounds=bool(values.get("dataset_backgrounds")))  # fmt: skip

    def library_text(self, values: dict) -> str:
        """What the chosen meshes hold: classes with counts, files left out and why."""
        job = self.job_from_form(values)
        _, library, classes, pool, _ = job.prepare()
        lines = [f"**{library.count()} meshes** in {len(library.classes())} classes: " +
                 ", ".join(f"{c} ({len(library.by_class[c])})" for c in library.classes()),  # fmt: skip
                 f"Labels: {', '.join(classes.names)} · backgrounds: {_pool_summary(pool)}"]
        lines += [f"- left out: `{html.escape(p)}`: {html.escape(why)}" for p, why in library.skipped[:12]]
        return "  \n".join(lines)

    def preview(self, values: dict, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
        """One render at :data:`PREVIEW_SAMPLES` samples: ``(image, colourised labels beside the instance map,
        the scene description as JSON)``."""
        from core.render.render import render_seed
        from core.viz import colorize

        job = self.job_from_form(values, seed=seed)
        settings, library, classes, pool, store = job.prepare()
        settings = replace(settings, samples=min(settings.samples, PREVIEW_SAMPLES))
        background = pool[int(np.random.default_rng([int(seed), 11]).integers(len(pool)))]
        image, labels, doc = load_background(background, settings.size, int(seed), store)
        result = render_seed(int(seed), settings, library, list(classes.names), image, doc, labels)
        shown = colorize(result.label_map, classes)
        instances = _instance_colours(result.instance_map)
        scene = json.dumps(result.scene, indent=1)
        return result.image, np.concatenate([shown, instances], axis=1), scene

    def start(self, name: str, values: dict, count: int, seed: int) -> str:
        job = self.job_from_form(values, name, count, seed)
        job.prepare()  # refuse bad settings here, not in the background
        start_render_job(job)
        return Path(job.out).name

    def resume(self, name: str) -> str:
        folder = self.folder(name)
        req = json.loads((folder / REQUEST_FILE).read_text(encoding="utf-8"))
        start_render_job(RenderJob.from_json(req["render"]), resume=True)
        return f"continuing {name}"

    def control(self, name: str, action: str) -> str:
        request(self.folder(name), action)
        return {"pause": f"asked {name} to pause", "run": f"{name} goes on",
                "cancel": f"asked {name} to stop (finished samples stay)"}[action]  # fmt: skip

    def folder(self, name: str | None) -> Path:
        if not name:
            raise InvalidInput("no batch is chosen; start one or pick one from the list")
        path = self.root / check_run_name(name)
        if not (path / REQUEST_FILE).is_file():
            raise InvalidInput(f"there is no batch named {name!r} in {self.root}")
        return path

    def status(self, name: str | None) -> tuple[str, list[str], bool, bool, bool]:
        """``(status text, the latest images, live, paused, resumable)`` of a batch."""
        if not name or not (self.root / name).is_dir():
            return "No batch yet: preview, then press **Render**.", [], False, False, False
        folder = self.root / name
        state, message = job_state(folder)
        job = read_job(folder)
        images = sorted((folder / "JPEGImages").glob("*.png"))[-8:] if (folder / "JPEGImages").is_dir() else []
        live = state in ("starting", "running", "paused")
        text = (f"**{STATE_WORDS.get(state, state)}** · {job.get('step', 0)} of {job.get('steps', '?')} samples · "
                f"{html.escape(str(folder))}  \n{html.escape(message or str(job.get('message', '')))}")  # fmt: skip
        resumable = not live and int(job.get("step", 0)) < int(job.get("steps", 0) or 0)
        return text, [str(p) for p in images], live, state == "paused", resumable


def _pool_summary(pool) -> str:
    kinds: dict[str, int] = {}
    for b in pool:
        kinds[b.kind] = kinds.get(b.kind, 0) + 1
    words = {"plain": "procedural backdrop", "folder": "background-only images (0)",
             "sample": "labelled samples (labels kept)", "unlabelled": "unlabelled images (255)"}  # fmt: skip
    return ", ".join(f"{n} {words[k]}" if k != "plain" else words[k] for k, n in kinds.items())


def _instance_colours(ids: np.ndarray) -> np.ndarray:
    """``H x W x 3 uint8``: each instance id a fixed colour, 0 black."""
    rng = np.random.default_rng(3)
    table = rng.integers(60, 255, (256, 3)).astype(np.uint8)
    table[0] = 0
    return table[ids]


def build(ctx: StudioContext, demo: gr.Blocks) -> RenderController:
    """Lay out the Render tab and wire its events."""
    controller = RenderController(ctx)
    if not renderer_installed():
        gr.Markdown(f"3D rendering needs Mitsuba 3, which is not installed here. Install it with "
                    f"`{html.escape(INSTALL_HINT)}` and restart the studio.", elem_id="render-missing")  # fmt: skip
        return controller
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=360):
            gr.Markdown("Path-traced renders of 3D meshes, composed over backgrounds, with **exact** label maps "
                        "(one ray per pixel centre) and instance maps.")  # fmt: skip
            meshes = gr.Textbox(label="Mesh folder (one sub-folder per class; empty: the bundled meshes)",
                                placeholder="/path/to/meshes", elem_id="render-meshes")  # fmt: skip
            label_classes = gr.Radio([("the meshes' own classes", "meshes"), ("this dataset's classes", "dataset")],
                                     value="meshes", label="Label with", elem_id="render-classes")  # fmt: skip
            with gr.Row():
                dataset_backgrounds = gr.Checkbox(value=False, label="Backgrounds from this dataset",
                                                  elem_id="render-dataset-bg")  # fmt: skip
                backgrounds = gr.Textbox(label="Background-only folder (optional)", elem_id="render-bg-folder")
            library = gr.Markdown(elem_id="render-library")
            with gr.Row():
                size = gr.Dropdown(list(SIZES), value=256, label="Size (px)", elem_id="render-size")
                samples = gr.Number(value=64, precision=0, minimum=1, label="Samples per pixel", elem_id="render-spp")
            with gr.Row():
                objects_min = gr.Number(value=1, precision=0, minimum=1, label="Objects from", elem_id="render-obj-min")
                objects_max = gr.Number(value=4, precision=0, minimum=1, label="to", elem_id="render-obj-max")
                size_min = gr.Number(value=0.2, label="Object size from (share of width)", elem_id="render-size-min")
                size_max = gr.Number(value=0.5, label="to", elem_id="render-size-max")
            with gr.Accordion("Camera, lights, materials, limits", open=False):
                with gr.Row():
                    distance_min = gr.Number(value=4, label="Camera distance from", elem_id="render-dist-min")
                    distance_max = gr.Number(value=8, label="to", elem_id="render-dist-max")
                    elevation_min = gr.Number(value=5, label="Elevation from (°)", elem_id="render-el-min")
                    elevation_max = gr.Number(value=60, label="to", elem_id="render-el-max")
                with gr.Row():
                    focal_min = gr.Number(value=35, label="Focal length from (mm)", elem_id="render-focal-min")
                    focal_max = gr.Number(value=70, label="to", elem_id="render-focal-max")
                    lights_max = gr.Number(value=3, precision=0, minimum=1, label="Lights up to", elem_id="render-lights")
                with gr.Row():
                    truncation = gr.Number(value=0.3, label="Max truncation", elem_id="render-trunc")
                    visible = gr.Number(value=0.25, label="Min visible share", elem_id="render-visible")
                    textures = gr.CheckboxGroup(list(TEXTURES), value=["none", "checker"], label="Textures",
                                                elem_id="render-textures")  # fmt: skip
            with gr.Row():
                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="render-seed")
                preview = gr.Button("Preview", elem_id="render-preview")
            with gr.Row():
                count = gr.Number(value=20, precision=0, minimum=1, label="Samples to render", elem_id="render-count")
                name = gr.Textbox(value=controller.default_name(), label="Batch name", elem_id="render-name")
                start = gr.Button("Render", variant="primary", elem_id="render-start", min_width=90)
            note = gr.HTML(elem_id="render-note")
        with gr.Column(scale=6, min_width=480):
            preview_image = gr.Image(label="Preview (8 samples per pixel)", interactive=False, height=320,
                                     elem_id="render-preview-image")  # fmt: skip
            preview_labels = gr.Image(label="Label map · instance map", interactive=False, height=240,
                                      elem_id="render-preview-labels")  # fmt: skip
            with gr.Accordion("Scene description (JSON)", open=False):
                scene_json = gr.Code(language="json", elem_id="render-scene")
            with gr.Row(equal_height=True):
                pick = gr.Dropdown(controller.choices(), value=None, label="Batch", elem_id="render-pick", scale=4)
                refresh = gr.Button("↻", size="sm", elem_id="render-refresh", scale=0, min_width=44)
            status = gr.Markdown(elem_id="render-status")
            with gr.Row():
                pause = gr.Button("Pause", elem_id="render-pause", interactive=False)
                go_on = gr.Button("Continue", elem_id="render-continue", interactive=False)
                cancel = gr.Button("Cancel", variant="stop", elem_id="render-cancel", interactive=False)
                resume = gr.Button("Resume", elem_id="render-resume", interactive=False)
            gallery = gr.Gallery(label="Latest renders", columns=4, height=280, elem_id="render-gallery")
    form_names = ("meshes", "label_classes", "dataset_backgrounds", "backgrounds", "size", "samples", "objects_min",
                  "objects_max", "size_min", "size_max", "distance_min", "distance_max", "elevation_min",
                  "elevation_max", "focal_min", "focal_max", "lights_max", "truncation", "visible", "textures")  # fmt: skip
    form = [meshes, label_classes, dataset_backgrounds, backgrounds, size, samples, objects_min, objects_max, size_min,
            size_max, distance_min, distance_max, elevation_min, elevation_max, focal_min, focal_max, lights_max,
            truncation, visible, textures]  # fmt: skip
    shown = [pick, status, gallery, pause, go_on, cancel, resume]
    seen = gr.State("")
    timer = gr.Timer(TICK_S, active=True)

    def values_of(args) -> dict:
        return dict(zip(form_names, args, strict=True))

    def render_batch(chosen: str | None, pick_value: bool = False):
        text, images, live, paused, resumable = controller.status(chosen)
        choices = controller.choices()
        chooser = gr.Dropdown(choices=choices, value=chosen) if pick_value else gr.Dropdown(choices=choices)
        return (chooser, text, images, gr.Button(interactive=live and not paused), gr.Button(interactive=paused),
                gr.Button(interactive=live), gr.Button(interactive=resumable))  # fmt: skip

    @shows_errors
    def on_library(*args):
        return controller.library_text(values_of(args))

    @shows_errors
    def on_preview(seed_value, *args):
        return controller.preview(values_of(args), int(seed_value or 0))

    @shows_errors
    def on_start(batch, n, seed_value, *args):
        chosen = controller.start(batch, values_of(args), int(n or 1), int(seed_value or 0))
        return (f"<p>started <b>{html.escape(chosen)}</b> in {html.escape(str(controller.root / chosen))}</p>",
                controller.default_name(), *render_batch(chosen, pick_value=True))  # fmt: skip

    def acting(action: str):
        @shows_errors
        def handler(chosen):
            message = controller.control(chosen, action)
            time.sleep(0.3)
            return (f"<p>{html.escape(message)}</p>", *render_batch(chosen))

        return handler

    @shows_errors
    def on_resume(chosen):
        return (f"<p>{html.escape(controller.resume(chosen))}</p>", *render_batch(chosen))

    def on_tick(chosen, last):
        if not chosen:
            return (*[gr.skip() for _ in shown], last)
        stamp = str(read_job(controller.root / chosen)) + str(job_state(controller.root / chosen))
        if stamp == last:
            return (*[gr.skip() for _ in shown], last)
        return (*render_batch(chosen), stamp)

    def on_refresh(chosen):
        names = controller.batches()
        return render_batch(chosen if chosen in names else (names[0] if names else None), pick_value=True)

    for box in (meshes, label_classes, dataset_backgrounds, backgrounds):
        box.change(on_library, form, [library])
    preview.click(on_preview, [seed, *form], [preview_image, preview_labels, scene_json])
    start.click(on_start, [name, count, seed, *form], [note, name, *shown])
    pick.input(render_batch, [pick], shown)
    refresh.click(on_refresh, [pick], shown)
    pause.click(acting("pause"), [pick], [note, *shown])
    go_on.click(acting("run"), [pick], [note, *shown])
    cancel.click(acting("cancel"), [pick], [note, *shown])
    resume.click(on_resume, [pick], [note, *shown])
    timer.tick(on_tick, [pick, seen], [*shown, seen], queue=False, show_progress="hidden")
    demo.load(on_library, form, [library])
    demo.load(on_refresh, [pick], shown)
    return controller
