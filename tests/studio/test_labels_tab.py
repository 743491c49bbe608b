from __future__ import annotations

import json

import pytest

from core.errors import InvalidInput
from core.labels.overlay import Placement
from core.labels.recombine import RecombineRequest, read_manifest
from studio.app import StudioConfig, build_app
from studio.tabs.labels import parse_bands
from tests.browser import CHROMIUM, chromium_page, running_studio


@pytest.fixture
def labels(samples_copy, tmp_path):
    return build_app(StudioConfig.for_data(samples_copy, tmp_path / "ws")).labels


def test_regions_previews_keep_and_distribution(labels):
    assert labels.present_classes() == ["cat", "diningtable", "person"]
    gallery, identities = labels.region_gallery("cat")
    assert gallery and gallery[0][1].startswith("chelsea #1") and identities[0] == ["chelsea", "cat", 0]
    assert labels.default_targets(["cat"]) == ["astronaut", "coffee"]
    items = labels.preview("s", RecombineRequest("overlay", ("cat",), 3, 4, Placement()))
    assert len(items) == 3 and "cat from chelsea" in items[0][1]
    ids, _ = labels.keep("s", [1])
    assert ids == ["kept_overlay_000001"]
    assert labels.keep("s", None) == (["kept_overlay_000002", "kept_overlay_000003"], ["kept_overlay_000001"])
    records = read_manifest(labels.kept_dir)
    assert records["kept_overlay_000001"]["index"] == 1 and records["kept_overlay_000001"]["seed"] == 4
    app, pix, line, table = labels.distribution()
    cat = table[table["class"] == "cat"].iloc[0]
    assert cat["images before"] == 1 and cat["images after"] == 4
    assert "imbalance ratio 1.00" in line and set(app["when"]) == {"now", "with kept"}
    image, manifest = labels.kept_view("kept_overlay_000001")
    assert image.ndim == 3 and json.loads(manifest)["id"] == "kept_overlay_000001"


def test_reconstruction_layers_are_pasted_in_order_and_can_be_reordered(labels):
    from studio.tabs.labels import _add_layer, _move_layer, _remove_layer

    layers, frame = _add_layer([], ["chelsea", "cat", 0])
    layers, frame = _add_layer(layers, ["coffee", "diningtable", 0])
    layers, frame = _move_layer(-1)(layers, 2)
    assert [layer[1] for layer in layers] == ["diningtable", "cat"] and list(frame["layer"]) == [1, 2]
    request = RecombineRequest("reconstruct", ("diningtable", "cat"), 1, 3, Placement(mode="keep"),
                               targets=("astronaut",), layers=tuple(tuple(x) for x in layers))  # fmt: skip
    (item,) = labels.preview("s", request)
    sample = labels.previews.peek("s", "last")[0]
    assert sample.record["base"] == {"sample": "astronaut"}
    assert [step["region"]["sample"] for step in sample.record["steps"]] == ["coffee", "chelsea"]
    assert 8 in sample.result.label_map  # the cat, pasted last, is on top
    layers, _ = _remove_layer(layers, 1)
    assert layers == [["chelsea", "cat", 0]]
    with pytest.raises(Exception, match="no layer #5"):
        _remove_layer(layers, 5)


def test_keep_without_preview_and_bad_bands_say_what_to_do(labels):
    with pytest.raises(InvalidInput, match="preview something first"):
        labels.keep("other", None)
    assert parse_bands("person:0.3, diningtable:0.7", labels.classes) == (("person", 0.3), ("diningtable", 0.7))
    with pytest.raises(InvalidInput, match="unknown class 'sky'"):
        parse_bands("sky:0.4", labels.classes)
    with pytest.raises(InvalidInput, match="CLASS:SHARE"):
        parse_bands("person:lots", labels.classes)


def test_plan_is_saved_in_the_workspace(labels):
    frame, summary, path = labels.plan(3, None, 0)
    assert path.is_file() and json.loads(path.read_text())["n_balance"] == 3
    assert "6 synthetic samples" in summary and set(frame["when"]) == {"now", "planned"}


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
)
def test_keep_an_overlay_in_the_browser_and_see_its_manifest_line(samples_copy, tmp_path):
    with (
        running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url,
        chromium_page(1400, 1100) as page,
    ):
        page.goto(url)
        page.get_by_role("tab", name="Label maps").click()
        page.locator("#labels-class input").click()
        page.get_by_role("option", name="cat").click()
        page.locator("#labels-regions .thumbnail-item").first.wait_for(timeout=30_000)
        page.locator("#labels-preview").click()
        page.locator("#labels-previews .thumbnail-item").nth(3).wait_for(timeout=30_000)
        page.locator("#labels-previews .thumbnail-item").nth(2).click()
        page.keyboard.press("Escape")
        page.locator("#labels-keep").click()
        page.wait_for_function("document.querySelector('#labels-kept-note').innerText.includes('kept_overlay_000001')",
                               timeout=30_000)  # fmt: skip
        page.locator("#labels-kept-gallery .thumbnail-item").first.click()
        page.wait_for_function("document.querySelector('#labels-kept-manifest').innerText.includes('kept_overlay_000001')",
                               timeout=30_000)  # fmt: skip
        page.wait_for_function("document.querySelector('#labels-stats-line').innerText.includes('With kept results (4 maps)')",
                               timeout=30_000)  # fmt: skip
    manifest = (tmp_path / "ws" / "recombined" / "manifest.jsonl").read_text().splitlines()
    record = json.loads(manifest[0])
    assert record["id"] == "kept_overlay_000001" and record["index"] == 2 and record["mode"] == "overlay"
    assert (tmp_path / "ws" / "recombined" / "SegmentationClass" / "kept_overlay_000001.png").is_file()


def test_default_bands_come_from_the_dataset_and_parse(labels):
    bands = labels.default_bands()
    names = [part.split(":")[0] for part in bands.split(", ")]
    assert set(names) <= {"background", "person", "cat", "diningtable"} and len(names) == 3
    assert sum(share for _, share in parse_bands(bands, labels.classes)) == pytest.approx(0.99)
