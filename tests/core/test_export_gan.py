"""Export recipes with gan steps: label2image on dataset maps and on a recombine step's maps, pair samples,
class balancing, and the errors of a bad step (checked before any job runs)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core.errors import InvalidInput
from core.export.plan import plan_jobs
from core.export.recipe import Recipe
from core.export.runner import run_export
from core.store import DatasetStore
from tests.core.generate.gan_runs import gan_toy_dataset, one_torch_thread, tiny_run

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def gan_data(tmp_path_factory):
    base = tmp_path_factory.mktemp("gan_export")
    data = gan_toy_dataset(base / "toy")
    return {"data": data, "base": base, "pair": tiny_run("pair", data, base / "runs" / "pair", base / "ws"),
            "l2i": tiny_run("label2image", data, base / "runs" / "l2i", base / "ws")}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def gan_recipe(gan_data, **changes) -> Recipe:
    """Real samples excluded; a recombination, a GAN image for each of its maps, GAN images for dataset maps
    (counted and class-balanced), and pair samples. The run folders are relative to the recipe's folder."""
    doc = {"source": str(gan_data["data"]), "seed": 2, "real": "exclude", "formats": ["voc", "coco"],
           "generate": [{"backend": "recombine", "count": 3, "options": {"classes": ["c2"], "min_area": 8}},
                        {"backend": "gan", "model": "runs/l2i", "count": 3, "options": {"maps_from": 1}},
                        {"backend": "gan", "model": "runs/l2i", "count": 2},
                        {"backend": "gan", "model": "runs/l2i", "balance": {"n_balance": 6}},
                        {"backend": "gan", "model": "runs/pair", "count": 2}]}  # fmt: skip
    return Recipe.from_dict({**doc, **changes}, base=gan_data["base"])


def _label(out, output_id) -> bytes:
    return (out / "SegmentationClass" / f"{output_id}.png").read_bytes()


def test_a_recipe_with_gan_steps_exports_and_keeps_the_maps(gan_data, tmp_path):
    recipe = gan_recipe(gan_data)
    assert recipe.generate[1].model == str((gan_data["base"] / "runs" / "l2i").resolve())
    out = tmp_path / "out"
    summary = run_export(recipe, out)
    assert not summary.failures and summary.made == 3 + 3 + 2 + 2 + 2
    records = {r["output_id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    store = DatasetStore(gan_data["data"], cache_dir=tmp_path / "ws")
    for i in range(3):  # label2image on the recombine step's maps: the same map, byte for byte, with a GAN image
        gan = records[f"gen2_gan_{i:06d}"]["provenance"]
        assert _label(out, f"gen2_gan_{i:06d}") == _label(out, f"gen1_recombine_{i:06d}")
        assert gan["maps_from"]["job"] == f"gen1_recombine_{i:06d}" and gan["maps_from"]["recombine"]["mode"] == "overlay"
        assert gan["source"] == records[f"gen1_recombine_{i:06d}"]["provenance"]["source"]  # the same split group
    for i in range(2):  # label2image on dataset maps, cycling over the labelled samples
        record = records[f"gen3_gan_{i:06d}"]["provenance"]
        exported = DatasetStore(out, cache_dir=tmp_path / "ws_out").label_map(f"gen3_gan_{i:06d}")
        assert record["source"] == store.labelled_ids()[i]
        assert exported.tobytes() == store.label_map(record["source"]).tobytes()
        assert record["generator"] == "gan" and record["kind"] == "label2image"
        assert record["settings"]["run"] == recipe.generate[2].model and len(record["settings"]["checkpoint_sha256"]) == 64
        assert record["settings"]["step"] == 2 and record["settings"]["seed"] == record["seed"]
    balanced = [records[k] for k in records if k.startswith("gen4_")]
    assert balanced and all(r["target_class"] == "c2" for r in balanced)  # c2 is the rare class
    assert all(2 in store.label_classes()[r["provenance"]["source"]] for r in balanced)
    pairs = DatasetStore(out, cache_dir=tmp_path / "ws_out")
    for i in range(2):
        label = pairs.label_map(f"gen5_gan_{i:06d}")
        assert label.shape == (16, 16) and set(np.unique(label).tolist()) <= {0, 1, 2}
        assert records[f"gen5_gan_{i:06d}"]["provenance"]["kind"] == "pair"
    # the same recipe gives the same tree (seeded per job; the Ray runner's test makes it in other processes)
    again = run_export(recipe, tmp_path / "again")
    assert again.made == summary.made
    for name in records:
        assert _label(out, name) == _label(tmp_path / "again", name)
        assert (out / "JPEGImages" / f"{name}.jpg").read_bytes() == (tmp_path / "again" / "JPEGImages" / f"{name}.jpg").read_bytes()


def _step(**changes) -> dict:
    return {"backend": "gan", "model": "runs/l2i", "count": 1, **changes}


@pytest.mark.parametrize(("steps", "message"), [
    ([{"backend": "gan", "count": 1}], r"generate\[0\].model: the gan backend needs a training run folder"),
    ([_step(options={"maps_from": 1})], r"generate\[0\].options.maps_from: 'dataset' or the number of an earlier"),
    ([{"backend": "composite", "count": 1}, _step(options={"maps_from": 1})],
     r"generate\[1\].options.maps_from: step 1 is a composite step"),
    ([{"backend": "recombine", "count": 1, "options": {"classes": ["c2"]}},
      _step(count=None, balance={"n_balance": 5}, options={"maps_from": 1})], r"generate\[1\]: with maps_from .* give count"),
    ([_step(options={"prompt": "x"})], r"generate\[0\].options.prompt: unknown for gan; accepted: maps_from, ema"),
])  # fmt: skip
def test_recipe_errors_of_gan_steps(gan_data, steps, message):
    with pytest.raises(InvalidInput, match=message):
        gan_recipe(gan_data, generate=steps)


def test_unusable_runs_are_refused_before_any_job_runs(gan_data, tmp_path):
    from core.train.toy import write_toy_dataset

    def refused(recipe, message):
        with pytest.raises(InvalidInput, match=message):
            run_export(recipe, tmp_path / "out")
        assert not (tmp_path / "out" / "JPEGImages").exists()

    refused(gan_recipe(gan_data, generate=[_step(model="runs/none")]), r"recipe: generate\[0\].model: GAN run .*none is "
            "not a folder")  # fmt: skip
    shutil.copytree(gan_data["base"] / "runs" / "l2i", tmp_path / "young")
    (tmp_path / "young" / "checkpoint.json").unlink()
    refused(gan_recipe(gan_data, generate=[_step(model=str(tmp_path / "young"))]),
            r"recipe: generate\[0\].model: GAN run .*young has no checkpoint yet")  # fmt: skip
    shutil.copytree(gan_data["base"] / "runs" / "l2i", tmp_path / "damaged")
    folder = json.loads((tmp_path / "damaged" / "checkpoint.json").read_text())["folder"]
    (tmp_path / "damaged" / folder / "generator_ema.safetensors").write_bytes(b"0")
    refused(gan_recipe(gan_data, generate=[_step(model=str(tmp_path / "damaged"))]), "does not match the sha256")
    refused(gan_recipe(gan_data, generate=[_step(model="runs/pair", count=None, balance={"n_balance": 6})]),
            r"generate\[0\].balance: a pair GAN run .* cannot follow a balance plan")  # fmt: skip
    other = write_toy_dataset(tmp_path / "toy4", count=2, size=16, num_classes=4)
    refused(gan_recipe(gan_data, source=str(other), generate=[_step(model=str(gan_data["base"] / "runs" / "l2i"))]),
            r"recipe: generate\[0\].model: GAN run .* was trained with the classes \[background, c1, c2\]")  # fmt: skip


def test_the_plan_of_gan_steps(gan_data):
    store = DatasetStore(gan_data["data"])
    jobs = plan_jobs(gan_recipe(gan_data), store)
    by_step = {s: [j for j in jobs if j.step == s] for s in range(1, 6)}
    assert [j.source for j in by_step[2]] == [None] * 3  # maps from step 1, chosen when made
    assert [j.source for j in by_step[3]] == store.labelled_ids()[:2]
    assert [j.source for j in by_step[5]] == [None, None] and by_step[5][0].output_id == "gen5_gan_000000"
