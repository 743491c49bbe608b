"""DiffAugment (core/train/augment.py) and run evaluation (core/train/evaluate.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.errors import InvalidInput
from core.train.augment import TRANSFORMS, AugmentParams, DiffAugment, augment, augment_labels, parse_policy
from core.train.config import TrainConfig
from core.train.evaluate import (
    INCEPTION_FILE,
    class_color_stats,
    compare_color_stats,
    evaluate_run,
    frechet_distance,
    inception_metrics,
)

ALL = ",".join(TRANSFORMS)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- DiffAugment ----------------------------------------------------------------------------------------------


def test_policy_names_are_validated():
    assert parse_policy("") == () and parse_policy(" cutout , color") == ("color", "cutout")
    with pytest.raises(InvalidInput, match=r"unknown transforms \['flip'\].*color, translation, cutout"):
        parse_policy("color,flip")
    with pytest.raises(InvalidInput, match="twice"):
        parse_policy("color,color")
    with pytest.raises(InvalidInput, match="flip"):
        TrainConfig.for_kind("pair", "x", diffaugment="flip")
    from core.train.trainer import FIXED_ON_RESUME

    assert "diffaugment" in FIXED_ON_RESUME


@pytest.mark.parametrize("policy", ["translation", "cutout", "translation,cutout", ALL])
def test_labels_keep_their_values_plus_ignore(policy):
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.choice(np.array([0, 2, 5], np.int64), (6, 16, 16)))
    aug = DiffAugment(policy)
    for seed in range(5):
        params = aug.draw(6, 16, gen(seed))
        out = augment_labels(labels, params)
        assert out.dtype == labels.dtype and out.shape == labels.shape
        assert set(out.unique().tolist()) <= {0, 2, 5, 255}
        assert (out == 255).any()  # something moved in or was cut out


def test_augmentation_is_seed_deterministic_and_differentiable():
    x = torch.rand(4, 5, 16, 16, requires_grad=True)
    aug = DiffAugment(ALL)
    a, b, c = aug(x, gen(3)), aug(x, gen(3)), aug(x, gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert DiffAugment("")(x, gen(0)) is x  # off: untouched


def test_translation_moves_image_and_labels_together():
    labels = torch.arange(64).reshape(1, 8, 8) % 7
    image = torch.stack([labels.float() / 10 + 0.05] * 3, dim=1)  # every pixel's value names its label
    params = AugmentParams(1, 8, shift=torch.tensor([[2, -1]]))
    out_img, out_lab = augment(image, params), augment_labels(labels, params)
    # output (r, c) comes from input (r - 2, c + 1); rows 0-1 and the last column are moved in
    assert torch.equal(out_lab[0, 2:, :7], labels[0, :6, 1:])
    assert (out_lab[0, :2] == 255).all() and (out_lab[0, :, 7] == 255).all()
    assert torch.allclose(out_img[0, 0, 2:, :7], image[0, 0, :6, 1:])
    assert (out_img[0, :, :2] == 0).all() and (out_img[0, :, :, 7] == 0).all()
    # random draws too: wherever a label survived, the image value still names it
    aug = DiffAugment("translation,cutout")
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, 7, (8, 16, 16)))
    image = torch.stack([labels.float() / 10 + 0.05] * 3, dim=1)
    params = aug.draw(8, 16, gen(2))
    out_img, out_lab = augment(image, params), augment_labels(labels, params)
    kept = out_lab != 255
    assert torch.allclose(out_img[:, 0][kept], out_lab[kept].float() / 10 + 0.05)
    assert (out_img[:, 0][~kept] == 0).all()


def test_cutout_square_and_color_leaves_score_channels():
    params = AugmentParams(1, 8, cutout=torch.tensor([[4, 4]]), cutout_size=4)
    out = augment_labels(torch.zeros(1, 8, 8, dtype=torch.long), params)
    assert (out[0, 2:6, 2:6] == 255).all() and (out == 255).sum() == 16
    x = torch.rand(3, 6, 8, 8)
    y = DiffAugment("color")(x, gen(0), color_channels=3)
    assert torch.equal(y[:, 3:], x[:, 3:]) and not torch.equal(y[:, :3], x[:, :3])


def test_repeated_params_treat_copies_alike():
    x = torch.rand(2, 3, 16, 16)
    params = DiffAugment(ALL).draw(2, 16, gen(5))
    both = augment(torch.cat([x, x]), params.repeat(2))
    assert torch.equal(both[:2], both[2:]) and torch.equal(both[:2], augment(x, params))


# ---- colour statistics --------------------------------------------------------------------------------------


def test_class_color_stats_known_numbers():
    image = np.zeros((2, 4, 4, 3), np.uint8)
    labels = np.zeros((2, 4, 4), np.uint8)
    image[0] = (10, 20, 30)  # class 0: 16 pixels of one colour
    labels[1] = 1
    image[1, :2] = 100  # class 1: half 100, half 0
    labels[1, 0, 0] = 255  # ... except one ignored pixel, which is left out
    stats = class_color_stats(image, labels, 3)
    assert set(stats) == {0, 1}
    assert stats[0]["count"] == 16 and np.allclose(stats[0]["mean"], [10, 20, 30]) and np.allclose(stats[0]["std"], 0)
    assert stats[1]["count"] == 15 and np.allclose(stats[1]["mean"], 700 / 15)
    p = 7 / 15
    assert np.allclose(stats[1]["std"], 100 * np.sqrt(p * (1 - p)))
    with pytest.raises(InvalidInput, match="2 images but 1 label maps"):
        class_color_stats(image, labels[:1], 3)


def test_frechet_distance_closed_forms():
    mu = np.array([1.0, 2.0, 3.0])
    cov = np.diag([4.0, 9.0, 1.0])
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0, abs=1e-6)
    # diagonal covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    other = np.diag([1.0, 1.0, 1.0])
    expected = np.sqrt(3**2 + 4**2 + (2 - 1) ** 2 + (3 - 1) ** 2)
    assert frechet_distance(mu, cov, mu + [3, 4, 0], other) == pytest.approx(expected, rel=1e-6)


def test_compare_color_stats_summary():
    real = {0: {"count": 30, "mean": [0, 0, 0], "std": [0, 0, 0], "cov": np.zeros((3, 3))},
            1: {"count": 10, "mean": [100, 0, 0], "std": [0, 0, 0], "cov": np.zeros((3, 3))}}  # fmt: skip
    gen_ = {0: {"count": 40, "mean": [3, 4, 0], "std": [0, 0, 0], "cov": np.zeros((3, 3))}}
    doc = compare_color_stats(real, gen_, ["bg", "fg"])
    assert doc["color_fd"] == pytest.approx(5) and doc["mean_color_l2"] == pytest.approx(5)
    assert doc["missing"] == ["fg"] and doc["extra"] == [] and doc["class_share_tv"] == pytest.approx(0.25)
    assert doc["classes"]["bg"]["real_share"] == pytest.approx(0.75)


def test_fid_is_skipped_with_the_file_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGSTUDIO_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    doc = inception_metrics(images, images)
    assert doc["status"] == "skipped"
    assert INCEPTION_FILE in doc["reason"] and str(tmp_path / "models" / "torch-fidelity") in doc["reason"]


# ---- in a run -----------------------------------------------------------------------------------------------


def test_run_writes_eval_json_and_evaluate_run_matches(toy_root, tmp_path, monkeypatch):
    from core.train.trainer import train

    monkeypatch.setenv("SEGSTUDIO_MODELS", str(tmp_path / "models"))
    cfg = TrainConfig.for_kind("label2image", str(toy_root), size=16, steps=2, batch=4, width=8, z_dim=4,
                               sample_every=0, eval_samples=6)  # fmt: skip
    train(cfg, tmp_path / "run", cache_dir=tmp_path / "ws")
    doc = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert doc["step"] == 2 and doc["n"] == 6 and doc["kind"] == "label2image"
    assert doc["color"]["color_fd"] > 0 and doc["color"]["class_share_tv"] == pytest.approx(0)
    assert doc["inception"]["status"] == "skipped"
    again = evaluate_run(tmp_path / "run", toy_root, n=6, seed=cfg.seed, cache_dir=tmp_path / "ws")
    assert again["color"] == doc["color"]  # the in-run evaluation is the run folder's, from the checkpoint
    with pytest.raises(InvalidInput, match="n must be at least 1"):
        evaluate_run(tmp_path / "run", toy_root, n=0, cache_dir=tmp_path / "ws")


@pytest.mark.parametrize("kind", ["pair", "label2image"])
def test_resume_with_every_transform_is_bitwise(kind, toy_root, tmp_path):
    from core.train.generation import read_log
    from core.train.trainer import train

    def cfg(steps):
        return TrainConfig.for_kind(kind, str(toy_root), size=16, steps=steps, batch=4, width=8, z_dim=4, n_critic=2,
                                    sample_every=0, checkpoint_every=2, eval_samples=0, diffaugment=ALL)  # fmt: skip

    train(cfg(4), tmp_path / "straight", cache_dir=tmp_path / "ws")
    train(cfg(2), tmp_path / "resumed", cache_dir=tmp_path / "ws")
    train(cfg(4), tmp_path / "resumed", resume=True, cache_dir=tmp_path / "ws")
    from tests.core.train.test_train import tensors

    (s1, a), (s2, b) = tensors(tmp_path / "straight"), tensors(tmp_path / "resumed")
    assert s1 == s2 == 4 and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [[r["losses"] for r in read_log(tmp_path / run)] for run in ("straight", "resumed")]
    assert losses[0] == losses[1]
    with pytest.raises(InvalidInput, match="diffaugment: 'color,translation,cutout' -> ''"):
        train(cfg(6).replace(diffaugment=""), tmp_path / "resumed", resume=True, cache_dir=tmp_path / "ws")
