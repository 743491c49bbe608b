"""Render speed (issue 15): seconds per 512 x 512 render with 3 objects at 16, 64 and 128 samples, and the label pass.

    python benchmarks/render.py [--size 512] [--samples 16,64,128] [--scenes 3] [--quick]

Each figure is the median over ``--scenes`` scenes (seeds 0..K-1, bundled meshes, 3 objects, plain backdrop) of
:func:`core.render.render.render_seed`: ``label`` = the label passes with settling (one ray per pixel centre; the
exact label and instance maps), ``rgb`` = the path-traced image, ``total`` = the whole sample. Ours is the variant
this machine picks (``llvm_ad_rgb`` with a libLLVM >= 17, ``cuda_ad_rgb`` on a GPU); the anchor is Mitsuba's
``scalar_rgb`` variant (what runs with no system dependency), measured in the same run, each variant in its own
process (Mitsuba's variant is per process). The first render of a process (Dr.Jit compiling its kernels) is done
before timing and reported apart. Ends with the cost of the seed paper's set, 2,000 renders, at the default samples.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker(size: int, samples: list[int], scenes: int) -> dict:
    """Time renders in this process (its variant chosen by the environment); returns the figures as a dict."""
    import numpy as np

    from core.render.engine import active_variant, load_mitsuba
    from core.render.meshes import procedural_library
    from core.render.render import render_seed
    from core.render.scene import RenderSettings

    load_mitsuba()
    library = procedural_library()
    classes = ["background", *library.classes()]
    backdrop = np.full((size, size, 3), 128, np.uint8)

    def one(seed: int, spp: int) -> dict:
        settings = RenderSettings(size=(size, size), samples=spp, objects=(3, 3), max_truncation=0.5, min_visible=0.05)
        t = time.perf_counter()
        result = render_seed(seed, settings, library, classes, backdrop, {"kind": "plain"})
        return {"total": time.perf_counter() - t, **result.seconds, "objects": len(result.scene["objects"])}

    t = time.perf_counter()
    one(1000, 4)
    first = time.perf_counter() - t
    figures = {"variant": active_variant(), "first_render_s": first, "samples": {}}
    for spp in samples:
        runs = [one(seed, spp) for seed in range(scenes)]
        figures["samples"][str(spp)] = {k: statistics.median(r[k] for r in runs) for k in ("total", "label", "rgb")}
        figures["samples"][str(spp)]["objects"] = statistics.mean(r["objects"] for r in runs)
    return figures


def run_variant(variant: str | None, args) -> dict:
    env = dict(os.environ)
    env.pop("SEGSTUDIO_RENDER_VARIANT", None)
    if variant:
        env["SEGSTUDIO_RENDER_VARIANT"] = variant
    cmd = [sys.executable, __file__, "--worker", "--size", str(args.size), "--samples", args.samples,
           "--scenes", str(args.scenes)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"the {variant or 'default'} worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--samples", default="16,64,128")
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="128 px, 4 and 16 samples, 1 scene")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.samples, args.scenes = 128, "4,16", 1
    samples = [int(s) for s in args.samples.split(",")]
    if args.worker:
        print(json.dumps(worker(args.size, samples, args.scenes)))
        return 0
    from core.render.engine import renderer_installed

    if not renderer_installed():
        print('skipped: Mitsuba 3 is not installed (pip install -e ".[render]")')
        return 0
    ours = run_variant(None, args)
    anchor = run_variant("scalar_rgb", args)
    import platform

    print(f"Renders of {args.size} x {args.size}, 3 objects (bundled meshes), median of {args.scenes} scenes; "
          f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")  # fmt: skip
    print(f"ours: Mitsuba {ours['variant']} (first render of the process, kernels compiled: "
          f"{ours['first_render_s']:.1f} s); anchor: Mitsuba {anchor['variant']} (first render "
          f"{anchor['first_render_s']:.1f} s)\n")  # fmt: skip
    print("| samples | ours total s | ours label s | ours rgb s | anchor total s | anchor label s | anchor rgb s | "
          "speed-up (total) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for spp in samples:
        o, a = ours["samples"][str(spp)], anchor["samples"][str(spp)]
        print(f"| {spp} | {o['total']:.2f} | {o['label']:.2f} | {o['rgb']:.2f} | {a['total']:.2f} | {a['label']:.2f} | "
              f"{a['rgb']:.2f} | {a['total'] / o['total']:.2f}x |")  # fmt: skip
    from core.render.scene import RenderSettings

    default = RenderSettings().samples
    if str(default) not in ours["samples"]:
        ours = run_variant(None, argparse.Namespace(size=args.size, samples=str(default), scenes=args.scenes))
    per = ours["samples"][str(default)]["total"]
    print(f"\n2,000 renders at the default {default} samples: {per * 2000 / 3600:.1f} h at {per:.1f} s per render "
          f"(target <= 15 s per render: {'met' if per <= 15 else 'NOT met'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
