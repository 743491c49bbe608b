"""Issue 14 (task-aware compositing): hard-mined and adversarial composites (core/task/hard.py) on toy data.

The synthesizer's transforms stay inside the compositor's limits, labels stay nearest (values preserved), mining
keeps the highest-loss candidate, everything is deterministic by seed, training pushes the task loss up, and the
output folder is a synthetic source like ``segstudio generate --backend composite``'s."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.errors import InvalidInput  # noqa: E402
from core.generate.composite import CompositeRequest, composite_sample  # noqa: E402
from core.labels.overlay import warp_region  # noqa: E402
from core.task import hard  # noqa: E402
from core.task.evaluate import load_segmenter  # noqa: E402
from tests.core.task.conftest import tiny_config  # noqa: E402

REQUEST = CompositeRequest(min_area=16)
SMALL = dict(batch=4, width=8, input_size=32)


@pytest.fixture(scope="module")
def store(toy_root, trained_run):
    from core.store import DatasetStore

    return DatasetStore(toy_root, cache_dir=trained_run[2])


@pytest.fixture(scope="module")
def model(trained_run):
    return load_segmenter(trained_run[0], device="cpu")


@pytest.fixture(scope="module")
def synth(store, model):
    """A synthesizer trained 12 steps (realism on, task model updated every step)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        settings = hard.HardSettings(mode="adversarial", steps=12, synth_lr=1e-2, **SMALL)
        return hard.train_hard_synthesizer(store, model, settings, REQUEST, seed=0)
    finally:
        torch.set_num_threads(before)


def _objects(store, points=hard.FULL_POINTS):
    library = hard._library(store, REQUEST, None)
    regions, _, sizes = hard._wanted_objects(library, REQUEST)
    ranges = [hard.share_range(r, REQUEST.params, sizes) for r in regions]
    return regions, ranges, hard.Objects.build(regions, ranges, 32, points, "cpu")


def _check_limits(regions, objects, placed, shape):
    """Every limit of the compositor, per row: rotation, scale range, centre in the image, truncation (over every
    mask pixel, and by the compositor's own rule with its nearest-neighbour warp)."""
    params = REQUEST.params
    h, w = shape
    assert placed.feasible.any()
    for i, region in enumerate(regions):
        t = placed.transform(i)
        assert abs(t.angle) <= params.placement.max_rotate + 1e-4
        assert 0 <= t.center[0] <= w - 1 and 0 <= t.center[1] <= h - 1
        np.testing.assert_allclose(placed.matrix[i].numpy(), t.matrix(*region.mask.shape[::-1]), atol=1e-4)
        if not bool(placed.feasible[i]):
            continue
        lo, hi = placed.scale_range[i].tolist()
        assert lo * (1 - 1e-5) <= t.scale <= hi * (1 + 1e-5)
        share = region.area * t.scale**2 / (h * w)
        assert float(objects.shares[i, 0]) * (1 - 1e-4) <= share <= float(objects.shares[i, 1]) * (1 + 1e-4)
        ys, xs = np.nonzero(region.mask)
        mapped = t.matrix(*region.mask.shape[::-1]) @ np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64)
        outside = (mapped[0] < -0.5) | (mapped[0] >= w - 0.5) | (mapped[1] < -0.5) | (mapped[1] >= h - 0.5)
        assert outside.mean() <= params.max_truncation + 1e-9
        visible = int(warp_region(region, t, shape, with_image=False).mask.sum())
        assert 1 - visible / (region.area * t.scale**2) <= params.max_truncation + 0.05, (i, visible)


@pytest.mark.parametrize("shape", [(32, 32), (40, 56)])
def test_transforms_stay_inside_placement_limits(store, synth, shape):
    regions, _, objects = _objects(store)
    gen = torch.Generator().manual_seed(1)
    n = len(regions)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    raw = torch.randn(n, hard.RAW_OUTPUTS, generator=gen) * 3  # far beyond any squashing's linear range
    placed = hard.constrain(raw, objects, flip, shape, REQUEST.params, 3.0)
    _check_limits(regions, objects, placed, shape)
    assert float(placed.sigma.max()) <= 3.0 + 1e-6
    backgrounds = synth.trainer.images[torch.arange(n) % len(synth.trainer.images)]
    with torch.no_grad():  # after training
        raw = synth.raw(backgrounds, objects, torch.randn(n, hard.RAW_OUTPUTS, generator=gen))
    _check_limits(regions, objects, hard.constrain(raw, objects, flip, shape, REQUEST.params, 3.0), shape)


def test_paste_labels_only_background_values_and_the_class(store):
    regions, _, objects = _objects(store, points=hard.TRAIN_POINTS)
    from core.task.data import load_samples

    data = load_samples(store, store.labelled_ids(), 32)
    n = len(regions)
    labels = torch.from_numpy(data.label_maps[np.arange(n) % len(data)].astype(np.int64))
    labels[:, :4, :] = 255  # an ignore band on every background
    images = torch.from_numpy(data.images[np.arange(n) % len(data)]).permute(0, 3, 1, 2).float() / 255
    raw = torch.randn(n, hard.RAW_OUTPUTS, generator=torch.Generator().manual_seed(2))
    placed = hard.constrain(raw, objects, torch.ones(n), (32, 32), REQUEST.params, 3.0)
    image, out, pasted, mask = hard.paste(images, labels, objects, placed, REQUEST.params)
    assert image.shape == images.shape and 0 <= float(image.min()) and float(image.max()) <= 1
    cls = objects.classes[:, None, None].expand_as(out)
    assert torch.equal(out, torch.where(pasted, cls, labels))  # each pixel: the background's label or the class
    assert torch.equal(pasted, mask > 0.5)
    for i in range(n):  # values: the background's (255 included) plus the pasted class, nothing interpolated
        assert set(out[i].unique().tolist()) <= set(labels[i].unique().tolist()) | {int(objects.classes[i])}
        nearest = np.zeros((32, 32), bool)
        warped = warp_region(regions[i], placed.transform(i), (32, 32), with_image=False)
        x0, y0, x1, y1 = warped.window
        nearest[y0:y1, x0:x1] = warped.mask
        union = (nearest | pasted[i].numpy()).sum()
        assert (nearest & pasted[i].numpy()).sum() / union > 0.6  # the compositor's nearest warp, same place


def test_adversarial_composites_keep_label_values_and_are_deterministic(store, synth):
    made = hard.make_hard_composites(store, 4, seed=3, mode="adversarial", synthesizer=synth, request=REQUEST)
    again = hard.make_hard_composites(store, 4, seed=3, mode="adversarial", synthesizer=synth, request=REQUEST)
    assert len(made) == 4
    for a, b in zip(made, again, strict=True):
        assert np.array_equal(a.result.image, b.result.image) and np.array_equal(a.result.label_map, b.result.label_map)
        assert json.dumps(a.record, sort_keys=True) == json.dumps(b.record, sort_keys=True)
    for sample in made:
        rec, lm, img = sample.record, sample.result.label_map, sample.result.image
        assert img.dtype == np.uint8 and img.shape == (32, 32, 3) and lm.dtype == np.uint8 and lm.shape == (32, 32)
        assert rec["mode"] == "composite-adversarial" and rec["seed_sequence"] == [3, rec["index"]]
        bg = store.read(rec["background"]).label_map
        placed = [s for s in rec["steps"] if "transform" in s]
        assert placed and all(s["blending"] == "gaussian" and "blend_sigma" in s for s in placed)
        classes = {s["region"]["class"] for s in placed}
        assert np.all((lm == bg) | np.isin(lm, list(classes)))  # a pixel keeps its value or takes a pasted class
        assert set(np.unique(lm).tolist()) <= set(np.unique(bg).tolist()) | classes
        assert rec["hard"]["synthesizer"]["weights_sha256"] == synth.weights_sha256()
    other = hard.make_hard_composites(store, 2, seed=4, mode="adversarial", synthesizer=synth, request=REQUEST)
    assert not np.array_equal(other[0].result.image, made[0].result.image)


def test_mined_keeps_the_highest_loss_candidate(store, model):
    from core.labels.recombine import RegionLibrary

    settings = hard.HardSettings(candidates=4)
    made = hard.make_hard_composites(store, 3, seed=5, mode="mined", task=model, request=REQUEST, settings=settings)
    again = hard.make_hard_composites(store, 3, seed=5, mode="mined", task=model, request=REQUEST, settings=settings)
    library = RegionLibrary(store, REQUEST.min_area)
    request = replace(REQUEST, seed=5)
    mined_scores, random_scores = [], []
    for sample, twin in zip(made, again, strict=True):
        assert np.array_equal(sample.result.image, twin.result.image) and sample.record == twin.record
        i = sample.record["index"]
        scores = []
        for k in range(4):  # every candidate scored directly
            cand = composite_sample(library, request, i, [5, i, k])
            scores.append(hard.hardness(model, cand.result.image, cand.result.label_map))
        best = int(np.argmax(scores))
        info = sample.record["hard"]
        assert info["chosen"] == best and info["scores"] == pytest.approx(scores, abs=1e-5)
        assert sample.record["seed_sequence"] == [5, i, best] and sample.record["mode"] == "composite-mined"
        chosen = composite_sample(library, request, i, [5, i, best])
        assert np.array_equal(sample.result.image, chosen.result.image)
        mined_scores.append(max(scores))
        random_scores.append(scores[0])
    assert np.mean(mined_scores) >= np.mean(random_scores)
    with pytest.raises(InvalidInput, match="task model"):
        hard.make_hard_composites(store, 1, mode="mined", request=REQUEST)


def test_training_finite_deterministic_and_raises_the_task_loss(store, model, synth):
    assert len(synth.log) == 12
    assert all(np.isfinite(v) for r in synth.log for v in r.values())
    assert {"synth_soft_loss", "synth_task_loss", "adv_loss", "disc_loss", "task_loss_real"} <= set(synth.log[0])
    # the gradient of the task loss reaches every raw transform output
    trainer = synth.trainer
    batch = trainer.batch(999)
    raw = synth.raw(batch.background, batch.objects, batch.z).detach().requires_grad_(True)
    placed = hard.constrain(raw, batch.objects, batch.flip, (32, 32), REQUEST.params, 3.0)
    image, _, _, mask = hard.paste(batch.background, batch.labels, batch.objects, placed, REQUEST.params)
    hard.soft_task_loss(trainer.task.net, image, batch.labels, mask, batch.objects.classes).backward()
    assert (raw.grad.abs().sum(0) > 0).all(), raw.grad
    # synthesizer-only ascent (fixed task model, no realism or keep-out term) raises the loss on fixed, unseen batches
    settings = hard.HardSettings(mode="adversarial", steps=0, synth_lr=1e-2, realism=0.0, task_every=0, keep_out=0.0,
                                 **SMALL)  # fmt: skip
    ascent = hard.train_hard_synthesizer(store, model, settings, REQUEST, seed=1).trainer
    fixed = [ascent.batch(10_000 + k) for k in range(2)]
    before = np.mean([ascent.synth_task_loss(b) for b in fixed])
    for step in range(15):
        ascent.step(step)
    after = np.mean([ascent.synth_task_loss(b) for b in fixed])
    assert after > 1.3 * before, (before, after)
    # same seed, same synthesizer
    short = hard.HardSettings(mode="adversarial", steps=3, **SMALL)
    a = hard.train_hard_synthesizer(store, model, short, REQUEST, seed=7)
    b = hard.train_hard_synthesizer(store, model, short, REQUEST, seed=7)
    c = hard.train_hard_synthesizer(store, model, short, REQUEST, seed=8)
    assert a.weights_sha256() == b.weights_sha256() != c.weights_sha256() and a.log == b.log


def test_write_hard_composites_is_a_synthetic_source(toy_root, trained_run, tmp_path):
    from core.store import DatasetStore

    run_dir, _, cache = trained_run
    out = tmp_path / "mined"
    task_config = tiny_config(toy_root, split=(1.0, 0.0, 0.0), steps=8, val_every=0, checkpoint_every=8)
    result = hard.write_hard_composites(toy_root, out, 3, seed=0, mode="mined", request=REQUEST,
                                        settings=hard.HardSettings(candidates=2), task_config=task_config,
                                        cache_dir=cache)  # fmt: skip
    assert result.written == 3 and result.task_run == out / "task_run"
    assert (out / "task_run" / "checkpoint.json").is_file()
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == ["mined_000000", "mined_000001", "mined_000002"]
    assert all(r["hard"]["task"]["run"] == str(out / "task_run") for r in lines)
    written = DatasetStore(out, cache_dir=tmp_path / "c1")
    assert written.labelled_ids() == [r["id"] for r in lines] and written.classes.names == ("background", "c1", "c2")
    with pytest.raises(InvalidInput, match="already holds a manifest"):
        hard.write_hard_composites(toy_root, out, 1, task_run=run_dir, request=REQUEST, cache_dir=cache)

    adv = tmp_path / "adversarial"
    settings = hard.HardSettings(mode="adversarial", steps=2, **SMALL)
    result = hard.write_hard_composites(toy_root, adv, 2, seed=1, mode="adversarial", task_run=run_dir,
                                        request=REQUEST, settings=settings, cache_dir=cache)  # fmt: skip
    assert result.written == 2 and len(result.log) == 2
    loaded = hard.load_synthesizer(result.synthesizer, device="cpu")
    record = json.loads((adv / "manifest.jsonl").read_text().splitlines()[0])
    assert record["hard"]["synthesizer"]["weights_sha256"] == loaded.weights_sha256()
    remade = hard.make_hard_composites(toy_root, 1, seed=1, mode="adversarial", synthesizer=loaded, request=REQUEST,
                                       cache_dir=cache)  # fmt: skip
    assert remade[0].record["steps"] == record["steps"]  # reproducible from the saved synthesizer and the seed


def test_settings_name_the_bad_value():
    with pytest.raises(InvalidInput, match="mode 'hardest' is unknown"):
        hard.HardSettings(mode="hardest")
    with pytest.raises(InvalidInput, match="keep_out must be 0 or more, got -1"):
        hard.HardSettings(keep_out=-1)
    with pytest.raises(InvalidInput, match="metric 'l1'"):
        hard.HardSettings(metric="l1")


def test_cancel_stops_training_and_generation(store, model):
    from core.errors import Cancelled
    from core.progress import CancelToken

    token = CancelToken()
    token.cancel()
    settings = hard.HardSettings(mode="adversarial", steps=5, **SMALL)
    with pytest.raises(Cancelled):
        hard.train_hard_synthesizer(store, model, settings, REQUEST, cancel=token)
    with pytest.raises(Cancelled):
        hard.make_hard_composites(store, 2, mode="mined", task=model, request=REQUEST, cancel=token)


def test_generate_cli_mined_and_hard_modes(toy_root, trained_run, tmp_path, capsys):
    from core.cli import main

    run_dir, _, _ = trained_run
    out = tmp_path / "cli_mined"
    code = main(["generate", str(toy_root), "--backend", "composite", "--mode", "mined", "--task-run", str(run_dir),
                 "--candidates", "2", "--count", "2", "--seed", "3", "--min-area", "4", "--out", str(out)])  # fmt: skip
    assert code == 0 and "2 mined hard composites" in capsys.readouterr().out
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [len(r["hard"]["scores"]) for r in lines] == [2, 2]
    assert main(["generate", str(toy_root), "--backend", "gan", "--mode", "mined", "--out", str(tmp_path / "x")]) == 2
    assert "--backend composite only" in capsys.readouterr().err
