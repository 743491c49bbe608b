"""No silent loss: conflicting saves are refused with a choice, a killed save leaves the old or the new file,
unsaved work survives as a draft, and saving an unchanged sample writes nothing."""

from __future__ import annotations

import os
import random
import signal
import time

import numpy as np
import pytest

from core.io.atomic import previous_versions
from core.io.images import load_label_map
from core.io.voc import parse_voc_xml
from core.store import DatasetStore, SaveConflict
from core.types import Box
from studio.app import StudioConfig, build_app
from tests.reliability.helpers import tree_digest

CONFLICT_ROUNDS = 20
KILLS = 60


def _boxes(store: DatasetStore, sample_id: str) -> list[Box]:
    return list(store.get(sample_id).boxes)


def test_two_editors_saving_one_sample_never_erase_each_other(samples_copy):
    rng = random.Random(0)
    a, b = DatasetStore(samples_copy), DatasetStore(samples_copy)  # two processes' views of one folder
    xml = samples_copy / "Annotations" / "grace_hopper.xml"
    refused = 0
    for round_ in range(CONFLICT_ROUNDS):
        base = a.revision("grace_hopper")
        assert base == b.revision("grace_hopper")
        theirs = [*_boxes(b, "grace_hopper"), Box(rng.randrange(0, 200), 10, 300, 200, 8)]
        b.save("grace_hopper", boxes=theirs, base_revision=base)
        mine = [*_boxes(a, "grace_hopper")[:1], Box(5, 5, 50 + round_, 60, 12)]
        with pytest.raises(SaveConflict) as refusal:
            a.save("grace_hopper", boxes=mine, base_revision=base)
        refused += 1
        assert refusal.value.choices == ("reload", "overwrite", "copy") and "nothing was written" in str(refusal.value)
        assert _boxes(DatasetStore(samples_copy), "grace_hopper") == theirs  # theirs is intact on disk
        choice = ("overwrite", "copy")[round_ % 2]
        result = a.save("grace_hopper", boxes=mine, base_revision=base, on_conflict=choice)
        if choice == "overwrite":
            assert result.resolution == "overwrote" and _boxes(a, "grace_hopper") == mine
            kept = previous_versions(samples_copy, xml)[-1]
            assert parse_voc_xml(kept, a.classes)[0] == theirs  # theirs is in the history
        else:
            assert result.resolution == "copied" and result.sample_id.startswith("grace_hopper_copy")
            assert _boxes(a, result.sample_id) == mine and _boxes(a, "grace_hopper") == theirs
    assert refused == CONFLICT_ROUNDS


def test_two_browser_sessions_in_the_studio_get_the_conflict(samples_copy):
    controller = build_app(StudioConfig.for_data(samples_copy)).annotate
    first, second = controller.session("A", "chelsea"), controller.session("B", "chelsea")
    second.set_boxes([*(e.box for e in second.entries), Box(410, 10, 450, 100, 12)])
    controller.save(second, "chelsea")
    first.set_boxes([*(e.box for e in first.entries), Box(20, 200, 120, 290, 5)])
    with pytest.raises(SaveConflict):
        controller.save(first, "chelsea")
    assert first.dirty  # A's work is still there, ready for a choice
    controller.save(first, "chelsea", "copy")
    store = DatasetStore(samples_copy)
    assert [b.label for b in store.get("chelsea").boxes] == [8, 12]
    assert [b.label for b in store.get("chelsea_copy").boxes] == [8, 5]


def test_saving_an_unchanged_sample_writes_nothing(samples_copy):
    store = DatasetStore(samples_copy)
    before = tree_digest(samples_copy)
    for sample_id in store.ids:
        result = store.save(sample_id, label_map=store.label_map(sample_id), boxes=_boxes(store, sample_id),
                            base_revision=store.revision(sample_id))  # fmt: skip
        assert result.resolution == "unchanged" and not result.written
    assert tree_digest(samples_copy) == before  # no rewritten PNG, no empty Annotations/*.xml


def _save_forever(root, maps, box_sets) -> None:
    """The child: save alternating versions of one sample as fast as it can (killed from outside)."""
    store = DatasetStore(root)
    i = 0
    while True:
        store.save("chelsea", label_map=maps[i % 2], boxes=box_sets[i % 2])
        i += 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to kill a save midway")
def test_a_save_killed_at_random_points_leaves_the_old_or_the_new_file(samples_copy):
    store = DatasetStore(samples_copy)
    original = store.label_map("chelsea")
    maps = [original.copy(), original.copy()]
    maps[0][:100, :100] = 12
    maps[1][150:, 200:] = 15
    box_sets = [[Box(0, 0, 100, 100, 12)], [Box(200, 150, 451, 300, 15), Box(1, 1, 9, 9, 8)]]
    xml = samples_copy / "Annotations" / "chelsea.xml"
    png = samples_copy / "SegmentationClass" / "chelsea.png"
    rng = random.Random(1)
    for _ in range(KILLS):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            try:
                _save_forever(samples_copy, maps, box_sets)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        fresh = DatasetStore(samples_copy)
        label = fresh.label_map("chelsea")  # decodes: never a torn file
        assert any(np.array_equal(label, m) for m in (original, *maps))
        boxes, _, problems = parse_voc_xml(xml, fresh.classes)
        assert not problems and boxes in ([Box(0, 0, 405, 300, 8)], *box_sets)
    for kept in previous_versions(samples_copy, png):  # every history copy is whole too
        assert load_label_map(kept, store.classes).shape == original.shape
    # a kill may leave a hidden temporary file (never a torn label map); the next save clears old ones
    leftovers = list(png.parent.glob(".chelsea.png.*.tmp"))
    for leftover in leftovers:
        os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    store.save("chelsea", label_map=original)
    assert not list(png.parent.glob(".chelsea.png.*.tmp"))
