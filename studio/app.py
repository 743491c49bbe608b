"""The studio's Gradio app: ``build_app(config) -> gr.Blocks``.

Building the app opens the dataset (file names and annotations only) and creates no model; models load
on the first request that needs them. Heavy libraries (torch, diffusers, transformers) are not
imported here.
"""

from __future__ import annotations

import threading

import gradio as gr

from core.models import default_registry
from core.store import open_store
from studio import gradio_fixes
from studio.context import StudioConfig, StudioContext
from studio.tabs import annotate as annotate_tab
from studio.tabs import dataset as dataset_tab
from studio.tabs import experiment as experiment_tab
from studio.tabs import export as export_tab
from studio.tabs import generate as generate_tab
from studio.tabs import labels as labels_tab
from studio.tabs import models as models_tab
from studio.tabs import priors as priors_tab
from studio.tabs import render as render_tab
from studio.tabs import train as train_tab

CSS = """
.legend { display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 0.9em; }
.legend .item { display: inline-flex; align-items: center; gap: 6px; }
.legend .swatch { width: 14px; height: 14px; border-radius: 3px; border: 1px solid #0004; display: inline-block; }
.models-table { width: 100%; border-collapse: collapse; font-size: 0.9em; }
.models-table th, .models-table td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #8883; vertical-align: top; }
.models-table tr.unavailable td { color: #888; }
.models-table code { font-size: 0.85em; word-break: break-all; }
.status-available, .status-loaded { color: #15803d; font-weight: 600; }
.status-missing, .status-partial { color: #999; font-weight: 600; }
#sample-gallery .caption-label { white-space: normal; overflow: visible; text-overflow: clip; max-width: 96%;
  line-height: 1.2; }
.notice { padding: 6px 10px; border-radius: 6px; margin: 2px 0; }
.notice-info { background: #e0f2fe55; }
.notice-warning { background: #fef3c7aa; }
.notice-error { background: #fee2e2; color: #991b1b; font-weight: 600; }
.shortcuts { font-size: 0.85em; opacity: 0.85; }
.shortcuts kbd { border: 1px solid #8886; border-radius: 3px; padding: 0 4px; font-size: 0.95em; }
"""


# Warn before leaving a page whose Annotate tab holds unsaved changes (they are kept as a draft anyway), and
# install the Annotate tab's keyboard shortcuts.
PAGE_JS = (
    """
() => {
  window.addEventListener('beforeunload', (event) => {
    const status = document.querySelector('#annotate-status');
    if (status && status.innerText.includes('unsaved changes')) {
      event.preventDefault();
      event.returnValue = '';
    }
  });
"""
    + annotate_tab.SHORTCUTS_JS
    + "}\n"
)

LIVE_CHECK_S = 3.0  # how often an open page asks whether the dataset changed
CACHE_SWEEP = (120, 900)  # Gradio cache: every 2 min, delete served files older than 15 min


def header_markdown(ctx: StudioContext) -> str:
    ws = ctx.config.workspace
    store = ctx.store
    where = f"working copy of the bundled samples at `{ws.dataset_root}`" if ws.is_copy else f"`{ws.dataset_root}`"
    problems = store.problems
    noted = f" · {len(problems)} file problems (see the Dataset tab)" if problems else ""
    return (
        f"## SegStudio\nDataset: {where} · layout `{store.layout}` · {len(store)} samples · "
        f"classes `{store.classes.name}` ({len(store.classes)}){noted}"
    )


def build_app(config: StudioConfig) -> gr.Blocks:
    """Build the studio's Blocks (not launched). Opening the dataset is the only work done here."""
    gradio_fixes.apply()
    workspace = config.workspace
    store = open_store(workspace.dataset_root, cache_dir=workspace.cache_root)
    ctx = StudioContext(config, store, config.registry or default_registry())
    with gr.Blocks(title="SegStudio", delete_cache=CACHE_SWEEP) as demo:
        header = gr.Markdown(header_markdown(ctx), elem_id="studio-header")
        live = gr.State(store.version)
        # the secret persists in the workspace, so a browser is recognised (and finds its drafts) after a restart
        secret = browser_secret(workspace.cache_root)
        editor_id = gr.BrowserState(None, storage_key="segstudio-editor", secret=secret)
        last_sample = gr.BrowserState(None, storage_key="segstudio-annotate-sample", secret=secret)
        with gr.Tabs():
            with gr.Tab("Dataset", id="dataset") as dataset_page:
                dataset_tab.build(ctx, demo, live, dataset_page)
            with gr.Tab("Annotate", id="annotate"):
                demo.annotate = annotate_tab.build(ctx, demo, live, editor_id, last_sample)  # type: ignore[attr-defined]
            with gr.Tab("Label maps", id="labels"):
                demo.labels = labels_tab.build(ctx, demo, live)  # type: ignore[attr-defined]
            with gr.Tab("Priors", id="priors"):
                demo.priors = priors_tab.build(ctx, demo, live)  # type: ignore[attr-defined]
            with gr.Tab("Generate", id="generate"):
                demo.generate = generate_tab.build(ctx, demo, live)  # type: ignore[attr-defined]
            with gr.Tab("Train", id="train"), gr.Tabs():
                with gr.Tab("GAN", id="train-gan"):
                    demo.train = train_tab.build(ctx, demo, live)  # type: ignore[attr-defined]
                with gr.Tab("Does synthetic data help?", id="train-experiment"):
                    demo.experiment = experiment_tab.build(ctx, demo)  # type: ignore[attr-defined]
            with gr.Tab("Render", id="render"):
                demo.render_tab = render_tab.build(ctx, demo)  # type: ignore[attr-defined]
            with gr.Tab("Export", id="export"):
                demo.export = export_tab.build(ctx, demo, live)  # type: ignore[attr-defined]
            with gr.Tab("Models", id="models"):
                models_tab.build(ctx, demo)
        _wire_live_updates(ctx, demo, live, header)
        per_session = (demo.priors.cache, demo.labels.previews, demo.generate.per_session)  # type: ignore[attr-defined]

        def forget_session(request: gr.Request) -> None:
            _forget_session(per_session, request)

        demo.unload(forget_session)
    demo.studio_context = ctx  # type: ignore[attr-defined]
    return demo


def browser_secret(folder) -> str:
    """The key the browsers' stored editor ids are encrypted with, made once per workspace."""
    import secrets
    from pathlib import Path

    from core.io.atomic import atomic_write_text

    path = Path(folder) / "browser-secret"
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        value = secrets.token_hex(16)
        try:
            atomic_write_text(path, value)
        except OSError:
            pass  # an unwritable workspace: ids last as long as this server
        return value



CLOSED_SESSION_GRACE_S = 10.0


def _forget_session(stores, request: gr.Request) -> None:
    """A tab closed: free the previews and caches the other tabs kept for it, and, a little later, Gradio's
    own record of the session."""
    session = getattr(request, "session_hash", None)
    for store in stores:
        store.drop(session)
    holder = getattr(getattr(getattr(getattr(request, "request", None), "app", None), "state_holder", None),
                     "session_data", None)  # fmt: skip
    if session and holder is not None:
        timer = threading.Timer(CLOSED_SESSION_GRACE_S, _drop_closed_session, args=(holder, session))
        timer.daemon = True
        timer.start()


def _drop_closed_session(sessions, session_hash: str) -> None:
    """Remove a closed session's state from Gradio's holder. Gradio keeps it for an hour after the tab
    closes, with a copy of every component's config (about half a megabyte here): with many short sessions
    that is most of the server's memory. A session that reconnected in the meantime is left alone."""
    state = sessions.get(session_hash)
    if state is not None and getattr(state, "is_closed", False):
        sessions.pop(session_hash, None)


def _wire_live_updates(ctx: StudioContext, demo: gr.Blocks, live: gr.State, header: gr.Markdown) -> None:
    """Every few seconds an open page asks the store whether the dataset changed (a save in another tab or
    browser, a file changed by another program); when it did, ``live`` changes and every tab refreshes."""

    def check(seen: int):
        ctx.store.refresh()
        return ctx.store.version if ctx.store.version != seen else gr.skip()

    timer = gr.Timer(LIVE_CHECK_S)
    timer.tick(check, inputs=live, outputs=live, show_progress="hidden", concurrency_limit=None, api_visibility="private")
    live.change(lambda: header_markdown(ctx), outputs=header, show_progress="hidden", api_visibility="private")
    demo.load(lambda: header_markdown(ctx), outputs=header, show_progress="hidden", api_visibility="private")


def launch_kwargs(config: StudioConfig) -> dict:
    """Keyword arguments for ``Blocks.launch`` that serve only the dataset and workspace folders."""
    return {
        "server_name": config.host,
        "server_port": config.port,
        "share": config.share,
        "auth": config.auth,
        "allowed_paths": config.workspace.allowed_paths(),
        "css": CSS,
        "js": PAGE_JS,
        "footer_links": ["gradio", "settings"],
    }
