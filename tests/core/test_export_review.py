"""Export quality scores, the quality gate, the review queue and replacements of rejected samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import InvalidInput
from core.export.quality import boundary_agreement, class_prompt, score
from core.export.recipe import Recipe
from core.export.review import decide, review_queue
from core.export.runner import run_export
from core.types import ClassSet
from tests.reliability.helpers import tree_digest


def _recipe(source, **changes) -> Recipe:
    doc = {"source": str(source), "seed": 1, "generate": [{"backend": "composite", "count": 4}],
           "split": {"train": 1.0}, "formats": ["voc", "coco"]}  # fmt: skip
    return Recipe.from_dict({**doc, **changes})


def _painted(label_map: np.ndarray) -> np.ndarray:
    """An image whose colours follow ``label_map`` exactly (``H x W x 3 uint8``)."""
    colours = np.array([[30, 60, 90], [220, 40, 40], [40, 200, 60]], np.uint8)
    return colours[label_map]


def _manifest(out) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_boundary_score_is_high_where_the_image_follows_the_map_and_low_where_it_does_not():
    label_map = np.zeros((96, 128), np.uint8)
    label_map[20:70, 30:80] = 1
    label_map[50:90, 90:120] = 2
    image = _painted(label_map)
    aligned = boundary_agreement(image, label_map)
    shifted = boundary_agreement(image, np.roll(label_map, 12, axis=1))
    blank = boundary_agreement(np.full_like(image, 128), label_map)
    assert aligned.f > 0.9 and shifted.f < 0.5 and blank.f == 0.0
    assert boundary_agreement(image, np.zeros_like(label_map)) is None  # nothing to check
    ignored = label_map.copy()
    ignored[ignored == 2] = 255  # boundaries against ignore pixels do not count
    assert boundary_agreement(image, ignored).recall > 0.9
    with pytest.raises(ValueError, match="differ in size"):
        boundary_agreement(image[:50], label_map)


def test_scores_name_the_classes_present():
    label_map = np.array([[0, 8, 255], [15, 15, 0]], np.uint8)
    assert class_prompt(label_map, ClassSet.builtin("voc")) == "a photo of cat, person"
    assert score(_painted(np.zeros((4, 4), np.uint8)), np.zeros((4, 4), np.uint8), ClassSet.builtin("voc"))["score"] is None


def test_quality_gate_turns_samples_down_and_replaces_them_up_to_three_times_the_count(samples_copy, tmp_path):
    strict = run_export(_recipe(samples_copy, quality={"min_score": 0.99}), tmp_path / "strict")
    kept = [r for r in _manifest(tmp_path / "strict") if r["kind"] == "composite"]
    assert all(r["quality"]["score"] is None for r in kept)  # only maps without a boundary (nothing to score) pass
    failed = len(strict.failures)  # a composite with no room for any object fails (and is not replaced)
    assert strict.made == 3 + len(kept) and strict.rejected + len(kept) + failed == 4 * 3  # 4 planned + 8 replacements
    export = json.loads((tmp_path / "strict" / "export.json").read_text())
    assert export["review"]["gate"] == strict.rejected >= 8 and export["samples"] == 3 + len(kept)
    lenient = run_export(_recipe(samples_copy, quality={"min_score": 0.0}), tmp_path / "lenient")
    records = _manifest(tmp_path / "lenient")
    assert lenient.made + len(lenient.failures) == 7 and lenient.rejected == 0
    generated = [r for r in records if r["kind"] == "composite"]
    assert all(0.0 <= r["quality"]["score"] <= 1.0 for r in generated)  # every composite pasted something
    assert len(generated) == 4 - len(lenient.failures) >= 3
    assert all(r["review"] == "not required" for r in records)


def _review_flow(samples, out):
    """Run with review, accept two, reject one, skip one, finish; returns the queue seen after the first run."""
    roomy = {"background_overlap": 1.0}  # every composite finds room (the bundled photos are full-frame)
    recipe = _recipe(samples, review=True, generate=[{"backend": "composite", "count": 4, "options": roomy}])
    first = run_export(recipe, out)
    queue = review_queue(out)
    assert first.waiting == 4 and [i.output_id for i in queue] == [f"gen1_composite_{i:06d}" for i in range(4)]
    assert all(i.image.is_file() and "review" in i.image.parts for i in queue)
    assert len(_manifest(out)) == 3  # the real samples only, until a person decides
    decide(out, queue[0].job_id, "accept")
    decide(out, queue[1].job_id, "accept")
    decide(out, queue[2].job_id, "reject")
    decide(out, queue[3].job_id, "skip")
    again = run_export(recipe, out, resume=True)
    return queue, again


def test_review_decisions_shape_the_final_tree_and_rejected_samples_are_replaced(samples_copy, tmp_path):
    out = tmp_path / "out"
    queue, again = _review_flow(samples_copy, out)
    assert again.made == 1 and again.waiting == 2  # the replacement of the rejected one waits, with the skipped one
    waiting = review_queue(out)
    assert [i.output_id for i in waiting] == ["gen1_composite_000003", "gen1_composite_000004"]
    assert waiting[1].score is not None and waiting[1].step == 1
    assert not queue[2].image.exists()  # a rejected sample's files are gone
    records = _manifest(out)
    accepted = [r for r in records if r["review"] == "accepted"]
    assert [r["output_id"] for r in accepted] == ["gen1_composite_000000", "gen1_composite_000001"]
    assert all((out / r["files"]["image"]).is_file() and "review" not in r["files"]["image"] for r in accepted)
    train = (out / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert "gen1_composite_000000" in train and "gen1_composite_000002" not in train
    with pytest.raises(InvalidInput, match="not waiting for review"):
        decide(out, queue[0].job_id, "accept")
    with pytest.raises(InvalidInput, match="one of accept, reject, skip"):
        decide(out, waiting[0].job_id, "maybe")
    assert review_queue(out, min_score=2.0) == [] and len(review_queue(out, step=1)) == 2


def test_the_same_decisions_give_the_same_tree(samples_copy, tmp_path):
    _review_flow(samples_copy, tmp_path / "a")
    _review_flow(samples_copy, tmp_path / "b")

    def files(root):
        return {k: v for k, v in tree_digest(root).items() if "segstudio-export.sqlite" not in k}

    assert files(tmp_path / "a") == files(tmp_path / "b")


@pytest.mark.parametrize(("quality", "message"), [
    ({"min_score": 2}, r"quality.min_score: a number in \[0, 1\]"),
    ({"threshold": 0.5}, "quality.threshold: unknown key"),
    ({"min_clip": 0.2, "clip": False}, "quality.clip: min_clip needs the CLIP score"),
])  # fmt: skip
def test_quality_keys_are_checked(samples_copy, quality, message):
    with pytest.raises(InvalidInput, match=message):
        _recipe(samples_copy, quality=quality)


def _save_tiny_clip(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPVisionConfig

    from tests.core.generate.tiny import _tiny_text

    tokenizer, text = _tiny_text(folder)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8)  # fmt: skip
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)


def test_clip_scores_come_from_a_local_model_and_a_missing_one_is_named(samples_copy, tmp_path):
    from core.models import default_registry

    roomy = {"background_overlap": 1.0}
    recipe = _recipe(samples_copy, generate=[{"backend": "composite", "count": 2, "options": roomy}], quality={"clip": True})
    with pytest.raises(InvalidInput, match=r"quality.clip: model 'clip-vit-b32' .* is not installed"):
        run_export(recipe, tmp_path / "missing")
    assert not (tmp_path / "missing").exists()  # refused before anything was written
    _save_tiny_clip(default_registry().local_folder("clip-vit-b32"))
    try:
        done = run_export(recipe, tmp_path / "out")
    finally:  # the process-wide registry keeps loaded models; other tests expect none
        default_registry().unload("clip-vit-b32")
    clips = [r["quality"]["clip"] for r in _manifest(tmp_path / "out") if r["kind"] == "composite"]
    assert done.made == 5 and len(clips) == 2 and all(-1.0 <= c <= 1.0 for c in clips)


def test_preflight_names_unknown_classes_missing_models_and_too_little_disk(samples_copy, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    with pytest.raises(InvalidInput, match=r"generate\[0\].options.classes: unknown class 'unicorn'"):
        run_export(_recipe(samples_copy, generate=[{"backend": "composite", "count": 1,
                                                    "options": {"classes": ["unicorn"]}}]), tmp_path / "a")  # fmt: skip
    controlnet = [{"backend": "controlnet", "count": 1, "model": "controlnet-sd15-seg"}]
    with pytest.raises(InvalidInput, match=r"generate\[0\].model: model 'controlnet-sd15-seg'"):
        run_export(_recipe(samples_copy, generate=controlnet), tmp_path / "b")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 5000, 5000))
    with pytest.raises(InvalidInput, match=r"needs about [0-9,]+ kB and .* has 5 kB free"):
        run_export(_recipe(samples_copy), tmp_path / "c")


def test_review_from_the_command_line(samples_copy, tmp_path):
    import subprocess
    import sys

    from tests.conftest import PROJECT_ROOT

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"source": str(samples_copy), "generate": [{"backend": "composite", "count": 2}],
                                  "review": True}))  # fmt: skip
    out = tmp_path / "out"

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done

    assert "2 wait for review" in cli("export", str(recipe), "--out", str(out)).stdout
    listed = cli("review", str(out))
    ids = [line.split("\t")[0] for line in listed.stdout.splitlines()]
    assert ids == ["gen1_composite_000000", "gen1_composite_000001"] and "2 samples wait" in listed.stderr
    decided = cli("review", str(out), "--accept", "gen1_composite_000000", "--reject", "gen1_composite_000001")
    assert "gen1_composite_000000: accepted" in decided.stdout and "rejected" in decided.stdout
    assert "1 made now" in cli("export", str(recipe), "--out", str(out), "--resume").stdout
    refused = subprocess.run([sys.executable, "-m", "core.cli", "review", str(out), "--accept", "gen1_composite_000000"],
                             cwd=PROJECT_ROOT, capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "not waiting for review" in refused.stderr
