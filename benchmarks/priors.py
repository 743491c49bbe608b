"""Visual priors: milliseconds for a 512 x 512 blend (both priors and the blend), weight-free priors.

    python benchmarks/priors.py [--repeats 50]

Ours: ``core.priors.pipeline.compute_priors`` (image prior + class boundaries + blend). Anchor, measured
in the same run: the same condition image made with controlnet-aux's own CannyDetector on the image and
on the colour-rendered label map (what one would write with controlnet-aux alone), plus the same blend.
Target: at most 20 ms, so the weight sliders feel live.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.priors.blend import blend  # noqa: E402
from core.priors.edges import _quiet_import  # noqa: E402
from core.priors.pipeline import PriorSettings, compute_priors  # noqa: E402
from core.types import ClassSet  # noqa: E402
from core.viz import colorize  # noqa: E402

CLASSES = ClassSet.builtin("voc")


def sample(size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A 512 x 512 photo-like image (the bundled astronaut, resized) and its label map."""
    import cv2

    from core.store import DatasetStore

    data = DatasetStore(ROOT / "assets" / "samples").read("astronaut")
    image, label = data.image, data.label_map
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), cv2.resize(
        label, (size, size), interpolation=cv2.INTER_NEAREST
    )


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    image, label = sample()
    canny_detector = _quiet_import("controlnet_aux.canny").CannyDetector()

    def anchor():
        v_image = canny_detector(image, 100, 200, detect_resolution=512, image_resolution=512, output_type="np")
        v_mask = canny_detector(
            colorize(label, CLASSES), 100, 200, detect_resolution=512, image_resolution=512, output_type="np"
        )
        return blend(v_image, v_mask, 0.7, 0.9)

    lineart_detector = _quiet_import("controlnet_aux.lineart_standard").LineartStandardDetector()

    def anchor_lineart():
        v_image = lineart_detector(image, detect_resolution=512, output_type="np")
        v_mask = canny_detector(
            colorize(label, CLASSES), 100, 200, detect_resolution=512, image_resolution=512, output_type="np"
        )
        return blend(v_image, v_mask, 0.7, 0.9)

    ok = True
    anchors = {"canny": (median_ms(anchor, args.repeats), "controlnet-aux Canny on image and label colours"),
               "lineart_standard": (median_ms(anchor_lineart, args.repeats), "controlnet-aux standard line art + Canny on label colours")}  # fmt: skip
    for kind in ("canny", "lineart_standard", "ade20k"):
        settings = PriorSettings.for_type(kind)
        ours_ms = median_ms(lambda s=settings: compute_priors(image, label, CLASSES, s), args.repeats)
        ok &= ours_ms <= 20
        extra = ""
        if kind in anchors:
            anchor_ms, what = anchors[kind]
            extra = f" | {what} + blend {anchor_ms:.1f} ms | ratio {ours_ms / anchor_ms:.2f}"
        print(f"512x512 {kind:<17} priors + blend: {ours_ms:5.1f} ms median of {args.repeats}{extra} (target <= 20 ms)")
    settings = PriorSettings()
    v = compute_priors(image, label, CLASSES, settings)
    blend_ms = median_ms(lambda: blend(v.v_image, v.v_mask, 0.5, 0.9), args.repeats)
    print(f"512x512 blend alone (a weight slider moving, priors cached): {blend_ms:.1f} ms")
    print(f"targets: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
