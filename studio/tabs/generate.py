"""The Generate tab: controllable diffusion (ControlNet, T2I-Adapter), a GAN trained on the dataset (a run of the
Train tab or ``segstudio train``) and cut-and-paste compositing for a sample's label map, with progress, cancel, a
gallery of results and keeping them as new samples."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np

from core.errors import InvalidInput
from core.generate.composite import BLENDINGS, CompositeParams, CompositeRequest, composite_or_skip
from core.generate.diffusion import DEFAULT_NEGATIVE, DiffusionSettings
from core.generate.runner import condition_and_prompt, generate_sample
from core.labels.overlay import POSITIONS, Placement
from core.labels.recombine import RecombinedSample, RegionLibrary, keep_once
from core.labels.roles import reset_roles, save_stuff, stuff_classes
from core.priors.pipeline import priors_dir
from core.progress import CancelToken
from core.viz import colorize, grid, overlay
from studio.errors import shows_errors
from studio.session_store import SessionStore

if TYPE_CHECKING:
    from studio.context import StudioContext

BACKENDS = ("composite", "controlnet", "t2i-adapter", "gan")
GAN_MAPS = (("the chosen sample's label map", "sample"), ("label maps kept in the Label maps tab", "recombined"))
NO_RUN = ("**No GAN run yet.** Train one in the Train tab or with `segstudio train --kind label2image --data DIR "
          "--out RUN` (pair: new image + label-map samples), then pick it here or type its folder below.")


class GenerateController:
    """The tab's logic, independent of the layout."""

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx
        self.per_session = SessionStore(per_session=4)
        self._library: RegionLibrary | None = None

    @property
    def classes(self):
        return self.ctx.dataset.classes

    @property
    def kept_dir(self) -> Path:
        return self.ctx.config.workspace.output_root / "generated"

    @property
    def priors_root(self) -> Path:
        return priors_dir(self.ctx.config.workspace.output_root).parent

    def library(self) -> RegionLibrary:
        """Object regions of the current dataset (rebuilt whenever the dataset changed)."""
        if self._library is None or self._library.version != self.ctx.store.version:
            self._library = RegionLibrary(self.ctx.store)
        return self._library

    @property
    def runs_root(self) -> Path:
        """Where this dataset's training runs live (``<workspace cache>/train_runs``)."""
        from core.train.runs import runs_root

        return runs_root(self.ctx.config.workspace.cache_root)

    @property
    def recombined_dir(self) -> Path:
        """Where the Label maps tab keeps recombined samples."""
        return self.ctx.config.workspace.output_root / "recombined"

    def gan_runs(self) -> list:
        """The dataset's training runs (:class:`core.train.runs.RunInfo`), newest first."""
        from core.train.runs import list_runs

        return list_runs(self.runs_root)

    def model_choices(self, backend: str) -> list[tuple[str, str]]:
        """Control models of a backend, marked when their weights (or their base's) are missing; for ``gan``, the
        dataset's training runs (value: the run folder), marked when they have no checkpoint yet."""
        if backend == "composite":
            return [("compositing (always available)", "composite")]
        if backend == "gan":
            return [(_run_label(run), str(run.path)) for run in self.gan_runs()]
        out = []
        for spec in self.ctx.registry.specs(task=backend):
            ok = self.ctx.registry.status(spec.id).available and self.ctx.registry.status(spec.base).available
            out.append((spec.id if ok else f"{spec.id} (weights missing)", spec.id))
        return out

    def gan_status(self, run: str | None) -> tuple[str, bool]:
        """A line on a GAN run (what it does, or why it cannot be used) and whether it can run."""
        from core.errors import StudioError
        from core.generate.gan import check_classes, read_run

        if not (run or "").strip():
            if not self.gan_runs():
                return NO_RUN + f" Runs of this dataset are listed from `{self.runs_root}`.", False
            return "Pick a run (or type a run folder).", False
        try:
            facts = read_run(run)
            check_classes(facts, self.classes)
        except StudioError as exc:
            return "**Unavailable.** " + html.escape(str(exc)), False
        what = ("keeps the label maps (the chosen sample's, or those kept in the Label maps tab) and makes their images"
                if facts.kind == "label2image" else "makes new samples, image and label map (the sample is not used)")  # fmt: skip
        return f"Ready: {facts.kind} run `{facts.path.name}` at step {facts.step} ({facts.size} px): {what}.", True

    def model_status(self, backend: str, model_id: str | None) -> str:
        """A line saying whether the model can run, or exactly which files to install where."""
        if backend == "gan":
            return self.gan_status(model_id)[0]
        if backend == "composite" or not model_id:
            return "Compositing needs no model weights."
        messages = []
        for model in (model_id, self.ctx.registry.spec(model_id).base):
            status = self.ctx.registry.status(model)
            if not status.available:
                messages.append(html.escape(status.install_message()))
        return "Ready." if not messages else "**Unavailable.** " + " ".join(messages)

    def source_views(self, sample_id: str) -> tuple[np.ndarray, np.ndarray | None, str, str]:
        """The sample with its label map overlaid, its condition image, prompt and a note on where they come from."""
        data = self.ctx.store.read(sample_id)
        image, label_map = data.image, data.label_map
        if label_map is None:
            raise InvalidInput(data.label_problem or f"{sample_id!r} has no label map yet: generators keep a label map "
                               "and make its image")  # fmt: skip
        condition, prompt, _, origin = condition_and_prompt(
            self.ctx.dataset, sample_id, "canny", self.priors_root, None
        )
        note = ("condition image and prompt saved in the Priors tab" if origin["source"] == "saved"
                else "no saved prior: Canny + class boundaries and the class names (save one in the Priors tab)")  # fmt: skip
        return overlay(image, label_map, self.classes, 0.5), condition, prompt, note

    def run_diffusion(self, session, sample_id, backend, model_id, settings: DiffusionSettings, progress) -> list:
        token = self.cancel_token(session)
        token.reset()
        results = generate_sample(self.ctx.dataset, sample_id, backend, model_id, settings, priors_root=self.priors_root,
                                  registry=self.ctx.registry, progress=progress, cancel=token)  # fmt: skip
        return self._remember(session, results)

    def run_gan(self, session, run: str, maps: str, sample_id: str | None, seed: int, count: int, progress) -> list:
        """GAN results: a pair run's new samples; a label2image run's ``count`` images for the chosen sample's
        label map (``maps="sample"``) or over the maps kept in the Label maps tab (``"recombined"``); sample ``i``
        uses seed ``seed + i``. The maps are kept byte-identical."""
        from core.generate import gan

        token = self.cancel_token(session)
        token.reset()
        note, ok = self.gan_status(run)
        if not ok:
            raise InvalidInput(note.replace("**", ""))
        settings = gan.GanSettings(run=run.strip(), count=int(count), seed=int(seed or 0))
        facts = gan.read_run(settings.run)
        if facts.kind == "pair":
            results = gan.generate_pairs(settings, self.classes, progress=progress, cancel=token)
        elif maps == "recombined":
            results = gan.generate_for_maps(self.recombined_maps(), settings, self.classes, progress=progress,
                                            cancel=token, provenance={"maps_folder": str(self.recombined_dir)})  # fmt: skip
        else:
            if not sample_id:
                raise InvalidInput("pick a sample with a label map first (or take the maps kept in the Label maps tab)")
            results = gan.generate_for_sample(self.ctx.dataset, sample_id, settings, progress=progress, cancel=token)
        return self._remember(session, results)

    def recombined_maps(self) -> list[tuple[str, np.ndarray]]:
        """``(id, H x W uint8 label map)`` of every sample kept in the Label maps tab, in the order kept; unreadable
        maps are left out."""
        from core.errors import StudioError
        from core.io.images import load_label_map
        from core.labels.recombine import read_manifest

        out = []
        for sample_id in read_manifest(self.recombined_dir):
            try:
                out.append((sample_id, load_label_map(self.recombined_dir / "SegmentationClass" / f"{sample_id}.png",
                                                      self.classes)))  # fmt: skip
            except StudioError:
                continue
        if not out:
            raise InvalidInput(f"no label map is kept in {self.recombined_dir} yet: keep recombinations in the Label "
                               "maps tab first, or use the chosen sample's label map")  # fmt: skip
        return out

    def run_composite(self, session, request: CompositeRequest, progress) -> list:
        token = self.cancel_token(session)
        token.reset()
        results = []
        for i in range(request.count):
            token.raise_if_cancelled("compositing")
            progress(i / request.count, f"composite {i + 1}/{request.count}")
            made = composite_or_skip(self.library(), request, i)
            if made is not None:
                results.append(made)
        if not results:
            raise InvalidInput(f"none of the {request.count} composites fitted an object within the limits: "
                               f"{self.library().skipped.summary()}")  # fmt: skip
        return self._remember(session, results)

    def preview_grid(self, request: CompositeRequest, progress) -> tuple[np.ndarray, str]:
        """A 4 x 4 grid of composites (each: image beside its label map), ``H x W x 3 uint8``, and a summary
        line (objects pasted, skipped, median area share)."""
        from dataclasses import replace

        from core.generate.composite import pasted_shares

        request = replace(request, count=16)
        tiles, shares, skipped = [], [], 0
        for i in range(16):
            progress(i / 16, f"preview {i + 1}/16")
            sample = composite_or_skip(self.library(), request, i)
            if sample is None:
                skipped += 1
                continue
            image, labels = sample.result.image, sample.result.label_map
            tiles.append(np.concatenate([image, colorize(labels, self.classes)], axis=1))
            shares += pasted_shares(sample)
            skipped += sum("skipped" in s and not s.get("distractor") for s in sample.record["steps"])
        if not tiles:
            raise InvalidInput("none of the 16 composites fitted an object within the limits; raise the overlap limits "
                               "or narrow the area shares")  # fmt: skip
        median = f"{100 * float(np.median(shares)):.1f} %" if shares else "n/a"
        note = (f"16 composites (seed {request.seed}, each image beside its label map): {len(shares)} objects pasted, "
                f"{skipped} skipped (no placement within the limits), median object area {median} of the image.")  # fmt: skip
        aspect = float(np.median([t.shape[0] / t.shape[1] for t in tiles]))  # cells shaped like the tiles: no bands
        return grid(tiles, columns=4, cell=(320, max(40, round(320 * aspect)))), note

    def roles(self) -> list[str]:
        """Names of the dataset's stuff classes (the workspace edits, else the class set's roles)."""
        return [self.classes.names[i] for i in stuff_classes(self.ctx.store)]

    def save_roles(self, names: list[str] | None) -> str:
        """Save the stuff classes in the workspace (never the dataset folder)."""
        saved = save_stuff(self.ctx.store, names or [])
        self._library = None
        listed = ", ".join(self.classes.names[i] for i in saved) or "none"
        return f"Stuff classes saved in the workspace (the dataset folder is unchanged): {listed}."

    def reset_roles(self) -> tuple[list[str], str]:
        reset_roles(self.ctx.store)
        self._library = None
        return self.roles(), "Class roles back to the class set's defaults."

    def _remember(self, session, results: list[RecombinedSample]) -> list:
        self.per_session.put(session, "results", results)
        return [(self.render(r), self.caption(r)) for r in results]

    def render(self, sample: RecombinedSample) -> np.ndarray:
        """The generated image beside its label map overlay (GAN results: beside the label map in the class
        colours), ``H x 2W x 3 uint8``."""
        image = sample.result.image
        if sample.record.get("mode") == "gan":
            return np.concatenate([image, colorize(sample.result.label_map, self.classes)], axis=1)
        return np.concatenate([image, overlay(image, sample.result.label_map, self.classes, 0.5)], axis=1)

    @staticmethod
    def caption(sample: RecombinedSample) -> str:
        record = sample.record
        where = record.get("source") or record.get("background") or "new sample"
        mode = f"gan {record['kind']}" if record["mode"] == "gan" and record.get("kind") else record["mode"]
        return f"{mode} · {where} · seed {record['seed']} #{record['index']}"

    def cancel_token(self, session) -> CancelToken:
        return self.per_session.get(session, "cancel", CancelToken)

    def keep(self, session, indices: list[int] | None) -> tuple[list[str], list[str]]:
        """Save results (all when ``indices`` is None) as new samples with their settings records; a result
        kept before is not written again. Returns ``(new ids, ids kept before)``."""
        results = self.per_session.peek(session, "results")
        if not results:
            raise InvalidInput("generate something first: there is nothing to keep")
        return keep_once(self.kept_dir, self.classes, results, indices)


def _diffusion_settings(
    prompt, negative, steps, guidance, scale, width, height, seed, count, batch, slicing, tiling, offload
):
    return DiffusionSettings(
        prompt=prompt or "", negative_prompt=negative or "", steps=int(steps), guidance_scale=float(guidance),
        conditioning_scale=float(scale), width=int(width) or None, height=int(height) or None, seed=int(seed or 0),
        count=int(count), batch_size=int(batch), attention_slicing=bool(slicing), vae_tiling=bool(tiling),
        cpu_offload=bool(offload),
    )  # fmt: skip


def _composite_request(classes, names, lo, hi, blending, size, distractors, truncation, overlap, smin, smax, rotate,
                       seed, count, background: str | None = None, any_background: bool = False, *,
                       size_mode: str = "data", min_share: float = 0.0, max_share: float = 1.0,
                       background_overlap: float = 0.3, position: str = "around", ground_plane: bool = False,
                       horizon: float = 0.4) -> CompositeRequest:  # fmt: skip
    """The compositing request of the tab's settings (area shares in percent are converted by the caller)."""
    placement = Placement(mode="random", max_translate=0.5, scale=(float(smin), float(smax)), max_rotate=float(rotate),
                          size=size_mode, min_area_share=float(min_share), max_area_share=float(max_share),
                          max_stretch=1.2 if size_mode == "data" else 1.0, position=position,
                          ground_plane=bool(ground_plane), horizon=float(horizon))  # fmt: skip
    params = CompositeParams(placement, (int(lo), int(max(lo, hi))), float(truncation), float(overlap), blending,
                             int(size), int(distractors), background_overlap=float(background_overlap))  # fmt: skip
    for name in names or []:
        classes.index_of(name)
    return CompositeRequest(tuple(names or ()), int(count), int(seed or 0), params,
                            (background,) if background else None,
                            background_pool="all" if any_background else "labelled")  # fmt: skip


def _run_label(run) -> str:
    """How the run picker shows a run: name, kind, step, and what stops it from being used."""
    label = f"{run.name} · {run.kind} · step {run.step}/{run.steps}"
    if not run.has_checkpoint:
        return label + " (no checkpoint yet)"
    return label + (f" · {run.state}" if run.state in ("starting", "running", "paused") else "")


def _kept_message(new: list[str], before: list[str], folder) -> str:
    parts = []
    if new:
        parts.append(f"Kept {', '.join(new)} in `{folder}` (manifest.jsonl holds each one's settings).")
    if before:
        parts.append(f"Already kept before, not written again: {', '.join(before)}.")
    return " ".join(parts)


def build(ctx: StudioContext, demo: gr.Blocks, live: gr.State) -> GenerateController:
    """Lay out the Generate tab and wire its events (``live`` changes when the dataset does)."""
    controller = GenerateController(ctx)
    with gr.Row():  # the labelled samples are listed when the page loads (checking maps is not start-up work)
        sample = gr.Dropdown(choices=[], value=None, label="Sample (its label map is kept)", elem_id="gen-sample",
                             scale=2)  # fmt: skip
        backend = gr.Radio(list(BACKENDS), value="composite", label="Backend", elem_id="gen-backend", scale=2)
        model = gr.Dropdown(choices=controller.model_choices("composite"), value="composite", label="Model",
                            elem_id="gen-model", scale=2)  # fmt: skip
    model_note = gr.Markdown(controller.model_status("composite", None), elem_id="gen-model-note")
    with gr.Group(visible=False) as gan_box:  # shown for the gan backend
        with gr.Row():
            gan_path = gr.Textbox(label="…or a run folder (path; overrides the picked run)", elem_id="gen-gan-path",
                                  placeholder="/path/to/run (written by segstudio train --out RUN)", scale=3)  # fmt: skip
            gan_maps = gr.Radio(list(GAN_MAPS), value="sample", elem_id="gen-gan-maps", scale=3,
                                label="Label maps (label2image runs; pair runs make their own)")  # fmt: skip
            gan_refresh = gr.Button("↻ Runs", elem_id="gen-gan-refresh", scale=1, min_width=80)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            source_view = gr.Image(
                label="Source · label map", type="numpy", interactive=False, height=240, elem_id="gen-source"
            )
            condition_view = gr.Image(
                label="Condition image", type="numpy", interactive=False, height=240, elem_id="gen-condition"
            )
            source_note = gr.Markdown(elem_id="gen-source-note")
            with gr.Row():
                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="gen-seed")
                count = gr.Slider(1, 16, value=4, step=1, label="Images", elem_id="gen-count")
            with gr.Accordion("Diffusion settings", open=False):
                prompt = gr.Textbox(
                    label="Prompt (empty: the saved prompt, else the class names)", lines=2, elem_id="gen-prompt"
                )
                negative = gr.Textbox(value=DEFAULT_NEGATIVE, label="Negative prompt")
                steps = gr.Slider(1, 100, value=30, step=1, label="Steps")
                guidance = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance scale")
                scale = gr.Slider(0, 2, value=1.0, step=0.05, label="Conditioning scale")
                with gr.Row():
                    width = gr.Number(value=0, precision=0, label="Width (0: auto)")
                    height = gr.Number(value=0, precision=0, label="Height (0: auto)")
                    batch = gr.Slider(1, 8, value=1, step=1, label="Batch size")
                with gr.Row():
                    slicing = gr.Checkbox(label="Attention slicing")
                    tiling = gr.Checkbox(label="VAE tiling")
                    offload = gr.Checkbox(label="CPU offload")
            with gr.Accordion("Compositing settings", open=True):
                composite_classes = gr.Dropdown(choices=list(ctx.dataset.classes.names[1:]), value=[], multiselect=True,
                                                label="Classes to paste (empty: all labelled)", elem_id="gen-classes")  # fmt: skip
                with gr.Row():
                    min_objects = gr.Slider(1, 10, value=1, step=1, label="Objects, at least")
                    max_objects = gr.Slider(1, 10, value=2, step=1, label="at most")
                with gr.Row():
                    blending = gr.Dropdown(list(BLENDINGS), value="gaussian", label="Blending", elem_id="gen-blending")
                    blend_size = gr.Slider(1, 20, value=3, step=1, label="Blend size (px)")
                    distractors = gr.Slider(0, 5, value=0, step=1, label="Distractors")
                with gr.Row():
                    truncation = gr.Slider(0, 1, value=0.3, step=0.05, label="Max truncation")
                    overlap = gr.Slider(0, 1, value=0.3, step=0.05, label="Max overlap")
                any_background = gr.Checkbox(
                    value=False, elem_id="gen-any-background",
                    label="Composite onto images without a label map too (their pixels outside pasted objects become "
                          "255, ignore, never background)",
                )  # fmt: skip
                with gr.Row():
                    size_mode = gr.Radio([("from the data", "data"), ("relative scale", "relative")], value="data",
                                         label="Object sizes", elem_id="gen-size-mode",
                                         info="from the data: each class's object sizes in this dataset's label maps")  # fmt: skip
                    bg_overlap = gr.Slider(0, 1, value=0.3, step=0.05, label="Max hidden share of a background object",
                                           elem_id="gen-bg-overlap")  # fmt: skip
                with gr.Row():
                    min_share = gr.Slider(0, 100, value=0, step=0.5, label="Object area from (% of image)")
                    max_share = gr.Slider(0, 100, value=100, step=0.5, label="to (%)")
                with gr.Row():
                    min_scale = gr.Slider(0.1, 3, value=0.5, step=0.05, label="Relative scale from")
                    max_scale = gr.Slider(0.1, 3, value=1.2, step=0.05, label="to")
                    rotate = gr.Slider(0, 180, value=15, step=1, label="Max rotation (°)")
                with gr.Row():
                    position = gr.Dropdown(list(POSITIONS), value="around", label="Position", elem_id="gen-position",
                                           info="around the source position, anywhere, or where the class occurs in the data")  # fmt: skip
                    ground_plane = gr.Checkbox(value=False, label="Ground plane (lower objects larger)",
                                               elem_id="gen-ground-plane")  # fmt: skip
                    horizon = gr.Slider(0, 0.9, value=0.4, step=0.05, label="Horizon (share from the top)")
            with gr.Accordion("Class roles (stuff is never cut out as an object)", open=False):
                stuff = gr.Dropdown(choices=list(ctx.dataset.classes.names), value=[], multiselect=True,
                                    label="Stuff classes (sky, road, wall, ...)", elem_id="gen-stuff")  # fmt: skip
                with gr.Row():
                    save_stuff_btn = gr.Button("Save roles (workspace)", elem_id="gen-stuff-save")
                    reset_stuff_btn = gr.Button("Back to defaults", elem_id="gen-stuff-reset")
                roles_note = gr.Markdown(elem_id="gen-roles-note")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="gen-run")
                preview = gr.Button("Preview 4 × 4", elem_id="gen-preview")
                cancel = gr.Button("Cancel", variant="stop", elem_id="gen-cancel")
        with gr.Column(scale=3, min_width=420):
            results = gr.Gallery(label="Results (image · label map); click one, then Keep selected", columns=1, height=620,
                                 allow_preview=True, object_fit="contain", elem_id="gen-results", buttons=[])  # fmt: skip
            selected = gr.State(None)
            with gr.Row():
                keep_one = gr.Button("Keep selected", elem_id="gen-keep")
                keep_all = gr.Button("Keep all", elem_id="gen-keep-all")
            kept_note = gr.Markdown(elem_id="gen-kept-note")
            preview_grid = gr.Image(label="Preview: 16 composites with the settings (image · label map)", type="numpy",
                                    interactive=False, elem_id="gen-preview-grid", visible=True)  # fmt: skip
            preview_note = gr.Markdown(elem_id="gen-preview-note")

    def runnable(kind: str, model_id: str | None, path: str | None) -> tuple[str, gr.Button]:
        """The model note and the Generate button (greyed for the gan backend until a usable run is chosen)."""
        if kind != "gan":
            return controller.model_status(kind, model_id), gr.Button(interactive=True)
        note, ok = controller.gan_status((path or "").strip() or model_id)
        return note, gr.Button(interactive=ok)

    @shows_errors
    def on_backend(kind: str, path: str | None):
        choices = controller.model_choices(kind)
        value = choices[0][1] if choices else None
        picker = gr.Dropdown(choices=choices, value=value, interactive=bool(choices) or kind != "gan")
        return picker, *runnable(kind, value, path), gr.Group(visible=kind == "gan")

    @shows_errors
    def on_model(kind: str, model_id: str | None, path: str | None):
        return runnable(kind, model_id, path)

    @shows_errors
    def on_sample(sample_id: str | None):
        if not sample_id:
            return None, None, "", "Annotate a sample first: generators need a label map."
        if sample_id not in ctx.store.labelled_ids():
            image = ctx.store.image(sample_id)
            return image, None, "", ("No label map: compositing pastes objects onto it and labels every other pixel "
                                     "255 (ignore); the diffusion backends need a label map.")  # fmt: skip
        view, condition, prompt_text, note = controller.source_views(sample_id)
        return view, condition, prompt_text, note

    def sample_choices(any_bg: bool) -> list[str]:
        return ctx.store.ids if any_bg else ctx.store.labelled_ids()

    @shows_errors
    def on_any_background(any_bg: bool, sample_id: str | None):
        choices = sample_choices(any_bg)
        value = sample_id if sample_id in choices else (choices[0] if choices else None)
        return gr.Dropdown(choices=choices, value=value)

    @shows_errors
    def on_live(any_bg: bool, sample_id: str | None):
        choices = sample_choices(any_bg)
        value = sample_id if sample_id in choices else (choices[0] if choices else None)
        return gr.Dropdown(choices=choices, value=value), *on_sample(value)

    def tab_request(names, lo, hi, bl, bs, dist, trunc, ovl, smin, smax, rot, seed_value, n, background, any_bg,
                    mode, share_lo, share_hi, bgo, pos, ground, hz) -> CompositeRequest:  # fmt: skip
        return _composite_request(ctx.dataset.classes, names, lo, hi, bl, bs, dist, trunc, ovl, smin, smax, rot,
                                  seed_value, n, background, any_bg, size_mode=mode, min_share=float(share_lo) / 100,
                                  max_share=max(float(share_lo), float(share_hi)) / 100, background_overlap=bgo,
                                  position=pos, ground_plane=ground, horizon=hz)  # fmt: skip

    @shows_errors
    def on_run(sample_id, kind, model_id, seed_value, n, text, neg, st, gd, sc, w, h, b, sl, tl, of, names, lo, hi, bl,
               bs, dist, trunc, ovl, smin, smax, rot, any_bg, mode, share_lo, share_hi, bgo, pos, ground, hz, gan_run,
               maps, request: gr.Request, progress=gr.Progress()):  # fmt: skip
        session = getattr(request, "session_hash", None)
        report = lambda f, m="": progress(f, desc=m)  # noqa: E731
        if kind == "composite":
            # the chosen sample is the background
            req = tab_request(names, lo, hi, bl, bs, dist, trunc, ovl, smin, smax, rot, seed_value, n, sample_id, any_bg,
                              mode, share_lo, share_hi, bgo, pos, ground, hz)  # fmt: skip
            return controller.run_composite(session, req, report), None, ""
        if kind == "gan":
            run_dir = (gan_run or "").strip() or model_id
            return controller.run_gan(session, run_dir, maps, sample_id, seed_value, n, report), None, ""
        if not sample_id:
            raise InvalidInput("pick a sample with a label map first")
        settings = _diffusion_settings(text, neg, st, gd, sc, w, h, seed_value, n, b, sl, tl, of)
        return controller.run_diffusion(session, sample_id, kind, model_id, settings, report), None, ""

    @shows_errors
    def on_preview(seed_value, names, lo, hi, bl, bs, dist, trunc, ovl, smin, smax, rot, any_bg, mode, share_lo, share_hi,
                   bgo, pos, ground, hz, progress=gr.Progress()):  # fmt: skip
        # backgrounds drawn from the whole pool, so the grid shows the settings on every kind of scene
        req = tab_request(names, lo, hi, bl, bs, dist, trunc, ovl, smin, smax, rot, seed_value, 16, None, any_bg, mode,
                          share_lo, share_hi, bgo, pos, ground, hz)  # fmt: skip
        return controller.preview_grid(req, lambda f, m="": progress(f, desc=m))

    @shows_errors
    def on_save_roles(names):
        return controller.save_roles(names)

    @shows_errors
    def on_reset_roles():
        return controller.reset_roles()

    @shows_errors
    def on_roles_load():
        return gr.Dropdown(choices=list(ctx.dataset.classes.names), value=controller.roles())

    def on_cancel(request: gr.Request):
        controller.cancel_token(getattr(request, "session_hash", None)).cancel()
        return "Cancelling at the next step…"

    @shows_errors
    def on_keep(index, request: gr.Request):
        if index is None:
            raise InvalidInput("select a result in the gallery first")
        new, before = controller.keep(getattr(request, "session_hash", None), [index])
        return _kept_message(new, before, controller.kept_dir)

    @shows_errors
    def on_keep_all(request: gr.Request):
        new, before = controller.keep(getattr(request, "session_hash", None), None)
        return _kept_message(new, before, controller.kept_dir)

    def on_select(evt: gr.SelectData):
        return evt.index

    run_inputs = [sample, backend, model, seed, count, prompt, negative, steps, guidance, scale, width, height, batch,
                  slicing, tiling, offload, composite_classes, min_objects, max_objects, blending, blend_size, distractors,
                  truncation, overlap, min_scale, max_scale, rotate, any_background, size_mode, min_share, max_share,
                  bg_overlap, position, ground_plane, horizon, gan_path, gan_maps]  # fmt: skip
    preview_inputs = [seed, composite_classes, min_objects, max_objects, blending, blend_size, distractors, truncation,
                      overlap, min_scale, max_scale, rotate, any_background, size_mode, min_share, max_share, bg_overlap,
                      position, ground_plane, horizon]  # fmt: skip
    backend.change(on_backend, inputs=[backend, gan_path], outputs=[model, model_note, run, gan_box])
    # .input (the user's pick): a backend change or a refresh sets the note and the button themselves
    model.input(on_model, inputs=[backend, model, gan_path], outputs=[model_note, run])
    gan_path.change(on_model, inputs=[backend, model, gan_path], outputs=[model_note, run])
    gan_refresh.click(on_backend, inputs=[backend, gan_path], outputs=[model, model_note, run, gan_box])
    sample.change(on_sample, inputs=sample, outputs=[source_view, condition_view, prompt, source_note])
    demo.load(on_live, inputs=[any_background, sample], outputs=[sample, source_view, condition_view, prompt, source_note])
    run_event = run.click(on_run, inputs=run_inputs, outputs=[results, selected, kept_note], concurrency_id="gpu",
                          concurrency_limit=1)  # fmt: skip
    preview_event = preview.click(on_preview, inputs=preview_inputs, outputs=[preview_grid, preview_note],
                                  concurrency_id="gpu", concurrency_limit=1)  # fmt: skip
    cancel.click(on_cancel, outputs=kept_note, cancels=[run_event, preview_event], queue=False)
    save_stuff_btn.click(on_save_roles, inputs=stuff, outputs=roles_note)
    reset_stuff_btn.click(on_reset_roles, outputs=[stuff, roles_note])
    demo.load(on_roles_load, outputs=stuff)
    live.change(on_roles_load, outputs=stuff, show_progress="hidden", api_visibility="private")
    results.select(on_select, outputs=selected)
    keep_one.click(on_keep, inputs=selected, outputs=kept_note)
    keep_all.click(on_keep_all, outputs=kept_note)
    any_background.input(on_any_background, inputs=[any_background, sample], outputs=sample)
    live.change(on_live, inputs=[any_background, sample], outputs=[sample, source_view, condition_view, prompt, source_note],
                show_progress="hidden", api_visibility="private")  # fmt: skip
    return controller
