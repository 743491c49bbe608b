"""Export recipes with render steps: meshes named after the dataset's classes rendered over the dataset's images
(labelled ones keep their labels), counted and class-balanced; bad steps refused before any job runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import InvalidInput
from core.export.recipe import Recipe
from core.export.runner import run_export
from core.store import DatasetStore

pytest.importorskip("mitsuba", reason='Mitsuba 3 is not installed (pip install -e ".[render]")')


@pytest.fixture(scope="module")
def render_data(tmp_path_factory):
    import trimesh

    from tests.core.generate.gan_runs import gan_toy_dataset

    base = tmp_path_factory.mktemp("render_export")
    data = gan_toy_dataset(base / "toy", count=6)  # class 2 is rare: a balance plan targets it
    names = DatasetStore(data, cache_dir=base / "ws").classes.names
    for k, name in enumerate(names[1:]):
        (base / "meshes" / name).mkdir(parents=True)
        shape = trimesh.creation.box() if k == 0 else trimesh.creation.icosphere(2)
        shape.export(base / "meshes" / name / f"{name}.ply")
    return {"data": data, "base": base, "names": names}


def _recipe(render_data, **changes) -> Recipe:
    doc = {"source": str(render_data["data"]), "seed": 4, "real": "exclude", "formats": ["voc"],
           "generate": [{"backend": "render", "count": 3, "options": {"meshes": "meshes", "size": 40, "samples": 2}},
                        {"backend": "render", "balance": {"n_balance": 4},
                         "options": {"meshes": "meshes", "size": 40, "samples": 2}}]}  # fmt: skip
    return Recipe.from_dict({**doc, **changes}, base=render_data["base"])


def test_a_recipe_with_render_steps_exports_exact_labels(render_data, tmp_path):
    recipe = _recipe(render_data)
    assert recipe.generate[0].options["meshes"] == str((render_data["base"] / "meshes").resolve())
    out = tmp_path / "out"
    summary = run_export(recipe, out)
    assert not summary.failures, summary.failures
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    renders = [r for r in records if r["provenance"]["generator"] == "render"]
    assert len(renders) == summary.made >= 3 + 1
    exported = DatasetStore(out, cache_dir=tmp_path / "ws_out")
    source = DatasetStore(render_data["data"], cache_dir=tmp_path / "ws_src")
    for r in renders:
        prov = r["provenance"]
        label = exported.label_map(r["output_id"])
        assert label.shape == (40, 40)
        objects = prov["scene"]["objects"]
        assert objects and all(len(prov["meshes"][o["mesh"]]) == 64 for o in objects)
        assert {o["class_index"] for o in objects} <= set(np.unique(label).tolist())
        if prov["scene"]["background"]["kind"] == "sample":  # the sample's own labels stay outside the objects
            assert prov["scene"]["background"]["sample"] in source.labelled_ids()
    balanced = [r for r in renders if r["output_id"].startswith("gen2_")]
    assert balanced and all({o["class"] for o in r["provenance"]["scene"]["objects"]} == {r["provenance"]["target_class"]}
                            for r in balanced)  # fmt: skip


def test_bad_render_steps_are_refused(render_data, tmp_path):
    with pytest.raises(InvalidInput, match="generate\\[0\\].options: render settings: samples must be 1..4096"):
        _recipe(render_data, generate=[{"backend": "render", "count": 1, "options": {"samples": 0}}])
    with pytest.raises(InvalidInput, match="generate\\[0\\].options.lights_per_room: unknown for render"):
        _recipe(render_data, generate=[{"backend": "render", "count": 1, "options": {"lights_per_room": 2}}])
    bundled = _recipe(render_data, generate=[{"backend": "render", "count": 1, "options": {"size": 32}}])
    with pytest.raises(InvalidInput, match="generate\\[0\\].options.meshes: no mesh of the dataset's classes"):
        run_export(bundled, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_generate_render_backend(render_data, tmp_path, capsys):
    from core.cli import main

    out = tmp_path / "gen"
    code = main(["generate", str(render_data["data"]), "--backend", "render", "--meshes",
                 str(render_data["base"] / "meshes"), "--count", "2", "--width", "40", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["scene"]["background"]["kind"] in ("sample", "unlabelled") for r in records)
    assert json.loads((out / "classes.json").read_text())["classes"][1]["name"] == render_data["names"][1]
    code = main(["generate", str(render_data["data"]), "--backend", "render", "--count", "1", "--out",
                 str(tmp_path / "bundled")])  # fmt: skip
    assert code == 2 and "are not classes of the dataset" in capsys.readouterr().err
