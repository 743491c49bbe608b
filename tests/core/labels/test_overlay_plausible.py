"""Label-map overlays share the compositor's placement (issue 17): target objects respected, sizes from the
data (stuff classes included when pasted on purpose), a target without room drawn again, then reported."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import SampleProblem
from core.labels.overlay import Placement, overlay
from core.labels.recombine import RecombineRequest, RegionLibrary, _sizes_for, recombine, recombine_one
from core.labels.regions import class_components
from core.store import DatasetStore
from tests.core.generate.scenes import hidden_shares, write_streets


@pytest.fixture(scope="module")
def streets(tmp_path_factory):
    return write_streets(tmp_path_factory.mktemp("streets"), count=12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), limit=st.floats(0, 0.9), size=st.sampled_from(["data", "relative"]))
def test_overlay_never_hides_a_target_object_beyond_the_limit(seed, limit, size):
    target = np.zeros((64, 64), np.uint8)
    target[:12] = 2  # stuff: may be covered freely
    target[30:60, 5:35] = 7
    target[10:25, 40:60] = 9
    source = np.zeros((64, 64), np.uint8)
    source[5:50, 10:50] = 8  # a big region: many placements would hide too much
    regions = class_components(source, 8)
    placement = Placement(mode="random", size=size, max_translate=0.5, scale=(0.5, 1.5))
    result = overlay(target, regions * 2, placement, np.random.default_rng(seed), background_overlap=limit, stuff=(2,))
    assert max(hidden_shares(target, result.label_map, {2}), default=0) <= limit + 1e-9
    assert set(np.unique(result.label_map).tolist()) <= {0, 2, 7, 8, 9}
    assert all("pixels" in s or "skipped" in s for s in result.steps)


def test_keep_placement_is_not_limited_and_the_default_limit_is_off():
    target = np.zeros((40, 40), np.uint8)
    target[10:30, 10:30] = 7
    source = np.zeros((40, 40), np.uint8)
    source[10:30, 10:30] = 8
    region = class_components(source, 8)[0]
    kept = overlay(target, [region], Placement(mode="keep"), np.random.default_rng(0), background_overlap=0.1)
    assert (kept.label_map == 8).sum() == 400  # put back where it was, whatever it hides
    free = overlay(target, [region], Placement(mode="random", max_translate=0.0, scale=(1, 1), max_rotate=0, flip=False),
                   np.random.default_rng(0))  # fmt: skip
    assert (free.label_map == 7).sum() == 0  # no limit unless asked: the old behaviour


def test_a_target_without_room_is_drawn_again_then_the_result_is_reported(streets, tmp_path):
    library = RegionLibrary(DatasetStore(streets, cache_dir=tmp_path / "ws"))
    impossible = RecombineRequest("overlay", ("car",), 3, 1, Placement(mode="random", size="relative", scale=(10, 10)),
                                  targets=tuple(sorted(library.present)[:2]), background_overlap=0.0)  # fmt: skip
    with pytest.raises(SampleProblem, match="no region fitted on 4 target maps"):
        recombine_one(library, impossible, 0)
    assert recombine(library.store, impossible) == []  # skipped, reported, never raised from a batch
    fine = RecombineRequest("overlay", ("car",), 6, 1, Placement(mode="random", size="data", position="data"),
                            targets=tuple(sorted(library.present)), background_overlap=0.3)  # fmt: skip
    made = recombine(library.store, fine)
    assert len(made) == 6 and all(any("pixels" in s for s in m.record["steps"]) for m in made)
    maps = {d.id: d.label_map for d in library.store.each()}
    for sample in made:
        before = maps[sample.record["target"]]
        assert max(hidden_shares(before, sample.result.label_map, {1, 2, 3}), default=0) <= 0.3 + 1e-9


def test_sizes_leave_stuff_out_unless_it_is_the_class_pasted(streets, tmp_path):
    library = RegionLibrary(DatasetStore(streets, cache_dir=tmp_path / "ws"))
    placement = Placement(mode="random", size="data")
    cars = _sizes_for(library, library.components(4)[:1], placement)
    sky = _sizes_for(library, library.components(1)[:1], placement)
    assert set(cars.classes.tolist()) == {4, 5, 6}
    assert set(sky.classes.tolist()) == {1, 4, 5, 6}
    assert _sizes_for(library, library.components(4)[:1], Placement(mode="random")) is None
