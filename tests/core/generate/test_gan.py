"""The gan generator backend: pair samples, label2image keeping maps, seeds, records, bad runs, the command line."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from core.errors import InvalidInput, ModelUnavailable, SampleProblem
from core.store import DatasetStore, SkipReport
from tests.core.generate.gan_runs import gan_toy_dataset, one_torch_thread, tiny_run

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A toy dataset, a pair run and a label2image run of it, and a label2image run that never saw class c2."""
    base = tmp_path_factory.mktemp("gan")
    data = gan_toy_dataset(base / "toy")
    only = gan_toy_dataset(base / "toy_no_c2", drop_share=1.0)
    ws = base / "ws"
    return {"data": data, "ws": ws, "pair": tiny_run("pair", data, base / "pair", ws),
            "l2i": tiny_run("label2image", data, base / "l2i", ws),
            "l2i_no_c2": tiny_run("label2image", only, base / "l2i_no_c2", ws)}  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_cache():
    from core.generate import gan

    gan.clear_cache()
    with one_torch_thread():
        yield
    gan.clear_cache()


def _store(runs):
    return DatasetStore(runs["data"], cache_dir=runs["ws"] / "store")


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pair_samples_stay_in_the_class_set_and_seeds_reproduce(runs):
    from core.generate.gan import GanSettings, generate_pairs
    from core.train.generation import load_run

    store = _store(runs)
    made = generate_pairs(GanSettings(str(runs["pair"]), count=3, seed=5), store.classes)
    assert [m.record["seed"] for m in made] == [5, 6, 7] and [m.record["index"] for m in made] == [0, 1, 2]
    for sample in made:
        image, label = sample.result.image, sample.result.label_map
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8 and label.shape == (16, 16)
        assert label.dtype == np.uint8 and set(np.unique(label).tolist()) <= {0, 1, 2}  # never 255, never unknown
    record = made[1].record
    weights = runs["pair"] / json.loads((runs["pair"] / "checkpoint.json").read_text())["folder"]
    assert record["mode"] == "gan" and record["kind"] == "pair" and record["source"] == ""
    assert record["settings"] == {"backend": "gan", "kind": "pair", "run": str(runs["pair"].resolve()), "step": 2,
                                  "checkpoint_sha256": _sha256(weights / "generator_ema.safetensors"), "ema": True,
                                  "size": 16, "seed": 6, "index": 0}  # fmt: skip
    # the record reproduces the sample, whatever the request's size
    image, label = load_run(record["settings"]["run"]).generate_pairs(1, seed=record["seed"])[0]
    assert np.array_equal(image, made[1].result.image) and np.array_equal(label, made[1].result.label_map)
    again = generate_pairs(GanSettings(str(runs["pair"]), count=1, seed=6), store.classes)[0]
    assert again.result.image.tobytes() == made[1].result.image.tobytes()
    assert not np.array_equal(made[0].result.image, made[1].result.image)


def test_label2image_keeps_every_map_byte_identical_and_reproduces(runs):
    from core.generate.gan import GanSettings, generate_dataset, generate_for_sample
    from core.train.generation import load_run

    store = _store(runs)
    made = generate_dataset(store, GanSettings(str(runs["l2i"]), count=10, seed=3))
    labelled = store.labelled_ids()
    assert [m.record["source"] for m in made] == [labelled[i % 8] for i in range(10)]  # cycling over the samples
    for sample in made:
        original = store.label_map(sample.record["source"])
        assert sample.result.label_map.tobytes() == original.tobytes() and sample.result.label_map.dtype == np.uint8
        assert sample.result.image.shape == (32, 32, 3) and sample.result.image.dtype == np.uint8  # the map's size
    first = made[0]
    assert first.record["settings"]["kind"] == "label2image" and first.record["settings"]["seed"] == 3
    image = load_run(runs["l2i"]).generate_from_maps([store.label_map(labelled[0])], seed=3)[0]
    assert np.array_equal(image, first.result.image)
    variations = generate_for_sample(store, labelled[0], GanSettings(str(runs["l2i"]), count=3, seed=3))
    assert np.array_equal(variations[0].result.image, first.result.image)  # sample 0 of seed 3 either way
    assert not np.array_equal(variations[1].result.image, first.result.image)  # 3D noise varies the image
    assert all(v.result.label_map.tobytes() == first.result.label_map.tobytes() for v in variations)


def test_the_runner_dispatches_gan_and_recombined_maps_keep_their_provenance(runs):
    from core.generate.diffusion import DiffusionSettings
    from core.generate.gan import GanSettings, generate_for_maps
    from core.generate.runner import generate_dataset

    store = _store(runs)
    made = generate_dataset(store, "gan", str(runs["l2i"]), DiffusionSettings(prompt="", count=2, seed=1))
    assert [m.record["seed"] for m in made] == [1, 2] and made[0].record["mode"] == "gan"
    bands = np.zeros((24, 40), np.uint8)
    bands[12:] = 1
    bands[:, :5] = 255
    out = generate_for_maps([("bands", bands)], GanSettings(str(runs["l2i"]), count=2, seed=0), store.classes,
                            provenance={"maps_folder": "x"})  # fmt: skip
    assert out[0].result.label_map.tobytes() == bands.tobytes() and out[0].result.image.shape == (24, 40, 3)
    assert out[1].record["source"] == "bands" and out[1].record["maps_folder"] == "x"


def test_maps_with_classes_the_run_never_saw_are_refused_and_skipped(runs):
    from core.generate.gan import GanSettings, generate_dataset, generate_for_sample

    store = _store(runs)
    with_c2 = [s for s in store.labelled_ids() if 2 in store.label_classes()[s]]
    with pytest.raises(SampleProblem, match=r"classes c2 \(\[2\]\) that GAN run l2i_no_c2 never saw"):
        generate_for_sample(store, with_c2[0], GanSettings(str(runs["l2i_no_c2"]), count=1))
    skipped = SkipReport()
    made = generate_dataset(store, GanSettings(str(runs["l2i_no_c2"]), count=6), skipped=skipped)
    assert len(made) == 6 and all(2 not in np.unique(m.result.label_map) for m in made)
    assert {p.sample_id for p in skipped.skipped} == set(with_c2) and "never saw" in skipped.summary()


def test_bad_run_folders_say_which_run_and_what_is_accepted(runs, tmp_path):
    from core.generate.gan import GanSettings, generate_dataset, image_for_map, load_gan, verify_weights
    from core.train.toy import write_toy_dataset

    store = _store(runs)
    with pytest.raises(ModelUnavailable, match="is not a folder .*accepted: a run folder written by `segstudio train"):
        load_gan(tmp_path / "nowhere")
    with pytest.raises(ModelUnavailable, match="is not a GAN run \\(no config.json\\)"):
        load_gan(tmp_path)
    no_ckpt = tmp_path / "no_ckpt"
    shutil.copytree(runs["l2i"], no_ckpt)
    (no_ckpt / "checkpoint.json").unlink()
    with pytest.raises(ModelUnavailable, match=f"GAN run {no_ckpt} has no checkpoint yet"):
        generate_dataset(store, GanSettings(str(no_ckpt)))
    damaged = tmp_path / "damaged"
    shutil.copytree(runs["l2i"], damaged)
    folder = json.loads((damaged / "checkpoint.json").read_text())["folder"]
    (damaged / folder / "generator_ema.safetensors").write_bytes(b"not weights")
    for check in (verify_weights, load_gan):
        with pytest.raises(ModelUnavailable, match="does not match the sha256"):
            check(damaged)
    (damaged / "checkpoint.json").write_text("{ cut by a crash")
    with pytest.raises(ModelUnavailable, match="checkpoint record .*cannot be read"):
        load_gan(damaged)
    other = write_toy_dataset(tmp_path / "toy4", count=2, size=16, num_classes=4)
    with pytest.raises(InvalidInput, match=r"was trained with the classes \[background, c1, c2\].*has \[background, c1, c2, c3\]"):
        generate_dataset(DatasetStore(other, cache_dir=tmp_path / "ws4"), GanSettings(str(runs["l2i"])))
    facts, model = load_gan(runs["pair"])
    with pytest.raises(InvalidInput, match="is a pair run: it makes new samples and cannot keep a given label map"):
        image_for_map(facts, model, np.zeros((8, 8), np.uint8), 0)
    with pytest.raises(InvalidInput, match="needs a run folder"):
        GanSettings("")


def test_loaded_runs_are_cached_and_reloaded_after_new_checkpoints(runs, tmp_path):
    from core.generate import gan

    first = gan.load_gan(runs["l2i"])[1]
    assert gan.load_gan(runs["l2i"])[1] is first and gan.loaded_runs() == [str(runs["l2i"].resolve())]
    gan.load_gan(runs["pair"])
    gan.load_gan(runs["l2i_no_c2"])
    assert len(gan.loaded_runs()) == gan.CACHE_CAPACITY and str(runs["l2i"].resolve()) not in gan.loaded_runs()
    moved = tmp_path / "run"
    shutil.copytree(runs["l2i"], moved)
    before = gan.load_gan(moved)[1]
    assert gan.load_gan(moved)[1] is before
    with open(moved / "checkpoint.json", "a") as handle:  # another checkpoint.json: the run trained on
        handle.write("\n")
    assert gan.load_gan(moved)[1] is not before


# ---- command line -------------------------------------------------------------------------------------------


def test_cli_generate_with_a_gan_run(runs, tmp_path, capsys):
    from core.cli import main
    from core.io.images import load_label_map

    store = _store(runs)
    args = ["generate", str(runs["data"]), "--backend", "gan", "--model", str(runs["l2i"]), "--count", "3", "--seed",
            "4"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "wrote 3 samples" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # same seed, same bytes
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 + 3 + 2  # images, label maps, classes.json, manifest.jsonl
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    lines = [json.loads(line) for line in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in lines] == [4, 5, 6] and lines[0]["settings"]["run"] == str(runs["l2i"].resolve())
    for record in lines:
        kept = load_label_map(tmp_path / "a" / "SegmentationClass" / f"{record['id']}.png", store.classes)
        assert kept.tobytes() == store.label_map(record["source"]).tobytes()
    # pair runs make new samples; the dataset folder is never written
    before = sorted((p.name, p.stat().st_mtime_ns) for p in runs["data"].rglob("*"))
    assert main(["generate", str(runs["data"]), "--backend", "gan", "--model", str(runs["pair"]), "--count", "2",
                 "--out", str(tmp_path / "p")]) == 0  # fmt: skip
    assert sorted((p.name, p.stat().st_mtime_ns) for p in runs["data"].rglob("*")) == before
    assert len(list((tmp_path / "p" / "SegmentationClass").glob("*.png"))) == 2
    capsys.readouterr()
    assert main(["generate", str(runs["data"]), "--backend", "gan", "--out", str(tmp_path / "x")]) == 2
    assert "--model RUN is required for the gan backend" in capsys.readouterr().err
    assert main(["generate", str(runs["data"]), "--backend", "gan", "--model", str(tmp_path / "none"), "--out",
                 str(tmp_path / "y")]) == 2  # fmt: skip
    assert "is not a folder" in capsys.readouterr().err


def test_cli_gan_images_for_recombined_maps(runs, tmp_path, capsys):
    """Chaining on the command line: recombine writes a dataset folder, whose maps the GAN keeps."""
    from core.cli import main

    assert main(["recombine", str(runs["data"]), "--mode", "overlay", "--class", "c2", "--count", "2", "--seed", "1",
                 "--min-area", "8", "--out", str(tmp_path / "rec")]) == 0  # fmt: skip
    assert main(["generate", str(tmp_path / "rec"), "--backend", "gan", "--model", str(runs["l2i"]), "--count", "2",
                 "--out", str(tmp_path / "gan")]) == 0  # fmt: skip
    records = [json.loads(line) for line in (tmp_path / "gan" / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        a = (tmp_path / "rec" / "SegmentationClass" / f"{record['source']}.png").read_bytes()
        b = (tmp_path / "gan" / "SegmentationClass" / f"{record['id']}.png").read_bytes()
        assert a == b
