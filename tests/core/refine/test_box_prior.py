"""Box-alone priors of grabcut-fast: the tightness prior (pinpointing), one-piece filtering, incremental cuts."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from core.refine.grabcut import GrabCutParams, fast_grabcut, keep_pieces, to_color_space
from core.refine.graph import HARD, ReusableCut, grid_pairs, min_cut
from core.types import Box


def _thin_leg_scene() -> tuple[np.ndarray, Box]:
    """A red body with a one-pixel, low-contrast leg down to the bottom of its (tight) box."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal((90, 110, 140), 6, (120, 120, 3)), 0, 255)
    image[20:60, 30:91] = (200, 40, 40)
    image[60:101, 60] = (115, 100, 125)  # the leg: colour close to the background, one pixel wide
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    return image, Box(30, 20, 91, 101)


def _box_lines_covered(mask: np.ndarray, box: Box, inset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per row / column of the box shrunk by ``inset``: does it hold foreground?"""
    iy, ix = round(inset * box.height), round(inset * box.width)
    inner = mask[box.y0 + iy : box.y1 - iy, box.x0 + ix : box.x1 - ix]
    return inner.any(axis=1), inner.any(axis=0)


def test_plain_cut_misses_the_thin_leg():
    """The scene's premise: without the tightness prior the bottom rows of the box are empty."""
    image, box = _thin_leg_scene()
    plain = fast_grabcut(
        to_color_space(image, "lab"), box, GrabCutParams(working_size=0, tight_prior=False, min_piece=0)
    )
    rows, cols = _box_lines_covered(plain, box)
    assert plain[box.y0 : box.y0 + 30, box.x0 : box.x1].mean() > 0.9  # the body is found
    assert not rows.all()  # but some rows of the box hold no foreground
    assert not plain[70:101, 60].any()  # the leg is lost


@pytest.mark.parametrize("working_size", [0, 160])
def test_tightness_prior_puts_foreground_on_every_box_row_and_column(working_size):
    image, box = _thin_leg_scene()
    # min_piece=0: the guarantee is the prior's own; dropping small pieces afterwards may drop a lone pin.
    params = GrabCutParams(working_size=working_size, tight_prior=True, tight_inset=0.0, min_piece=0)
    mask = fast_grabcut(to_color_space(image, "lab"), box, params)
    rows, cols = _box_lines_covered(mask, box)
    assert rows.all(), f"rows without foreground: {np.flatnonzero(~rows).tolist()}"
    assert cols.all(), f"columns without foreground: {np.flatnonzero(~cols).tolist()}"
    assert mask[60:101, 60].mean() > 0.8  # the leg itself carries the rows
    assert np.count_nonzero(mask[60:101, box.x0 : box.x1]) < 100  # a leg and a few pins, not a slab (2501 px)


def test_defaults_recover_the_leg_and_never_leave_the_box():
    image, box = _thin_leg_scene()
    params = GrabCutParams(working_size=0)  # tightness prior on, inset 4 %, small pieces dropped
    mask = fast_grabcut(to_color_space(image, "lab"), box, params)
    rows, _ = _box_lines_covered(mask, box, params.tight_inset)
    assert rows.mean() > 0.9
    assert mask[60:101, 60].mean() > 0.8
    assert not (mask & ~box.mask(*mask.shape)).any()


def test_keep_pieces_drops_small_islands_only():
    mask = np.zeros((40, 40), bool)
    mask[5:25, 5:25] = True  # 400 px
    mask[30:38, 30:38] = True  # 64 px: 16 % of the largest
    mask[2, 35] = True  # 1 px
    kept = keep_pieces(mask, 0.1)
    assert kept[5:25, 5:25].all() and kept[30:38, 30:38].all() and not kept[2, 35]
    assert keep_pieces(mask, 1.0).sum() == 400
    assert (keep_pieces(mask, 0.0) == mask).all()


def test_reusable_cut_matches_fresh_cuts_as_costs_change():
    rng = np.random.default_rng(1)
    height, width = 30, 40
    first, second, _ = grid_pairs(height, width)
    weights = rng.uniform(0, 4, len(first))
    cut = ReusableCut(height * width, first, second, weights)

    def energy(labels, cost_fg, cost_bg):
        return cost_fg[labels].sum() + cost_bg[~labels].sum() + weights[labels[first] != labels[second]].sum()

    for step in range(6):
        cost_fg, cost_bg = rng.uniform(0, 5, height * width), rng.uniform(0, 5, height * width)
        cost_fg[:width] = HARD  # a hard background row, as outside a box
        if step % 2:
            cost_bg[rng.choice(height * width, 20, replace=False)] = HARD  # pins that come and go
        reused, fresh = cut.solve(cost_fg, cost_bg), min_cut(cost_fg, cost_bg, first, second, weights)
        assert energy(reused, cost_fg, cost_bg) == pytest.approx(energy(fresh, cost_fg, cost_bg), abs=1e-6)
        assert not reused[:width].any()


@pytest.mark.parametrize("field, value", [("tight_inset", 0.5), ("tight_smooth", -1.0), ("min_piece", 1.5)])
def test_new_fields_are_validated(field, value):
    with pytest.raises(InvalidInput):
        GrabCutParams(**{field: value})


def test_corrections_keep_the_tightness_prior_except_where_the_annotator_said_not_object():
    from core.refine.corrections import Stroke
    from core.refine.refiner import BoxRefiner, RefineSettings

    image, box = _thin_leg_scene()
    refiner = BoxRefiner()
    settings = RefineSettings("grabcut-fast", grabcut=GrabCutParams(working_size=0))
    top = Stroke(((box.x0 - 5, 22), (box.x1 + 5, 22)), positive=False, radius=2)  # rows 20-24: the box is loose there
    mask = refiner.refine(image, box, settings, strokes=[top])
    assert not mask[20:25].any()  # the not-object rows stay empty: no pin brings them back
    rows, cols = _box_lines_covered(mask[25:], Box(box.x0, 0, box.x1, box.y1 - 25), inset=0.04)
    assert rows.all() and cols.all()  # every other line of the box still holds the object (the leg included)
