from __future__ import annotations

import json

import pytest

from studio.app import StudioConfig, build_app
from studio.tabs.priors import settings_from_controls
from tests.browser import CHROMIUM, chromium_page, running_studio


@pytest.fixture
def priors(samples_copy, tmp_path):
    return build_app(StudioConfig.for_data(samples_copy, tmp_path / "ws")).priors


def test_views_cache_priors_and_blend_follows_the_weights(priors):
    low = settings_from_controls("canny", "boundary", 0.2, 0.9, 2, 100, 200, 6, [], priors.classes)
    high = settings_from_controls("canny", "boundary", 1.0, 0.9, 2, 100, 200, 6, [], priors.classes)
    v_image, v_mask, blend_low = priors.views("s", "chelsea", low)
    _, _, blend_high = priors.views("s", "chelsea", high)
    assert v_image.shape == v_mask.shape == blend_low.shape == (300, 451, 3)
    assert blend_high.sum() > blend_low.sum()
    assert priors.priors("s", "chelsea", low) is priors.priors("s", "chelsea", high)  # only the blend is recomputed


def test_prompt_without_captioner_and_saving(priors, tmp_path):
    prompt, note = priors.default_prompt("s", "coffee", "", "{caption}; {classes}")
    assert prompt == "diningtable" and "No captioner" in note
    prompt, note = priors.default_prompt("s", "coffee", "a cup on a table", "{caption}; {classes}")
    assert prompt == "a cup on a table; diningtable" and note == ""
    settings = settings_from_controls("canny", "boundary", 0.7, 0.9, 2, 100, 200, 6, ["diningtable"], priors.classes)
    message = priors.save("s", "coffee", settings, prompt, "blurry", "a cup on a table", "{caption}; {classes}")
    assert "coffee.png" in message
    record = json.loads((tmp_path / "ws" / "priors" / "coffee.json").read_text())
    assert (
        record["prompt"] == prompt and record["prior"]["only_classes"] == [11] and record["negative_prompt"] == "blurry"
    )
    assert priors.saved("coffee")["caption"] == "a cup on a table"


def test_learned_priors_are_marked_when_missing(priors):
    labels = dict((value, label) for label, value in priors.prior_choices())
    assert labels["canny"] == "canny" and labels["hed"] == "hed (weights missing)"


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
)
def test_moving_a_weight_slider_changes_the_blend_preview(samples_copy, tmp_path):
    with (
        running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url,
        chromium_page() as page,
    ):
        page.goto(url)
        page.get_by_role("tab", name="Priors").click()
        page.locator("#priors-blend img").first.wait_for(timeout=30_000)
        before = page.locator("#priors-blend img").first.get_attribute("src")
        number = page.locator("#priors-w1 input[type=number]")
        number.fill("0.1")
        number.press("Enter")
        page.wait_for_function("(old) => document.querySelector('#priors-blend img').src !== old", arg=before,
                               timeout=30_000)  # fmt: skip
        assert "person" in page.locator("#priors-prompt textarea").input_value()
        page.locator("#priors-save").click()
        page.wait_for_function("document.querySelector('#priors-saved').innerText.includes('Saved')", timeout=30_000)
    assert (tmp_path / "ws" / "priors" / "astronaut.png").is_file()
