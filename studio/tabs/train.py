"""Train tab: GANs trained on the opened dataset, in a background process the page watches.

The runs live in the dataset's workspace (``<cache>/train_runs/<name>``), never in the dataset folder. A run
trains in its own process (:mod:`core.train.jobs`), so closing or refreshing the page, or a second browser, does
not stop it; every open page reads the same run folder: state, loss curves from ``log.jsonl``, the latest sample
grid (generated images beside the label maps they were made for), the ETA.
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path

import gradio as gr

from core.errors import InvalidInput
from core.train.config import SIZES, TrainConfig
from core.train.jobs import is_live, request, start_job
from core.train.runs import RunInfo, check_run_name, free_name, list_runs, read_job, run_info, runs_root
from studio.context import StudioContext
from studio.errors import shows_errors

# Settings the form offers, in the order shown; the rest keep the kind's defaults.
FORM_FIELDS = ("kind", "size", "steps", "batch", "width", "seed", "sample_every", "checkpoint_every", "device",
               "lr_g", "lr_d", "n_critic", "gp_lambda", "labelmix_lambda", "diffaugment")  # fmt: skip
TICK_S = 2.0
MAX_PLOT_POINTS = 600
STATE_WORDS = {"starting": "starting", "running": "training", "paused": "paused", "cancelled": "cancelled",
               "finished": "finished", "failed": "failed", "idle": "not training", "stopped": "stopped"}  # fmt: skip


@dataclass
class RunView:
    """What the page shows about one run."""

    status: str
    losses: object  # pandas DataFrame (step, loss, value), None before the first log line
    grid: str | None
    grid_caption: str
    evaluation: str
    live: bool
    resumable: bool
    paused: bool = False
    steps: int | None = None  # the run's step target (None: no run)


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def loss_frame(records: list[dict], max_points: int = MAX_PLOT_POINTS):
    """The log as a long table ``step, loss, value`` for a line plot (thinned to about ``max_points`` steps;
    non-finite values left out)."""
    import pandas as pd

    every = max(1, math.ceil(len(records) / max_points))
    rows = [
        (int(rec["step"]), str(name), float(value))
        for i, rec in enumerate(records)
        if i % every == 0 or i == len(records) - 1
        for name, value in rec.get("losses", {}).items()
        if isinstance(value, int | float) and math.isfinite(value)
    ]
    steps, names, values = zip(*rows, strict=True) if rows else ((), (), ())
    # typed even when empty: the plot takes its axis types from the first frame it is given
    return pd.DataFrame({"step": pd.Series(steps, dtype="int64"), "loss": pd.Series(names, dtype="str"),
                         "value": pd.Series(values, dtype="float64")})  # fmt: skip


def latest_grid(run_dir: Path) -> Path | None:
    grids = sorted((run_dir / "grids").glob("step_*.png"))
    return grids[-1] if grids else None


def _config_of(run_dir: Path) -> dict:
    import json

    try:
        return json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class TrainController:
    """The tab's logic, without widgets (tests drive it directly)."""

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx

    @property
    def runs_dir(self) -> Path:
        return runs_root(self.ctx.store.cache_dir)

    def runs(self) -> list[RunInfo]:
        return list_runs(self.runs_dir)

    def run_choices(self) -> list[tuple[str, str]]:
        return [(f"{r.name} · {r.kind} {r.size}px · step {max(r.step, r.logged_step)}/{r.steps} · "
                 f"{STATE_WORDS.get(r.state, r.state)}", r.name) for r in self.runs()]  # fmt: skip

    def run_dir(self, name: str | None) -> Path:
        if not name:
            raise InvalidInput("no run is chosen; start one or pick one from the list")
        path = self.runs_dir / check_run_name(name)
        if not (path / "config.json").is_file() and not (path / "job.json").is_file():
            raise InvalidInput(f"there is no run named {name!r} in {self.runs_dir}")
        return path

    def default_name(self, kind: str, size: int) -> str:
        return free_name(self.runs_dir, f"{kind}-{int(size)}")

    def config_from_form(self, values: dict) -> TrainConfig:
        """A :class:`TrainConfig` for the opened dataset from the form's values (empty ones keep the defaults)."""
        known = {f.name for f in fields(TrainConfig)}
        kind = values.get("kind") or "label2image"
        overrides = {k: v for k, v in values.items()
                     if k in known and k != "kind" and (v not in (None, "") or k == "diffaugment")}  # fmt: skip
        if "diffaugment" in overrides:
            overrides["diffaugment"] = str(overrides["diffaugment"] or "").replace(" ", "")
        for key in ("size", "steps", "batch", "width", "seed", "sample_every", "checkpoint_every", "n_critic"):
            if key in overrides:
                overrides[key] = int(overrides[key])
        return TrainConfig.for_kind(kind, str(self.ctx.store.root), **overrides)

    def start(self, name: str, values: dict) -> str:
        """Start a new run; returns its name."""
        name = check_run_name(name)
        config = self.config_from_form(values)
        start_job(config, self.runs_dir / name, cache_dir=self.ctx.store.cache_dir)
        return name

    def resume(self, name: str, steps: int | None = None) -> str:
        """Continue a stopped, cancelled, failed or finished run from its latest checkpoint, up to ``steps``."""
        run_dir = self.run_dir(name)
        old = TrainConfig.from_json(_config_of(run_dir))
        total = int(steps) if steps else old.steps
        info = run_info(run_dir)
        if info is not None and info.step >= total:
            raise InvalidInput(f"{name} is at step {info.step}; ask for more than {info.step} steps to train further")
        start_job(old.replace(steps=total), run_dir, resume=True, cache_dir=self.ctx.store.cache_dir)
        return f"resuming {name} from step {info.step if info else 0} to {total}"

    def control(self, name: str, action: str) -> str:
        request(self.run_dir(name), action)
        return {"pause": f"asked {name} to pause (it stops after the current step)",
                "run": f"{name} goes on", "cancel": f"asked {name} to stop (it saves a checkpoint first)"}[action]  # fmt: skip

    # ---- what the page shows --------------------------------------------------------------------

    def signature(self, name: str | None) -> tuple:
        """Changes whenever something the page shows about the run changes (cheap: file times only)."""
        if not name:
            return ()
        run_dir = self.runs_dir / name
        stamps = []
        for rel in ("job.json", "log.jsonl", "checkpoint.json", "eval.json"):
            try:
                stamps.append((run_dir / rel).stat().st_mtime_ns)
            except OSError:
                stamps.append(0)
        grid = latest_grid(run_dir) if run_dir.is_dir() else None
        return (name, *stamps, str(grid), is_live(run_dir) if run_dir.is_dir() else False)

    def view(self, name: str | None) -> RunView:
        from core.train.generation import read_log

        if not name or not (self.runs_dir / name).is_dir():
            return RunView("No run yet: set the options and press **Start**.", None, None, "", "", False, False)
        run_dir = self.runs_dir / name
        info = run_info(run_dir)
        job = read_job(run_dir)
        records = read_log(run_dir)
        grid = latest_grid(run_dir)
        caption = f"step {int(grid.stem.split('_')[-1])}: generated images beside their label maps" if grid else ""
        live = info is not None and info.state in ("starting", "running", "paused")
        resumable = info is not None and not live
        # None, not an empty frame, while nothing is logged: a plot first given an empty frame never draws its lines
        return RunView(self.status_text(info, job, records), loss_frame(records) if records else None,
                       str(grid) if grid else None,
                       caption, self.evaluation_text(run_dir), live, resumable, info is not None and info.state == "paused",
                       info.steps if info else None)  # fmt: skip

    def status_text(self, info: RunInfo | None, job: dict, records: list[dict]) -> str:
        if info is None:
            state = str(job.get("state", "starting"))
            return f"**{STATE_WORDS.get(state, state)}** · {html.escape(str(job.get('message', '')))}"
        step = max(info.logged_step, int(job.get("step", 0) or 0))
        parts = [f"**{STATE_WORDS.get(info.state, info.state)}**", f"step {step} / {info.steps}",
                 f"checkpoint at step {info.step}" if info.step else "no checkpoint yet"]  # fmt: skip
        rate = self._rate(records)
        if rate:
            parts.append(f"{rate:.2f} steps/s" if rate >= 0.1 else f"{1 / rate:.1f} s/step")
            if info.state == "running" and step < info.steps:
                parts.append(f"ETA {_clock((info.steps - step) / rate)}")
        if records:
            parts.append(f"{_clock(float(records[-1].get('seconds', 0)))} trained")
        text = " · ".join(parts)
        if info.message and info.state in ("failed", "stopped", "cancelled", "finished"):
            text += f"  \n{html.escape(info.message)}"
        return text

    @staticmethod
    def _rate(records: list[dict], window: int = 20) -> float:
        tail = records[-window:]
        if len(tail) < 2:
            return 0.0
        steps = tail[-1]["step"] - tail[0]["step"]
        secs = float(tail[-1].get("seconds", 0)) - float(tail[0].get("seconds", 0))
        return steps / secs if steps > 0 and secs > 0 else 0.0

    def evaluation_text(self, run_dir: Path) -> str:
        """``eval.json`` (written at each checkpoint, see :mod:`core.train.evaluate`) as a few lines of Markdown."""
        import json

        path = run_dir / "eval.json"
        if not path.is_file():
            return ""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""
        return evaluation_markdown(doc)


def evaluation_markdown(doc: dict) -> str:
    """The in-run evaluation: per-class colour statistics (generated vs real) and FID / KID or why they were
    skipped."""
    lines = [f"**Evaluation** at step {doc.get('step', '?')} ({doc.get('n', '?')} samples)"]
    color = doc.get("color") or {}
    if color.get("color_fd") is not None:
        lines.append(f"- colour Fréchet distance per class (0-255 units, lower is closer to the real pixels): "
                     f"**{color['color_fd']:.1f}**; mean-colour distance {color.get('mean_color_l2', 0):.1f}")  # fmt: skip
    for name, stats in (color.get("classes") or {}).items():
        if isinstance(stats, dict) and stats.get("frechet") is not None:
            lines.append(f"  - {html.escape(str(name))}: {stats['frechet']:.1f} (mean colour real "
                         f"{stats.get('real_mean')}, generated {stats.get('generated_mean')})")  # fmt: skip
    if color.get("missing"):
        lines.append(f"- classes never generated: {html.escape(', '.join(map(str, color['missing'])))}")
    inception = doc.get("inception") or {}
    if inception.get("status") == "ok":
        lines.append(f"- FID {inception['fid']:.1f} · KID {inception['kid_mean']:.4f} ± {inception['kid_std']:.4f}")
    elif inception:
        lines.append(f"- FID / KID skipped: {html.escape(str(inception.get('reason', inception.get('status', ''))))}")
    return "\n".join(lines)


def _form_defaults(kind: str) -> dict:
    base = TrainConfig.for_kind(kind, "x")
    return {f.name: getattr(base, f.name) for f in fields(TrainConfig)}


def build(ctx: StudioContext, demo: gr.Blocks, live: gr.State) -> TrainController:
    """Lay out the Train tab and wire its events."""
    controller = TrainController(ctx)
    defaults = _form_defaults("label2image")
    has_diffaugment = "diffaugment" in defaults
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=360):
            gr.Markdown("Train a GAN on this dataset's labelled samples. **label2image** makes an image for any "
                        "label map (use it on recombined maps); **pair** makes new image + label map pairs. "
                        "Training runs in the background: you may close this page.")  # fmt: skip
            with gr.Row():
                kind = gr.Radio([("label map → image", "label2image"), ("image + mask pairs", "pair")],
                                value="label2image", label="Kind", elem_id="train-kind")  # fmt: skip
                size = gr.Dropdown([s for s in SIZES if s >= 16], value=64, label="Size (px)", elem_id="train-size")
            with gr.Row():
                steps = gr.Number(value=2000, precision=0, minimum=1, label="Steps", elem_id="train-steps")
                batch = gr.Number(value=defaults["batch"], precision=0, minimum=1, label="Batch", elem_id="train-batch")
                width = gr.Number(value=defaults["width"], precision=0, minimum=4, label="Width (channels)",
                                  elem_id="train-width")  # fmt: skip
            with gr.Row():
                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="train-seed")
                sample_every = gr.Number(value=50, precision=0, minimum=0, label="Sample grid every",
                                         elem_id="train-sample-every")  # fmt: skip
                checkpoint_every = gr.Number(value=100, precision=0, minimum=1, label="Checkpoint every",
                                             elem_id="train-checkpoint-every")  # fmt: skip
            with gr.Accordion("More settings", open=False):
                device = gr.Dropdown(["auto", "cpu", "cuda"], value="auto", label="Device (cuda trains with AMP)",
                                     elem_id="train-device")  # fmt: skip
                with gr.Row():
                    lr_g = gr.Number(value=defaults["lr_g"], label="Generator lr", elem_id="train-lr-g")
                    lr_d = gr.Number(value=defaults["lr_d"], label="Critic lr", elem_id="train-lr-d")
                with gr.Row():
                    n_critic = gr.Number(value=defaults["n_critic"], precision=0, minimum=1,
                                         label="Critic steps per step (pair)", elem_id="train-n-critic")  # fmt: skip
                    gp_lambda = gr.Number(value=defaults["gp_lambda"], label="Gradient penalty λ (pair)",
                                          elem_id="train-gp")  # fmt: skip
                    labelmix = gr.Number(value=defaults["labelmix_lambda"], label="LabelMix λ (label2image)",
                                         elem_id="train-labelmix")  # fmt: skip
                diffaugment = gr.Textbox(value=str(defaults.get("diffaugment", "")), visible=has_diffaugment,
                                         label="Differentiable augmentation (color, translation, cutout; empty: off)",
                                         elem_id="train-diffaugment")  # fmt: skip
            with gr.Row():
                name = gr.Textbox(value=controller.default_name("label2image", 64), label="Run name",
                                  elem_id="train-name", scale=3)  # fmt: skip
                start = gr.Button("Start", variant="primary", elem_id="train-start", scale=1, min_width=90)
            note = gr.HTML(elem_id="train-note")
        with gr.Column(scale=6, min_width=480):
            with gr.Row(equal_height=True):
                run_pick = gr.Dropdown(controller.run_choices(), value=None, label="Run", elem_id="train-run",
                                       scale=4)  # fmt: skip
                refresh = gr.Button("↻", size="sm", elem_id="train-refresh", scale=0, min_width=44)
            status = gr.Markdown(elem_id="train-status")
            with gr.Row():
                pause = gr.Button("Pause", elem_id="train-pause", interactive=False, min_width=80)
                go_on = gr.Button("Continue", elem_id="train-continue", interactive=False, min_width=80)
                cancel = gr.Button("Cancel", variant="stop", elem_id="train-cancel", interactive=False, min_width=80)
                more_steps = gr.Number(value=None, precision=0, label="Resume up to step",
                                       elem_id="train-more-steps", min_width=120)  # fmt: skip
                resume = gr.Button("Resume", elem_id="train-resume", interactive=False, min_width=80)
            plot = gr.LinePlot(None, x="step", y="value", color="loss", title="Losses", height=260,
                               elem_id="train-plot", x_title="step", y_title="loss")  # fmt: skip
            grid = gr.Image(label="Latest sample grid", type="filepath", interactive=False, height=360,
                            elem_id="train-grid", buttons=["download", "fullscreen"])  # fmt: skip
            grid_caption = gr.Markdown(elem_id="train-grid-caption")
            evaluation = gr.Markdown(elem_id="train-eval")
    seen = gr.State(())
    timer = gr.Timer(TICK_S, active=True)
    form = [kind, size, steps, batch, width, seed, sample_every, checkpoint_every, device, lr_g, lr_d, n_critic,
            gp_lambda, labelmix, diffaugment]  # fmt: skip
    shown = [run_pick, status, plot, grid, grid_caption, evaluation, pause, go_on, cancel, resume, more_steps, seen]

    def render(chosen: str | None, *, target: bool = True, pick_value: bool = False):
        """Every output in ``shown`` for run ``chosen`` (``target``: also set "Resume up to step" to its steps;
        ``pick_value``: also select ``chosen`` in the run list)."""
        view = controller.view(chosen)
        choices = controller.run_choices()
        pick = gr.Dropdown(choices=choices, value=chosen) if pick_value else gr.Dropdown(choices=choices)
        return (pick, view.status, view.losses, view.grid, view.grid_caption, view.evaluation,
                gr.Button(interactive=view.live and not view.paused), gr.Button(interactive=view.paused),
                gr.Button(interactive=view.live), gr.Button(interactive=view.resumable),
                gr.Number(value=view.steps) if target and view.steps else gr.skip(),
                controller.signature(chosen))  # fmt: skip

    def on_pick(chosen: str | None):
        return render(chosen)

    def on_tick(chosen: str | None, last: tuple):
        if not chosen or tuple(last) == controller.signature(chosen):
            return tuple(gr.skip() for _ in shown)
        return render(chosen, target=False)

    def on_kind(chosen_kind: str, chosen_size: int, current_name: str):
        d = _form_defaults(chosen_kind)
        keep = current_name if current_name and not current_name.startswith(("label2image-", "pair-")) else None
        return (d["lr_g"], d["lr_d"], d["labelmix_lambda"], keep or controller.default_name(chosen_kind, chosen_size))

    @shows_errors
    def on_start(run_name: str, *values):
        chosen = controller.start(run_name, dict(zip(FORM_FIELDS, values, strict=True)))
        note_html = f"<p>started <b>{html.escape(chosen)}</b> in {html.escape(str(controller.runs_dir / chosen))}</p>"
        return (note_html, controller.default_name(values[0], values[1]), *render(chosen, pick_value=True))

    def acting(action: str):
        @shows_errors
        def handler(chosen: str | None):
            message = controller.control(chosen, action)
            time.sleep(0.3)  # let the worker take it in before the page re-reads the state
            return (f"<p>{html.escape(message)}</p>", *render(chosen, target=False))

        return handler

    @shows_errors
    def on_resume(chosen: str | None, up_to):
        message = controller.resume(chosen, int(up_to) if up_to else None)
        return (f"<p>{html.escape(message)}</p>", *render(chosen, target=False))

    def on_refresh(chosen: str | None):
        names = [value for _, value in controller.run_choices()]
        keep = chosen if chosen in names else (names[0] if names else None)
        return render(keep, pick_value=True)

    kind.change(on_kind, [kind, size, name], [lr_g, lr_d, labelmix, name], queue=False)
    size.change(lambda k, s, n: n if not n.startswith(("label2image-", "pair-")) else controller.default_name(k, s),
                [kind, size, name], [name], queue=False)  # fmt: skip
    start.click(on_start, [name, *form], [note, name, *shown])
    run_pick.input(on_pick, [run_pick], shown)
    refresh.click(on_refresh, [run_pick], shown)
    pause.click(acting("pause"), [run_pick], [note, *shown])
    go_on.click(acting("run"), [run_pick], [note, *shown])
    cancel.click(acting("cancel"), [run_pick], [note, *shown])
    resume.click(on_resume, [run_pick, more_steps], [note, *shown])
    timer.tick(on_tick, [run_pick, seen], shown, queue=False, show_progress="hidden")
    demo.load(on_refresh, [run_pick], shown)
    return controller
