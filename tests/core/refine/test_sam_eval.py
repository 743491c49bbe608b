from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from core.errors import ModelUnavailable
from core.models import ModelRegistry, default_specs, models_dir
from core.refine.evaluate import evaluate_boxes, iou_and_box_error
from core.refine.refiner import BoxRefiner, RefineSettings
from core.refine.sam import SamPredictor
from tests.conftest import PROJECT_ROOT, shared_set
from tests.core.refine.synthetic import ellipse_scene


def _save_tiny_sam(folder):
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(0)
    config = SamConfig(
        vision_config=dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                           patch_size=16, window_size=2, global_attn_indexes=[1], num_pos_feats=16, mlp_dim=64),
        prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, iou_head_hidden_dim=32),
    )  # fmt: skip
    SamModel(config).save_pretrained(folder)
    processor = SamProcessor(
        image_processor=SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    )
    processor.save_pretrained(folder)


@pytest.fixture
def sam_registry():
    registry = ModelRegistry([s for s in default_specs() if s.id == "sam-vit-base"])
    _save_tiny_sam(models_dir() / "facebook" / "sam-vit-base")
    return registry


def test_sam_box_prompt_runs_through_the_registry_with_a_tiny_random_model(sam_registry):
    image, truth, box = ellipse_scene()
    refiner = BoxRefiner(sam_registry)
    mask = refiner.refine(image, box, RefineSettings("sam"))
    assert mask.shape == truth.shape and mask.dtype == bool
    assert not (mask & ~box.mask(*truth.shape)).any()
    predictor = sam_registry.load("sam-vit-base")
    assert isinstance(predictor, SamPredictor)
    prob = predictor.predict("key", image, box)
    assert prob.shape == truth.shape and prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1
    assert np.array_equal(prob, predictor.predict("key", image, box))  # deterministic, embedding cached
    assert list(predictor._embeddings)[-1] == "key"  # the refiner's hash, then ours
    crf = refiner.refine(image, box, RefineSettings("sam+crf"))
    assert crf.shape == truth.shape


def test_sam_without_weights_says_which_folder_needs_which_files():
    image, _, box = ellipse_scene()
    registry = ModelRegistry([s for s in default_specs() if s.id == "sam-vit-base"])
    with pytest.raises(ModelUnavailable, match=r"preprocessor_config.json .*into .*facebook/sam-vit-base/"):
        BoxRefiner(registry).refine(image, box, RefineSettings("sam"))


def test_iou_and_box_error_ignore_void_pixels():
    truth = np.array([[0, 1, 1, 255]], np.uint8)
    pred = np.array([[True, True, False, True]])
    iou, err = iou_and_box_error(pred, truth, np.ones((1, 4), bool))
    assert iou == pytest.approx(1 / 3) and err == pytest.approx(2 / 3)


def _synthetic_folder(root, count=3):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(count):
        image, truth, box = ellipse_scene(seed=i)
        Image.fromarray(image).save(root / "images" / f"s{i}.png")
        Image.fromarray(truth.astype(np.uint8)).save(root / "masks" / f"s{i}.png")
        rows.append([f"s{i}", f"images/s{i}.png", f"masks/s{i}.png", box.x0, box.y0, box.x1 - 1, box.y1 - 1])
    with open(root / "boxes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "image", "mask", "x0", "y0", "x1", "y1"])
        writer.writerows(rows)
    return root


def test_eval_boxes_command_prints_a_json_summary_line(tmp_path):
    folder = _synthetic_folder(tmp_path / "set")
    out = subprocess.run([sys.executable, "-m", "core.cli", "eval-boxes", str(folder), "--method", "auto", "--limit", "2",
                          "--json"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(summary) == {"method", "n", "miou", "err_in_box", "sec_mean", "sec_median", "skipped"}
    assert summary["method"] == "grabcut-fast" and summary["n"] == 2 and summary["miou"] >= 0.95
    text = subprocess.run([sys.executable, "-m", "core.cli", "eval-boxes", str(folder)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "s2" in text and "mean IoU" in text


def test_eval_boxes_refuses_folders_without_ground_truth(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    out = subprocess.run([sys.executable, "-m", "core.cli", "eval-boxes", str(folder)], cwd=PROJECT_ROOT,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2 and "no sample has both boxes and a usable ground-truth mask" in out.stderr


def test_default_method_quality_floor_on_grabcut50():
    root = shared_set("grabcut50")
    summary = evaluate_boxes(root, RefineSettings("auto")).summary()
    assert summary["n"] == 50
    assert summary["miou"] >= 0.85, summary
