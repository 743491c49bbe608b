"""Train tab, "Does synthetic data help?": the augmentation-value experiment on the opened dataset.

The experiment (:mod:`core.task.experiment`) trains a small segmenter on the real train split alone and with each
synthetic source at several ratios, repeated, and compares them on held-out real test images. It runs in a
background process (:func:`core.train.jobs.start_experiment_job`), so closing or refreshing the page does not stop
it; every open page reads the same folder, ``<workspace>/experiments/<name>``: the job's state, the runs finished,
the table and the plots (rewritten after every finished run).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from core.errors import InvalidInput
from core.task.data import AUGMENTATIONS
from core.task.experiment import (
    GAINS_PLOT,
    MIOU_PLOT,
    RESULTS_FILE,
    TABLE_FILE,
    ExperimentConfig,
    ExperimentInfo,
    experiment_info,
    experiments_root,
    list_experiments,
    parse_numbers,
    parse_source,
)
from core.task.sources import MADE_SOURCES
from core.train.jobs import request, start_experiment_job
from core.train.runs import JOB_FILE, _read_json, check_run_name, free_name, read_job
from studio.context import StudioContext
from studio.errors import shows_errors

TICK_S = 2.0
SIZES = (32, 64, 128, 256)
STATE_WORDS = {"starting": "starting", "running": "running", "paused": "paused", "cancelled": "cancelled",
               "finished": "finished", "failed": "failed", "idle": "not running", "stopped": "stopped"}  # fmt: skip
SOURCE_LABELS = {"composite": "random composites", "recombined": "recombined label maps",
                 "mined": "hard composites (mined)", "adversarial": "hard composites (adversarial, slow)"}  # fmt: skip


@dataclass
class ExperimentView:
    """What the page shows about one experiment."""

    status: str
    table: str
    miou_plot: str | None
    gains_plot: str | None
    live: bool
    paused: bool
    resumable: bool


class ExperimentController:
    """The section's logic, without widgets (tests drive it directly)."""

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx

    @property
    def root(self) -> Path:
        return experiments_root(self.ctx.store.cache_dir)

    def experiments(self) -> list[ExperimentInfo]:
        return list_experiments(self.root)

    def choices(self) -> list[tuple[str, str]]:
        return [(f"{e.name} · {e.finished_runs}/{e.total_runs} runs · {STATE_WORDS.get(e.state, e.state)}", e.name)
                for e in self.experiments()]  # fmt: skip

    def folder(self, name: str | None) -> Path:
        if not name:
            raise InvalidInput("no experiment is chosen; start one or pick one from the list")
        path = self.root / check_run_name(name)
        if experiment_info(path) is None:
            raise InvalidInput(f"there is no experiment named {name!r} in {self.root}")
        return path

    def default_name(self) -> str:
        return free_name(self.root, "experiment")

    def config_from_form(self, values: dict) -> ExperimentConfig:
        """The :class:`ExperimentConfig` for the opened dataset from the form's values.

        ``values``: make (list of source kinds), folders (``NAME=DIR`` lines), ratios (``"0,0.5,1"``), augs (list),
        repeats, steps, size, width, depth, split (``"0.6,0.2,0.2"``), seed, device.
        """
        folders = tuple(parse_source(line) for line in str(values.get("folders") or "").splitlines() if line.strip())
        missing = [d for _, d in folders if not Path(d).is_dir()]
        if missing:
            raise InvalidInput(f"synthetic folder {missing[0]} does not exist; give a dataset folder (VOC layout) per "
                               "line as NAME=DIR")  # fmt: skip
        ratios = parse_numbers(str(values.get("ratios") or "0"), "ratios")
        return ExperimentConfig(
            data=str(self.ctx.store.root), synthetic=folders, make_sources=tuple(values.get("make") or ()),
            ratios=ratios if 0 in ratios else (0.0, *ratios), standard_aug=tuple(values.get("augs") or ("none",)),
            repeats=int(values.get("repeats") or 1), steps=int(values.get("steps") or 1), size=int(values["size"]),
            width=int(values.get("width") or 16), depth=int(values.get("depth") or 4),
            split=str(values.get("split") or "0.6,0.2,0.2"), seed=int(values.get("seed") or 0),
            device=str(values.get("device") or "auto"),
        )  # fmt: skip

    def start(self, name: str, values: dict) -> str:
        name = check_run_name(name)
        start_experiment_job(self.config_from_form(values), self.root / name)
        return name

    def resume(self, name: str) -> str:
        folder = self.folder(name)
        info = experiment_info(folder)
        start_experiment_job(info.config, folder, resume=True)
        return f"continuing {name} from run {info.finished_runs + 1} of {info.total_runs}"

    def control(self, name: str, action: str) -> str:
        request(self.folder(name), action)
        return {"pause": f"asked {name} to pause (it holds between two training steps)", "run": f"{name} goes on",
                "cancel": f"asked {name} to stop (the run in progress keeps a checkpoint)"}[action]  # fmt: skip

    # ---- what the page shows --------------------------------------------------------------------

    def signature(self, name: str | None) -> tuple:
        """Changes whenever something the page shows changes (file times and the job's state)."""
        if not name:
            return ()
        folder = self.root / name
        stamps = []
        for rel in (JOB_FILE, RESULTS_FILE, TABLE_FILE, MIOU_PLOT):
            try:
                stamps.append((folder / rel).stat().st_mtime_ns)
            except OSError:
                stamps.append(0)
        info = experiment_info(folder) if folder.is_dir() else None
        return (name, *stamps, info.state if info else "")

    def view(self, name: str | None) -> ExperimentView:
        folder = self.root / name if name else None
        info = experiment_info(folder) if folder is not None and folder.is_dir() else None
        if info is None:
            return ExperimentView("No experiment yet: choose the sources and settings and press **Start**.", "", None,
                                  None, False, False, False)  # fmt: skip
        table = (folder / TABLE_FILE).read_text(encoding="utf-8") if (folder / TABLE_FILE).is_file() else ""
        plots = [str(folder / p) if (folder / p).is_file() else None for p in (MIOU_PLOT, GAINS_PLOT)]
        live = info.state in ("starting", "running", "paused")
        return ExperimentView(self.status_text(info, folder), _table_body(table), plots[0], plots[1], live,
                              info.state == "paused", not live and info.finished_runs < info.total_runs)  # fmt: skip

    def status_text(self, info: ExperimentInfo, folder: Path) -> str:
        job = read_job(folder)
        parts = [f"**{STATE_WORDS.get(info.state, info.state)}**",
                 f"{info.finished_runs} of {info.total_runs} runs finished"]  # fmt: skip
        seconds = [float(r.get("wall_seconds", 0)) for r in _read_json(folder / RESULTS_FILE).get("runs", [])]
        if info.state in ("running", "starting") and seconds:
            left = (info.total_runs - info.finished_runs) * sum(seconds) / len(seconds)
            parts.append(f"about {_clock(left)} left")
        message = info.message or str(job.get("message", ""))
        text = " · ".join(parts)
        return text + (f"  \n{html.escape(message)}" if message else "")


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds >= 3600 else f"{seconds // 60} min {seconds % 60:02d} s"


def _table_body(table_md: str) -> str:
    """``table.md`` without its title line (the section has its own)."""
    lines = table_md.splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines).strip()


def build(ctx: StudioContext, demo: gr.Blocks) -> ExperimentController:
    """Lay out the experiment section and wire its events."""
    controller = ExperimentController(ctx)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=360):
            gr.Markdown("Does synthetic data help a segmenter on **this** dataset, and how much of it? A small U-Net "
                        "is trained on the real train split alone and with each synthetic source at each ratio "
                        "(synthetic samples per real one), repeated, and compared on real test images it never saw. "
                        "Sources ticked below are made from the train split alone, so no test image leaks into "
                        "them. Runs in the background: you may close this page.")  # fmt: skip
            make = gr.CheckboxGroup([(SOURCE_LABELS[k], k) for k in MADE_SOURCES], value=["composite", "recombined"],
                                    label="Sources to make from the train split", elem_id="exp-make")  # fmt: skip
            folders = gr.Textbox(lines=2, label="Your own synthetic folders (NAME=DIR per line; make them from the "
                                 "train split only)", placeholder="diffusion=/path/to/generated", elem_id="exp-folders")  # fmt: skip
            with gr.Row():
                ratios = gr.Textbox(value="0,0.5,1,2", label="Ratios", elem_id="exp-ratios")
                augs = gr.CheckboxGroup(list(AUGMENTATIONS), value=["flip"], label="Standard augmentation",
                                        elem_id="exp-augs")  # fmt: skip
            with gr.Row():
                repeats = gr.Number(value=3, precision=0, minimum=1, label="Repeats", elem_id="exp-repeats")
                steps = gr.Number(value=300, precision=0, minimum=1, label="Steps per training", elem_id="exp-steps")
                size = gr.Dropdown(list(SIZES), value=128, label="Size (px)", elem_id="exp-size")
            with gr.Accordion("More settings", open=False):
                with gr.Row():
                    width = gr.Number(value=16, precision=0, minimum=2, label="U-Net width", elem_id="exp-width")
                    depth = gr.Number(value=4, precision=0, minimum=1, label="U-Net depth", elem_id="exp-depth")
                    seed = gr.Number(value=0, precision=0, label="Seed (split and first repeat)", elem_id="exp-seed")
                with gr.Row():
                    split = gr.Textbox(value="0.6,0.2,0.2", label="Split train,val,test (fractions or counts)",
                                       elem_id="exp-split")  # fmt: skip
                    device = gr.Dropdown(["auto", "cpu", "cuda"], value="auto", label="Device", elem_id="exp-device")
            with gr.Row():
                name = gr.Textbox(value=controller.default_name(), label="Experiment name", elem_id="exp-name", scale=3)
                start = gr.Button("Start", variant="primary", elem_id="exp-start", scale=1, min_width=90)
            note = gr.HTML(elem_id="exp-note")
        with gr.Column(scale=6, min_width=480):
            with gr.Row(equal_height=True):
                pick = gr.Dropdown(controller.choices(), value=None, label="Experiment", elem_id="exp-pick", scale=4)
                refresh = gr.Button("↻", size="sm", elem_id="exp-refresh", scale=0, min_width=44)
            status = gr.Markdown(elem_id="exp-status")
            with gr.Row():
                pause = gr.Button("Pause", elem_id="exp-pause", interactive=False, min_width=80)
                go_on = gr.Button("Continue", elem_id="exp-continue", interactive=False, min_width=80)
                cancel = gr.Button("Cancel", variant="stop", elem_id="exp-cancel", interactive=False, min_width=80)
                resume = gr.Button("Resume", elem_id="exp-resume", interactive=False, min_width=80)
            table = gr.Markdown(elem_id="exp-table")
            miou_plot = gr.Image(label="Test mIoU vs ratio", type="filepath", interactive=False, height=420,
                                 elem_id="exp-miou-plot", buttons=["download", "fullscreen"])  # fmt: skip
            gains_plot = gr.Image(label="Per-class IoU gain", type="filepath", interactive=False, height=420,
                                  elem_id="exp-gains-plot", buttons=["download", "fullscreen"])  # fmt: skip
    seen = gr.State(())
    timer = gr.Timer(TICK_S, active=True)
    form_names = ("make", "folders", "ratios", "augs", "repeats", "steps", "size", "width", "depth", "split", "seed",
                  "device")  # fmt: skip
    form = [make, folders, ratios, augs, repeats, steps, size, width, depth, split, seed, device]
    shown = [pick, status, table, miou_plot, gains_plot, pause, go_on, cancel, resume, seen]

    def render(chosen: str | None, pick_value: bool = False):
        view = controller.view(chosen)
        choices = controller.choices()
        chooser = gr.Dropdown(choices=choices, value=chosen) if pick_value else gr.Dropdown(choices=choices)
        return (chooser, view.status, view.table, view.miou_plot, view.gains_plot,
                gr.Button(interactive=view.live and not view.paused), gr.Button(interactive=view.paused),
                gr.Button(interactive=view.live), gr.Button(interactive=view.resumable),
                controller.signature(chosen))  # fmt: skip

    def on_tick(chosen: str | None, last: tuple):
        if not chosen or tuple(last) == controller.signature(chosen):
            return tuple(gr.skip() for _ in shown)
        return render(chosen)

    @shows_errors
    def on_start(exp_name: str, *values):
        chosen = controller.start(exp_name, dict(zip(form_names, values, strict=True)))
        message = f"<p>started <b>{html.escape(chosen)}</b> in {html.escape(str(controller.root / chosen))}</p>"
        return (message, controller.default_name(), *render(chosen, pick_value=True))

    def acting(action: str):
        @shows_errors
        def handler(chosen: str | None):
            message = controller.control(chosen, action)
            time.sleep(0.3)  # let the worker take it in before the page re-reads the state
            return (f"<p>{html.escape(message)}</p>", *render(chosen))

        return handler

    @shows_errors
    def on_resume(chosen: str | None):
        message = controller.resume(chosen)
        return (f"<p>{html.escape(message)}</p>", *render(chosen))

    def on_refresh(chosen: str | None):
        names = [value for _, value in controller.choices()]
        return render(chosen if chosen in names else (names[0] if names else None), pick_value=True)

    start.click(on_start, [name, *form], [note, name, *shown])
    pick.input(render, [pick], shown)
    refresh.click(on_refresh, [pick], shown)
    pause.click(acting("pause"), [pick], [note, *shown])
    go_on.click(acting("run"), [pick], [note, *shown])
    cancel.click(acting("cancel"), [pick], [note, *shown])
    resume.click(on_resume, [pick], [note, *shown])
    timer.tick(on_tick, [pick, seen], shown, queue=False, show_progress="hidden")
    demo.load(on_refresh, [pick], shown)
    return controller
