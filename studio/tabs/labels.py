"""The Label maps tab: class regions, seeded overlay / reconstruction previews, keeping results as new
samples with provenance, class statistics before and after, and a class-balance plan."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np
import pandas as pd

from core.errors import InvalidInput
from core.io.images import load_image, load_label_map
from core.labels.balance import plan_balance
from core.labels.overlay import Placement
from core.labels.recombine import (
    RecombinedSample,
    RecombineRequest,
    RegionLibrary,
    keep_once,
    kept_count,
    read_manifest,
    recombine_or_skip,
)
from core.labels.stats import ClassStats, dataset_stats
from core.store import DatasetStore, SkipReport
from core.viz import overlay
from studio.errors import shows_errors
from studio.session_store import SessionStore

if TYPE_CHECKING:
    from studio.context import StudioContext

GALLERY_LIMIT = 60
AUTO_STATS_LIMIT = 2000  # label maps; more than this and the statistics wait for the button
BANDS_EXAMPLE = "sky:0.4, building:0.3, road:0.3"  # the form; the default is made from the dataset's own classes


class LabelMapsController:
    """The tab's logic, independent of the layout."""

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx
        self.previews = SessionStore(per_session=2)
        self._library: RegionLibrary | None = None

    @property
    def classes(self):
        return self.ctx.dataset.classes

    @property
    def kept_dir(self) -> Path:
        """Where kept results go: a VOC-layout dataset with ``manifest.jsonl`` in the workspace."""
        return self.ctx.config.workspace.output_root / "recombined"

    def library(self, min_area: int = 64) -> RegionLibrary:
        """Regions of the current dataset (rebuilt whenever the dataset changed)."""
        stale = self._library is None or self._library.version != self.ctx.store.version
        if stale or self._library.min_area != min_area:
            self._library = RegionLibrary(self.ctx.store, min_area)
        return self._library

    def default_bands(self) -> str:
        """Bands for reconstruction made from the dataset's most frequent classes (background first)."""
        counts: dict[int, int] = {}
        for present in self.library().present.values():
            for cls in present:
                counts[cls] = counts.get(cls, 0) + 1
        ranked = sorted(counts, key=lambda c: (-counts[c], c))[:3] or [0]
        share = round(1 / len(ranked), 2)
        return ", ".join(f"{self.classes.names[c]}:{share}" for c in ranked)

    def present_classes(self) -> list[str]:
        """Object classes that occur in some label map (the ones that can be pasted)."""
        present = set().union(*self.library().present.values()) if self.library().present else set()
        return [self.classes.names[i] for i in sorted(present) if i not in (0, self.classes.ignore_index)]

    # ---- regions -------------------------------------------------------------------------

    def region_gallery(self, class_name: str, min_area: int = 64) -> tuple[list[tuple[np.ndarray, str]], list[list]]:
        """Crops of the class's connected components over the dataset (largest first, at most 60), and
        each one's identity ``[sample id, class name, component]``."""
        cls = self.classes.index_of(class_name)
        regions = sorted(self.library(min_area).components(cls), key=lambda r: -r.area)[:GALLERY_LIMIT]
        items, identities = [], []
        for region in regions:
            crop = region.image.copy() if region.image is not None else np.zeros(region.mask.shape + (3,), np.uint8)
            crop[~region.mask] = (crop[~region.mask] * 0.25).astype(np.uint8)
            items.append((crop, f"{region.source_id} #{region.component + 1} · {region.area} px"))
            identities.append([region.source_id, class_name, region.component])
        return items, identities

    def default_targets(self, class_names: list[str]) -> list[str]:
        """Labelled samples lacking at least one of the classes."""
        wanted = {self.classes.index_of(n) for n in class_names}
        return sorted(s for s, present in self.library().present.items() if not wanted <= present)

    # ---- previews ------------------------------------------------------------------------

    def preview(self, session: str | None, request: RecombineRequest) -> list[tuple[np.ndarray, str]]:
        """Generate ``request.count`` results, remember them for keeping, return gallery items."""
        library = self.library(request.min_area)
        already = len(library.skipped)
        samples = [s for s in (recombine_or_skip(library, request, i) for i in range(request.count)) if s is not None]
        failed = SkipReport(library.skipped.skipped[already:])
        if not samples:
            raise InvalidInput(f"none of the {request.count} previews could be made: {failed.summary()}")
        if len(failed):
            gr.Warning(f"{len(failed)} of {request.count} previews left out: {failed.summary(1)}")
        self.previews.put(session, "last", samples)
        return [(self.render(s), self.caption(s)) for s in samples]

    def render(self, sample: RecombinedSample) -> np.ndarray:
        """The cut-and-paste image with the recombined map overlaid, ``H x W x 3 uint8``."""
        image = sample.result.image
        if image is None:
            image = np.zeros(sample.result.label_map.shape + (3,), np.uint8)
        return overlay(image, sample.result.label_map, self.classes, 0.55)

    def caption(self, sample: RecombinedSample) -> str:
        where = sample.record.get("target") or sample.record.get("base", {}).get("sample") or "bands"
        pasted = ", ".join(
            f"{self.classes.names[s['region']['class']]} from {s['region']['sample']}" for s in sample.record["steps"]
        )
        return f"{where} + {pasted} · seed {sample.record['seed']} #{sample.record['index']}"

    def keep(self, session: str | None, indices: list[int] | None) -> tuple[list[str], list[str]]:
        """Save previewed results (all when ``indices`` is None) as new samples, each at most once; returns
        ``(ids written now, ids of results kept before)``."""
        samples = self.previews.peek(session, "last")
        if not samples:
            raise InvalidInput("preview something first: there is nothing to keep")
        return keep_once(self.kept_dir, self.classes, samples, indices)

    def kept_gallery(self) -> tuple[list[tuple[str, str]], list[str]]:
        """The kept samples (image files) with their ids."""
        records = read_manifest(self.kept_dir)
        items, ids = [], []
        for sample_id in records:
            image = self.kept_dir / "JPEGImages" / f"{sample_id}.jpg"
            if image.is_file():
                items.append((str(image), sample_id))
                ids.append(sample_id)
        return items, ids

    def kept_view(self, sample_id: str) -> tuple[np.ndarray, str]:
        """A kept sample rendered with its map, and its manifest line."""
        record = read_manifest(self.kept_dir).get(sample_id)
        if record is None:
            raise InvalidInput(f"no kept sample {sample_id!r} in {self.kept_dir}")
        image = load_image(self.kept_dir / "JPEGImages" / f"{sample_id}.jpg")
        label = load_label_map(self.kept_dir / "SegmentationClass" / f"{sample_id}.png", self.classes)
        return overlay(image, label, self.classes, 0.55), json.dumps(record, sort_keys=True)

    # ---- statistics and plans -------------------------------------------------------------

    def stats(self, with_kept: bool, skipped: SkipReport | None = None) -> ClassStats:
        stats = dataset_stats(self.ctx.store, skipped=skipped)
        if with_kept and kept_count(self.kept_dir):
            kept = DatasetStore(self.kept_dir, cache_dir=self.ctx.config.workspace.cache_root / "kept-recombined")
            stats = stats.merge(dataset_stats(kept, skipped=skipped))
        return stats

    def distribution(self) -> tuple[pd.DataFrame, pd.DataFrame, str, pd.DataFrame]:
        """Bar-plot frames (appearance frequency, pixel share) before/after the kept results, a summary
        line and a comparison table."""
        skipped = SkipReport()
        before = self.stats(False, skipped).summary()
        after = self.stats(True).summary()
        rows_app, rows_pix, table = [], [], []
        for b, a in zip(before["per_class"], after["per_class"], strict=True):
            if not (b["images"] or a["images"]):
                continue
            rows_app += _bars(b["class"], ("now", b["appearance_frequency"]), ("with kept", a["appearance_frequency"]))
            rows_pix += _bars(b["class"], ("now", b["pixel_share"]), ("with kept", a["pixel_share"]))
            table.append([b["class"], b["images"], a["images"], f"{b['pixel_share']:.4f}", f"{a['pixel_share']:.4f}"])
        line = (
            f"**Before** ({before['maps']} maps): entropy {before['entropy_appearance']:.3f} bits "
            f"(normalised {before['entropy_appearance_normalised']:.3f}), imbalance ratio "
            f"{before['imbalance_ratio_appearance']:.2f}. **With kept results** ({after['maps']} maps): entropy "
            f"{after['entropy_appearance']:.3f} bits (normalised {after['entropy_appearance_normalised']:.3f}), "
            f"imbalance ratio {after['imbalance_ratio_appearance']:.2f}. Pixel shares: imbalance ratio "
            f"{before['imbalance_ratio_pixels']:.2f} → {after['imbalance_ratio_pixels']:.2f}."
        )
        if len(skipped):
            line += f" Not counted: {html.escape(skipped.summary())}."
        headers = ["class", "images before", "images after", "pixel share before", "pixel share after"]
        return pd.DataFrame(rows_app), pd.DataFrame(rows_pix), line, pd.DataFrame(table, columns=headers)

    def plan(self, n_balance: int | None, share: float | None, seed: int) -> tuple[pd.DataFrame, str, Path]:
        """A balance plan, saved to the workspace; returns the before/after frame, a summary and the path."""
        plan = plan_balance(self.library().present, self.classes, n_balance=n_balance, synthetic_share=share, seed=seed)
        path = (
            self.ctx.config.workspace.output_root
            / "plans"
            / f"plan_{plan.mode}_{int(plan.target * 100) if share else int(plan.target)}_seed{seed}.json"
        )
        plan.save(path)
        doc = plan.to_json()
        rows = []
        for name in doc["classes"]:
            if doc["before"][name] or doc["after"][name]:
                rows += _bars(name, ("now", doc["before"][name]), ("planned", doc["after"][name]))
        summary = (
            f"{doc['synthetic_samples']} synthetic samples over {doc['real_samples']} real ones; quotas "
            f"{', '.join(f'{k}: {v}' for k, v in doc['quotas'].items()) or 'none'}; imbalance ratio "
            f"{doc['imbalance_ratio_before']:.2f} → {doc['imbalance_ratio_after']:.2f}; entropy "
            f"{doc['entropy_before']:.3f} → {doc['entropy_after']:.3f} bits"
            + (f"; no source for {', '.join(doc['unreachable'][:8])}{'…' if len(doc['unreachable']) > 8 else ''}" if doc["unreachable"] else "")
            + f". Saved to `{path}`."
        )  # fmt: skip
        return pd.DataFrame(rows), summary, path


def _bars(name: str, *values: tuple[str, float]) -> list[dict]:
    """Bar-plot rows for one class, one bar per (when, value), side by side (distinct x, so never stacked;
    the plot sorts x alphabetically, so the ``when`` names are chosen to sort in reading order)."""
    return [{"bar": f"{name} · {when}", "class": name, "when": when, "value": value} for when, value in values]


def parse_bands(text: str, classes) -> tuple[tuple[str, float], ...]:
    """``"sky:0.4, road:0.6"`` -> ``(("sky", 0.4), ("road", 0.6))`` (class names checked)."""
    bands = []
    for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
        name, sep, share = part.rpartition(":")
        if not sep:
            name, share = part, "1"
        try:
            value = float(share)
        except ValueError:
            raise InvalidInput(f"band {part!r} should look like CLASS:SHARE, e.g. {BANDS_EXAMPLE}") from None
        classes.index_of(name.strip())
        bands.append((name.strip(), value))
    if not bands:
        raise InvalidInput(f"give bands as CLASS:SHARE, top to bottom, e.g. {BANDS_EXAMPLE}")
    return tuple(bands)


def build(ctx: StudioContext, demo: gr.Blocks, live: gr.State) -> LabelMapsController:
    """Lay out the Label maps tab and wire its events (``live`` changes when the dataset does)."""
    controller = LabelMapsController(ctx)
    all_classes = list(ctx.dataset.classes.names[1:])
    kept_ids = gr.State([])
    region_ids = gr.State([])
    clicked_region = gr.State(None)
    layers = gr.State([])

    with gr.Row():
        region_class = gr.Dropdown(choices=all_classes, value=None, label="Class", elem_id="labels-class", scale=2)
        mode = gr.Radio(
            ["overlay", "multi", "reconstruct"], value="overlay", label="Mode", elem_id="labels-mode", scale=2
        )
        extra_classes = gr.Dropdown(choices=all_classes, value=[], multiselect=True, label="More classes (multi, reconstruct)",
                                    elem_id="labels-more", scale=2)  # fmt: skip
    region_gallery = gr.Gallery(label="Regions of the class (connected components across the dataset)", columns=8,
                                height=180, allow_preview=False, elem_id="labels-regions", buttons=[], fit_columns=False)  # fmt: skip
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            targets = gr.Dropdown(choices=ctx.dataset.ids, value=[], multiselect=True,
                                  label="Target maps (empty: every map lacking the class)", elem_id="labels-targets")  # fmt: skip
            base = gr.Dropdown(choices=["(random map)", "(bands)", *ctx.dataset.ids], value="(random map)",
                               label="Reconstruction base", elem_id="labels-base")  # fmt: skip
            bands = gr.Textbox(value="", label="Bands (CLASS:SHARE, top to bottom)", elem_id="labels-bands",
                               placeholder=BANDS_EXAMPLE)  # fmt: skip
            with gr.Accordion("Placement", open=False):
                placement_mode = gr.Radio(["random", "keep"], value="random", label="Position")
                max_translate = gr.Slider(0, 1, value=0.25, step=0.05, label="Largest shift (share of the map)")
                min_scale = gr.Slider(0.1, 3, value=0.8, step=0.05, label="Smallest scale")
                max_scale = gr.Slider(0.1, 3, value=1.2, step=0.05, label="Largest scale")
                max_rotate = gr.Slider(0, 180, value=10, step=1, label="Largest rotation (degrees)")
                flip = gr.Checkbox(value=True, label="Allow horizontal flips")
                protected = gr.Dropdown(
                    choices=all_classes, value=[], multiselect=True, label="Never cover these classes"
                )
                layer = gr.Radio(
                    ["top", "under"], value="top", label="Layer: over objects, or under them (background only)"
                )
                ignore_border = gr.Slider(0, 10, value=0, step=1, label="Ignore (255) border around pasted regions, px")
                size_mode = gr.Radio([("from the data", "data"), ("relative scale", "relative")], value="data",
                                     label="Region sizes (random position)", elem_id="labels-size-mode",
                                     info="from the data: the sizes of the class's objects in this dataset's maps")  # fmt: skip
                bg_overlap = gr.Slider(0, 1, value=0.3, step=0.05, elem_id="labels-bg-overlap",
                                       label="Max hidden share of a target map's object (overlay, multi)")  # fmt: skip
                min_area = gr.Slider(1, 5000, value=64, step=1, label="Smallest region used, px")
            with gr.Row():
                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="labels-seed")
                count = gr.Slider(1, 8, value=4, step=1, label="Previews", elem_id="labels-count")
            with gr.Row():
                preview_button = gr.Button("Preview", variant="primary", elem_id="labels-preview")
                reroll = gr.Button("Re-roll (seed + 1)", elem_id="labels-reroll")
        with gr.Column(scale=3, min_width=420):
            previews = gr.Gallery(label="Previews (click one, then Keep selected)", columns=2, height=460,
                                  allow_preview=True, elem_id="labels-previews", buttons=[], object_fit="contain")  # fmt: skip
            selected = gr.State(None)
            with gr.Row():
                keep_selected = gr.Button("Keep selected", elem_id="labels-keep")
                keep_all = gr.Button("Keep all", elem_id="labels-keep-all")
            kept_note = gr.Markdown(elem_id="labels-kept-note")
    with gr.Accordion("Reconstruction layers", open=False, elem_id="labels-layers"):
        gr.Markdown("Click a region above, add it as a layer, order the layers (first is lowest), then preview. "
                    "The base is the *Reconstruction base* chosen on the left.")  # fmt: skip
        layers_table = gr.Dataframe(headers=["layer", "class", "sample", "region"], interactive=False,
                                    elem_id="labels-layers-table")  # fmt: skip
        with gr.Row():
            add_layer = gr.Button("Add clicked region", elem_id="labels-add-layer")
            layer_index = gr.Number(value=1, precision=0, label="Layer #", minimum=1)
            layer_up = gr.Button("Move up (later, on top)")
            layer_down = gr.Button("Move down (earlier, below)")
            layer_remove = gr.Button("Remove")
            preview_layers = gr.Button("Preview reconstruction", variant="primary", elem_id="labels-preview-layers")
    with gr.Accordion("Class distribution", open=True, elem_id="labels-distribution"):
        refresh_stats = gr.Button("Compute statistics", size="sm", elem_id="labels-stats")
        stats_line = gr.Markdown(elem_id="labels-stats-line")
        with gr.Row():
            appearance_plot = gr.BarPlot(x="bar", y="value", color="when", x_title="class", title="Appearance frequency (share of maps)",
                                         x_label_angle=-45, height=300, elem_id="labels-appearance")  # fmt: skip
            pixel_plot = gr.BarPlot(
                x="bar",
                y="value",
                color="when",
                sort="x",
                x_title="class",
                title="Pixel share",
                x_label_angle=-45,
                height=300,
            )
        stats_table = gr.Dataframe(interactive=False, elem_id="labels-stats-table")
    with gr.Accordion("Class-balance plan", open=False, elem_id="labels-plan"):
        with gr.Row():
            plan_mode = gr.Radio(["n_balance", "synthetic share"], value="n_balance", label="Target")
            n_balance = gr.Number(value=10, precision=0, label="Images per class (n_balance)")
            share = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Synthetic share of the final dataset")
            plan_button = gr.Button("Plan", elem_id="labels-plan-run")
        plan_summary = gr.Markdown(elem_id="labels-plan-summary")
        plan_plot = gr.BarPlot(x="bar", y="value", color="when", x_title="class", title="Images per class: now and after the plan",
                               x_label_angle=-45, height=300)  # fmt: skip
    with gr.Accordion("Kept samples", open=True, elem_id="labels-kept"):
        kept_gallery = gr.Gallery(label=f"Saved in {controller.kept_dir}", columns=6, height=200, allow_preview=False,
                                  elem_id="labels-kept-gallery", buttons=[], fit_columns=False)  # fmt: skip
        with gr.Row():
            kept_image = gr.Image(
                type="numpy", interactive=False, show_label=False, height=280, elem_id="labels-kept-view"
            )
            kept_manifest = gr.Code(language="json", label="Manifest line", elem_id="labels-kept-manifest")

    placement_inputs = [
        placement_mode,
        max_translate,
        min_scale,
        max_scale,
        max_rotate,
        flip,
        protected,
        layer,
        ignore_border,
        size_mode,
        bg_overlap,
    ]

    def _placement(p_mode, translate, lo, hi, rotate, flip_ok, protect, layer_rule, border, size) -> Placement:
        return Placement(p_mode, float(translate), (float(lo), float(hi)), float(rotate), bool(flip_ok),
                         tuple(ctx.dataset.classes.index_of(n) for n in protect or []), layer_rule, int(border),
                         size=size or "relative", max_stretch=1.2 if size == "data" else 1.0)  # fmt: skip

    @shows_errors
    def on_class(name: str | None, area: float):
        if not name:
            return [], [], gr.skip()
        items, identities = controller.region_gallery(name, int(area))
        return items, identities, gr.Dropdown(value=controller.default_targets([name]))

    @shows_errors
    def on_preview(name: str | None, rec_mode: str, more: list[str], target_ids: list[str], base_choice: str,
                   band_text: str, seed_value: float, n: float, area: float, p_mode: str, translate: float, lo: float,
                   hi: float, rotate: float, flip_ok: bool, protect: list[str], layer_rule: str, border: float,
                   size: str, hidden: float, request: gr.Request):  # fmt: skip
        placement_values = (p_mode, translate, lo, hi, rotate, flip_ok, protect, layer_rule, border, size)
        names = [n_ for n_ in [name, *(more or [])] if n_]
        if not names:
            raise InvalidInput("choose a class to paste first")
        use_bands = rec_mode == "reconstruct" and base_choice == "(bands)"
        chosen_targets = tuple(target_ids) if target_ids else None
        if rec_mode == "reconstruct" and base_choice not in ("(random map)", "(bands)"):
            chosen_targets = None
        request_obj = RecombineRequest(
            rec_mode, tuple(dict.fromkeys(names)), int(n), int(seed_value or 0), _placement(*placement_values),
            chosen_targets, parse_bands(band_text, ctx.dataset.classes) if use_bands else None, int(area),
            background_overlap=float(hidden),
        )  # fmt: skip
        if rec_mode == "reconstruct" and base_choice not in ("(random map)", "(bands)"):
            request_obj = _fixed_base(request_obj, base_choice)
        session = getattr(request, "session_hash", None)
        return controller.preview(session, request_obj), None

    @shows_errors
    def on_preview_layers(layer_list: list, base_choice: str, band_text: str, seed_value: float, n: float, area: float,
                          p_mode: str, translate: float, lo: float, hi: float, rotate: float, flip_ok: bool,
                          protect: list[str], layer_rule: str, border: float, size: str, hidden: float,
                          request: gr.Request):  # fmt: skip
        if not layer_list:
            raise InvalidInput("add at least one region as a layer first")
        use_bands = base_choice == "(bands)"
        fixed = base_choice not in ("(random map)", "(bands)")
        request_obj = RecombineRequest(
            "reconstruct", tuple(dict.fromkeys(layer[1] for layer in layer_list)), int(n), int(seed_value or 0),
            _placement(p_mode, translate, lo, hi, rotate, flip_ok, protect, layer_rule, border, size),
            (base_choice,) if fixed else None, parse_bands(band_text, ctx.dataset.classes) if use_bands else None,
            int(area), tuple(tuple(layer) for layer in layer_list),
        )  # fmt: skip
        return controller.preview(getattr(request, "session_hash", None), request_obj), None

    @shows_errors
    def on_keep(index: int | None, everything: bool, request: gr.Request):
        session = getattr(request, "session_hash", None)
        if not everything and index is None:
            raise InvalidInput("select a preview in the gallery first")
        ids, before = controller.keep(session, None if everything else [index])
        items, all_ids = controller.kept_gallery()
        notes = []
        if ids:
            notes.append(f"Kept {', '.join(ids)} in `{controller.kept_dir}` (manifest.jsonl has one line per sample).")
        if before:
            notes.append(f"Already kept before, not written again: {', '.join(before)}.")
        return " ".join(notes), items, all_ids

    @shows_errors
    def on_stats(progress=gr.Progress()):
        progress(None, desc="streaming the label maps")
        app, pix, line, table = controller.distribution()
        return app, pix, line, table

    @shows_errors
    def on_plan(which: str, n: float, s: float, seed_value: float):
        if which == "n_balance":
            frame, summary, _ = controller.plan(int(n or 0), None, int(seed_value or 0))
        else:
            frame, summary, _ = controller.plan(None, float(s), int(seed_value or 0))
        return frame, summary

    @shows_errors
    def on_kept_select(evt: gr.SelectData, ids: list[str]):
        if evt.index is None or not 0 <= int(evt.index) < len(ids):
            raise gr.Error("That kept sample is no longer listed; refresh.")
        return controller.kept_view(ids[int(evt.index)])

    def on_load(band_text: str):
        items, ids = controller.kept_gallery()
        bands_value = band_text or controller.default_bands()  # from the dataset's own frequent classes
        return gr.Dropdown(choices=controller.present_classes() or all_classes), items, ids, bands_value

    @shows_errors
    def on_live(name: str | None, target_ids: list[str], base_choice: str, area: float):
        present = controller.present_classes() or all_classes
        ids = ctx.store.ids
        regions = controller.region_gallery(name, int(area)) if name in present else ([], [])
        return (gr.Dropdown(choices=present), gr.Dropdown(choices=ids, value=[t for t in target_ids or [] if t in ids]),
                gr.Dropdown(choices=["(random map)", "(bands)", *ids],
                            value=base_choice if base_choice in ("(random map)", "(bands)", *ids) else "(random map)"),
                *regions, *(controller.distribution() if len(ctx.store.labelled_ids()) <= AUTO_STATS_LIMIT
                            else (gr.skip(),) * 4))  # fmt: skip

    @shows_errors
    def on_load_stats():
        # Small datasets get their charts at once; large ones wait for the button (it streams every map).
        labelled = len(ctx.store.labelled_ids())
        if labelled > AUTO_STATS_LIMIT:
            return gr.skip(), gr.skip(), f"{labelled} label maps: press *Compute statistics* to stream them.", gr.skip()
        return controller.distribution()

    def on_preview_select(evt: gr.SelectData):
        return evt.index

    preview_inputs = [region_class, mode, extra_classes, targets, base, bands, seed, count, min_area, *placement_inputs]
    demo.load(on_load, inputs=bands, outputs=[region_class, kept_gallery, kept_ids, bands])
    demo.load(on_load_stats, outputs=[appearance_plot, pixel_plot, stats_line, stats_table])
    region_class.change(on_class, inputs=[region_class, min_area], outputs=[region_gallery, region_ids, targets])
    region_gallery.select(_pick_region, inputs=region_ids, outputs=clicked_region)
    add_layer.click(_add_layer, inputs=[layers, clicked_region], outputs=[layers, layers_table])
    layer_up.click(_move_layer(+1), inputs=[layers, layer_index], outputs=[layers, layers_table])
    layer_down.click(_move_layer(-1), inputs=[layers, layer_index], outputs=[layers, layers_table])
    layer_remove.click(_remove_layer, inputs=[layers, layer_index], outputs=[layers, layers_table])
    preview_layers.click(on_preview_layers, inputs=[layers, base, bands, seed, count, min_area, *placement_inputs],
                         outputs=[previews, selected])  # fmt: skip
    preview_button.click(on_preview, inputs=preview_inputs, outputs=[previews, selected])
    reroll.click(lambda s: int(s or 0) + 1, inputs=seed, outputs=seed).then(
        on_preview, inputs=preview_inputs, outputs=[previews, selected]
    )
    previews.select(on_preview_select, outputs=selected)
    keep_selected.click(
        _keep_handler(on_keep, everything=False), inputs=selected, outputs=[kept_note, kept_gallery, kept_ids]
    )
    keep_all.click(
        _keep_handler(on_keep, everything=True), inputs=selected, outputs=[kept_note, kept_gallery, kept_ids]
    )
    refresh_stats.click(on_stats, outputs=[appearance_plot, pixel_plot, stats_line, stats_table])
    kept_gallery.change(on_stats, outputs=[appearance_plot, pixel_plot, stats_line, stats_table])
    plan_button.click(on_plan, inputs=[plan_mode, n_balance, share, seed], outputs=[plan_plot, plan_summary])
    kept_gallery.select(on_kept_select, inputs=kept_ids, outputs=[kept_image, kept_manifest])
    live.change(on_live, inputs=[region_class, targets, base, min_area],
                outputs=[region_class, targets, base, region_gallery, region_ids, appearance_plot, pixel_plot,
                         stats_line, stats_table], show_progress="hidden", api_visibility="private")  # fmt: skip
    return controller


def _layers_frame(layer_list: list) -> pd.DataFrame:
    rows = [[i + 1, cls, sample, f"#{component + 1}"] for i, (sample, cls, component) in enumerate(layer_list)]
    return pd.DataFrame(rows, columns=["layer", "class", "sample", "region"])


def _pick_region(evt: gr.SelectData, identities: list) -> list | None:
    return identities[int(evt.index)] if evt.index is not None and 0 <= int(evt.index) < len(identities) else None


@shows_errors
def _add_layer(layer_list: list, clicked: list | None):
    if not clicked:
        raise InvalidInput("click a region in the gallery first")
    updated = [*(layer_list or []), clicked]
    return updated, _layers_frame(updated)


def _move_layer(step: int):
    @shows_errors
    def handler(layer_list: list, index: float):
        position = int(index or 0) - 1
        if not 0 <= position < len(layer_list or []):
            raise InvalidInput(f"no layer #{int(index or 0)}; there are {len(layer_list or [])}")
        other = min(max(position + step, 0), len(layer_list) - 1)
        updated = list(layer_list)
        updated[position], updated[other] = updated[other], updated[position]
        return updated, _layers_frame(updated)

    return handler


@shows_errors
def _remove_layer(layer_list: list, index: float):
    position = int(index or 0) - 1
    if not 0 <= position < len(layer_list or []):
        raise InvalidInput(f"no layer #{int(index or 0)}; there are {len(layer_list or [])}")
    updated = [layer for i, layer in enumerate(layer_list) if i != position]
    return updated, _layers_frame(updated)


def _fixed_base(request: RecombineRequest, base_id: str) -> RecombineRequest:
    """A reconstruct request whose base is one named map (expressed as a one-map target pool)."""
    from dataclasses import replace

    return replace(request, targets=(base_id,))


def _keep_handler(on_keep, everything: bool):
    def handler(index: int | None, request: gr.Request):
        return on_keep(index, everything, request)

    return handler
