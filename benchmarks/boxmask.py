"""Box -> mask quality and speed: SegStudio's methods next to OpenCV GrabCut, measured in one run.

    python benchmarks/boxmask.py [--data ../shared/data/grabcut50] [--limit N] [--skip-3mp-opencv]

1. Every method on the evaluation folder (mean IoU per image, error inside the box, seconds per box),
   with OpenCV GrabCut at full resolution (5 iterations) as the anchor; ratios are anchor time / ours.
2. One box on a 3-megapixel photo (an evaluation image upscaled to 2000 x 1500 with mild noise):
   ours and the anchor (the anchor runs in a subprocess with a time limit, it takes minutes).

Targets: the default method reaches mean IoU >= 0.85 at a median <= 0.25 s per box; the 3 MP box
takes <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.refine.evaluate import evaluate_boxes  # noqa: E402
from core.refine.grabcut import GrabCutParams  # noqa: E402
from core.refine.refiner import BoxRefiner, RefineSettings  # noqa: E402
from core.store import DatasetStore  # noqa: E402
from core.types import Box  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "grabcut50"
VARIANTS = [
    ("grabcut (OpenCV, full res, 5 it) [anchor]", RefineSettings("grabcut")),
    ("auto = grabcut-fast (160 px)", RefineSettings("auto")),
    ("grabcut-fast, 120 px", RefineSettings("grabcut-fast", grabcut=GrabCutParams(working_size=120))),
    ("grabcut-fast, 240 px", RefineSettings("grabcut-fast", grabcut=GrabCutParams(working_size=240))),
    ("grabcut-fast, no centre prior", RefineSettings("grabcut-fast", grabcut=GrabCutParams(center_prior=0.0))),
    ("grabcut-fast, RGB", RefineSettings("grabcut-fast", grabcut=GrabCutParams(color_space="rgb"))),
    ("grabcut-fast, no band refinement", RefineSettings("grabcut-fast", grabcut=GrabCutParams(band=0.0))),
    ("grabcut+crf", RefineSettings("grabcut+crf")),
    ("densecrf (box alone)", RefineSettings("densecrf")),
]


def big_photo(data: Path) -> tuple[np.ndarray, Box]:
    """A 2000 x 1500 photo with one box: the first evaluation image upscaled, with mild noise."""
    import cv2

    dataset = DatasetStore(data)
    sample = next(s for s in dataset.samples if s.boxes)
    image = dataset.image(sample.id)
    height, width = image.shape[:2]
    big = cv2.resize(image, (2000, 1500), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).normal(0, 3, big.shape)
    big = np.clip(big + noise, 0, 255).astype(np.uint8)
    box = sample.boxes[0]
    sx, sy = 2000 / width, 1500 / height
    return big, Box(int(box.x0 * sx), int(box.y0 * sy), int(box.x1 * sx), int(box.y1 * sy), box.label)


def time_big(settings: RefineSettings, image: np.ndarray, box: Box, repeats: int = 3) -> float:
    """Median seconds for one box on ``image`` (fresh refiner each time; imports warmed up first)."""
    BoxRefiner().refine(image[:300, :300], Box(50, 50, 250, 250), settings)
    times = []
    for i in range(repeats):
        refiner = BoxRefiner()
        start = time.perf_counter()
        refiner.refine(image, Box(box.x0 + i, box.y0, box.x1, box.y1, box.label), settings)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_big_opencv(data: Path, limit_s: float) -> float | None:
    """The anchor on the 3 MP box, in a subprocess stopped after ``limit_s`` (None when it ran out)."""
    code = (
        f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.boxmask import big_photo; "
        "from core.refine.grabcut import opencv_grabcut; from pathlib import Path; "
        f"image, box = big_photo(Path({str(data)!r})); t = time.perf_counter(); opencv_grabcut(image, box, 5); "
        "print(time.perf_counter() - t)"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=limit_s, check=True)
    except subprocess.TimeoutExpired:
        return None
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--skip-3mp-opencv", action="store_true", help="do not run the minutes-long anchor on 3 MP")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"evaluation data {args.data} is absent; pass --data DIR", file=sys.stderr)
        return 2

    rows = []
    for name, settings in VARIANTS:
        summary = evaluate_boxes(args.data, settings, limit=args.limit).summary()
        rows.append((name, summary))
        print(f"  measured {name}: {json.dumps(summary)}", flush=True)
    anchor = rows[0][1]
    print(f"\nBox -> mask on {args.data.name} ({anchor['n']} images), one process, this machine:\n")
    print("| method | mean IoU | error in box | median s/box | mean s/box | speed-up vs anchor (median) |")
    print("|---|---|---|---|---|---|")
    for name, s in rows:
        speedup = anchor["sec_median"] / s["sec_median"] if s["sec_median"] else float("nan")
        print(f"| {name} | {s['miou']:.3f} | {100 * s['err_in_box']:.1f}% | {s['sec_median']:.3f} | "
              f"{s['sec_mean']:.3f} | {speedup:.1f}x |")  # fmt: skip

    image, box = big_photo(args.data)
    ours = time_big(RefineSettings("auto"), image, box)
    anchor_big = None if args.skip_3mp_opencv else time_big_opencv(args.data, 300)
    anchor_text = "skipped" if args.skip_3mp_opencv else ("> 300 s" if anchor_big is None else f"{anchor_big:.1f} s")
    ratio = f", {anchor_big / ours:.0f}x faster" if anchor_big else ""
    print(f"\nOne {box.width}x{box.height} box on a 2000x1500 photo: auto {ours:.3f} s (target <= 0.5 s); "
          f"OpenCV GrabCut full resolution {anchor_text}{ratio}")  # fmt: skip

    auto = rows[1][1]
    ok = auto["miou"] >= 0.85 and auto["sec_median"] <= 0.25 and ours <= 0.5
    print(f"targets (IoU >= 0.85, median <= 0.25 s, 3 MP <= 0.5 s): {'met' if ok else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"rows": [{"name": n, **s} for n, s in rows], "big_auto_s": ours,
                                         "big_anchor_s": anchor_big}, indent=2))  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
