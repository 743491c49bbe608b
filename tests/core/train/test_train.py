"""Engine of issue 13: data, networks, losses, training runs (resume), generation, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.errors import Cancelled, InvalidInput
from core.progress import CancelToken
from core.train.config import TrainConfig
from core.train.data import batch_indices, load_train_data, one_hot, resize_pair
from core.train.generation import load_run, read_log
from core.train.losses import class_balance_weights, gradient_penalty, oasis_real_loss
from core.train.nets import build_networks
from core.train.trainer import train


def tiny(kind, data, **kw):
    base = {"size": 16, "steps": 3, "batch": 4, "width": 8, "z_dim": 8, "n_critic": 2, "sample_every": 0,
            "checkpoint_every": 100, "samples": 4}  # fmt: skip
    base.update(kw)
    return TrainConfig.for_kind(kind, str(data), **base)


def tensors(run_dir):
    from safetensors.torch import load_file

    doc = json.loads((run_dir / "checkpoint.json").read_text())
    folder = run_dir / doc["folder"]
    out = {f"{f.stem}.{k}": v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
    state = torch.load(folder / "state.pt", weights_only=True)
    for which in ("opt_g", "opt_d"):
        for pid, st in state[which]["state"].items():
            for k, v in st.items():
                out[f"{which}.{pid}.{k}"] = v
    return doc["step"], out


# ---- data ---------------------------------------------------------------------------------------


def test_resize_keeps_label_values_and_one_hot_ignores_void():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    labels = rng.choice(np.array([0, 2, 255], np.uint8), (37, 53))
    img, lab = resize_pair(image, labels, 16)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8 and lab.shape == (16, 16)
    assert set(np.unique(lab)) <= {0, 2, 255}
    oh = one_hot(lab, 3)
    assert oh.shape == (3, 16, 16) and oh.dtype == np.float32
    assert np.all(oh.sum(0)[lab == 255] == 0) and np.all(oh.sum(0)[lab != 255] == 1)
    assert np.all(oh.argmax(0)[lab != 255] == lab[lab != 255])
    with pytest.raises(InvalidInput, match="label map"):
        resize_pair(image, labels[:10], 16)


def test_batches_are_seeded_epochs():
    a = [batch_indices(10, 4, s, seed=3).tolist() for s in range(5)]
    assert a == [batch_indices(10, 4, s, seed=3).tolist() for s in range(5)]
    assert a != [batch_indices(10, 4, s, seed=4).tolist() for s in range(5)]
    flat = sum(a, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))  # each epoch a permutation


def test_load_train_data(toy_root, tmp_path):
    data = load_train_data(toy_root, 16, cache_dir=tmp_path / "ws")
    assert data.images.shape == (12, 16, 16, 3) and data.label_maps.shape == (12, 16, 16)
    assert data.present == [0, 1, 2] and data.num_classes == 3
    assert 255 in np.unique(data.label_maps)


def test_config_validation_names_the_bad_value():
    with pytest.raises(InvalidInput, match="size 100"):
        TrainConfig(kind="pair", data="x", size=100)
    with pytest.raises(InvalidInput, match="kind 'gan'"):
        TrainConfig(kind="gan", data="x")
    cfg = TrainConfig.for_kind("pair", "x")
    assert (cfg.lr_g, cfg.lr_d, cfg.beta1, cfg.beta2, cfg.gp_lambda) == (1e-4, 1e-4, 0.5, 0.9, 10.0)


# ---- networks and losses --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 16, 32])
def test_network_shapes(size):
    g, d = build_networks("pair", size, 5, 8, 8)
    image, logits = g(torch.randn(2, 8))
    assert image.shape == (2, 3, size, size) and logits.shape == (2, 5, size, size)
    assert image.abs().max() <= 1 and d(image, logits).shape == (2,)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules())  # WGAN-GP critic
    g, d = build_networks("label2image", size, 5, 8, 8)
    out = g(torch.zeros(2, 5, size, size), torch.randn(2, 8, size, size))
    assert out.shape == (2, 3, size, size) and d(out).shape == (2, 6, size, size)


def test_gradient_penalty_matches_linear_critic_closed_form():
    torch.manual_seed(0)
    w_img, w_lab = torch.randn(3, 4, 4), torch.randn(2, 4, 4)

    def critic(img, lab):  # f(x) = <w, x>: gradient w everywhere, so GP = (||w|| - 1)^2
        return (img * w_img).flatten(1).sum(1) + (lab * w_lab).flatten(1).sum(1)

    real = (torch.randn(5, 3, 4, 4), torch.randn(5, 2, 4, 4))
    fake = (torch.randn(5, 3, 4, 4), torch.randn(5, 2, 4, 4))
    gp = gradient_penalty(critic, real, fake, torch.rand(5))
    norm = torch.sqrt((w_img**2).sum() + (w_lab**2).sum())
    assert torch.allclose(gp, (norm - 1) ** 2, rtol=1e-5)
    # scaled so ||w|| = 1: no penalty
    w_img, w_lab = w_img / norm, w_lab / norm
    assert gradient_penalty(critic, real, fake, torch.rand(5)).item() < 1e-8


def test_gradient_penalty_uses_the_interpolates():
    # f(x) = 0.5 ||x||^2 has gradient x: the penalty is (||eps r + (1-eps) f|| - 1)^2 per sample
    real, fake, eps = torch.randn(4, 6), torch.randn(4, 6), torch.tensor([0.0, 0.25, 0.5, 1.0])
    gp = gradient_penalty(lambda x: 0.5 * (x**2).sum(1), real, fake, eps)
    mixed = eps[:, None] * real + (1 - eps[:, None]) * fake
    assert torch.allclose(gp, ((mixed.norm(dim=1) - 1) ** 2).mean(), rtol=1e-5)


def test_class_balanced_weights_and_ignore():
    labels = torch.tensor([[[0, 0, 0, 1], [0, 0, 255, 255]]])
    w = class_balance_weights(labels, 3)
    assert w[0, 1, 2] == 0 and w[0, 1, 3] == 0
    assert torch.isclose(w[labels == 0].sum(), w[labels == 1].sum())  # each present class weighs the same in total
    assert torch.isclose(w.sum(), torch.tensor(6.0))  # total = valid pixels
    logits = torch.zeros(1, 4, 2, 4)
    logits[:, 3] = 5.0  # confident "fake" everywhere
    assert oasis_real_loss(logits, labels) > oasis_real_loss(torch.zeros(1, 4, 2, 4), labels)


# ---- training runs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pair", "label2image"])
def test_short_run_finite_losses_and_run_folder(kind, toy_root, tmp_path):
    cfg = tiny(kind, toy_root, steps=2, sample_every=2, checkpoint_every=1)
    result = train(cfg, tmp_path / "run", cache_dir=tmp_path / "ws")
    assert result.step == 2 and all(np.isfinite(v) for v in result.losses.values())
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2] and all(np.isfinite(v) for r in log for v in r["losses"].values())
    assert (tmp_path / "run" / "grids" / "step_000002.png").is_file()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["kind"] == kind
    doc = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert doc["step"] == 2 and set(doc["nets"]) == {"generator", "generator_ema", "critic"}
    with pytest.raises(InvalidInput, match="already holds a training run"):
        train(cfg, tmp_path / "run", cache_dir=tmp_path / "ws")


def test_same_seed_same_weights_other_seed_differs(toy_root, tmp_path):
    train(tiny("pair", toy_root, steps=2), tmp_path / "a", cache_dir=tmp_path / "ws")
    train(tiny("pair", toy_root, steps=2), tmp_path / "b", cache_dir=tmp_path / "ws")
    train(tiny("pair", toy_root, steps=2, seed=1), tmp_path / "c", cache_dir=tmp_path / "ws")
    _, a = tensors(tmp_path / "a")
    _, b = tensors(tmp_path / "b")
    _, c = tensors(tmp_path / "c")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if k.startswith("generator."))


@pytest.mark.parametrize("kind", ["pair", "label2image"])
def test_cancel_then_resume_is_bitwise_uninterrupted(kind, toy_root, tmp_path):
    straight = train(tiny(kind, toy_root, steps=6), tmp_path / "straight", cache_dir=tmp_path / "ws")
    token = CancelToken()

    def stop_after_three(fraction, message=""):
        if fraction is not None and fraction >= 0.5:
            token.cancel()

    with pytest.raises(Cancelled, match="step 3"):
        train(tiny(kind, toy_root, steps=6), tmp_path / "resumed", progress=stop_after_three, cancel=token,
              cache_dir=tmp_path / "ws")  # fmt: skip
    step, _ = tensors(tmp_path / "resumed")
    assert step == 3  # the cancel left a consistent checkpoint at the step reached
    resumed = train(tiny(kind, toy_root, steps=6), tmp_path / "resumed", resume=True, cache_dir=tmp_path / "ws")
    assert resumed.resumed_from == 3 and resumed.step == 6
    s1, a = tensors(tmp_path / "straight")
    s2, b = tensors(tmp_path / "resumed")
    assert s1 == s2 == 6 and a.keys() == b.keys() and len(a) > 10
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert straight.losses == resumed.losses
    log = read_log(tmp_path / "resumed")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r["losses"] for r in log] == [r["losses"] for r in read_log(tmp_path / "straight")]


def test_resume_refuses_changed_settings(toy_root, tmp_path):
    train(tiny("pair", toy_root, steps=1), tmp_path / "run", cache_dir=tmp_path / "ws")
    with pytest.raises(InvalidInput, match="width: 8 -> 16"):
        train(tiny("pair", toy_root, steps=2, width=16), tmp_path / "run", resume=True, cache_dir=tmp_path / "ws")


# ---- generation ---------------------------------------------------------------------------------------


def test_pair_generation_stays_in_class_set_and_is_seeded(tmp_path):
    from core.io.images import load_label_map, save_label_map
    from core.train.toy import toy_classes, write_toy_dataset

    # classes.json has 4 classes but class 3 never occurs: generated labels must avoid it too
    root = write_toy_dataset(tmp_path / "toy4", count=6, size=16, num_classes=4, seed=2)
    cs = toy_classes(4)
    for p in sorted((root / "SegmentationClass").glob("*.png")):
        lab = load_label_map(p, cs)
        lab[lab == 3] = 2
        save_label_map(p, lab, cs)
    train(tiny("pair", root, steps=2), tmp_path / "run", cache_dir=tmp_path / "ws")
    model = load_run(tmp_path / "run")
    assert model.present == [0, 1, 2]
    pairs = model.generate_pairs(5, seed=3)
    assert len(pairs) == 5
    for image, lab in pairs:
        assert (
            image.shape == (16, 16, 3) and image.dtype == np.uint8 and lab.shape == (16, 16) and lab.dtype == np.uint8
        )
        assert set(np.unique(lab).tolist()) <= {0, 1, 2}
    again = model.generate_pairs(2, seed=3)  # sample i depends on (seed, i) only
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(again, pairs[:2], strict=True))
    other = model.generate_pairs(2, seed=4)
    assert not np.array_equal(other[0][0], pairs[0][0])
    rec = model.record(3, 0)
    assert rec["seed"] == 3 and rec["kind"] == "pair" and len(rec["checkpoint_sha256"]) == 64
    with pytest.raises(InvalidInput, match="generate_pairs needs a pair run|needs a label2image"):
        model.generate_from_maps([np.zeros((4, 4), np.uint8)])


def test_label2image_generation_keeps_maps(toy_root, tmp_path):
    train(tiny("label2image", toy_root, steps=2), tmp_path / "run", cache_dir=tmp_path / "ws")
    model = load_run(tmp_path / "run")
    maps = [np.zeros((16, 16), np.uint8), np.full((20, 30), 255, np.uint8)]
    maps[0][4:10, 4:10] = 2
    copies = [m.copy() for m in maps]
    images = model.generate_from_maps(maps, seed=1)
    assert [im.shape for im in images] == [(16, 16, 3), (20, 30, 3)] and all(im.dtype == np.uint8 for im in images)
    assert all(np.array_equal(a, b) for a, b in zip(maps, copies, strict=True))
    assert np.array_equal(model.generate_from_maps(maps, seed=1)[0], images[0])
    assert not np.array_equal(model.generate_from_maps(maps, seed=2)[0], images[0])  # 3D noise varies the image
    with pytest.raises(InvalidInput, match="values \\[7\\]"):
        model.generate_from_maps([np.full((8, 8), 7, np.uint8)])
    (tmp_path / "run" / "checkpoint.json").write_text(
        (tmp_path / "run" / "checkpoint.json").read_text().replace(model.checkpoint_sha256, "0" * 64)
    )
    with pytest.raises(InvalidInput, match="sha256"):
        load_run(tmp_path / "run")


# ---- learning ---------------------------------------------------------------------------------------------


def test_label2image_learns_class_colours(tmp_path):
    """After a short CPU training, each class region's mean generated colour is nearest that class's colour.

    At initialisation the generator's output is near grey for every class, so this cannot pass by accident.
    """
    from core.train.toy import TOY_COLORS, toy_sample, write_toy_dataset

    root = write_toy_dataset(tmp_path / "toy", count=24, size=16, num_classes=3, seed=5)
    cfg = tiny("label2image", root, steps=LEARN_STEPS, batch=8, width=16, z_dim=4, labelmix_lambda=0.0,
               ema_decay=0.9, checkpoint_every=1000)  # fmt: skip
    train(cfg, tmp_path / "run", cache_dir=tmp_path / "ws")
    model = load_run(tmp_path / "run")
    rng = np.random.default_rng(99)
    maps = [toy_sample(rng, 16, 3)[1] for _ in range(8)]  # unseen layouts
    images = model.generate_from_maps(maps, seed=0)
    colours = np.array(TOY_COLORS[:3], np.float64)
    for cls in range(3):
        pixels = np.concatenate([im[m == cls] for im, m in zip(images, maps, strict=True)]).astype(np.float64)
        mean = pixels.mean(0)
        dist = np.linalg.norm(colours - mean, axis=1)
        assert dist.argmin() == cls, (cls, mean.round(), dist.round())


LEARN_STEPS = 150


# ---- command line ---------------------------------------------------------------------------------------------


def test_cli_train_and_resume(toy_root, tmp_path, capsys):
    from core.cli import main

    args = ["train", "--kind", "pair", "--data", str(toy_root), "--size", "8", "--steps", "2", "--batch", "2",
            "--width", "4", "--out", str(tmp_path / "run"), "--seed", "5"]  # fmt: skip
    assert main(args) == 0
    assert "step 2" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 5
    assert main(args) == 2  # the folder holds a run: refused without --resume
    assert "already holds a training run" in capsys.readouterr().err
    assert main([*args[:8], "3", *args[9:], "--resume"]) == 0
    assert read_log(tmp_path / "run")[-1]["step"] == 3
    assert (
        main(["train", "--kind", "pair", "--data", str(toy_root), "--size", "100", "--out", str(tmp_path / "x")]) == 2
    )
    assert "size 100" in capsys.readouterr().err
