"""Per-sample status (the annotator's work queue): derived from files and drafts, explicit marks kept in the
workspace, never in the dataset folder, and following saves made by another store (another process)."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
from PIL import Image

from core.cli import main
from core.errors import InvalidInput
from core.store import DatasetStore, layouts
from core.store import store as store_module

ORDER = ["astronaut", "chelsea", "coffee", "grace_hopper"]


def _tree(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def data(samples_copy):
    """The bundled samples with coffee's label map removed: two done, two unlabelled."""
    (samples_copy / "SegmentationClass" / "coffee.png").unlink()
    return samples_copy


def _label_for(store: DatasetStore, sample_id: str, value: int = 0) -> np.ndarray:
    height, width = store.image_hw(sample_id)
    label = np.full((height, width), value, dtype=np.uint8)
    label[: height // 2, : width // 2] = 15
    return label


def test_statuses_are_derived_from_label_maps_and_drafts(data, tmp_path):
    store = DatasetStore(data, cache_dir=tmp_path / "ws")
    assert store.statuses() == {"astronaut": "done", "chelsea": "done", "coffee": "unlabelled", "grace_hopper": "unlabelled"}
    assert list(store.statuses()) == ORDER  # listing (natural) order
    store.drafts.save("ed", "coffee", {"anything": 1})
    store.drafts.save("ed", "chelsea", {"anything": 1})
    assert store.status("coffee") == "draft"
    assert store.status("chelsea") == "done"  # a saved map wins over someone's unsaved edits
    assert store.status_counts() == {"unlabelled": 1, "draft": 1, "done": 2, "needs_review": 0}
    store.drafts.drop("ed", "coffee")
    assert store.status("coffee") == "unlabelled"
    with pytest.raises(InvalidInput, match="no sample 'nope'"):
        store.status("nope")


def test_explicit_marks_live_in_the_workspace_and_the_dataset_stays_byte_identical(data, tmp_path):
    before = _tree(data)
    cache = tmp_path / "ws"
    store = DatasetStore(data, cache_dir=cache)
    assert store.set_status("chelsea", "needs review", "the tail is cut") == "needs_review"
    assert store.set_status("grace_hopper", "done") == "done"  # done without a label map: nothing to label
    store.drafts.save("ed", "coffee", {"x": 1})
    store.statuses()
    assert (cache / "status.sqlite").is_file()
    assert _tree(data) == before  # statuses, marks and drafts never touch the dataset folder
    assert not (data / ".segstudio").exists()

    other = DatasetStore(data, cache_dir=cache)  # another process opening the same dataset
    assert other.statuses() == {"astronaut": "done", "chelsea": "needs_review", "coffee": "draft", "grace_hopper": "done"}
    assert other.status_mark("chelsea").note == "the tail is cut"
    assert other.set_status("chelsea", None) == "done"  # cleared: derived again
    assert store.status("chelsea") == "done"

    with pytest.raises(InvalidInput, match="cannot be set"):
        store.set_status("coffee", "draft")
    with pytest.raises(InvalidInput, match="unknown status 'finished'"):
        store.set_status("coffee", "finished")
    with pytest.raises(InvalidInput, match="no sample"):
        store.set_status("nope", "done")


def test_status_follows_a_save_made_by_another_store(data, tmp_path):
    cache = tmp_path / "ws"
    mine = DatasetStore(data, cache_dir=cache)
    theirs = DatasetStore(data, cache_dir=cache)
    assert mine.status("coffee") == "unlabelled" and mine.statuses()["coffee"] == "unlabelled"
    theirs.save("coffee", label_map=_label_for(theirs, "coffee"))
    assert mine.status("coffee") == "done"
    assert mine.statuses()["coffee"] == "done"  # the listing is checked again at once

    # a mark belongs to the saved version it was set on: a save that changes the sample replaces it
    mine.set_status("chelsea", "needs_review", "check the ear")
    theirs.save("chelsea", label_map=theirs.label_map("chelsea"))  # writes nothing: the mark stays
    assert mine.status("chelsea") == "needs_review"
    theirs.save("chelsea", label_map=_label_for(theirs, "chelsea"))
    assert mine.status("chelsea") == "done" and mine.status_mark("chelsea") is None


def test_a_mark_made_by_another_process_changes_the_version(data, tmp_path):
    cache = tmp_path / "ws"
    mine = DatasetStore(data, cache_dir=cache)
    theirs = DatasetStore(data, cache_dir=cache)
    version = mine.version
    theirs.set_status("astronaut", "needs_review")
    mine.refresh(max_age=0)
    assert mine.version > version  # open pages refresh their galleries


def test_next_with_status_follows_natural_order_and_wraps(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ["img_10", "img_2", "img_1", "img_3"]:
        Image.new("RGB", (8, 6), (10, 20, 30)).save(folder / f"{name}.png")
    store = DatasetStore(folder, cache_dir=tmp_path / "ws")
    assert store.ids == ["img_1", "img_2", "img_3", "img_10"]
    assert store.next_with_status("img_2") == "img_3"
    assert store.next_with_status("img_10") == "img_1"  # wraps round
    assert store.next_with_status(None) == "img_1"
    assert store.next_with_status("img_2", step=-1) == "img_1"
    store.set_status("img_3", "done")
    store.set_status("img_1", "needs review")
    assert store.next_with_status("img_2") == "img_10"
    assert store.next_with_status("img_10") == "img_2"
    assert store.next_with_status("img_2", ["needs_review"]) == "img_1"
    store.set_status("img_10", "done")
    assert store.next_with_status("img_2") is None  # never the sample itself
    assert store.neighbour("img_10") == "img_1" and store.neighbour("img_1", -1) == "img_10"
    assert store.neighbour(None) == "img_1" and store.neighbour(None, -1) == "img_10"


def test_statuses_decode_nothing_and_scale_to_thousands(tmp_path, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    image = (folder / "img_0.png")
    Image.new("RGB", (4, 4)).save(image)
    for n in range(1, 2000):
        (folder / f"img_{n}.png").write_bytes(image.read_bytes())
    store = DatasetStore(folder, cache_dir=tmp_path / "ws")
    for n in range(0, 2000, 7):
        store.drafts.save("ed", f"img_{n}", {"x": n})
    store.set_status("img_5", "done")

    def refuse(*args, **kwargs):
        raise AssertionError("a status must not decode an image or a label map")

    monkeypatch.setattr(store_module, "load_image", refuse)
    monkeypatch.setattr(store_module, "image_size", refuse)
    monkeypatch.setattr(layouts, "load_sample_label_map", refuse)
    started = time.perf_counter()
    counts = store.status_counts()
    seconds = time.perf_counter() - started
    assert counts == {"unlabelled": 2000 - 286 - 1, "draft": 286, "done": 1, "needs_review": 0}
    assert seconds < 3.0, f"statuses of 2000 samples took {seconds:.2f} s"


def test_a_label_map_known_to_be_unusable_does_not_count_as_done(data, tmp_path):
    Image.new("L", (7, 5)).save(data / "SegmentationClass" / "chelsea.png")  # the wrong size
    store = DatasetStore(data, cache_dir=tmp_path / "ws")
    store.check(decode_images=False)
    assert store.status("chelsea") == "unlabelled"


def test_info_counts_samples_by_status(data, tmp_path, capsys):
    workspace = tmp_path / "workspace"
    from core.workspace import dataset_cache_dir

    store = DatasetStore(data, cache_dir=dataset_cache_dir(data, workspace))
    store.set_status("chelsea", "needs review")
    store.drafts.save("ed", "coffee", {"x": 1})
    before = _tree(data)
    assert main(["info", str(data), "--workspace", str(workspace), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == {"unlabelled": 1, "draft": 1, "done": 1, "needs_review": 1}
    assert main(["info", str(data), "--workspace", str(workspace)]) == 0
    assert "status: 1 / 4 done; 1 unlabelled, 1 draft, 1 needs review" in capsys.readouterr().out
    assert _tree(data) == before
