"""``segstudio render``: path-traced renders of 3D meshes with exact label and instance maps.

    segstudio render [--meshes DIR] --count N [--size 512] [--samples 32] --seed S [--backgrounds DIR] [--data DIR]
                     [--objects 1,4] [--settings FILE.json] --out OUT
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.errors import InvalidInput


def add_parsers(sub) -> None:
    """Add ``render`` to an argparse subparsers object."""
    r = sub.add_parser("render", help="path-traced renders of 3D meshes (the bundled ones or yours) composed over "
                                      "backgrounds, with exact label maps and instance maps (needs the render extra)")  # fmt: skip
    r.add_argument("--meshes", default=None, metavar="DIR",
                   help="one sub-folder of mesh files per class (OBJ, PLY, STL, GLB / glTF), or a meshes.json; "
                        "default: the bundled procedural meshes")  # fmt: skip
    r.add_argument("--count", type=int, required=True, metavar="N", help="samples to render")
    r.add_argument("--size", type=int, default=512, help="square side in pixels (default 512)")
    r.add_argument("--samples", type=int, default=None, metavar="SPP",
                   help="path-tracing samples per pixel (default 64; the label pass always takes one exact ray)")  # fmt: skip
    r.add_argument("--seed", type=int, default=0, help="sample i uses seed S + i (default 0)")
    r.add_argument("--backgrounds", default=None, metavar="DIR", help="background-only images (their pixels are class 0)")
    r.add_argument("--data", default=None, metavar="DIR",
                   help="a dataset: its classes name the output's, and its samples are backgrounds too (labelled ones "
                        "keep their labels outside the objects, unlabelled ones get 255)")  # fmt: skip
    r.add_argument("--classes", choices=["dataset", "meshes"], default=None,
                   help="label with the dataset's classes (mesh folders named after them; the default with --data) or "
                        "the meshes' own (then the dataset's images are backgrounds with unknown labels, 255)")  # fmt: skip
    r.add_argument("--objects", default=None, metavar="MIN,MAX", help="objects per scene (default 1,4)")
    r.add_argument("--settings", default=None, metavar="FILE",
                   help="a JSON file of render settings (every range; see core/render/scene.py RenderSettings)")
    r.add_argument("--out", required=True, metavar="OUT", help="output folder (VOC layout; rerun to continue)")
    r.set_defaults(handler=run_render)


def settings_from_args(args: argparse.Namespace):
    """The :class:`core.render.scene.RenderSettings` the arguments ask for (``--settings`` first, flags over it)."""
    from core.render.scene import RenderSettings

    doc = {}
    if args.settings:
        try:
            doc = json.loads(Path(args.settings).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"--settings {args.settings} is not a readable JSON file: {exc}") from exc
        if not isinstance(doc, dict):
            raise InvalidInput(f"--settings {args.settings} must hold a JSON object of settings")
    doc["size"] = [args.size, args.size]
    if args.samples is not None:
        doc["samples"] = args.samples
    if args.objects:
        try:
            doc["objects"] = [int(v) for v in args.objects.split(",")]
        except ValueError as exc:
            raise InvalidInput(f"--objects must be MIN,MAX (whole numbers), got {args.objects!r}") from exc
    return RenderSettings.from_json(doc)


def run_render(args: argparse.Namespace) -> int:
    """``segstudio render``: render, print what was written and skipped."""
    from core.render.dataset import RenderJob, write_renders
    from core.render.engine import load_mitsuba

    if args.count < 1:
        raise InvalidInput(f"--count must be at least 1, got {args.count}")
    settings = settings_from_args(args)
    if args.data and not Path(args.data).is_dir():
        raise InvalidInput(f"--data {args.data} is not a folder; give a dataset folder")
    load_mitsuba()  # says what to install before anything else is read
    job = RenderJob(out=args.out, count=args.count, seed=args.seed, settings=settings.to_json(),
                    meshes=args.meshes or "", data=args.data or "", backgrounds=args.backgrounds or "",
                    dataset_classes=bool(args.data) and args.classes != "meshes",
                    dataset_backgrounds=bool(args.data))  # fmt: skip
    settings, library, classes, pool, store = job.prepare()
    for path, why in library.skipped:
        print(f"skipped mesh {path}: {why}", file=sys.stderr)
    last = [-1]

    def report(fraction, message=""):
        step = int((fraction or 0) * 20)
        if step != last[0]:
            last[0] = step
            print(message, file=sys.stderr, flush=True)

    run = write_renders(job.out, job.count, job.seed, settings, library, classes, pool, store, progress=report)
    for sample_id, why in run.skipped:
        print(f"skipped {sample_id}: {why}", file=sys.stderr)
    print(f"wrote {len(run.written)} renders to {args.out} ({len(run.kept)} already there, {len(run.skipped)} "
          f"skipped); classes {', '.join(classes.names)}")  # fmt: skip
    return 0
