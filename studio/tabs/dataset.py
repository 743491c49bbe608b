"""The Dataset tab: browse samples as thumbnails (filtered by class and by status), open one, see its label
map overlaid with adjustable opacity, its boxes, and a legend in the dataset's colours. Each thumbnail says
the sample's status (unlabelled, draft, done, needs review) and the tab shows the progress (done / total)."""

from __future__ import annotations

import html
from collections import Counter, OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np
from PIL import Image

from core.errors import StudioError
from core.store import STATUS_LABELS, STATUSES, Sample, normalise_status
from core.types import ClassSet
from core.viz import class_shares, draw_boxes, overlay
from studio.errors import shows_errors

if TYPE_CHECKING:
    from studio.context import StudioContext

PAGE_SIZE = 48
ALL_STATUSES = "all"
STATUS_BADGES = {"unlabelled": "○", "draft": "✎", "done": "✓", "needs_review": "⚑"}
DISPLAY_MAX_SIDE = 2048
_CACHE_SIZE = 6


class _ArrayCache:
    """A tiny LRU of decoded arrays keyed by sample id and revision."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[tuple, object] = OrderedDict()

    def get(self, key: tuple, make):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self._items[key] = value
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value


_arrays = _ArrayCache(_CACHE_SIZE)


def sample_arrays(ctx: StudioContext, sample: Sample) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """The sample's image (``H x W x 3 uint8``), label map (``H x W uint8`` or ``None``) and, when its label
    map exists but cannot be used, why; cached by revision."""
    store = ctx.store
    key = (str(store.root), sample.id, store.revision(sample.id))

    def load():
        data = store.read(sample.id)
        return data.image, data.label_map, data.label_problem

    return _arrays.get(key, load)  # type: ignore[return-value]


# ---- gallery -----------------------------------------------------------------------------


def class_filter_choices(ctx: StudioContext) -> list[tuple[str, str]]:
    """Dropdown choices ``("person (3)", "person")`` for classes present in the dataset, by count."""
    counts: dict[int, int] = {}
    by_labels = ctx.store.label_classes()
    for sample in ctx.dataset.samples:
        for index in sample.box_classes() | by_labels.get(sample.id, set()):
            counts[index] = counts.get(index, 0) + 1
    names = ctx.dataset.classes.names
    ordered = sorted(counts, key=lambda i: (-counts[i], names[i]))
    return [(f"{names[i]} ({counts[i]})", names[i]) for i in ordered if i < len(names)]


def _caption(sample: Sample, present: set[int], classes: ClassSet, status: str | None = None) -> str:
    names = [classes.names[i] for i in sorted(present) if i != 0 and i < len(classes)]
    badge = f" · {STATUS_BADGES[status]} {STATUS_LABELS[status]}" if status else ""
    return f"{sample.id} · {', '.join(names) if names else 'no classes yet'}{badge}"


def status_filter_choices(ctx: StudioContext, counts: dict[str, int] | None = None) -> list[tuple[str, str]]:
    """Radio choices ``("done (3)", "done")`` for every status, after ``("all (4)", "all")``."""
    counts = counts if counts is not None else ctx.store.status_counts()
    total = sum(counts.values())
    return [(f"all ({total})", ALL_STATUSES), *((f"{STATUS_LABELS[s]} ({counts[s]})", s) for s in STATUSES)]


def progress_markdown(counts: dict[str, int]) -> str:
    """``"**Progress: 3 / 4 done** · 1 unlabelled · 0 draft · 0 needs review"``."""
    total = sum(counts.values())
    rest = " · ".join(f"{counts[s]} {STATUS_LABELS[s]}" for s in STATUSES if s != "done")
    return f"**Progress: {counts['done']} / {total} done** · {rest}"


def _placeholder(text: str) -> np.ndarray:
    from PIL import ImageDraw

    canvas = Image.new("RGB", (256, 256), (60, 60, 60))
    draw = ImageDraw.Draw(canvas)
    width = draw.textlength(text)
    draw.text(((256 - width) / 2, 120), text, fill=(240, 200, 200))
    return np.asarray(canvas)


def gallery_page(
    ctx: StudioContext, class_names: list[str] | None, page: int, status: str | None = None
) -> tuple[list, list[str], str, int]:
    """One page of the filtered gallery.

    Args:
        class_names: show samples holding every one of these classes (by boxes or label map).
        status: show only samples with this status (``None`` or ``"all"``: every status).

    Returns:
        ``(items, ids, info, page)``: gallery items ``(thumbnail, caption)``, the sample ids in the same
        order, a one-line summary, and the page actually shown (clamped).

    Raises:
        InvalidInput: an unknown class or status.
    """
    classes = ctx.dataset.classes
    wanted = [classes.index_of(name) for name in class_names or []]
    chosen = None if status in (None, "", ALL_STATUSES) else normalise_status(status)
    by_labels = ctx.store.label_classes()
    statuses = ctx.store.statuses()
    matches = ctx.dataset.filter_by_classes(wanted, by_labels)
    if chosen is not None:
        matches = [s for s in matches if statuses.get(s.id) == chosen]
    pages = max(1, -(-len(matches) // PAGE_SIZE))
    page = min(max(int(page or 0), 0), pages - 1)
    shown = matches[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    items: list = []
    for sample in shown:
        state = statuses.get(sample.id)
        caption = _caption(sample, sample.box_classes() | by_labels.get(sample.id, set()), classes, state)
        try:
            items.append((str(ctx.store.thumbnail(sample.id)), caption))
        except StudioError:
            items.append((_placeholder("unreadable image"), f"{sample.id} · unreadable image (see File problems)"))
    filt = f" containing {', '.join(class_names)}" if class_names else ""
    filt += f" · {STATUS_LABELS[chosen]}" if chosen is not None else ""
    info = f"{len(matches)} of {len(ctx.dataset)} samples{filt} · page {page + 1} of {pages}"
    return items, [s.id for s in shown], info, page


# ---- one sample --------------------------------------------------------------------------


def legend_html(classes: ClassSet, shares: dict[int, float], box_counts: dict[int, int]) -> str:
    """An HTML legend: a colour swatch per class present, with pixel share and box count."""
    indices = sorted(set(shares) | set(box_counts))
    if not indices:
        return "<div class='legend'>No classes: this sample has neither a label map nor boxes yet.</div>"
    items = []
    for index in indices:
        color = classes.color_of(index) if index == classes.ignore_index or index < len(classes) else (255, 0, 255)
        name = "ignore" if index == classes.ignore_index else classes.names[index]
        details = []
        if index in shares:
            details.append(f"{100 * shares[index]:.1f}% px")
        if box_counts.get(index):
            details.append(f"{box_counts[index]} box{'es' if box_counts[index] > 1 else ''}")
        items.append(
            f"<span class='item' data-class='{html.escape(name)}'><span class='swatch' style='background: rgb{color}'></span>"
            f"{html.escape(name)} <small>({', '.join(details)})</small></span>"
        )
    return "<div class='legend'>" + "".join(items) + "</div>"


def sample_legend(classes: ClassSet, label_map: np.ndarray | None, boxes: list) -> str:
    """The legend of one sample: pixel shares of its label map (background left out when anything else is
    there) and its box counts per class."""
    shares = class_shares(label_map, classes) if label_map is not None else {}
    if len(shares) > 1:
        shares.pop(0, None)
    box_counts = Counter(box.label for box in boxes)
    return legend_html(classes, shares, box_counts)


def _fit_for_display(image: np.ndarray) -> np.ndarray:
    """Downscale very large renderings so the browser stays responsive (display only)."""
    height, width = image.shape[:2]
    scale = DISPLAY_MAX_SIDE / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def render_sample(ctx: StudioContext, sample_id: str, opacity: float, show_boxes: bool) -> tuple[np.ndarray, str, str]:
    """The sample's image with its label map overlaid and boxes drawn.

    Returns:
        ``(view, details, legend)``: ``H x W x 3 uint8`` rendering, a Markdown summary and the legend HTML.
    """
    sample = ctx.dataset.get(sample_id)
    classes = ctx.dataset.classes
    image, label, label_problem = sample_arrays(ctx, sample)
    view = overlay(image, label, classes, float(opacity))
    if show_boxes and sample.boxes:
        view = draw_boxes(view, sample.boxes, classes)
    height, width = image.shape[:2]
    split = f" · split {', '.join(sample.split)}" if sample.split else ""
    label_note = "label map" if label is not None else "no label map yet (unlabelled, not background)"
    if label_problem:
        label_note = f"**label map not usable**: {html.escape(label_problem)} (the image opens; redraw the map in Annotate)"
    state = ctx.store.status(sample_id)
    mark = ctx.store.status_mark(sample_id)
    why = f" ({html.escape(mark.note)})" if mark is not None and mark.note else ""
    details = (
        f"**{sample.id}** · {width}×{height} · {len(sample.boxes)} box{'es' if len(sample.boxes) != 1 else ''} · "
        f"{label_note}{split} · status **{STATUS_LABELS[state]}**{why}  \n`{sample.image_path.name}`"
    )
    return _fit_for_display(view), details, sample_legend(classes, label, sample.boxes)


def _relative(ctx: StudioContext, path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(ctx.store.root))
    except ValueError:
        return path


def problems_markdown(ctx: StudioContext) -> str:
    """The file problems found so far (while listing, and by any operation since), as Markdown."""
    problems = ctx.store.problems
    if not problems:
        return ""
    shown = "\n".join(f"- `{html.escape(_relative(ctx, p.path))}`: {html.escape(p.reason)}" if p.path
                      else f"- {html.escape(p.reason)}" for p in problems[:50])  # fmt: skip
    more = f"\n- … and {len(problems) - 50} more" if len(problems) > 50 else ""
    return f"{len(problems)} files could not be used and were skipped (nothing was changed on disk):\n{shown}{more}"


# ---- layout and events -------------------------------------------------------------------


def build(ctx: StudioContext, demo: gr.Blocks, live: gr.State, tab: gr.Tab | None = None) -> None:
    """Lay out the Dataset tab inside the current Blocks context and wire its events.

    Args:
        live: the page's dataset version; when it changes (a save anywhere, a file changed on disk) the
            gallery, the filters, the progress and the problems list are refreshed.
        tab: the tab holding this layout; choosing it refreshes the gallery too (drafts started in the
            Annotate tab change statuses without changing the dataset's version).
    """
    page = gr.State(0)
    page_ids = gr.State([])
    selected = gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            class_filter = gr.Dropdown(
                choices=[], value=[], multiselect=True, label="Show samples containing every class of",
                elem_id="class-filter",
            )  # fmt: skip
            status_filter = gr.Radio(
                choices=[("all", ALL_STATUSES), *((STATUS_LABELS[s], s) for s in STATUSES)], value=ALL_STATUSES, label="Status",
                elem_id="status-filter",
            )  # fmt: skip
            progress = gr.Markdown(elem_id="dataset-progress")
            with gr.Row():
                prev_button = gr.Button("◀ Previous", size="sm", min_width=80)
                page_info = gr.Markdown(elem_id="page-info")
                next_button = gr.Button("Next ▶", size="sm", min_width=80)
            gallery = gr.Gallery(
                label="Samples", columns=3, height=560, allow_preview=False, object_fit="cover",
                elem_id="sample-gallery", interactive=False, buttons=[],
            )  # fmt: skip
            with gr.Accordion("File problems", open=False, visible=False, elem_id="file-problems") as problems_box:
                problems_text = gr.Markdown(elem_id="file-problems-text")
        with gr.Column(scale=3, min_width=420):
            details = gr.Markdown("Pick a sample on the left.", elem_id="sample-details")
            view = gr.Image(label="Image · label map · boxes", show_label=False, type="numpy", interactive=False, elem_id="sample-view",
                            height=520, buttons=["download", "fullscreen"])  # fmt: skip
            with gr.Row():
                opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Label map opacity", elem_id="opacity")
                show_boxes = gr.Checkbox(value=True, label="Show boxes", elem_id="show-boxes")
            legend = gr.HTML(elem_id="legend")

    def problems_updates():
        text = problems_markdown(ctx)
        return gr.Accordion(visible=bool(text), label=f"File problems ({len(ctx.store.problems)})"), text

    def status_updates(chosen: str | None):
        counts = ctx.store.status_counts()
        return gr.Radio(choices=status_filter_choices(ctx, counts), value=chosen or ALL_STATUSES), progress_markdown(counts)

    @shows_errors
    def show_page(class_names: list[str], chosen: str | None, wanted_page: int):
        items, ids, info, actual = gallery_page(ctx, class_names, wanted_page, chosen)
        return items, ids, info, actual, *problems_updates(), *status_updates(chosen)

    @shows_errors
    def on_load():
        items, ids, info, actual = gallery_page(ctx, [], 0)
        return (gr.Dropdown(choices=class_filter_choices(ctx), value=[]), items, ids, info, actual,
                *problems_updates(), *status_updates(None))  # fmt: skip

    @shows_errors
    def on_dataset_changed(class_names: list[str], chosen: str | None, wanted_page: int, sample_id: str | None,
                           alpha: float, boxes: bool):  # fmt: skip
        names = [n for n in class_names or [] if n in ctx.classes.names]
        items, ids, info, actual = gallery_page(ctx, names, wanted_page, chosen)
        view_updates = (gr.skip(), gr.skip(), gr.skip())
        if sample_id is not None and sample_id in ctx.store.ids:
            view_updates = render_sample(ctx, sample_id, alpha, boxes)
        choices = gr.Dropdown(choices=class_filter_choices(ctx), value=names)
        return choices, items, ids, info, actual, *problems_updates(), *status_updates(chosen), *view_updates

    @shows_errors
    def on_select(evt: gr.SelectData, ids: list[str], alpha: float, boxes: bool):
        if evt.index is None or not (0 <= int(evt.index) < len(ids)):
            raise gr.Error("That thumbnail is no longer on this page; pick another.")
        sample_id = ids[int(evt.index)]
        try:
            rendered = render_sample(ctx, sample_id, alpha, boxes)
        except StudioError as exc:  # shown where it happened, and kept: not a vanishing toast
            message = f"**{html.escape(sample_id)}** cannot be shown: {html.escape(str(exc))}. It is skipped by every batch operation."
            rendered = (None, message, "")
        return (sample_id, *rendered, *problems_updates())

    @shows_errors
    def on_view_change(sample_id: str | None, alpha: float, boxes: bool):
        if sample_id is None:
            return gr.skip(), gr.skip(), gr.skip()
        return render_sample(ctx, sample_id, alpha, boxes)

    problem_outputs = [problems_box, problems_text]
    page_outputs = [gallery, page_ids, page_info, page, *problem_outputs, status_filter, progress]
    demo.load(on_load, outputs=[class_filter, *page_outputs])
    changed_inputs = [class_filter, status_filter, page, selected, opacity, show_boxes]
    changed_outputs = [class_filter, *page_outputs, view, details, legend]
    live.change(on_dataset_changed, inputs=changed_inputs, outputs=changed_outputs, show_progress="hidden")
    if tab is not None:
        tab.select(on_dataset_changed, inputs=changed_inputs, outputs=changed_outputs, show_progress="hidden")
    filters = [class_filter, status_filter]
    class_filter.input(lambda names, chosen: show_page(names, chosen, 0), inputs=filters, outputs=page_outputs)
    status_filter.input(lambda names, chosen: show_page(names, chosen, 0), inputs=filters, outputs=page_outputs)
    prev_button.click(lambda names, chosen, p: show_page(names, chosen, p - 1), inputs=[*filters, page],
                      outputs=page_outputs)  # fmt: skip
    next_button.click(lambda names, chosen, p: show_page(names, chosen, p + 1), inputs=[*filters, page],
                      outputs=page_outputs)  # fmt: skip
    gallery.select(on_select, inputs=[page_ids, opacity, show_boxes],
                   outputs=[selected, view, details, legend, *problem_outputs])  # fmt: skip
    opacity.change(on_view_change, inputs=[selected, opacity, show_boxes], outputs=[view, details, legend],
                   trigger_mode="always_last", show_progress="hidden")  # fmt: skip
    show_boxes.change(on_view_change, inputs=[selected, opacity, show_boxes], outputs=[view, details, legend])
