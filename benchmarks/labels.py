"""Label-map operations: overlay throughput and the memory of statistics over many maps.

    python benchmarks/labels.py [--maps 10000] [--seconds 5]

1. Overlay on 512 x 512 maps (one region of about 100 x 80 px, random placement, image alongside):
   results per second in one process, next to a straightforward implementation measured in the same
   run (warping the whole source map and image to the target size for every paste). Target >= 200/s.
2. Statistics over ``--maps`` synthetic 512 x 512 palette PNGs: peak resident memory of the process
   (``ru_maxrss``) for the streaming statistics, next to loading every map first. Target < 300 MB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import calls_per_second  # noqa: E402
from core.labels.overlay import Placement, WarpedRegion, overlay, paste, sample_transform  # noqa: E402
from core.labels.regions import class_components  # noqa: E402
from core.types import ClassSet  # noqa: E402

SIZE = 512
CLASSES = ClassSet.builtin("voc")


def synthetic_map(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A 512 x 512 map with a few rectangles and discs of random VOC classes."""
    label = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(int(rng.integers(2, 6))):
        cls = int(rng.integers(1, 21))
        cx, cy, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(20, 120))]
        if rng.random() < 0.5:
            label[max(0, cy - r) : cy + r, max(0, cx - r // 2) : cx + r // 2] = cls
        else:
            label[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = cls
    return label


def overlay_rate(seconds: float) -> tuple[float, float]:
    """(ours, anchor) overlays per second."""
    import cv2

    rng = np.random.default_rng(0)
    source = np.zeros((SIZE, SIZE), np.uint8)
    source[200:280, 150:250] = 8
    source_image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    (region,) = class_components(source, 8, image=source_image)
    targets = [synthetic_map(rng) for _ in range(8)]
    target_image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    placement = Placement()

    def ours(i: int) -> None:
        overlay(targets[i % 8], [region], placement, np.random.default_rng(i), target_image=target_image)

    def anchor(i: int) -> None:  # warp the whole source map and image, then paste
        t = sample_transform(region, (SIZE, SIZE), placement, np.random.default_rng(i))
        x0, y0, _, _ = region.bbox
        matrix = t.matrix(region.mask.shape[1], region.mask.shape[0]) @ np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]])
        mask = cv2.warpAffine((source == 8).astype(np.uint8), matrix, (SIZE, SIZE), flags=cv2.INTER_NEAREST) > 0
        image = cv2.warpAffine(source_image, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR)
        paste(targets[i % 8].copy(), target_image.copy(), WarpedRegion((0, 0, SIZE, SIZE), mask, image), 8, placement)

    return calls_per_second(ours, seconds), calls_per_second(anchor, seconds)


STATS_CHILD = """
import resource, sys, json
sys.path.insert(0, {root!r})
from core.store import DatasetStore
from core.labels.stats import ClassStats, dataset_stats
from core.io.images import load_label_map
ds = DatasetStore({folder!r})
if {anchor}:
    maps = [load_label_map(s.label_path, ds.classes) for s in ds.samples if s.has_label_map]
    stats = ClassStats(ds.classes)
    for m in maps:
        stats.add(m)
else:
    stats = dataset_stats(ds)
print(json.dumps({{"maps": stats.maps, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def stats_memory(folder: Path, anchor: bool) -> dict:
    code = STATS_CHILD.format(root=str(ROOT), folder=str(folder), anchor=anchor)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - start
    return result


def make_maps(folder: Path, count: int) -> None:
    from core.io.images import encode_label_png

    rng = np.random.default_rng(1)
    (folder / "SegmentationClass").mkdir(parents=True)
    (folder / "JPEGImages").mkdir()
    tiny = folder / "JPEGImages" / "_.jpg"
    from PIL import Image

    Image.new("RGB", (SIZE, SIZE)).save(tiny)
    for i in range(count):
        (folder / "SegmentationClass" / f"m{i:05d}.png").write_bytes(encode_label_png(synthetic_map(rng), CLASSES))
        (folder / "JPEGImages" / f"m{i:05d}.jpg").hardlink_to(tiny)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--skip-anchor-stats", action="store_true", help="do not load every map at once (slow, large)")
    args = parser.parse_args()

    ours, anchor = overlay_rate(args.seconds)
    print(f"overlay 512x512: {ours:.0f} results/s | whole-map warp {anchor:.0f}/s | ratio {ours / anchor:.2f} "
          f"(target >= 200/s: {'met' if ours >= 200 else 'NOT met'})", flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="segstudio-maps-") as tmp:
        folder = Path(tmp) / "maps"
        start = time.perf_counter()
        make_maps(folder, args.maps)
        print(f"made {args.maps} maps in {time.perf_counter() - start:.0f} s", flush=True)
        streamed = stats_memory(folder, anchor=False)
        line = (f"statistics over {streamed['maps']} maps: peak {streamed['peak_mb']:.0f} MB in "
                f"{streamed['seconds']:.0f} s")  # fmt: skip
        if not args.skip_anchor_stats:
            loaded = stats_memory(folder, anchor=True)
            line += (
                f" | load-all-first {loaded['peak_mb']:.0f} MB | ratio {streamed['peak_mb'] / loaded['peak_mb']:.2f}"
            )
        ok = streamed["peak_mb"] < 300 and ours >= 200
        print(line + f" (target < 300 MB: {'met' if streamed['peak_mb'] < 300 else 'NOT met'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
