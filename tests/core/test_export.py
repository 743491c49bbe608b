"""Batch export: recipes, plans, the ledger, resumption after kill -9, failure isolation, VOC and COCO read back."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from core.errors import InvalidInput
from core.export.plan import plan_jobs
from core.export.recipe import Recipe
from core.export.runner import run_export, split_of
from core.store import DatasetStore
from tests.conftest import PROJECT_ROOT
from tests.reliability.helpers import tree_digest

KILLS = 20


def _recipe(source, **changes) -> Recipe:
    doc = {"source": str(source), "seed": 3, "real": "include",
           "generate": [{"backend": "composite", "count": 10, "options": {"blending": "gaussian"}},
                        {"backend": "recombine", "count": 4, "options": {"classes": ["cat"]}}],
           "split": {"train": 0.75, "val": 0.25}, "formats": ["voc", "coco"]}  # fmt: skip
    return Recipe.from_dict({**doc, **changes})


def _without_ledger(tree: dict) -> dict:
    return {k: v for k, v in tree.items() if "segstudio-export.sqlite" not in k}


@pytest.mark.parametrize(("change", "message"), [
    ({"seed": -1}, "seed: a non-negative integer"),
    ({"real": "maybe"}, "real: one of include, exclude"),
    ({"generate": [{"backend": "dcgan", "count": 1}]}, r"generate\[0\].backend: one of composite"),
    ({"generate": [{"backend": "composite"}]}, r"generate\[0\]: give exactly one of count"),
    ({"generate": [{"backend": "composite", "count": 1, "options": {"blur": 3}}]}, r"generate\[0\].options.blur: unknown"),
    ({"generate": [{"backend": "controlnet", "count": 1}]}, r"generate\[0\].model: the controlnet backend needs"),
    ({"split": {"train": 0.5, "val": 0.2}}, "split: shares must add up to 1"),
    ({"formats": ["voc", "parquet"]}, "formats: a list of voc, coco"),
    ({"colour": 1}, "colour: unknown key"),
])  # fmt: skip
def test_recipe_errors_name_the_key_and_what_is_accepted(change, message):
    with pytest.raises(InvalidInput, match=message):
        _recipe(PROJECT_ROOT / "assets" / "samples", **change)


def test_the_plan_is_a_pure_function_of_the_recipe(samples_copy):
    store = DatasetStore(samples_copy)
    first, again = plan_jobs(_recipe(samples_copy), store), plan_jobs(_recipe(samples_copy), store)
    assert [j.to_json() for j in first] == [j.to_json() for j in again]
    assert [j.kind for j in first[:3]] == ["real"] * 3 and len(first) == 3 + 10 + 4
    assert first[5].seeds == (3, 1, 2) and len({j.id for j in first}) == len(first)
    other = plan_jobs(_recipe(samples_copy, seed=4), store)
    assert not {j.id for j in other} & {j.id for j in first}
    balanced = plan_jobs(_recipe(samples_copy, generate=[{"backend": "composite", "balance": {"n_balance": 2}}]), store)
    assert {j.target_class for j in balanced if j.step == 1} == {"cat", "diningtable", "person"}


def test_splits_keep_a_photo_and_its_variants_together():
    shares = {"train": 0.8, "val": 0.2}
    assert split_of("chelsea", 0, shares) == split_of("chelsea", 0, shares)
    spread = [split_of(f"img{i}", 0, shares) for i in range(2000)]
    assert 0.76 < spread.count("train") / 2000 < 0.84


def test_export_reads_back_as_voc_and_as_coco(samples_copy, tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    summary = run_export(_recipe(samples_copy), tmp_path / "out")
    assert summary.made == 17 and not summary.failures
    exported = DatasetStore(tmp_path / "out")
    assert len(exported.labelled_ids()) == 17 and not exported.problems
    assert (tmp_path / "out" / "JPEGImages" / "astronaut.jpg").read_bytes() == (
        samples_copy / "JPEGImages" / "astronaut.jpg").read_bytes()  # fmt: skip
    records = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    for split in ("train", "val"):
        coco = COCO(str(tmp_path / "out" / "annotations" / f"instances_{split}.json"))
        assert all(c["id"] != 0 for c in coco.loadCats(coco.getCatIds()))
        for image in coco.loadImgs(coco.getImgIds()):
            rebuilt = np.zeros((image["height"], image["width"]), np.uint8)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
                rebuilt[coco.annToMask(ann) > 0] = ann["category_id"]
                assert ann["iscrowd"] == 0 and ann["area"] > 0
            rebuilt[mask_utils.decode(image["ignore_rle"]) > 0] = 255
            output_id = image["file_name"].split("/")[-1].rsplit(".", 1)[0]
            assert np.array_equal(rebuilt, exported.label_map(output_id)), output_id
    assert {r["split"] for r in records} <= {"train", "val"}
    for record in records:  # variants of one photo never straddle splits
        if record["kind"] == "composite":
            background = record["provenance"]["background"]
            assert record["split"] == split_of(background, 3, {"train": 0.75, "val": 0.25})
    lines = (tmp_path / "out" / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert set(lines) == {r["output_id"] for r in records if r["split"] == "train"}


def test_the_same_recipe_gives_the_same_tree_whatever_the_worker_count(samples_copy, tmp_path):
    recipe = _recipe(samples_copy, generate=[{"backend": "composite", "count": 12}])
    run_export(recipe, tmp_path / "one")
    run_export(recipe, tmp_path / "two", workers=2)
    one, two = _without_ledger(tree_digest(tmp_path / "one")), _without_ledger(tree_digest(tmp_path / "two"))
    assert one == two and len(one) > 40


def test_a_failing_job_is_recorded_and_never_stops_the_run(samples_copy, tmp_path):
    recipe = _recipe(samples_copy, generate=[{"backend": "recombine", "count": 2, "options": {"classes": ["dog"]}},
                                             {"backend": "composite", "count": 3}])  # fmt: skip
    summary = run_export(recipe, tmp_path / "out")
    assert summary.made == 3 + 3 and len(summary.failures) == 2 and "no region" in summary.failures[0][1]
    export = json.loads((tmp_path / "out" / "export.json").read_text())
    assert export["samples"] == 6 and len(export["failures"]) == 2
    again = run_export(recipe, tmp_path / "out", resume=True, retry_failed=True)
    assert again.made == 0 and again.skipped == 6 and len(again.failures) == 2


def test_an_output_folder_of_another_export_is_refused_unless_forced(samples_copy, tmp_path):
    run_export(_recipe(samples_copy, generate=[]), tmp_path / "out")
    with pytest.raises(InvalidInput, match="pass --resume"):
        run_export(_recipe(samples_copy, generate=[]), tmp_path / "out")
    with pytest.raises(InvalidInput, match="another recipe"):
        run_export(_recipe(samples_copy, generate=[], seed=9), tmp_path / "out")
    store = DatasetStore(samples_copy)
    label = store.label_map("chelsea")
    label[:3, :3] = 12
    store.save("chelsea", label_map=label)
    with pytest.raises(InvalidInput, match="dataset changed"):
        run_export(_recipe(samples_copy, generate=[]), tmp_path / "out", resume=True)
    done = run_export(_recipe(samples_copy, generate=[], seed=9), tmp_path / "out", force=True)
    assert done.made == 3
    with pytest.raises(InvalidInput, match="inside the dataset"):
        run_export(_recipe(samples_copy, generate=[]), samples_copy / "export")


def test_an_export_killed_at_random_points_resumes_to_the_same_tree(samples_copy, tmp_path):
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(json.dumps(_recipe(samples_copy, generate=[{"backend": "composite", "count": 200}]).to_json()
                                      | {"quality": None, "review": None}))  # fmt: skip
    reference = tmp_path / "reference"
    run_export(Recipe.load(recipe_path), reference)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "core.cli", "export", str(recipe_path), "--out", str(out)]
    rng = random.Random(5)
    kills = 0
    for attempt in range(KILLS):
        process = subprocess.Popen([*command, *(["--resume"] if attempt else [])], cwd=PROJECT_ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        time.sleep(rng.uniform(0.4, 2.0))  # ~0.07 s a sample: each run makes a few
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait()
    subprocess.run([*command, "--resume"], cwd=PROJECT_ROOT, check=True, capture_output=True)
    assert kills >= KILLS // 2  # most runs were cut short (the rest finished or had nothing left)
    assert _without_ledger(tree_digest(out)) == _without_ledger(tree_digest(reference))


def test_a_folder_converts_to_coco_from_the_command_line(samples_copy, tmp_path):
    done = subprocess.run([sys.executable, "-m", "core.cli", "export", str(samples_copy), "--format", "coco",
                           "--out", str(tmp_path / "coco")], cwd=PROJECT_ROOT, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 samples planned: 3 made now" in done.stdout
    doc = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())
    assert len(doc["images"]) == 3 and doc["annotations"]


def test_a_second_run_into_a_folder_in_use_is_refused(samples_copy, tmp_path):
    from core.export.runner import export_lock

    out = tmp_path / "out"
    out.mkdir()
    with export_lock(out):
        with pytest.raises(InvalidInput, match="is running already"):
            run_export(_recipe(samples_copy, generate=[]), out)
        with pytest.raises(InvalidInput, match="is running already"):
            run_export(_recipe(samples_copy, generate=[]), out, force=True)
    assert run_export(_recipe(samples_copy, generate=[]), out).made == 3


def test_coco_keeps_a_real_class_zero_and_leaves_out_background():
    from pycocotools import mask as mask_utils

    from core.export.writers import coco_entries
    from core.types import ClassSet

    label_map = np.zeros((20, 30), np.uint8)  # Cityscapes: 0 is road, a real class
    label_map[5:10, 5:12] = 13
    label_map[15:, :] = 255
    entries = coco_entries(label_map, ClassSet.builtin("cityscapes"))
    rebuilt = np.full(label_map.shape, 99, np.uint8)
    for annotation in entries["annotations"]:
        rebuilt[mask_utils.decode(annotation["segmentation"]) > 0] = annotation["category_id"]
    rebuilt[mask_utils.decode(entries["ignore_rle"]) > 0] = 255
    assert np.array_equal(rebuilt, label_map)
    voc = coco_entries(label_map, ClassSet.builtin("voc"))
    assert [a["category_id"] for a in voc["annotations"]] == [13]  # VOC's background is no category


def test_an_unreadable_sample_is_left_out_and_reported(samples_copy, tmp_path):
    (samples_copy / "JPEGImages" / "chelsea.jpg").write_bytes(b"not a jpeg")
    done = subprocess.run([sys.executable, "-m", "core.cli", "export", str(samples_copy), "--out", str(tmp_path / "out")],
                          cwd=PROJECT_ROOT, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 samples planned" in done.stdout and "1 dataset samples skipped" in done.stdout
    assert "chelsea.jpg" in done.stderr
    export = json.loads((tmp_path / "out" / "export.json").read_text())
    assert {p["sample"] for p in export["dataset_problems"]} == {"chelsea"}
