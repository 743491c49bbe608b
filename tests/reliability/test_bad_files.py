"""One bad file is reported and skipped; it never stops a batch or hides the other samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ImageLoadError
from core.generate.composite import CompositeParams, CompositeRequest, composite_sample
from core.labels.recombine import RecombineRequest, RegionLibrary, recombine_one
from core.labels.stats import dataset_stats
from core.store import DatasetStore, SkipReport
from studio.app import StudioConfig, build_app
from studio.tabs.dataset import gallery_page, problems_markdown, render_sample
from tests.reliability.helpers import cli, spoil

BAD_IMAGES = ("corrupt", "truncated", "notimage")
BAD_MAPS = ("wrongsize", "wrongvalues")


@pytest.fixture
def spoiled(samples_copy):
    spoil(samples_copy)
    return samples_copy


def test_info_lists_every_bad_file_with_its_reason(spoiled):
    done = cli("info", str(spoiled), "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    problems = {p["path"].rsplit("/", 1)[-1]: p["reason"] for p in info["problems"]}
    for name in BAD_IMAGES:
        assert f"{name}.jpg" in problems, problems
    assert "is 100x80" in problems["wrongsize.png"] and "451x300" in problems["wrongsize.png"]
    assert "77" in problems["wrongvalues.png"]
    assert "badxml.xml" in problems
    assert info["samples"] == 10 and info["with_label_map"] == 3 and info["unusable_label_maps"] == 2


def test_batch_commands_succeed_on_the_good_samples_and_name_the_bad_ones(spoiled, tmp_path):
    stats = cli("stats", str(spoiled), "--json")
    assert stats.returncode == 0, stats.stderr
    summary = json.loads(stats.stdout)
    assert summary["maps"] == 3  # the wrong-size and wrong-value maps are not counted
    assert {s["sample"] for s in summary["skipped"]} == set()  # they never count as labelled in the first place
    done = cli("recombine", str(spoiled), "--mode", "overlay", "--class", "cat", "--count", "3", "--out",
               str(tmp_path / "r"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = cli("generate", str(spoiled), "--backend", "composite", "--count", "4", "--out", str(tmp_path / "g"))
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "g" / "manifest.jsonl").read_text().splitlines()) == 4
    done = cli("priors", str(spoiled), "--type", "canny", "--out", str(tmp_path / "p"))
    assert done.returncode == 0 and "wrote 3 condition images" in done.stdout, done.stderr


def test_a_sample_whose_image_breaks_later_is_skipped_by_batches_and_reported(spoiled):
    store = DatasetStore(spoiled)
    (spoiled / "JPEGImages" / "coffee.jpg").write_bytes(b"broken after listing")
    skipped = SkipReport()
    library = RegionLibrary(store)
    # only the choice of target matters here: the whole-frame cat may hide the astronaut (no hidden-share limit)
    requests = [RecombineRequest("overlay", ("cat",), 1, seed, background_overlap=1.0) for seed in range(6)]
    results = [recombine_one(library, r, 0) for r in requests]
    assert all(r.record["target"] in ("astronaut",) for r in results)  # coffee can no longer be a target
    assert any(p.sample_id == "coffee" and "coffee.jpg" in p.path for p in store.problems)
    composite = CompositeRequest(("cat",), 4, 0, CompositeParams())
    made = [composite_sample(library, composite, i) for i in range(4)]
    assert {m.record["background"] for m in made} <= {"astronaut", "chelsea"}
    stats = dataset_stats(store, skipped=skipped)
    assert stats.maps == 2  # coffee's map cannot be checked against an image that cannot be read
    assert any("coffee.jpg" in str(p) for p in store.problems), [str(p) for p in store.problems]


def test_the_studio_lists_problems_and_opens_a_sample_with_a_bad_map(spoiled):
    ctx = build_app(StudioConfig.for_data(spoiled)).studio_context
    items, ids, info, _ = gallery_page(ctx, [], 0)
    assert len(items) == 10 and info.startswith("10 of 10")
    text = problems_markdown(ctx)
    for name in (*BAD_IMAGES, "wrongsize", "wrongvalues", "badxml"):
        assert name in text, name
    view, details, _ = render_sample(ctx, "wrongsize", 0.5, True)
    assert view.shape == (300, 451, 3) and "label map not usable" in details
    with pytest.raises(ImageLoadError):
        render_sample(ctx, "corrupt", 0.5, True)
    annotate = build_app(StudioConfig.for_data(spoiled)).annotate
    session = annotate.session("ed", "wrongvalues")
    assert session.label_problem and not session.labelled and (session.label_map == 255).all()


def test_one_error_per_failure_in_the_studio(spoiled):
    """Opening an unreadable sample in Annotate gives one inline message, not a toast per output."""
    demo = build_app(StudioConfig.for_data(spoiled))
    controller = demo.annotate
    with pytest.raises(ImageLoadError) as err:
        controller.session("ed", "truncated")
    assert str(err.value).count("truncated.jpg") == 1


def test_composite_never_labels_unlabelled_pixels_as_background(samples_copy):
    store = DatasetStore(samples_copy)
    library = RegionLibrary(store)
    labelled_only = CompositeRequest((), 12, 3, CompositeParams())
    assert {composite_sample(library, labelled_only, i).record["background"] for i in range(12)} <= {
        "astronaut", "chelsea", "coffee"}  # fmt: skip
    onto = CompositeRequest(("cat",), 1, 0, CompositeParams(objects=(1, 2)), ("grace_hopper",), background_pool="all")
    sample = composite_sample(library, onto, 0)
    assert sample.record["labels"].startswith("unlabelled background")
    values = set(np.unique(sample.result.label_map).tolist())
    assert 0 not in values and values <= {8, 255}
    refused = CompositeRequest(("cat",), 1, 0, CompositeParams(), ("grace_hopper",))
    with pytest.raises(Exception, match="backgrounds all"):
        composite_sample(library, refused, 0)
