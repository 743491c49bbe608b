"""Box -> mask quality and speed: SegStudio's methods next to OpenCV GrabCut, measured in one run.

    python benchmarks/boxmask.py [--data ../shared/data/grabcut50] [--limit N] [--skip-3mp-opencv]
                                 [--clicks 5 | --clicks 0] [--only-clicks]

1. Every method on the evaluation folder (mean IoU per image, error inside the box, seconds per box),
   with OpenCV GrabCut at full resolution (5 iterations) as the anchor; ratios are anchor time / ours.
2. One box on a 3-megapixel photo (an evaluation image upscaled to 2000 x 1500 with mild noise):
   ours and the anchor (the anchor runs in a subprocess with a time limit, it takes minutes).

3. Corrections (``--clicks K``, default 5; 0 skips): the robot user of interactive segmentation papers
   (core/refine/clicks.py: a click at the interior of the largest error region after each prediction) on
   every method, OpenCV GrabCut given the same protocol as the anchor: mean IoU after 0..K clicks,
   NoC@85 / NoC@90 (capped at K) and the median re-cut time per click, over the whole set and over its
   two halves (names in sorted order, even / odd positions: the correction parameters were chosen on
   the odd half, so the even half is held out).

Targets: the default method reaches mean IoU >= 0.85 at a median <= 0.25 s per box; the 3 MP box
takes <= 0.5 s. With corrections: mean IoU >= 0.92 after 3 clicks, NoC@90 <= 3, re-cut <= 0.1 s median.
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

from core.errors import ModelUnavailable  # noqa: E402
from core.refine.clicks import CLICK_RADIUS, evaluate_with_clicks  # noqa: E402
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
    ("grabcut-fast, no tightness prior", RefineSettings("grabcut-fast", grabcut=GrabCutParams(tight_prior=False))),
    ("grabcut-fast, small pieces kept", RefineSettings("grabcut-fast", grabcut=GrabCutParams(min_piece=0.0))),
    ("grabcut-fast, neither (the previous default)",
     RefineSettings("grabcut-fast", grabcut=GrabCutParams(tight_prior=False, min_piece=0.0))),
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


CLICK_METHODS = [
    ("grabcut (OpenCV, full res, 5 it) [anchor]", RefineSettings("grabcut")),
    ("auto = grabcut-fast", RefineSettings("auto")),
    ("grabcut+crf", RefineSettings("grabcut+crf")),
    ("densecrf", RefineSettings("densecrf")),
    ("sam", RefineSettings("sam")),
    ("sam+crf", RefineSettings("sam+crf")),
]


def click_rows(data: Path, clicks: int, limit: int | None) -> list[dict]:
    """The robot-user evaluation of every method: whole set, even half, odd half."""
    names = sorted(s.id for s in DatasetStore(data).samples)
    halves = {"even (held out)": names[0::2], "odd (tuning)": names[1::2]}
    rows = []
    for name, settings in CLICK_METHODS:
        try:
            report = evaluate_with_clicks(data, settings, clicks, limit=limit)
        except ModelUnavailable as error:
            print(f"  {name}: skipped, its weights are absent ({str(error).split(':')[0]})", flush=True)
            continue
        by_name = {score.name: score for score in report.scores}
        row = {"name": name, **report.summary()}
        row.pop("skipped")
        for half, members in halves.items():
            scores = [by_name[m] for m in members if m in by_name]
            row[half] = {
                "n": len(scores),
                "miou_curve": [round(float(np.mean([s.ious[k] for s in scores])), 4) for k in range(clicks + 1)],
                "noc90": round(float(np.mean([s.noc(0.90) for s in scores])), 3),
            } if scores else None  # fmt: skip
        rows.append(row)
        print(f"  measured {name} with clicks: {json.dumps(row)}", flush=True)
    return rows


def print_click_table(rows: list[dict], data: Path, clicks: int) -> bool:
    """The click tables; returns whether the default method met the correction targets."""
    header = " | ".join(f"{k} clicks" if k != 1 else "1 click" for k in range(clicks + 1))
    print(
        f"\nCorrections on {data.name}: robot user (click at the interior of the largest error region, disk radius "
        f"{CLICK_RADIUS} px), mean IoU after 0..{clicks} clicks, NoC capped at {clicks}, re-cut = median s per click:\n"
    )
    print(f"| method | {header} | NoC@85 | NoC@90 | re-cut median | re-cut mean |")
    print("|---|" + "---|" * (clicks + 5))
    for r in rows:
        curve = " | ".join(f"{v:.3f}" for v in r["miou_curve"])
        print(f"| {r['name']} | {curve} | {r['noc85']:.2f} | {r['noc90']:.2f} | {r['recut_median']:.3f} | "
              f"{r['recut_mean']:.3f} |")  # fmt: skip
    print("\nSplit halves (mean IoU after 0..K clicks; NoC@90):\n")
    print("| method | half | n | curve | NoC@90 |")
    print("|---|---|---|---|---|")
    for r in rows:
        for half in ("even (held out)", "odd (tuning)"):
            h = r.get(half)
            if h:
                print(f"| {r['name']} | {half} | {h['n']} | {' '.join(f'{v:.3f}' for v in h['miou_curve'])} | "
                      f"{h['noc90']:.2f} |")  # fmt: skip
    auto = next((r for r in rows if r["name"].startswith("auto")), None)
    if auto is None or clicks < 3:
        return True
    ok = auto["miou_curve"][3] >= 0.92 and auto["noc90"] <= 3 and auto["recut_median"] <= 0.1
    print(
        f"\ncorrection targets for auto (IoU >= 0.92 after 3 clicks: {auto['miou_curve'][3]:.3f}; NoC@90 <= 3: "
        f"{auto['noc90']:.2f}; median re-cut <= 0.1 s: {auto['recut_median']:.3f}): {'met' if ok else 'NOT met'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--skip-3mp-opencv", action="store_true", help="do not run the minutes-long anchor on 3 MP")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    parser.add_argument("--clicks", type=int, default=5, help="simulated correction clicks per image (0: skip)")
    parser.add_argument("--only-clicks", action="store_true", help="measure only the corrections (part 3)")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"evaluation data {args.data} is absent; pass --data DIR", file=sys.stderr)
        return 2
    if args.only_clicks:
        rows = click_rows(args.data, args.clicks, args.limit)
        ok = print_click_table(rows, args.data, args.clicks)
        if args.json:
            args.json.write_text(json.dumps({"clicks": rows}, indent=2))
        return 0 if ok else 1

    rows = []
    names = sorted(s.id for s in DatasetStore(args.data).samples)
    for name, settings in VARIANTS:
        report = evaluate_boxes(args.data, settings, limit=args.limit)
        summary = report.summary()
        by_name = {score.name: score.iou for score in report.scores}
        for half, members in (("even", names[0::2]), ("odd", names[1::2])):  # box priors were tuned on the even half
            ious = [by_name[m] for m in members if m in by_name]
            summary[f"miou_{half}"] = round(float(np.mean(ious)), 4) if ious else None
        rows.append((name, summary))
        print(f"  measured {name}: {json.dumps(summary)}", flush=True)
    anchor = rows[0][1]
    print(f"\nBox -> mask on {args.data.name} ({anchor['n']} images), one process, this machine:\n")
    print("| method | mean IoU | even half (box priors tuned) | odd half (held out) | error in box | median s/box | "
          "mean s/box | speed-up vs anchor (median) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, s in rows:
        speedup = anchor["sec_median"] / s["sec_median"] if s["sec_median"] else float("nan")
        halves = " | ".join("-" if s[k] is None else f"{s[k]:.3f}" for k in ("miou_even", "miou_odd"))
        print(f"| {name} | {s['miou']:.3f} | {halves} | {100 * s['err_in_box']:.1f}% | "
              f"{s['sec_median']:.3f} | {s['sec_mean']:.3f} | {speedup:.1f}x |")  # fmt: skip

    image, box = big_photo(args.data)
    ours = time_big(RefineSettings("auto"), image, box)
    anchor_big = None if args.skip_3mp_opencv else time_big_opencv(args.data, 300)
    anchor_text = "skipped" if args.skip_3mp_opencv else ("> 300 s" if anchor_big is None else f"{anchor_big:.1f} s")
    ratio = f", {anchor_big / ours:.0f}x faster" if anchor_big else ""
    print(f"\nOne {box.width}x{box.height} box on a 2000x1500 photo: auto {ours:.3f} s (target <= 0.5 s); "
          f"OpenCV GrabCut full resolution {anchor_text}{ratio}")  # fmt: skip

    auto = rows[1][1]
    ok = auto["miou"] >= 0.88 and auto["sec_median"] <= 0.08 and ours <= 0.5
    print(f"targets (box alone: IoU >= 0.88, median <= 0.08 s; 3 MP <= 0.5 s): {'met' if ok else 'NOT met'}")
    clicked = []
    if args.clicks > 0:
        clicked = click_rows(args.data, args.clicks, args.limit)
        ok = print_click_table(clicked, args.data, args.clicks) and ok
    if args.json:
        args.json.write_text(json.dumps({"rows": [{"name": n, **s} for n, s in rows], "big_auto_s": ours,
                                         "big_anchor_s": anchor_big, "clicks": clicked}, indent=2))  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
