"""The studio's Gradio app: ``build_app(config) -> gr.Blocks``.

Building the app opens the dataset (file names and annotations only) and creates no model; models load
on the first request that needs them. Heavy libraries (torch, diffusers, transformers) are not
imported here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from core.io.dataset import open_dataset
from core.models import ModelRegistry, default_registry
from core.types import Dataset
from core.workspace import Workspace, prepare_workspace
from studio.tabs import annotate as annotate_tab
from studio.tabs import dataset as dataset_tab
from studio.tabs import generate as generate_tab
from studio.tabs import labels as labels_tab
from studio.tabs import models as models_tab
from studio.tabs import priors as priors_tab

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
"""


@dataclass
class StudioConfig:
    """What the studio is opened on and how it is served.

    Attributes:
        workspace: the dataset and output folders (see :func:`core.workspace.prepare_workspace`).
        host, port, share, auth: passed to ``launch``.
        registry: the model registry (the process-wide default when ``None``).
    """

    workspace: Workspace
    host: str = "127.0.0.1"
    port: int | None = None
    share: bool = False
    auth: tuple[str, str] | None = None
    registry: ModelRegistry | None = None

    @classmethod
    def for_data(cls, data: str | Path | None = None, workspace: str | Path | None = None, **kwargs) -> StudioConfig:
        """A config for a dataset folder (``None``: the bundled samples, as a workspace copy)."""
        return cls(prepare_workspace(data, workspace), **kwargs)


@dataclass
class StudioContext:
    """What every tab shares: the config, the open dataset and the model registry."""

    config: StudioConfig
    dataset: Dataset
    registry: ModelRegistry
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reload_dataset(self) -> Dataset:
        """Re-read the dataset folder (after files changed on disk)."""
        with self.lock:
            self.dataset = open_dataset(self.config.workspace.dataset_root)
        return self.dataset


def header_markdown(ctx: StudioContext) -> str:
    ws = ctx.config.workspace
    where = f"working copy of the bundled samples at `{ws.dataset_root}`" if ws.is_copy else f"`{ws.dataset_root}`"
    problems = f" · {len(ctx.dataset.problems)} file problems (see the Dataset tab)" if ctx.dataset.problems else ""
    return (
        f"## SegStudio\nDataset: {where} · layout `{ctx.dataset.layout}` · {len(ctx.dataset)} samples · "
        f"classes `{ctx.dataset.classes.name}` ({len(ctx.dataset.classes)}){problems}"
    )


def build_app(config: StudioConfig) -> gr.Blocks:
    """Build the studio's Blocks (not launched). Opening the dataset is the only work done here."""
    ctx = StudioContext(config, open_dataset(config.workspace.dataset_root), config.registry or default_registry())
    with gr.Blocks(title="SegStudio") as demo:
        gr.Markdown(header_markdown(ctx), elem_id="studio-header")
        with gr.Tabs():
            with gr.Tab("Dataset", id="dataset"):
                dataset_tab.build(ctx, demo)
            with gr.Tab("Annotate", id="annotate"):
                demo.annotate = annotate_tab.build(ctx, demo)  # type: ignore[attr-defined]
            with gr.Tab("Label maps", id="labels"):
                demo.labels = labels_tab.build(ctx, demo)  # type: ignore[attr-defined]
            with gr.Tab("Priors", id="priors"):
                demo.priors = priors_tab.build(ctx, demo)  # type: ignore[attr-defined]
            with gr.Tab("Generate", id="generate"):
                demo.generate = generate_tab.build(ctx, demo)  # type: ignore[attr-defined]
            with gr.Tab("Models", id="models"):
                models_tab.build(ctx, demo)
    demo.studio_context = ctx  # type: ignore[attr-defined]
    return demo


def launch_kwargs(config: StudioConfig) -> dict:
    """Keyword arguments for ``Blocks.launch`` that serve only the dataset and workspace folders."""
    return {
        "server_name": config.host,
        "server_port": config.port,
        "share": config.share,
        "auth": config.auth,
        "allowed_paths": config.workspace.allowed_paths(),
        "css": CSS,
        "footer_links": ["gradio", "settings"],
    }
