"""The Models page: every registered model, whether its weights are present, and where they belong."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import gradio as gr

from core.models import ModelStatus, downloads_allowed, models_dir
from studio.errors import shows_errors

if TYPE_CHECKING:
    from studio.context import StudioContext


def _row(status: ModelStatus) -> str:
    spec = status.spec
    css = "available" if status.available else "unavailable"
    title = "" if status.available else f" title='{html.escape(status.install_message(), quote=True)}'"
    return (
        f"<tr class='{css}' data-model='{html.escape(spec.id)}'{title}>"
        f"<td><b>{html.escape(spec.id)}</b><br><small>{html.escape(spec.description)}</small></td>"
        f"<td>{html.escape(spec.task)}</td>"
        f"<td><span class='status-{status.state}'>{status.state}</span></td>"
        f"<td><code>{html.escape(str(status.folder))}</code><br><small>{html.escape(spec.file_list())}</small></td>"
        f"<td>{html.escape(spec.download_size)}</td></tr>"
    )


def models_html(ctx: StudioContext) -> str:
    """The registry's statuses as an HTML table (unavailable rows greyed, with the install message)."""
    statuses = ctx.registry.statuses()
    available = sum(s.available for s in statuses)
    downloads = "allowed" if downloads_allowed() else "off (start with --allow-downloads to fetch missing weights)"
    head = (
        f"<p>{available} of {len(statuses)} models available · models folder <code>{html.escape(str(models_dir()))}</code>"
        f" · downloads {downloads}</p><p>To install a model, put the files listed beside it into its folder, for "
        "example with <code>hf download REPO --local-dir FOLDER</code> on a machine with internet access and then "
        "copying the folder here. Hover a greyed row for the exact instruction.</p>"
    )
    rows = "".join(_row(s) for s in statuses)
    return (
        head + "<table class='models-table'><thead><tr><th>Model</th><th>Task</th><th>Status</th>"
        f"<th>Weights folder and files</th><th>Size</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def build(ctx: StudioContext, demo: gr.Blocks) -> None:
    """Lay out the Models page; the table is filled on page load and on Refresh (never at build time)."""
    gr.Markdown(
        "Models load on first use, from the local models folder or the Hugging Face cache. "
        "Nothing is downloaded unless SegStudio was started with `--allow-downloads`."
    )
    table = gr.HTML(elem_id="models-table")
    refresh = gr.Button("Refresh", size="sm")
    fill = shows_errors(lambda: models_html(ctx))
    demo.load(fill, outputs=table)
    refresh.click(fill, outputs=table)
