"""What nobody touched stays byte-identical: boxes loaded from disk keep their saved pixels (ignore pixels
included) until someone refines them; adding, moving, relabelling or deleting one box changes only that box's
pixels; a draft round-trips the whole editing state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.refine.labelmap import border_band
from core.refine.session import AnnotationSession
from core.store import DatasetStore
from core.types import Box

LABELLED = ("astronaut", "chelsea", "coffee")
# a small box away from each sample's main object (image pixels, half-open)
ELSEWHERE = {"astronaut": Box(400, 20, 500, 140, 5), "chelsea": Box(405, 10, 451, 120, 12),
             "coffee": Box(20, 10, 160, 90, 5)}  # fmt: skip


def _open(store: DatasetStore, sample_id: str) -> AnnotationSession:
    data = store.read(sample_id)
    return AnnotationSession(data.image, store.classes, data.sample.boxes, base=data.label_map, revision=data.revision)


def _save(store: DatasetStore, sample_id: str, session: AnnotationSession):
    label_map, boxes = session.save_payload()
    result = store.save(sample_id, label_map=label_map, boxes=boxes, base_revision=session.revision)
    session.mark_saved(result.revision)
    return result


@pytest.mark.parametrize("sample_id", LABELLED)
def test_a_new_box_changes_only_its_own_mask_and_deleting_it_restores_the_map(samples_copy, sample_id):
    store = DatasetStore(samples_copy)
    original = store.label_map(sample_id)
    session = _open(store, sample_id)
    loaded = [e.box for e in session.entries]
    session.set_boxes([*loaded, ELSEWHERE[sample_id]])
    assert sum(e.refined for e in session.entries) == 1  # the loaded box was not cut again
    new = next(e for e in session.entries if e.box == ELSEWHERE[sample_id])
    mask = new.full_mask(*original.shape)
    _save(store, sample_id, session)
    on_disk = DatasetStore(samples_copy).label_map(sample_id)
    assert np.array_equal(on_disk[~mask], original[~mask])  # ignore pixels included
    assert (on_disk[mask] == ELSEWHERE[sample_id].label).all() and mask.any()

    session.set_boxes(loaded)
    _save(store, sample_id, session)
    assert np.array_equal(DatasetStore(samples_copy).label_map(sample_id), original)


def test_a_larger_new_box_does_not_swallow_a_smaller_saved_object(samples_copy):
    store = DatasetStore(samples_copy)
    original = store.label_map("chelsea")
    session = _open(store, "chelsea")
    cat = session.entries[0].box
    session.set_boxes([cat, Box(0, 0, 451, 300, 18)])  # a sofa box around the whole picture
    label_map = session.label_map
    saved_cat = original == 8
    assert (label_map[saved_cat] == 8).all()  # the smaller saved object wins where they overlap


def test_moving_or_refining_a_loaded_box_rewrites_only_that_box(samples_copy):
    store = DatasetStore(samples_copy)
    original = store.label_map("astronaut")
    session = _open(store, "astronaut")
    person = session.entries[0].box
    session.refine([1])
    changed = session.label_map != original
    assert changed.any()
    outside = np.ones(original.shape, bool)
    outside[person.y0 : person.y1, person.x0 : person.x1] = False
    assert not changed[outside].any()

    session.undo()
    moved = Box(person.x0 + 10, person.y0, min(person.x1 + 10, 512), person.y1, person.label)
    session.set_boxes([moved])
    touched = np.zeros(original.shape, bool)
    for b in (person, moved):
        touched[b.y0 : b.y1, b.x0 : b.x1] = True
    assert not (session.label_map != original)[~touched].any()


def test_deleting_a_loaded_box_keeps_its_pixels_and_relabelling_moves_them_to_the_new_class(samples_copy):
    store = DatasetStore(samples_copy)
    original = store.label_map("coffee")
    session = _open(store, "coffee")
    table = session.entries[0]
    session.set_boxes([])
    assert np.array_equal(session.label_map, original)
    session.undo()
    session.set_class(table.number, store.classes.index_of("sofa"))
    relabelled = session.label_map
    was_table = original == 11
    inside = np.zeros(original.shape, bool)
    inside[table.box.y0 : table.box.y1, table.box.x0 : table.box.x1] = True
    assert (relabelled[was_table & inside] == store.classes.index_of("sofa")).all()
    assert np.array_equal(relabelled[~(was_table & inside)], original[~(was_table & inside)])
    assert session.entries[0].method == "kept"  # its mask is the saved pixels, not a new cut


def test_a_map_from_another_tool_with_ignore_borders_keeps_them(samples_copy):
    store = DatasetStore(samples_copy)
    label = store.label_map("astronaut")
    label[border_band(label, 3)] = 255  # VOC-style void borders, as another labelling tool writes them
    store.save("astronaut", label_map=label)
    session = _open(store, "astronaut")
    session.set_boxes([*(e.box for e in session.entries), ELSEWHERE["astronaut"]])
    new = next(e for e in session.entries if e.box == ELSEWHERE["astronaut"]).full_mask(*label.shape)
    assert np.array_equal(session.label_map[~new], label[~new])
    assert (session.label_map == 255).sum() >= (label[~new] == 255).sum()


def test_an_ignore_band_is_laid_only_around_what_was_refined(samples_copy):
    store = DatasetStore(samples_copy)
    original = store.label_map("coffee")
    session = _open(store, "coffee")
    session.set_options(ignore_band=3)
    assert np.array_equal(session.label_map, original)  # nothing refined: nothing changes
    session.set_boxes([*(e.box for e in session.entries), ELSEWHERE["coffee"]])
    new = next(e for e in session.entries if e.box == ELSEWHERE["coffee"]).full_mask(*original.shape)
    near = np.zeros(original.shape, bool)
    ys, xs = np.nonzero(new)
    near[max(ys.min() - 4, 0) : ys.max() + 5, max(xs.min() - 4, 0) : xs.max() + 5] = True
    assert np.array_equal(session.label_map[~near], original[~near])


def test_a_draft_round_trips_the_whole_state_including_undo(samples_copy):
    store = DatasetStore(samples_copy)
    session = _open(store, "chelsea")
    session.set_boxes([*(e.box for e in session.entries), ELSEWHERE["chelsea"]])
    stroke = np.zeros(session.shape, bool)
    stroke[:5, :5] = True
    session.brush(stroke, 255)
    doc = json.loads(json.dumps(session.to_draft()))
    again = _open(DatasetStore(samples_copy), "chelsea")
    again.restore_draft(doc)
    assert np.array_equal(again.label_map, session.label_map) and again.history == session.history
    assert again.dirty and [e.number for e in again.entries] == [e.number for e in session.entries]
    assert np.array_equal(again.undo(), session.undo())
    assert np.array_equal(again.undo(), store.label_map("chelsea"))


class _FixedRefiner:
    """A refiner that returns a chosen mask, to check how degenerate cuts are reported."""

    def __init__(self, fill: bool):
        self.fill = fill

    def refine(self, image, box, settings=None):
        mask = np.zeros(image.shape[:2], bool)
        mask[box.y0 : box.y1, box.x0 : box.x1] = self.fill
        return mask


@pytest.mark.parametrize(("fill", "flag"), [(False, "empty mask"), (True, "mask fills the box")])
def test_empty_and_box_filling_cuts_are_flagged(samples_copy, fill, flag):
    store = DatasetStore(samples_copy)
    data = store.read("grace_hopper")
    session = AnnotationSession(data.image, store.classes, data.sample.boxes, refiner=_FixedRefiner(fill))
    session.set_boxes([*(e.box for e in session.entries), Box(100, 100, 200, 220, 15)])
    assert session.flagged() == [(2, flag)]
    session.refine([1])
    assert sorted(session.flagged()) == [(1, flag), (2, flag)]
