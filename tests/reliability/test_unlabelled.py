"""Unlabelled is not background: compositing onto an image without a label map never yields 0 outside the
pasted objects, whatever the seed and settings."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.generate.composite import BLENDINGS, CompositeParams, CompositeRequest, composite_sample
from core.labels.recombine import RegionLibrary
from core.store import DatasetStore
from tests.conftest import SAMPLES
from tests.reliability.helpers import cli

_LIBRARY: list[RegionLibrary] = []


def _library() -> RegionLibrary:
    if not _LIBRARY:
        _LIBRARY.append(RegionLibrary(DatasetStore(SAMPLES)))
    return _LIBRARY[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), objects=st.integers(1, 4), blending=st.sampled_from(BLENDINGS),
       distractors=st.integers(0, 2))  # fmt: skip
def test_composite_onto_an_unlabelled_image_marks_the_rest_unknown(seed, objects, blending, distractors):
    params = CompositeParams(objects=(1, objects), blending=blending, distractors=distractors)
    request = CompositeRequest((), 1, seed, params, ("grace_hopper",), background_pool="all")
    sample = composite_sample(_library(), request, 0)
    label_map = sample.result.label_map
    pasted = [s for s in sample.record["steps"] if "transform" in s and not s.get("distractor")]
    pasted_classes = {s["region"]["class"] for s in pasted}
    values = set(np.unique(label_map).tolist())
    assert 0 not in values  # nothing is called background on an image nobody labelled
    assert values <= pasted_classes | {255}
    assert (label_map == 255).sum() >= label_map.size - sum(s["pixels"] for s in pasted)


def test_the_command_line_never_uses_unlabelled_backgrounds_unless_asked(samples_copy, tmp_path):
    done = cli("generate", str(samples_copy), "--backend", "composite", "--count", "8", "--seed", "11",
               "--out", str(tmp_path / "a"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert all(r["background"] != "grace_hopper" and r["labels"].startswith("labelled") for r in records)
    done = cli("generate", str(samples_copy), "--backend", "composite", "--count", "1", "--background",
               "grace_hopper", "--out", str(tmp_path / "b"))  # fmt: skip
    assert done.returncode == 2 and "--backgrounds all" in done.stderr
    done = cli("generate", str(samples_copy), "--backend", "composite", "--count", "1", "--background",
               "grace_hopper", "--backgrounds", "all", "--out", str(tmp_path / "c"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "c" / "manifest.jsonl").read_text())
    assert record["labels"].startswith("unlabelled background")
    label = DatasetStore(tmp_path / "c").label_map(record["id"])
    assert 0 not in np.unique(label)
