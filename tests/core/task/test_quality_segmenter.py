"""The task model as a quality score: export recipes name a segmenter run; each generated sample records its mIoU
against the sample's label map, ``min_segmenter`` gates on it, and the preflight refuses a bad run."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidInput
from core.export.quality import passes
from core.export.recipe import Recipe
from core.export.runner import run_export


def recipe(toy_root, run_dir, **quality) -> Recipe:
    doc = {"source": str(toy_root), "seed": 1, "real": "exclude", "formats": ["voc"],
           "generate": [{"backend": "composite", "count": 3, "options": {"min_area": 4}}],
           "quality": {"segmenter": str(run_dir), **quality}}  # fmt: skip
    return Recipe.from_dict(doc)


def test_export_records_the_segmenter_score_and_gates_on_it(toy_root, trained_run, tmp_path):
    run_dir = trained_run[0]
    summary = run_export(recipe(toy_root, run_dir, min_score=0.0), tmp_path / "a")
    assert summary.made == 3 and not summary.failures
    scores = [json.loads(line)["quality"]["segmenter"] for line in (tmp_path / "a" / "manifest.jsonl").read_text().split("\n") if line]
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores) and max(scores) > 0.3

    strict = run_export(recipe(toy_root, run_dir, min_segmenter=1.0), tmp_path / "b")
    assert strict.made < 3 and strict.rejected >= 1  # a composite the segmenter gets perfectly is unlikely
    assert passes({"segmenter": 0.4}, {"min_segmenter": 0.5})[1] == "segmenter mIoU 0.400 < min_segmenter 0.5"
    assert passes({"segmenter": None}, {"min_segmenter": 0.5})[0]  # nothing to score: not turned down


def test_bad_segmenter_settings_are_refused(toy_root, tmp_path):
    with pytest.raises(InvalidInput, match="quality.min_segmenter"):
        Recipe.from_dict({"source": str(toy_root), "generate": [{"backend": "composite", "count": 1}],
                          "quality": {"min_segmenter": 0.5}})  # fmt: skip
    with pytest.raises(InvalidInput, match="quality.segmenter"):
        run_export(recipe(toy_root, tmp_path / "no-run"), tmp_path / "out")
