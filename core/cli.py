"""``segstudio <command>``: a thin command line over the engine.

Commands: ``studio`` (open the browser studio), ``models`` (which model weights are present and where
they belong), ``info`` (what a dataset folder holds), ``train`` (a GAN on a dataset, resumable), ``train-segmenter`` / ``evaluate-segmenter`` (the task model), and more. Errors a user can cause print one line naming
the problem and exit with status 2; nothing prints a traceback for them.

The ``studio`` command lives in the ``studio`` package, which plugs itself in through the
``segstudio.ui`` entry point: the engine never imports the UI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from core.errors import StudioError

EXIT_USAGE = 2


def add_studio_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``segstudio studio`` (and ``python launch.py``)."""
    parser.add_argument(
        "--data", metavar="DIR", help="dataset folder (default: the bundled samples, opened as a workspace copy)"
    )
    parser.add_argument("--workspace", metavar="DIR", help="where the working copy and new outputs go")
    parser.add_argument(
        "--reset-workspace",
        action="store_true",
        help="start from a fresh copy of the bundled samples (the old copy is moved aside)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free one)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    parser.add_argument("--auth", metavar="USER:PASS", help="require this user name and password")
    parser.add_argument(
        "--allow-downloads",
        action="store_true",
        help="let the model registry download missing weights from the Hugging Face Hub",
    )
    parser.add_argument(
        "--models", metavar="DIR", help="local models folder (default $SEGSTUDIO_MODELS or ~/.cache/segstudio/models)"
    )
    parser.add_argument("--no-browser", action="store_true", help="accepted for compatibility; the browser is never opened")  # fmt: skip


def apply_environment(args: argparse.Namespace) -> None:
    """Turn process-wide options into the environment variables the engine reads."""
    if getattr(args, "allow_downloads", False):
        os.environ["SEGSTUDIO_ALLOW_DOWNLOADS"] = "1"
    if getattr(args, "models", None):
        os.environ["SEGSTUDIO_MODELS"] = os.path.abspath(os.path.expanduser(args.models))


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``"user:pass"`` -> ``("user", "pass")``.

    Raises:
        InvalidInput: when the value has no colon or an empty part.
    """
    from core.errors import InvalidInput

    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise InvalidInput(f"--auth expects USER:PASS with both parts non-empty, got {value!r}")
    return user, password


def _run_studio(args: argparse.Namespace) -> int:
    from importlib.metadata import entry_points

    found = list(entry_points(group="segstudio.ui", name="studio"))
    if not found:
        print("error: the studio UI is not installed; run `pip install -e .` in the SegStudio folder", file=sys.stderr)
        return EXIT_USAGE
    serve = found[0].load()
    return int(serve(args) or 0)


def _run_models(args: argparse.Namespace) -> int:
    from core.models import default_registry, models_dir

    statuses = default_registry().statuses()
    if args.json:
        rows = [{"id": s.spec.id, "repo_id": s.spec.repo_id, "task": s.spec.task, "state": s.state,
                 "folder": str(s.folder), "missing": list(s.missing), "files": s.spec.file_list()} for s in statuses]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    print(f"models folder: {models_dir()}  (set SEGSTUDIO_MODELS or --models to change it)")
    width = max(len(s.spec.id) for s in statuses)
    for status in statuses:
        print(f"{status.spec.id:<{width}}  {status.state:<9}  {status.spec.task:<14}  {status.folder}")
        if not status.available:
            print(f"{'':<{width}}  needs: {status.spec.file_list()}")
    return 0


def open_store(path: str):
    """The dataset store of a folder named on the command line (its caches go to the workspace, never
    into the folder)."""
    from core.store import DatasetStore

    return DatasetStore(path)


def _skipped_note(skipped) -> None:
    if len(skipped):
        print(f"note: {skipped.summary()}", file=sys.stderr)


def _run_info(args: argparse.Namespace) -> int:
    from core.store import STATUS_LABELS
    from core.workspace import dataset_cache_dir

    if getattr(args, "workspace", None):  # the studio's --workspace: its statuses and drafts are there
        from core.store import DatasetStore

        store = DatasetStore(args.dir, cache_dir=dataset_cache_dir(args.dir, args.workspace))
    else:
        store = open_store(args.dir)
    problems = store.check(decode_images=True)
    labelled = len(store.labelled_ids())
    with_file = sum(1 for s in store.samples if s.has_label_map)
    boxes = sum(len(s.boxes) for s in store.samples)
    status = store.status_counts()  # after the check: a label map found unusable does not count as done
    summary = {
        "root": str(store.root), "layout": store.layout, "classes": store.classes.name,
        "n_classes": len(store.classes), "samples": len(store), "with_label_map": labelled,
        "unusable_label_maps": with_file - labelled, "unlabelled": len(store) - with_file, "boxes": boxes,
        "status": status, "problems": [p.to_json() for p in problems],
    }  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{store.root}: {store.layout} layout, {len(store)} samples, {labelled} with usable label maps "
          f"({len(store) - with_file} unlabelled), {boxes} boxes, class set {store.classes.name!r} "
          f"({len(store.classes)} classes), {len(problems)} problems")  # fmt: skip
    print(f"status: {status['done']} / {len(store)} done; "
          + ", ".join(f"{count} {STATUS_LABELS[name]}" for name, count in status.items() if name != "done"))  # fmt: skip
    for problem in problems:
        print(f"  problem: {problem}")
    return 0


def _run_eval_boxes(args: argparse.Namespace) -> int:
    from core.errors import InvalidInput
    from core.refine.evaluate import evaluate_boxes
    from core.refine.refiner import RefineSettings

    settings = RefineSettings(args.method)
    if args.clicks is not None:  # the robot-user evaluation
        from core.refine.clicks import CLICK_RADIUS, evaluate_with_clicks

        radius = CLICK_RADIUS if args.click_radius is None else args.click_radius
        report = evaluate_with_clicks(args.dir, settings, args.clicks, radius=radius, limit=args.limit)
        summary = report.summary()
        if args.json:
            print(json.dumps(summary))
            return 0
        for score in report.scores:
            curve = " ".join(f"{v:.3f}" for v in score.ious)
            clicks = "".join("+" if c.positive else "-" for c in score.clicks)
            print(f"{score.name:<16} IoU after 0..{report.clicks} clicks: {curve}  clicks {clicks or '(none)'}")
        curve = " ".join(f"{v:.3f}" for v in summary["miou_curve"])
        recut = "n/a" if summary["recut_median"] is None else f"{summary['recut_median']:.3f} s"
        print(f"{summary['method']}: {summary['n']} images, mean IoU after 0..{report.clicks} clicks: {curve}; "
              f"NoC@85 {summary['noc85']:.2f} ({summary['failed85']} never reached), NoC@90 {summary['noc90']:.2f} "
              f"({summary['failed90']} never reached), capped at {report.clicks}; median re-cut {recut} per click "
              f"(click radius {radius} px)")  # fmt: skip
        return 0
    if args.click_radius is not None:
        raise InvalidInput("--click-radius needs --clicks K (the robot-user evaluation)")
    report = evaluate_boxes(args.dir, settings, limit=args.limit)
    summary = report.summary()
    if not args.json:
        for score in report.scores:
            print(f"{score.name:<16} IoU {score.iou:.3f}  error in box {100 * score.err_in_box:5.1f}%  "
                  f"{1000 * sum(score.seconds):7.0f} ms")  # fmt: skip
    print(f"{summary['method']}: {summary['n']} images, mean IoU {summary['miou']:.3f}, error inside the box "
          f"{100 * summary['err_in_box']:.1f}%, seconds per box mean {summary['sec_mean']:.3f} median "
          f"{summary['sec_median']:.3f}")  # fmt: skip
    if args.json:
        print(json.dumps(summary))
    return 0


def _run_stats(args: argparse.Namespace) -> int:
    from core.labels.stats import dataset_stats
    from core.store import SkipReport

    dataset = open_store(args.dir)
    skipped = SkipReport()
    summary = dataset_stats(dataset, include_background=args.background, skipped=skipped).summary()
    summary["skipped"] = [p.to_json() for p in skipped.skipped]
    _skipped_note(skipped)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{dataset.root}: {summary['maps']} label maps, {summary['classes']} classes counted "
          f"({summary['missing_classes']} never occur)")  # fmt: skip
    print(f"{'class':<16} {'images':>7} {'freq':>6} {'pixel share':>11} {'instances':>9}")
    for row in summary["per_class"]:
        if not row["images"]:
            continue
        print(f"{row['class']:<16} {row['images']:>7} {row['appearance_frequency']:>6.3f} {row['pixel_share']:>11.4f} "
              f"{row['instances']:>9}")  # fmt: skip
    print(f"entropy (appearance) {summary['entropy_appearance']:.3f} bits, normalised "
          f"{summary['entropy_appearance_normalised']:.3f}; imbalance ratio (appearance) "
          f"{summary['imbalance_ratio_appearance']:.2f}; pixels: entropy {summary['entropy_pixels']:.3f} bits, "
          f"imbalance ratio {summary['imbalance_ratio_pixels']:.2f}")  # fmt: skip
    return 0


def _parse_band(text: str) -> tuple[str, float]:
    from core.errors import InvalidInput

    name, sep, share = text.rpartition(":")
    try:
        return (name, float(share)) if sep and name else (text, 1.0)
    except ValueError:
        raise InvalidInput(f"--band expects CLASS:SHARE such as sky:0.4, got {text!r}") from None


def _run_recombine(args: argparse.Namespace) -> int:
    from core.labels.overlay import Placement
    from core.labels.recombine import RecombineRequest, RegionLibrary, recombine_or_skip, write_samples
    from core.progress import track

    dataset = open_store(args.dir)
    protected = tuple(dataset.classes.index_of(name) for name in args.protect)
    placement = Placement(mode=args.placement, max_translate=args.max_translate, scale=(args.min_scale, args.max_scale),
                          max_rotate=args.max_rotate, flip=not args.no_flip, protected=protected, layer=args.layer,
                          ignore_border=args.ignore_border, **_plausible_placement(args))  # fmt: skip
    bands = tuple(_parse_band(b) for b in args.band) if args.band else None
    request = RecombineRequest(args.mode, tuple(args.class_names), args.count, args.seed, placement,
                               tuple(args.target) if args.target else None, bands, args.min_area,
                               background_overlap=args.background_overlap)  # fmt: skip
    library = RegionLibrary(dataset, request.min_area)
    made = [recombine_or_skip(library, request, i) for i in track(range(request.count), message="recombining")]
    samples = [sample for sample in made if sample is not None]
    manifest = write_samples(args.out, dataset.classes, samples)
    print(f"wrote {len(samples)} samples to {args.out} (manifest {manifest})")
    _skipped_note(library.skipped)
    return 0


def _run_plan(args: argparse.Namespace) -> int:
    from core.labels.balance import plan_balance

    dataset = open_store(args.dir)
    plan = plan_balance(dataset.label_classes(), dataset.classes, n_balance=args.n_balance,
                        synthetic_share=args.synthetic_share, seed=args.seed)  # fmt: skip
    doc = plan.to_json()
    if args.out:
        plan.save(args.out)
    print(f"{doc['synthetic_samples']} synthetic samples planned over {doc['real_samples']} real ones; "
          f"imbalance ratio {doc['imbalance_ratio_before']:.2f} -> {doc['imbalance_ratio_after']:.2f}, entropy "
          f"{doc['entropy_before']:.3f} -> {doc['entropy_after']:.3f} bits"
          + (f"; unreachable: {', '.join(doc['unreachable'])}" if doc["unreachable"] else "")
          + (f"; plan written to {args.out}" if args.out else ""))  # fmt: skip
    if not args.out:
        print(json.dumps(doc, indent=2))
    return 0


def _run_priors(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.io.atomic import atomic_write_text
    from core.io.images import save_image
    from core.priors.edges import EdgeParams
    from core.priors.pipeline import PriorSettings, compute_priors
    from core.priors.prompts import prompt_for
    from core.progress import track
    from core.store import SkipReport

    dataset = open_store(args.dir)
    edges = EdgeParams(canny_low=args.canny_low, canny_high=args.canny_high)
    settings = PriorSettings.for_type(args.type, w1=args.w1, w2=args.w2, thickness=args.thickness, edges=edges)
    out = Path(args.out)
    labelled = dataset.labelled_ids()
    skipped = SkipReport()
    lines, notes, written = [], set(), 0
    for data in track(dataset.each(labelled, skipped=skipped), total=len(labelled), message="priors"):
        sample, image, label_map = data.sample, data.image, data.label_map
        written += 1
        save_image(out / f"{sample.id}.png", compute_priors(image, label_map, dataset.classes, settings).condition)
        if args.prompts:
            result = prompt_for(
                image, label_map, dataset.classes, template=args.template, use_captioner=not args.no_captioner
            )
            if result.note:
                notes.add(result.note)
            lines.append(json.dumps({"id": sample.id, "prompt": result.prompt, "negative_prompt": args.negative,
                                     "caption": result.caption, "classes": result.classes,
                                     "prior": settings.record()}, sort_keys=True))  # fmt: skip
    if args.prompts:
        atomic_write_text(out / "prompts.jsonl", "\n".join(lines) + "\n")
    print(f"wrote {written} condition images to {out}" + (f" and {out / 'prompts.jsonl'}" if args.prompts else ""))
    _skipped_note(skipped)
    for note in sorted(notes):
        print(f"note: prompts were built from class names alone; {note}", file=sys.stderr)
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.labels.recombine import write_samples
    from core.store import SkipReport

    if args.mode != "random":
        return _run_hard_composites(args)
    if args.backend == "render":
        return _run_generate_render(args)
    dataset = open_store(args.dir)
    skipped = SkipReport()
    if args.backend == "composite":
        samples = _composite_samples(dataset, args, skipped)
    elif args.backend == "gan":
        from core.errors import InvalidInput
        from core.generate.gan import GanSettings, generate_dataset

        if not args.model:
            raise InvalidInput("--model RUN is required for the gan backend: a run folder written by `segstudio train "
                               "--out RUN` (or the Train tab)")  # fmt: skip
        samples = generate_dataset(dataset, GanSettings(run=args.model, count=args.count, seed=args.seed),
                                   skipped=skipped)  # fmt: skip
    else:
        from core.errors import InvalidInput
        from core.generate.diffusion import DiffusionSettings
        from core.generate.runner import generate_dataset

        if not args.model:
            raise InvalidInput("--model is required for the diffusion backends; `segstudio models` lists them")
        # An empty prompt is filled per sample: its saved prompt, else its class names.
        settings = DiffusionSettings(prompt=args.prompt or "", negative_prompt=args.negative, steps=args.steps,
                                     guidance_scale=args.guidance, conditioning_scale=args.conditioning_scale,
                                     width=args.width, height=args.height, seed=args.seed, count=args.count)  # fmt: skip
        samples = generate_dataset(dataset, args.backend, args.model, settings, skipped=skipped,
                                   priors_root=Path(args.priors) if args.priors else None)  # fmt: skip
    manifest = write_samples(args.out, dataset.classes, samples)
    print(f"wrote {len(samples)} samples to {args.out} (manifest {manifest})")
    _skipped_note(skipped)
    return 0


def _run_generate_render(args: argparse.Namespace) -> int:
    """``generate --backend render``: meshes of DIR's classes rendered over DIR's images (``segstudio render`` with
    ``--data DIR`` and the sizes of ``--width`` / ``--height``, default 512)."""
    from core.render.commands import run_render

    size = args.width or args.height or 512
    render_args = argparse.Namespace(meshes=args.meshes, count=args.count, size=size, samples=None, seed=args.seed,
                                     backgrounds=None, data=args.dir, classes="dataset", objects=None, settings=None,
                                     out=args.out)  # fmt: skip
    return run_render(render_args)


def _run_hard_composites(args: argparse.Namespace) -> int:
    """``generate --backend composite --mode mined|hard``: composites the task model gets most wrong."""
    from core.errors import InvalidInput
    from core.task.hard import HardSettings, write_hard_composites

    if args.backend != "composite":
        raise InvalidInput(f"--mode {args.mode} works with --backend composite only, got --backend {args.backend}")
    mode = "mined" if args.mode == "mined" else "adversarial"
    settings = HardSettings(mode=mode, candidates=args.candidates, steps=args.hard_steps)
    result = write_hard_composites(args.dir, args.out, args.count, args.seed, mode, args.task_run,
                                   request=_composite_request(args), settings=settings)  # fmt: skip
    print(f"wrote {result.written} {mode} hard composites to {args.out} (manifest {result.manifest}; task model "
          f"{result.task_run})")  # fmt: skip
    for problem in result.skipped:
        print(f"skipped: {problem}", file=sys.stderr)
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.export.recipe import Recipe
    from core.export.runner import run_export

    target = Path(args.recipe)
    if target.is_dir():  # a plain conversion: the real samples in the formats asked for
        recipe = Recipe.from_dict({"source": str(target), "formats": args.format or ["voc"], "seed": args.seed})
    else:
        if args.format:
            from core.errors import InvalidInput

            raise InvalidInput("--format is for converting a folder; a recipe names its formats under 'formats'")
        recipe = Recipe.load(target)
    summary = run_export(recipe, args.out, workers=args.workers, runner=args.runner, address=args.address,
                         resume=args.resume, force=args.force, retry_failed=args.retry_failed,
                         progress=_sample_progress())  # fmt: skip
    print(summary.line())
    for output_id, error in summary.failures[:20]:
        print(f"  failed: {output_id}: {error}", file=sys.stderr)
    for problem in summary.problems[:20]:
        print(f"  skipped: {problem['path']}: {problem['reason']}", file=sys.stderr)
    return 0


def _sample_progress():
    """A progress callback drawing a tqdm bar in samples (rate in samples/s, time left) from the runner's
    ``sample i/n`` messages; phases without a count are shown as the bar's description."""
    import re

    from tqdm import tqdm

    bar = tqdm(total=0, unit="sample", leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty())

    def report(fraction, message=""):
        counted = re.match(r"sample (\d+)/(\d+)", message or "")
        if counted:
            done, total = int(counted[1]), int(counted[2])
            if bar.total != total:
                bar.reset(total=total)
                bar.n = done - 1
            bar.update(done - bar.n)
        elif message:
            bar.set_description(message[:40])
        if fraction is not None and fraction >= 1.0:
            bar.close()

    return report


def _review(args: argparse.Namespace) -> int:
    from core.export.review import decide, review_queue

    queue = review_queue(args.out, step=args.step, min_score=args.min_score, max_score=args.max_score)
    by_output = {item.output_id: item for item in queue}
    decisions = [(name, "accept") for name in args.accept or ()] + [(name, "reject") for name in args.reject or ()]
    for name, decision in decisions:
        if name not in by_output:
            from core.errors import InvalidInput

            raise InvalidInput(f"{name} is not waiting for review in {args.out}; `segstudio review {args.out}` lists them")
        print(decide(args.out, by_output[name].job_id, decision))
    if not decisions:
        for item in queue:
            score = "-" if item.score is None else f"{item.score:.3f}"
            print(f"{item.output_id}\tstep {item.step}\t{item.kind}\tscore {score}\t{item.image}")
        print(f"{len(queue)} samples wait for review", file=sys.stderr)
    else:
        print(f"decisions recorded; `segstudio export RECIPE --out {args.out} --resume` writes the final files")
    return 0


def _add_plausible_arguments(parser: argparse.ArgumentParser, scope: str) -> None:
    """The placement options shared by compositing and recombination (sizes, position, background objects)."""
    parser.add_argument("--size", choices=["data", "relative"], default="data",
                        help=f"{scope}object sizes drawn from the class's objects in the dataset (default), or the "
                             "source size times a scale (relative)")  # fmt: skip
    parser.add_argument("--min-area-share", type=float, default=0.0, help=f"{scope}smallest object, share of the image")
    parser.add_argument("--max-area-share", type=float, default=1.0, help=f"{scope}largest object, share of the image")
    parser.add_argument("--max-stretch", type=float, default=1.2,
                        help=f"{scope}how far an object's aspect may move towards the drawn one (1 keeps it)")
    parser.add_argument("--position", choices=["around", "uniform", "data"], default="around",
                        help=f"{scope}near the source position (default), anywhere, or where the class occurs")
    parser.add_argument("--ground-plane", action="store_true", help=f"{scope}lower objects larger, none above --horizon")
    parser.add_argument("--horizon", type=float, default=0.4, help=f"{scope}horizon height, share from the top")
    parser.add_argument("--background-overlap", type=float, default=0.3,
                        help=f"{scope}largest share of a background object that pasted objects may hide")


def _plausible_placement(args: argparse.Namespace) -> dict:
    """Placement keyword arguments from :func:`_add_plausible_arguments`' options."""
    return dict(size=args.size, min_area_share=args.min_area_share, max_area_share=args.max_area_share,
                max_stretch=args.max_stretch if args.size == "data" else 1.0, position=args.position,
                ground_plane=args.ground_plane, horizon=args.horizon)  # fmt: skip


def _composite_request(args: argparse.Namespace):
    from core.generate.composite import CompositeParams, CompositeRequest
    from core.labels.overlay import Placement

    placement = Placement(mode="random", max_translate=args.max_translate, scale=(args.min_scale, args.max_scale),
                          max_rotate=args.max_rotate, flip=not args.no_flip, **_plausible_placement(args))  # fmt: skip
    params = CompositeParams(placement, (args.min_objects, args.max_objects), args.max_truncation, args.max_overlap,
                             args.blending, args.blend_size, args.distractors,
                             background_overlap=args.background_overlap)  # fmt: skip
    request = CompositeRequest(tuple(args.class_names or ()), args.count, args.seed, params,
                               tuple(args.background) if args.background else None, args.min_area,
                               background_pool=args.backgrounds, stuff=tuple(args.stuff) if args.stuff else None,
                               paste_stuff=args.paste_stuff)  # fmt: skip
    return request


def _composite_samples(dataset, args: argparse.Namespace, skipped):
    from core.generate.composite import composite_or_skip
    from core.labels.recombine import RegionLibrary
    from core.progress import track

    request = _composite_request(args)
    library = RegionLibrary(dataset, request.min_area)
    library.skipped = skipped
    made = [composite_or_skip(library, request, i) for i in track(range(request.count), message="compositing")]
    return [m for m in made if m is not None]


def _run_train(args: argparse.Namespace) -> int:
    from core.train.config import TrainConfig
    from core.train.trainer import train

    overrides = {k: v for k, v in {"size": args.size, "steps": args.steps, "batch": args.batch, "seed": args.seed,
                                   "width": args.width, "sample_every": args.sample_every,
                                   "checkpoint_every": args.checkpoint_every, "device": args.device}.items()
                 if v is not None}  # fmt: skip
    config = TrainConfig.for_kind(args.kind, args.data, **overrides)
    last = [-1.0]

    def report(fraction: float | None, message: str = "") -> None:
        if fraction is not None and (fraction >= 1.0 or fraction - last[0] >= 0.01):
            last[0] = fraction
            print(message, file=sys.stderr, flush=True)

    result = train(config, args.out, progress=report, resume=args.resume)
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
    print(f"trained {args.kind} to step {result.step} in {args.out} ({result.steps_per_second:.2f} steps/s; {losses})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``segstudio`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="segstudio", description="Annotation and augmentation studio for semantic segmentation.")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    studio = sub.add_parser("studio", help="open the studio in the browser")
    add_studio_arguments(studio)
    studio.set_defaults(handler=_run_studio)

    models = sub.add_parser("models", help="list the registered models, their status and where their weights go")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.add_argument("--models", metavar="DIR", help="local models folder")
    models.set_defaults(handler=_run_models)

    from core.refine.methods import METHODS

    evaluate = sub.add_parser("eval-boxes", help="measure box -> mask quality and speed against ground-truth masks")
    evaluate.add_argument("dir", metavar="DIR", help="folder with images/, masks/ and boxes.csv (or a VOC folder)")
    evaluate.add_argument("--method", default="auto", choices=list(METHODS), help="refinement method (default auto)")
    evaluate.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    evaluate.add_argument("--json", action="store_true", help="print only the summary, as one JSON line")
    evaluate.add_argument("--clicks", type=int, default=None, metavar="K",
                          help="robot-user evaluation: K simulated correction clicks per image (RITM protocol); "
                               "reports mean IoU after 0..K clicks and NoC@85 / NoC@90")  # fmt: skip
    evaluate.add_argument("--click-radius", type=int, default=None, metavar="PX",
                          help="radius of a simulated click in pixels (default 5, with --clicks)")  # fmt: skip
    evaluate.set_defaults(handler=_run_eval_boxes)

    stats = sub.add_parser("stats", help="class statistics of a dataset's label maps")
    stats.add_argument("dir", metavar="DIR")
    stats.add_argument("--background", action="store_true", help="count class 0 (background) as a class too")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(handler=_run_stats)

    rec = sub.add_parser("recombine", help="overlay rare-class regions onto maps lacking them, or build new maps")
    rec.add_argument("dir", metavar="DIR")
    rec.add_argument("--mode", choices=["overlay", "multi", "reconstruct"], default="overlay")
    rec.add_argument(
        "--class",
        dest="class_names",
        action="append",
        required=True,
        metavar="NAME",
        help="class to add (repeat for several)",
    )
    rec.add_argument("--count", type=int, default=10, metavar="N")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--out", required=True, metavar="OUT", help="output folder (VOC layout plus manifest.jsonl)")
    rec.add_argument("--target", action="append", metavar="ID", help="only paste onto these samples (repeatable)")
    rec.add_argument("--band", action="append", metavar="CLASS:SHARE", help="reconstruct from bands, top to bottom")
    rec.add_argument("--placement", choices=["random", "keep"], default="random")
    rec.add_argument("--max-translate", type=float, default=0.25)
    rec.add_argument("--min-scale", type=float, default=0.8)
    rec.add_argument("--max-scale", type=float, default=1.2)
    rec.add_argument("--max-rotate", type=float, default=10.0)
    rec.add_argument("--no-flip", action="store_true")
    rec.add_argument("--protect", action="append", default=[], metavar="NAME", help="class never covered (repeatable)")
    rec.add_argument("--layer", choices=["top", "under"], default="top")
    rec.add_argument("--ignore-border", type=int, default=0, metavar="PX")
    rec.add_argument("--min-area", type=int, default=64, metavar="PX", help="smallest region used")
    _add_plausible_arguments(rec, "random placement: ")
    rec.set_defaults(handler=_run_recombine)

    plan = sub.add_parser("plan", help="plan synthetic samples per class to balance the dataset")
    plan.add_argument("dir", metavar="DIR")
    target = plan.add_mutually_exclusive_group(required=True)
    target.add_argument("--n-balance", type=int, metavar="N", help="images per class to reach (Che et al. Algorithm 1)")
    target.add_argument("--synthetic-share", type=float, metavar="S", help="synthetic share of the final dataset, 0..1")
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument("--out", metavar="plan.json")
    plan.set_defaults(handler=_run_plan)

    from core.priors.pipeline import CONDITION_TYPES
    from core.priors.prompts import DEFAULT_NEGATIVE, DEFAULT_TEMPLATE

    priors = sub.add_parser("priors", help="condition images (image prior blended with the label map's) and prompts")
    priors.add_argument("dir", metavar="DIR")
    priors.add_argument(
        "--type",
        choices=list(CONDITION_TYPES),
        default="canny",
        help="image prior (blended with class boundaries), or ade20k for segmentation ControlNets",
    )
    priors.add_argument("--w1", type=float, default=0.7, help="weight of the image prior")
    priors.add_argument("--w2", type=float, default=0.9, help="weight of the label-map prior")
    priors.add_argument("--thickness", type=int, default=2, help="class boundary width in pixels")
    priors.add_argument("--canny-low", type=int, default=100)
    priors.add_argument("--canny-high", type=int, default=200)
    priors.add_argument("--out", required=True, metavar="OUT")
    priors.add_argument("--prompts", action="store_true", help="also write OUT/prompts.jsonl")
    priors.add_argument("--template", default=DEFAULT_TEMPLATE, help="prompt template with {caption} and {classes}")
    priors.add_argument("--negative", default=DEFAULT_NEGATIVE, help="negative prompt")
    priors.add_argument("--no-captioner", action="store_true", help="build prompts from class names alone")
    priors.set_defaults(handler=_run_priors)

    gen = sub.add_parser("generate", help="new samples: cut-and-paste composites, or images generated for label maps")
    gen.add_argument("dir", metavar="DIR")
    gen.add_argument("--backend", choices=["composite", "controlnet", "t2i-adapter", "gan", "render"], default="composite")
    gen.add_argument("--meshes", metavar="DIR", default=None,
                     help="render: mesh files in one sub-folder per class of DIR's classes (default: the bundled meshes, "
                          "whose classes the dataset must have); the dataset's images are the backgrounds, labels kept")  # fmt: skip
    gen.add_argument("--model", metavar="ID|RUN",
                     help="control model id for the diffusion backends (segstudio models); for gan, a training run "
                          "folder (segstudio train --out RUN): label2image keeps each label map of DIR and makes its "
                          "image, pair makes new samples")  # fmt: skip
    gen.add_argument("--count", type=int, default=4, metavar="N")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", required=True, metavar="OUT", help="output folder (VOC layout plus manifest.jsonl)")
    gen.add_argument("--priors", metavar="DIR", help="saved condition images and prompts (<workspace>/outputs/priors)")
    gen.add_argument("--prompt", help="one prompt for every sample (default: the saved prompt, else the class names)")
    gen.add_argument("--negative", default=DEFAULT_NEGATIVE)
    gen.add_argument("--steps", type=int, default=30)
    gen.add_argument("--guidance", type=float, default=7.5)
    gen.add_argument("--conditioning-scale", type=float, default=1.0)
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--class", dest="class_names", action="append", metavar="NAME", help="composite: classes to paste")
    gen.add_argument("--background", action="append", metavar="ID", help="composite: background samples (repeatable)")
    gen.add_argument("--backgrounds", choices=["labelled", "all"], default="labelled",
                     help="composite: draw backgrounds from labelled samples only (default), or from all images: "
                          "then pixels of unlabelled ones outside pasted objects are 255 (ignore), never background")  # fmt: skip
    gen.add_argument("--mode", choices=["random", "mined", "hard"], default="random",
                     help="composite: random placements (default); mined: the hardest of --candidates random ones for "
                          "the task model; hard: placements from an adversarial synthesizer trained against it "
                          "(Tripathi et al. 2019)")  # fmt: skip
    gen.add_argument("--task-run", metavar="RUN", default=None,
                     help="composite --mode mined|hard: a segmenter run (segstudio train-segmenter); default: train "
                          "a small one on DIR first, into OUT/task_run")  # fmt: skip
    gen.add_argument("--candidates", type=int, default=8, metavar="K", help="--mode mined: candidates per composite")
    gen.add_argument("--hard-steps", type=int, default=200, metavar="N", help="--mode hard: synthesizer steps")
    gen.add_argument("--min-objects", type=int, default=1)
    gen.add_argument("--max-objects", type=int, default=3)
    gen.add_argument("--blending", choices=["none", "gaussian", "poisson", "box", "motion"], default="gaussian")
    gen.add_argument("--blend-size", type=int, default=3)
    gen.add_argument("--distractors", type=int, default=0)
    gen.add_argument("--max-truncation", type=float, default=0.3)
    gen.add_argument("--max-overlap", type=float, default=0.3)
    gen.add_argument("--max-translate", type=float, default=0.5)
    gen.add_argument("--min-scale", type=float, default=0.5, help="composite, --size relative: scale range from")
    gen.add_argument("--max-scale", type=float, default=1.2, help="composite, --size relative: scale range to")
    gen.add_argument("--max-rotate", type=float, default=15.0)
    gen.add_argument("--no-flip", action="store_true")
    gen.add_argument("--min-area", type=int, default=64)
    _add_plausible_arguments(gen, "composite: ")
    gen.add_argument("--stuff", action="append", metavar="NAME",
                     help="composite: stuff classes (never cut out; default: the dataset's class roles)")
    gen.add_argument("--paste-stuff", action="store_true", help="composite: allow pasting classes marked stuff")
    gen.set_defaults(handler=_run_generate)

    export = sub.add_parser("export", help="a batch export from a recipe (or a folder converted), resumable")
    export.add_argument("recipe", metavar="RECIPE|DIR", help="a recipe file (YAML), or a dataset folder to convert")
    export.add_argument("--out", required=True, metavar="OUT", help="output folder (outside the dataset)")
    export.add_argument("--format", action="append", choices=["voc", "coco", "cityscapes", "yolo-seg", "mmseg", "hf"],
                        help="with a folder: the formats (repeat for several)")
    export.add_argument("--seed", type=int, default=0, help="with a folder: the seed of the split")
    export.add_argument("--runner", choices=["local", "ray"], default="local",
                        help="where jobs run: this machine, or a Ray cluster (pip install 'segstudio[ray]')")
    export.add_argument("--address", default=None, help="with --runner ray: the cluster (default: a local Ray, "
                        "or RAY_ADDRESS when set)")
    export.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    export.add_argument("--resume", action="store_true", help="finish an interrupted export of the same recipe")
    export.add_argument("--force", action="store_true", help="replace another export in OUT")
    export.add_argument("--retry-failed", action="store_true", help="make the jobs that failed last time again")
    export.set_defaults(handler=_run_export)

    review = sub.add_parser("review", help="list an export's samples waiting for review, accept or reject them")
    review.add_argument("out", metavar="OUT", help="the export's output folder")
    review.add_argument("--accept", action="append", metavar="ID", help="accept a sample (repeat for several)")
    review.add_argument("--reject", action="append", metavar="ID", help="reject a sample (repeat for several)")
    review.add_argument("--step", type=int, default=None, help="only this generation step (1 = the first)")
    review.add_argument("--min-score", type=float, default=None, help="only samples scoring at least this")
    review.add_argument("--max-score", type=float, default=None, help="only samples scoring at most this")
    review.set_defaults(handler=_review)

    tr = sub.add_parser("train", help="train a GAN on a dataset: label2image (image for a label map) or pair")
    tr.add_argument("--kind", choices=["label2image", "pair"], required=True)
    tr.add_argument("--data", required=True, metavar="DIR", help="dataset folder with label maps")
    tr.add_argument("--out", required=True, metavar="RUN", help="run folder (config, log, grids, checkpoints)")
    tr.add_argument("--size", type=int, default=None, help="square training side, a power of two (default 128)")
    tr.add_argument("--steps", type=int, default=None, metavar="N", help="generator steps in all (default 1000)")
    tr.add_argument("--batch", type=int, default=None, metavar="B", help="samples per step (default 8)")
    tr.add_argument("--seed", type=int, default=None, help="seed of initialisation, batches and noise (default 0)")
    tr.add_argument("--width", type=int, default=None, help="base channel count of the networks (default 32)")
    tr.add_argument("--sample-every", type=int, default=None, metavar="K", help="sample grid every K steps")
    tr.add_argument("--checkpoint-every", type=int, default=None, metavar="K", help="checkpoint every K steps")
    tr.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    tr.add_argument("--resume", action="store_true", help="continue the run in RUN from its latest checkpoint")
    tr.set_defaults(handler=_run_train)

    from core.task.commands import add_parsers as add_segmenter_parsers

    add_segmenter_parsers(sub)

    from core.render.commands import add_parsers as add_render_parsers

    add_render_parsers(sub)

    info = sub.add_parser("info", help="summarise a dataset folder, with its samples counted by status")
    info.add_argument("dir", metavar="DIR")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--workspace", default=None, metavar="DIR",
                      help="the workspace the studio was started with (where statuses and drafts live; default "
                           "$SEGSTUDIO_WORKSPACE or ~/.cache/segstudio/workspace)")  # fmt: skip
    info.set_defaults(handler=_run_info)
    return parser


def run(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a command handler, turning a :class:`StudioError` into a one-line message and status 2."""
    try:
        apply_environment(args)
        return handler(args)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segstudio`` console script."""
    args = build_parser().parse_args(argv)
    return run(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
