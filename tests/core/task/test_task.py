"""Issue 14 (task model): the segmenter network, data split / synthetic mix / augmentation, training runs with
exact resume, evaluation metrics, predictions, the commands, and the import rule."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.errors import Cancelled, InvalidInput, ModelUnavailable, SampleProblem
from core.progress import CancelToken
from core.task.data import (
    AUGMENTATIONS,
    augment_batch,
    augment_pair,
    draw_synthetic,
    parse_augmentation,
    parse_split,
    scale_crop,
    split_ids,
)
from core.task.evaluate import (
    confusion_matrix,
    evaluate_segmenter,
    iou_per_class,
    load_segmenter,
    mean_iou,
    pixel_accuracy,
    predict,
    score_sample,
)
from core.task.model import BACKBONE_FILE, build_segmenter
from core.task.trainer import SegmenterConfig, prepare_data, read_log, train_segmenter
from tests.conftest import PROJECT_ROOT
from tests.core.task.conftest import tiny_config

# ---- model --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_unet_gives_logits_at_any_input_size(norm):
    torch.manual_seed(0)
    net = build_segmenter("unet", 5, width=8, depth=3, norm=norm).eval()
    for h, w in [(32, 32), (37, 53)]:
        out = net(torch.rand(2, 3, h, w))
        assert out.shape == (2, 5, h, w) and out.dtype == torch.float32
    torch.manual_seed(0)
    again = build_segmenter("unet", 5, width=8, depth=3, norm=norm)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True))
    with pytest.raises(InvalidInput, match="arch 'resnet' is unknown"):
        build_segmenter("resnet", 5)
    with pytest.raises(InvalidInput, match="norm 'layer'"):
        build_segmenter("unet", 5, norm="layer")
    with pytest.raises(InvalidInput, match="pretrained weights exist only"):
        build_segmenter("unet", 5, pretrained=True)


def test_torchvision_arch_random_init_and_offline_pretrained_backbone(isolated_dirs, monkeypatch):
    from torchvision.models import mobilenet_v3_large

    monkeypatch.setenv("TORCH_HOME", str(isolated_dirs / "torch"))
    net = build_segmenter("lraspp_mobilenet_v3", 4, pretrained=False).eval()
    assert net(torch.rand(1, 3, 64, 48)).shape == (1, 4, 64, 48)
    with pytest.raises(ModelUnavailable) as info:
        build_segmenter("lraspp_mobilenet_v3", 4, pretrained=True)
    message = str(info.value)
    assert BACKBONE_FILE in message and str(isolated_dirs / "models" / "torchvision") in message
    # weights put where the message says are loaded into the backbone (here: a random classifier's)
    torch.manual_seed(3)
    classifier = mobilenet_v3_large(weights=None)
    folder = isolated_dirs / "models" / "torchvision"
    folder.mkdir(parents=True)
    torch.save(classifier.state_dict(), folder / BACKBONE_FILE)
    seg = build_segmenter("deeplabv3_mobilenet_v3", 4, pretrained=True)
    assert torch.equal(seg.net.backbone.state_dict()["0.0.weight"], classifier.features[0][0].weight)


# ---- data ---------------------------------------------------------------------------------------------------


def test_split_is_reproducible_disjoint_and_order_independent():
    ids = [f"img_{i}" for i in range(50)]
    a = split_ids(ids, (30, 10, 10), seed=3)
    assert (len(a.train), len(a.val), len(a.test)) == (30, 10, 10)
    assert set(a.train).isdisjoint(a.val) and set(a.train).isdisjoint(a.test) and set(a.val).isdisjoint(a.test)
    assert set(a.ids("all")) == set(ids)
    assert split_ids(list(reversed(ids)), (30, 10, 10), seed=3) == a
    assert split_ids(ids, "30,10,10", seed=3) == a
    assert split_ids(ids, (30, 10, 10), seed=4).test != a.test
    f = split_ids(ids[:7], (0.6, 0.2, 0.2), seed=0)  # fractions: val, test rounded, train the rest
    assert (len(f.train), len(f.val), len(f.test)) == (5, 1, 1)
    assert parse_split("0.6, 0.2, 0.2") == (0.6, 0.2, 0.2)
    with pytest.raises(InvalidInput, match="asks for 30 \\+ 10 \\+ 20 = 60 samples, the data holds 50"):
        split_ids(ids, (30, 10, 20))
    with pytest.raises(InvalidInput, match="three numbers"):
        parse_split("30,10")
    with pytest.raises(InvalidInput, match="duplicates"):
        split_ids(["a", "a"], (1, 0, 0))


def test_synthetic_ratio_counts_and_overflow():
    pools = [[f"s{i}" for i in range(6)], [f"t{i}" for i in range(4)]]
    d = draw_synthetic(pools, n_real_train=10, ratio=0.5, seed=1)
    assert d.requested == 5 and len(d.chosen) == 5 and len(set(d.chosen)) == 5 and d.note == ""
    assert d == draw_synthetic(pools, 10, 0.5, seed=1) and d != draw_synthetic(pools, 10, 0.5, seed=2)
    r = draw_synthetic(pools, n_real_train=10, ratio=2.5, seed=1)  # 25 asked, 10 available
    counts = np.unique([c[1] for c in r.chosen], return_counts=True)[1]
    assert len(r.chosen) == 25 and len(counts) == 10 and set(counts) == {2, 3} and "overflow=repeat" in r.note
    c = draw_synthetic(pools, n_real_train=10, ratio=2.5, seed=1, overflow="cap")
    assert len(c.chosen) == 10 and len(set(c.chosen)) == 10 and "overflow=cap" in c.note and c.requested == 25
    assert draw_synthetic(pools, 10, 0.0, seed=1).chosen == []
    with pytest.raises(InvalidInput, match="no sample with a label map"):
        draw_synthetic([[]], 10, 1.0, seed=0)
    with pytest.raises(InvalidInput, match="ratio must be 0 or more"):
        draw_synthetic(pools, 10, -1.0, seed=0)


def test_augmentation_never_adds_label_values():
    rng = np.random.default_rng(0)
    for policy in AUGMENTATIONS:
        for trial in range(20):
            values = rng.choice(np.array([0, 1, 3, 7, 255], np.uint8), size=int(rng.integers(1, 4)), replace=False)
            labels = rng.choice(values, (4, 24, 24))
            images = rng.integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
            out_i, out_l = augment_batch(images, labels, policy, np.random.default_rng(trial))
            assert out_i.shape == images.shape and out_l.shape == labels.shape and out_l.dtype == np.uint8
            assert set(np.unique(out_l)) <= set(values.tolist()) | {255}, policy
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (16, 16)).astype(np.uint8)
    i, lab = scale_crop(image, labels, 1.0, (0.3, 0.9), 16)
    assert np.array_equal(i, image) and np.array_equal(lab, labels)
    i, lab = scale_crop(image, labels, 0.5, (0.0, 0.0), 16)  # the 8 x 8 sample top-left, the rest padded
    assert (lab[8:] == 255).all() and (lab[:, 8:] == 255).all() and (i[8:] == 0).all()
    for seed in range(4):  # the first draw decides the flip
        flips = np.random.default_rng(seed).random() < 0.5
        i, lab = augment_pair(image, labels, ("flip",), np.random.default_rng(seed))
        expected = labels[:, ::-1] if flips else labels
        assert np.array_equal(lab, expected) and np.array_equal(i, image[:, ::-1] if flips else image)
    assert parse_augmentation("scale+flip") == ("flip", "scale")
    with pytest.raises(InvalidInput, match="augmentation 'rotate' is unknown; accepted: none, flip"):
        parse_augmentation("rotate")


def test_synthetic_folders_join_the_train_set(toy_root, tmp_path):
    from core.train.toy import write_toy_dataset

    synth = write_toy_dataset(tmp_path / "synth", count=5, size=24, num_classes=3, seed=1)
    config = tiny_config(toy_root, synthetic=(str(synth),), ratio=1.5)  # 8 real train -> 12 asked, 5 there
    data = prepare_data(config, None, cache_dir=tmp_path / "cache")
    assert len(data.train) == 8 + 12 and len(data.val) == 2
    assert sum("::" in i for i in data.train.ids) == 12 and data.train.images.shape == (20, 32, 32, 3)
    assert data.doc["synthetic"]["requested"] == 12 and "overflow=repeat" in data.notes[0]
    capped = prepare_data(config.replace(overflow="cap"), None, cache_dir=tmp_path / "cache")
    assert len(capped.train) == 8 + 5
    other = write_toy_dataset(tmp_path / "other", count=2, size=24, num_classes=4, seed=1)
    with pytest.raises(InvalidInput, match="must use the training data's classes"):
        prepare_data(tiny_config(toy_root, synthetic=(str(other),)), None, cache_dir=tmp_path / "cache")


# ---- metrics ----------------------------------------------------------------------------------------------------


def test_confusion_and_iou_on_hand_made_cases():
    pred = np.array([[0, 0, 1], [1, 2, 2]], np.uint8)
    gt = np.array([[0, 1, 1], [255, 2, 0]], np.uint8)  # the ignored pixel's prediction (1) is not counted
    cm = confusion_matrix(pred, gt, 4)
    assert cm.tolist() == [[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    iou = iou_per_class(cm)
    assert np.allclose(iou[:3], [1 / 3, 1 / 2, 1 / 2]) and np.isnan(iou[3])  # class 3: in neither -> excluded
    assert mean_iou(cm) == pytest.approx(4 / 9) and pixel_accuracy(cm) == pytest.approx(3 / 5)
    # a class only predicted counts with IoU 0
    cm2 = confusion_matrix(np.array([[3, 0]], np.uint8), np.array([[0, 0]], np.uint8), 4)
    assert iou_per_class(cm2)[[0, 3]].tolist() == [0.5, 0.0] and mean_iou(cm2) == pytest.approx(0.25)
    assert mean_iou(confusion_matrix(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8), 2)) != 0.0
    with pytest.raises(InvalidInput, match="label map holds value 5; accepted: 0..3 and 255"):
        confusion_matrix(pred, np.full_like(gt, 5), 4)
    with pytest.raises(InvalidInput, match="prediction holds value 4"):
        confusion_matrix(np.full_like(pred, 4), gt, 4)


# ---- training, evaluation, prediction -----------------------------------------------------------------------


def test_segmenter_overfits_toy_data(trained_run, toy_root):
    run_dir, result, cache = trained_run
    assert result.step == 60 and result.best_step is not None and result.best_val_miou > 0.8
    log = read_log(run_dir)
    assert [r["step"] for r in log if "val_miou" in r] == [20, 40, 60] and log[-1]["loss"] < log[0]["loss"]
    ev = evaluate_segmenter(run_dir, toy_root, split="train", device="cpu", cache_dir=cache)
    assert ev.samples == 8 and ev.which == "best"
    assert min(ev.metrics.iou) > 0.9, ev.metrics.iou
    doc = ev.to_json()
    assert json.loads(json.dumps(doc))["miou"] == pytest.approx(ev.miou, abs=1e-6)
    assert doc["classes_counted"] == ["background", "c1", "c2"]
    test = evaluate_segmenter(run_dir, toy_root, split="test", which="latest", device="cpu", cache_dir=cache)
    assert test.samples == 2 and test.step == 60


def test_predict_and_score_sample_at_image_size(trained_run, toy_root):
    import cv2

    from core.store import DatasetStore

    run_dir, _, cache = trained_run
    store = DatasetStore(toy_root, cache_dir=cache)
    sample = store.read(store.labelled_ids()[0])
    big = cv2.resize(sample.image, (48, 40), interpolation=cv2.INTER_LINEAR)
    maps = predict(run_dir, [sample.image, big], device="cpu")
    assert maps[0].shape == (32, 32) and maps[1].shape == (40, 48) and maps[0].dtype == np.uint8
    model = load_segmenter(run_dir, device="cpu")
    score = score_sample(model, sample.image, sample.label_map)
    assert score == pytest.approx(mean_iou(confusion_matrix(maps[0], sample.label_map, 3)))
    assert score > 0.8
    with pytest.raises(SampleProblem, match="all ignore"):
        score_sample(model, sample.image, np.full((32, 32), 255, np.uint8))


def _final_tensors(run_dir):
    from safetensors.torch import load_file

    doc = json.loads((run_dir / "checkpoint.json").read_text())
    folder = run_dir / doc["folder"]
    out = {f"model.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()}
    state = torch.load(folder / "state.pt", weights_only=True)
    for pid, st in state["opt"]["state"].items():
        for k, v in st.items():
            out[f"opt.{pid}.{k}"] = v
    best = json.loads((run_dir / "best" / "best.json").read_text())
    out.update({f"best.{k}": v for k, v in load_file(str(run_dir / "best" / best["file"])).items()})
    return doc["step"], best["step"], out


def test_resume_after_cancel_equals_uninterrupted_bitwise(toy_root, tmp_path):
    config = tiny_config(toy_root, steps=6, batch=3, standard_aug="flip+scale", val_every=2, checkpoint_every=2,
                         log_every=1)  # fmt: skip
    whole = tmp_path / "whole"
    train_segmenter(config, whole, cache_dir=tmp_path / "cache")
    token = CancelToken()

    def report(fraction, message=""):
        if message.startswith("step 3/"):
            token.cancel()

    part = tmp_path / "part"
    with pytest.raises(Cancelled, match="cancelled at step 3"):
        train_segmenter(config, part, report, token, cache_dir=tmp_path / "cache")
    assert json.loads((part / "checkpoint.json").read_text())["step"] == 3
    with pytest.raises(InvalidInput, match="already holds a training run"):
        train_segmenter(config, part, cache_dir=tmp_path / "cache")
    with pytest.raises(InvalidInput, match="lr: 0.01 -> 0.02"):
        train_segmenter(config.replace(lr=0.02), part, resume=True, cache_dir=tmp_path / "cache")
    result = train_segmenter(config, part, resume=True, cache_dir=tmp_path / "cache")
    assert result.resumed_from == 3 and result.step == 6
    step_a, best_a, a = _final_tensors(whole)
    step_b, best_b, b = _final_tensors(part)
    assert (step_a, best_a) == (step_b, best_b) and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]

    def strip(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert strip(read_log(whole)) == strip(read_log(part))
    assert (whole / "split.json").read_text() == (part / "split.json").read_text()


def test_config_validation_names_bad_values(toy_root):
    with pytest.raises(InvalidInput, match="steps must be at least 1, got 0"):
        SegmenterConfig(data=str(toy_root), steps=0)
    with pytest.raises(InvalidInput, match="augmentation 'blur'"):
        SegmenterConfig(data=str(toy_root), standard_aug="blur")
    doc = SegmenterConfig(data=str(toy_root), synthetic=("a",), split=(30, 10, 10)).to_json()
    assert SegmenterConfig.from_json(json.loads(json.dumps(doc))) == SegmenterConfig.from_json(doc)
    with pytest.raises(InvalidInput, match="unknown keys \\['colour'\\]"):
        SegmenterConfig.from_json({**doc, "colour": 1})


# ---- commands ------------------------------------------------------------------------------------------------


def test_commands_train_and_evaluate(toy_root, tmp_path, capsys):
    from core.cli import run
    from core.task.commands import add_parsers

    parser = argparse.ArgumentParser(prog="segstudio")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "run"
    args = parser.parse_args(["train-segmenter", "--data", str(toy_root), "--out", str(out), "--size", "32",
                              "--steps", "4", "--batch", "2", "--width", "8", "--depth", "2", "--split", "8,2,2",
                              "--aug", "none", "--device", "cpu", "--val-every", "2"])  # fmt: skip
    assert run(args.handler, args) == 0
    assert "trained segmenter to step 4" in capsys.readouterr().out
    args = parser.parse_args(["evaluate-segmenter", str(out), "--data", str(toy_root), "--json", "--device", "cpu"])
    assert run(args.handler, args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["split"] == "test" and doc["samples"] == 2 and set(doc["iou"]) == {"background", "c1", "c2"}
    args = parser.parse_args(["evaluate-segmenter", str(out), "--data", str(toy_root), "--split", "all"])
    assert run(args.handler, args) == 0
    assert "12 samples (all)" in capsys.readouterr().out
    args = parser.parse_args(["train-segmenter", "--data", str(toy_root), "--out", str(tmp_path / "r2"), "--ratio", "2"])
    assert run(args.handler, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --ratio and --overflow apply to synthetic samples") and err.count("\n") == 1
    args = parser.parse_args(["evaluate-segmenter", str(tmp_path), "--data", str(toy_root)])
    assert run(args.handler, args) == 2
    assert "holds no segmenter checkpoint" in capsys.readouterr().err


def test_importing_core_task_does_not_import_torch():
    code = ("import core.task, core.task.model, core.task.data, core.task.trainer, core.task.evaluate, "
            "core.task.commands, sys; print('torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
