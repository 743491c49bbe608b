"""Render tab's controller: the mesh summary, a preview with exact maps, a background batch that is cancelled and
resumed to the end, form errors; the dataset folder is never written."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mitsuba", reason='Mitsuba 3 is not installed (pip install -e ".[render]")')

from core.errors import InvalidInput  # noqa: E402
from core.train.runs import read_job  # noqa: E402
from studio.app import StudioConfig, build_app  # noqa: E402
from tests.reliability.helpers import tree_digest  # noqa: E402
from tests.studio.test_train_tab import kill_workers, wait_for  # noqa: E402

FORM = {"meshes": "", "label_classes": "meshes", "dataset_backgrounds": True, "backgrounds": "", "size": 48,
        "samples": 2, "objects_min": 1, "objects_max": 2, "size_min": 0.2, "size_max": 0.4, "distance_min": 4,
        "distance_max": 8, "elevation_min": 5, "elevation_max": 60, "focal_min": 35, "focal_max": 70, "lights_max": 2,
        "truncation": 0.3, "visible": 0.25, "textures": ["none", "checker"]}  # fmt: skip


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory):
    from core.train.toy import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", count=4, size=32, num_classes=3, seed=0)


@pytest.fixture
def renders(toy_dataset, tmp_path):
    app = build_app(StudioConfig.for_data(toy_dataset, tmp_path / "ws"))
    controller = app.render_tab
    yield controller
    kill_workers(controller.root)


def test_library_and_preview(renders):
    text = renders.library_text(FORM)
    assert "18 meshes" in text and "ball (3)" in text and "Labels: background, ball, box" in text
    assert "unlabelled images (255)" in text  # the dataset's labels mean nothing for the meshes' own classes
    image, maps, scene_json = renders.preview(FORM, seed=2)
    assert image.shape == (48, 48, 3) and maps.shape == (48, 96, 3)
    scene = json.loads(scene_json)
    assert scene["objects"] and scene["background"]["kind"] == "unlabelled" and scene["samples"] == 2


def test_batch_runs_in_the_background_cancels_and_resumes(renders, toy_dataset):
    before = tree_digest(toy_dataset)
    name = renders.start("batch-a", FORM, count=6, seed=0)
    wait_for(lambda: read_job(renders.root / name).get("step", 0) >= 1, what="a first sample")
    renders.control(name, "cancel")
    wait_for(lambda: read_job(renders.root / name).get("state") in ("cancelled", "finished"), what="cancelled")
    text, images, live, paused, resumable = renders.status(name)
    assert not live and images
    if read_job(renders.root / name)["state"] == "cancelled":
        assert resumable and "cancelled" in text
        renders.resume(name)
    wait_for(lambda: read_job(renders.root / name).get("state") == "finished", what="finished")
    manifest = (renders.root / name / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in manifest] == [f"render_{i:06d}" for i in range(6)]
    assert tree_digest(toy_dataset) == before
    assert [v for _, v in renders.choices()] == ["batch-a"]
    with pytest.raises(InvalidInput, match="batch-a already exists"):
        renders.start("batch-a", FORM, count=2, seed=0)


def test_form_errors(renders, tmp_path):
    with pytest.raises(InvalidInput, match="mesh folder .*nowhere does not exist"):
        renders.library_text({**FORM, "meshes": str(tmp_path / "nowhere")})
    with pytest.raises(InvalidInput, match="are not classes of the dataset"):
        renders.library_text({**FORM, "label_classes": "dataset"})  # bundled meshes vs the toy classes
    with pytest.raises(InvalidInput, match="camera_elevation must lie in"):
        renders.preview({**FORM, "elevation_max": 95}, seed=0)
