"""The robot user: where it clicks, NoC, and the evaluation through the API and the command line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from core.errors import InvalidInput
from core.refine.clicks import Click, ClickScore, boxes_for_click, evaluate_with_clicks, next_click
from core.refine.refiner import RefineSettings
from core.types import Box
from tests.conftest import PROJECT_ROOT, shared_set
from tests.core.refine.test_corrections import distractor_scene


def _square(shape, y0, y1, x0, x1):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_the_click_goes_to_the_interior_of_the_largest_error_region():
    shape = (40, 60)
    truth = _square(shape, 5, 25, 5, 25).astype(np.uint8)
    prediction = truth.astype(bool).copy()
    prediction[10:16, 10:16] = False  # a 36-pixel false negative
    prediction[20:32, 40:52] = True  # a 144-pixel false positive: the largest error
    click = next_click(prediction, truth)
    # The 12 x 12 square's four centre pixels lie 6 px from its border; the first in row-major order wins.
    assert click == Click(x=45, y=25, positive=False, radius=5, region_area=144, depth=6.0)
    assert next_click(prediction, truth) == click  # deterministic
    fixed = prediction & ~_square(shape, 20, 32, 40, 52)
    second = next_click(fixed, truth, radius=2)
    assert (second.positive, second.region_area, second.radius) == (True, 36, 2)
    assert (second.x, second.y) in {(12, 12), (13, 12), (12, 13), (13, 13)} and (second.x, second.y) == (12, 12)
    assert next_click(truth.astype(bool), truth) is None  # nothing left to correct


def test_the_image_border_counts_as_the_region_boundary():
    shape = (30, 40)
    truth = _square(shape, 0, 11, 10, 21).astype(np.uint8)  # an 11 x 11 object touching the top edge
    click = next_click(np.zeros(shape, bool), truth)
    # Padded, the centre (row 5, column 15) is 6 px from every side; unpadded, row 0 would look deepest.
    assert (click.x, click.y, click.positive, click.depth) == (15, 5, True, 6.0)


def test_ignore_pixels_and_unclickable_pixels_are_not_errors():
    shape = (40, 60)
    truth = _square(shape, 5, 15, 5, 15).astype(np.uint8)
    truth[20:35, 30:55] = 255  # a void area
    prediction = _square(shape, 5, 15, 5, 15) | _square(shape, 20, 35, 30, 55)  # predicted over the void
    prediction[5:9, 5:9] = False  # a 16-pixel false negative
    click = next_click(prediction, truth)
    assert click.positive and click.region_area == 16
    assert next_click(prediction, truth, clickable=~_square(shape, 0, 20, 0, 20)) is None
    tie_truth = _square(shape, 0, 4, 0, 4).astype(np.uint8)  # a 16-px false negative ...
    tie_prediction = _square(shape, 30, 34, 50, 54)  # ... and a 16-px false positive: the positive click wins
    assert next_click(tie_prediction, tie_truth).positive
    with pytest.raises(InvalidInput, match="one shape"):
        next_click(np.zeros((3, 3), bool), np.zeros((4, 4), np.uint8))


def test_clicks_go_to_the_box_they_correct():
    boxes = [Box(0, 0, 50, 50), Box(10, 10, 20, 20)]
    masks = [_square((60, 60), 0, 50, 0, 50), _square((60, 60), 12, 18, 12, 18)]
    positive = Click(15, 15, True, 3, 10, 3.0)
    negative = Click(15, 15, False, 3, 10, 3.0)
    assert boxes_for_click(positive, boxes, masks) == [1]  # the smallest box holding the click
    assert boxes_for_click(negative, boxes, masks) == [0, 1]  # every mask holding the pixel
    assert boxes_for_click(Click(55, 55, True, 3, 1, 1.0), boxes, masks) == []


def test_noc_counts_clicks_to_reach_the_iou_capped_at_k():
    score = ClickScore("a", [0.80, 0.86, 0.91, 0.95], [], [], [])
    assert score.noc(0.85) == 1 and score.noc(0.90) == 2 and score.noc(0.99) == 3
    assert ClickScore("b", [0.93, 0.5], [], [], []).noc(0.90) == 0


def _distractor_folder(root, count=2):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(count):
        image, truth, box, _ = distractor_scene()
        image = np.roll(image, i, axis=1)  # distinct images, same difficulty
        truth = np.roll(truth, i, axis=1)
        Image.fromarray(image).save(root / "images" / f"d{i}.png")
        Image.fromarray(truth.astype(np.uint8)).save(root / "masks" / f"d{i}.png")
        rows.append([f"d{i}", f"images/d{i}.png", f"masks/d{i}.png", box.x0 + i, box.y0, box.x1 - 1 + i, box.y1 - 1])
    with open(root / "boxes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "image", "mask", "x0", "y0", "x1", "y1"])
        writer.writerows(rows)
    return root


def test_evaluate_with_clicks_improves_on_the_box_alone(tmp_path):
    folder = _distractor_folder(tmp_path / "set")
    report = evaluate_with_clicks(folder, RefineSettings("grabcut-fast"), 2)
    summary = report.summary()
    assert summary["n"] == 2 and len(summary["miou_curve"]) == 3
    assert summary["miou_curve"][0] < 0.93 and summary["miou_curve"][1] > 0.97  # one click removes the square
    assert [score.noc(0.95) for score in report.scores] == [1, 1] and summary["failed90"] == 0
    assert all(not c.positive for s in report.scores for c in s.clicks[:1])
    assert len(report.scores[0].recut_seconds) == len(report.scores[0].clicks) >= 1
    with pytest.raises(InvalidInput, match="--clicks must be 0..100"):
        evaluate_with_clicks(folder, RefineSettings("grabcut-fast"), 101)


def test_eval_boxes_with_clicks_prints_the_curve_and_noc(tmp_path):
    folder = _distractor_folder(tmp_path / "set")
    command = [sys.executable, "-m", "core.cli", "eval-boxes", str(folder), "--method", "grabcut-fast", "--clicks", "2"]
    out = subprocess.run(command + ["--json"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"miou_curve", "noc85", "noc90", "failed85", "failed90", "recut_median", "clicks"} <= set(summary)
    assert summary["clicks"] == 2 and len(summary["miou_curve"]) == 3 and summary["noc90"] <= 2
    assert summary["miou_curve"][-1] > summary["miou_curve"][0]
    text = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    assert "d1" in text and "NoC@90" in text and "mean IoU after 0..2 clicks" in text
    bad = subprocess.run([sys.executable, "-m", "core.cli", "eval-boxes", str(folder), "--click-radius", "3"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "--click-radius needs --clicks" in bad.stderr


def test_clicks_lift_grabcut_fast_on_grabcut50():
    root = shared_set("grabcut50")
    summary = evaluate_with_clicks(root, RefineSettings("grabcut-fast"), 3, limit=8).summary()
    assert summary["n"] == 8
    assert summary["miou_curve"][3] >= summary["miou_curve"][0] + 0.015, summary
