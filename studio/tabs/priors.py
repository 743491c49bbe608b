"""The Priors tab: an image prior, a label-map prior and their weighted blend side by side, updating
as the weights move; a caption; the class-appended prompt; saving both for the generators."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np

from core.errors import InvalidInput
from core.priors.blend import blend
from core.priors.edges import IMAGE_PRIORS, EdgeParams, prior_available
from core.priors.pipeline import PriorSettings, compute_priors, load_prior, save_prior
from core.priors.prompts import CAPTIONER_ID, DEFAULT_NEGATIVE, DEFAULT_TEMPLATE, build_prompt, class_names_of
from studio.errors import shows_errors
from studio.session_store import SessionStore

if TYPE_CHECKING:
    from studio.context import StudioContext


class PriorsController:
    """The tab's logic, independent of the layout."""

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx
        self.cache = SessionStore(per_session=6)

    @property
    def classes(self):
        return self.ctx.dataset.classes

    def prior_choices(self) -> list[tuple[str, str]]:
        """Image priors, learned ones marked when their weights are missing."""
        out = []
        for kind in (*IMAGE_PRIORS, "none"):
            ok = kind == "none" or prior_available(kind, self.ctx.registry)[0]
            out.append((kind if ok else f"{kind} (weights missing)", kind))
        return out

    def sample_arrays(self, session: str | None, sample_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The sample's image and usable label map (``None`` when it has none), cached per revision."""

        def load():
            data = self.ctx.store.read(sample_id)
            return data.image, data.label_map

        if not sample_id:
            raise InvalidInput("pick a sample first")
        return self.cache.get(session, f"arrays:{sample_id}:{self.ctx.store.revision(sample_id)}", load)

    def priors(self, session: str | None, sample_id: str, settings: PriorSettings):
        """``(v_image, v_mask)`` of a sample, cached per settings (the blend is recomputed, not these)."""
        key = f"priors:{sample_id}:{self.ctx.store.revision(sample_id)}:{settings.image_prior}:{settings.mask_prior}:{settings.thickness}:{settings.only_classes}:{settings.edges}"
        image, label_map = self.sample_arrays(session, sample_id)

        def make():
            result = compute_priors(image, label_map, self.classes, settings, self.ctx.registry)
            return result.v_image, result.v_mask

        return self.cache.get(session, key, make)

    def views(self, session: str | None, sample_id: str, settings: PriorSettings):
        """The three pictures: image prior, mask prior, blend (``H x W x 3 uint8`` each, or None)."""
        v_image, v_mask = self.priors(session, sample_id, settings)
        image, _ = self.sample_arrays(session, sample_id)
        condition = blend(v_image, v_mask, settings.w1, settings.w2, image.shape[:2])
        return _rgb(v_image), _rgb(v_mask), condition

    def default_prompt(self, session: str | None, sample_id: str, caption: str, template: str) -> tuple[str, str]:
        """The class-appended prompt and a note (why there is no caption, when there is none)."""
        _, label_map = self.sample_arrays(session, sample_id)
        names = class_names_of(label_map, self.classes) if label_map is not None else []
        note = ""
        if not caption.strip():
            status = self.ctx.registry.status(CAPTIONER_ID)
            note = ("No caption yet: press *Caption*." if status.available else
                    f"No captioner, so the prompt is the class names alone. {status.install_message()}")  # fmt: skip
        return build_prompt(caption, names, template), note

    def caption(self, session: str | None, sample_id: str) -> str:
        image, _ = self.sample_arrays(session, sample_id)
        return self.ctx.registry.load(CAPTIONER_ID).caption(image)

    def save(self, session: str | None, sample_id: str, settings: PriorSettings, prompt: str, negative: str,
             caption: str, template: str) -> str:  # fmt: skip
        """Write the condition image and prompt record to the workspace; returns a message."""
        _, _, condition = self.views(session, sample_id, settings)
        _, label_map = self.sample_arrays(session, sample_id)
        record = {"id": sample_id, "prompt": prompt, "negative_prompt": negative, "caption": caption, "template": template,
                  "classes": class_names_of(label_map, self.classes) if label_map is not None else [],
                  "prior": settings.record()}  # fmt: skip
        image_path, record_path = save_prior(self.ctx.config.workspace.output_root, sample_id, condition, record)
        return f"Saved `{image_path}` and `{record_path}`; the Generate tab uses them for **{html.escape(sample_id)}**."

    def saved(self, sample_id: str) -> dict | None:
        found = load_prior(self.ctx.config.workspace.output_root, sample_id)
        return None if found is None else found[1]


def _rgb(prior: np.ndarray | None) -> np.ndarray | None:
    if prior is None:
        return None
    return prior if prior.ndim == 3 else np.repeat(prior[:, :, None], 3, axis=2)


def settings_from_controls(image_prior: str, mask_kind: str, w1: float, w2: float, thickness: float, low: float,
                           high: float, sigma: float, only: list[str], classes) -> PriorSettings:  # fmt: skip
    """:class:`PriorSettings` from the tab's controls."""
    edges = EdgeParams(canny_low=int(low), canny_high=int(high), lineart_sigma=float(sigma))
    return PriorSettings(image_prior, mask_kind, float(w1), float(w2), int(thickness),
                         tuple(sorted(classes.index_of(n) for n in only or [])), edges)  # fmt: skip


def build(ctx: StudioContext, demo: gr.Blocks, live: gr.State) -> PriorsController:
    """Lay out the Priors tab and wire its events (``live`` changes when the dataset does)."""
    controller = PriorsController(ctx)
    with gr.Row():  # the first labelled sample is picked when the page loads (checking maps is not start-up work)
        sample = gr.Dropdown(choices=ctx.store.ids, value=None, label="Sample", elem_id="priors-sample", scale=2)
        image_prior = gr.Dropdown(choices=controller.prior_choices(), value="canny", label="Image prior (V_image)",
                                  elem_id="priors-type", scale=2)  # fmt: skip
        mask_kind = gr.Radio(["boundary", "ade20k", "none"], value="boundary", label="Label-map prior (V_mask)",
                             elem_id="priors-mask", scale=2)  # fmt: skip
    with gr.Row():
        w1 = gr.Slider(0, 2, value=0.7, step=0.05, label="w1 (image prior)", elem_id="priors-w1")
        w2 = gr.Slider(0, 2, value=0.9, step=0.05, label="w2 (label-map prior)", elem_id="priors-w2")
        thickness = gr.Slider(1, 15, value=2, step=1, label="Boundary thickness (px)", elem_id="priors-thickness")
    with gr.Accordion("Prior settings", open=False):
        with gr.Row():
            low = gr.Slider(0, 500, value=100, step=5, label="Canny low threshold")
            high = gr.Slider(0, 500, value=200, step=5, label="Canny high threshold")
            sigma = gr.Slider(0.5, 20, value=6, step=0.5, label="Line-art sigma")
            only = gr.Dropdown(choices=list(ctx.dataset.classes.names[1:]), value=[], multiselect=True,
                               label="Boundaries of these classes only (empty: all)")  # fmt: skip
    gr.Markdown("V = w1 · V_image + w2 · V_mask, clipped (Che et al. 2025; their best: w1 = 0.7, w2 = 0.9).")
    with gr.Row():
        v_image = gr.Image(label="V_image", type="numpy", interactive=False, elem_id="priors-vimage", height=320)
        v_mask = gr.Image(label="V_mask", type="numpy", interactive=False, elem_id="priors-vmask", height=320)
        v_blend = gr.Image(
            label="Blend (condition image)", type="numpy", interactive=False, elem_id="priors-blend", height=320
        )
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            caption = gr.Textbox(label="Caption", elem_id="priors-caption", placeholder="press Caption, or type one")
            template = gr.Textbox(
                value=DEFAULT_TEMPLATE, label="Template ({caption}, {classes})", elem_id="priors-template"
            )
            prompt = gr.Textbox(label="Prompt (editable)", elem_id="priors-prompt", lines=2)
            negative = gr.Textbox(value=DEFAULT_NEGATIVE, label="Negative prompt", elem_id="priors-negative")
            prompt_note = gr.Markdown(elem_id="priors-note")
        with gr.Column(scale=1, min_width=220):
            captioner_ok = ctx.registry.status(CAPTIONER_ID).available
            caption_button = gr.Button("Caption" if captioner_ok else "Caption (captioner weights missing)",
                                       elem_id="priors-caption-run")  # fmt: skip
            rebuild = gr.Button("Rebuild prompt from caption and classes", elem_id="priors-rebuild")
            save = gr.Button("Save condition image and prompt", variant="primary", elem_id="priors-save")
            saved = gr.Markdown(elem_id="priors-saved")

    setting_inputs = [image_prior, mask_kind, w1, w2, thickness, low, high, sigma, only]

    def _settings(*values) -> PriorSettings:
        return settings_from_controls(*values, ctx.dataset.classes)

    @shows_errors
    def on_views(sample_id, kind, mask, a, b, t, lo, hi, s, only_names, request: gr.Request, progress=gr.Progress()):
        if kind not in ("canny", "none"):
            progress(None, desc=f"computing {kind} (the first learned or line-art prior loads its library)")
        settings = _settings(kind, mask, a, b, t, lo, hi, s, only_names)
        return controller.views(getattr(request, "session_hash", None), sample_id, settings)

    @shows_errors
    def on_weights(sample_id, kind, mask, a, b, t, lo, hi, s, only_names, request: gr.Request):
        settings = _settings(kind, mask, a, b, t, lo, hi, s, only_names)
        return controller.views(getattr(request, "session_hash", None), sample_id, settings)[2]

    @shows_errors
    def on_sample_prompt(sample_id: str, request: gr.Request):
        saved_record = controller.saved(sample_id) or {}
        cap = saved_record.get("caption", "")
        tmpl = saved_record.get("template", DEFAULT_TEMPLATE)
        built, note = controller.default_prompt(getattr(request, "session_hash", None), sample_id, cap, tmpl)
        if saved_record:
            note = f"Loaded the saved prompt of {html.escape(sample_id)}. " + note
        return (
            cap,
            tmpl,
            saved_record.get("prompt", built),
            saved_record.get("negative_prompt", DEFAULT_NEGATIVE),
            note,
        )

    @shows_errors
    def on_rebuild(sample_id: str, cap: str, tmpl: str, request: gr.Request):
        return controller.default_prompt(getattr(request, "session_hash", None), sample_id, cap, tmpl)

    @shows_errors
    def on_caption(sample_id: str, tmpl: str, request: gr.Request, progress=gr.Progress()):
        progress(None, desc="captioning (the captioner loads on first use)")
        session = getattr(request, "session_hash", None)
        cap = controller.caption(session, sample_id)
        built, note = controller.default_prompt(session, sample_id, cap, tmpl)
        return cap, built, note

    @shows_errors
    def on_save(sample_id, kind, mask, a, b, t, lo, hi, s, only_names, text, neg, cap, tmpl, request: gr.Request):
        settings = _settings(kind, mask, a, b, t, lo, hi, s, only_names)
        return controller.save(getattr(request, "session_hash", None), sample_id, settings, text, neg, cap, tmpl)

    views_out = [v_image, v_mask, v_blend]
    prompt_out = [caption, template, prompt, negative, prompt_note]
    def first_sample(current: str | None):
        if current in ctx.store.ids:
            return gr.skip()
        labelled = ctx.store.labelled_ids() or ctx.store.ids
        return gr.Dropdown(choices=ctx.store.ids, value=labelled[0])

    demo.load(first_sample, inputs=sample, outputs=sample)
    for control in (sample, image_prior, mask_kind, low, high, sigma, only):
        control.change(on_views, inputs=[sample, *setting_inputs], outputs=views_out, trigger_mode="always_last")
    thickness.release(on_views, inputs=[sample, *setting_inputs], outputs=views_out)
    for weight in (w1, w2):
        weight.change(on_weights, inputs=[sample, *setting_inputs], outputs=v_blend, trigger_mode="always_last",
                      show_progress="hidden")  # fmt: skip
    sample.change(on_sample_prompt, inputs=sample, outputs=prompt_out)
    rebuild.click(on_rebuild, inputs=[sample, caption, template], outputs=[prompt, prompt_note])
    caption_button.click(on_caption, inputs=[sample, template], outputs=[caption, prompt, prompt_note],
                         concurrency_id="gpu", concurrency_limit=1)  # fmt: skip
    save.click(on_save, inputs=[sample, *setting_inputs, prompt, negative, caption, template], outputs=saved)

    @shows_errors
    def on_live(sample_id, kind, mask, a, b, t, lo, hi, s, only_names, request: gr.Request):
        # every input named: Gradio puts the request by position, which a keyword-only one after *values never gets
        values = (kind, mask, a, b, t, lo, hi, s, only_names)
        views = on_views(sample_id, *values, request=request) if sample_id in ctx.store.ids else (gr.skip(),) * 3
        return gr.Dropdown(choices=ctx.store.ids), *views

    live.change(on_live, inputs=[sample, *setting_inputs], outputs=[sample, *views_out], show_progress="hidden",
                api_visibility="private")  # fmt: skip
    return controller
