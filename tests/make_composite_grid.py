"""A 4 x 4 grid of default composites (each: image | label map), for the README.

    python tests/make_composite_grid.py [--dataset assets/samples] [--out assets/screenshots/composites.jpg]
                                        [--seed 11] [--size data|relative] [--position around|uniform|data]

The dataset folder is only read (size statistics go to the workspace cache).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.generate.composite import CompositeParams, CompositeRequest, composite_sample  # noqa: E402
from core.labels.overlay import Placement  # noqa: E402
from core.labels.recombine import RegionLibrary  # noqa: E402
from core.store import DatasetStore  # noqa: E402
from core.viz import colorize, grid  # noqa: E402


def composite_tiles(dataset: str, seed: int, count: int = 16, **placement) -> list[np.ndarray]:
    """``count`` default composites of a dataset, each as ``H x 2W x 3 uint8`` (image beside its label map)."""
    store = DatasetStore(dataset)
    params = CompositeParams()
    if placement:
        params = CompositeParams(placement=Placement(**{**params.placement.record(), **placement}))
    request = CompositeRequest(count=count, seed=seed, params=params)
    library = RegionLibrary(store)
    tiles = []
    for i in range(count):
        result = composite_sample(library, request, i).result
        tiles.append(np.concatenate([result.image, colorize(result.label_map, store.classes)], axis=1))
    return tiles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(ROOT / "assets" / "samples"))
    parser.add_argument("--out", default=str(ROOT / "assets" / "screenshots" / "composites.jpg"))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--size", choices=["data", "relative"])
    parser.add_argument("--position", choices=["around", "uniform", "data"])
    parser.add_argument("--ground-plane", action="store_true")
    args = parser.parse_args()
    placement = {k: v for k, v in (("size", args.size), ("position", args.position)) if v}
    if args.ground_plane:
        placement["ground_plane"] = True
    if args.size == "relative":
        placement["max_stretch"] = 1.0
    from PIL import Image

    image = grid(composite_tiles(args.dataset, args.seed, **placement), columns=4, cell=(400, 170))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(args.out, quality=85, optimize=True)
    print(args.out, image.shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())
