from __future__ import annotations

import json

import pytest

from core.errors import InvalidInput
from studio.app import StudioConfig, build_app
from studio.tabs.generate import _composite_request, _diffusion_settings
from tests.browser import CHROMIUM, chromium_page, running_studio
from tests.core.generate.tiny import save_tiny_controlnet, save_tiny_sd15


@pytest.fixture
def generate(samples_copy, tmp_path):
    return build_app(StudioConfig.for_data(samples_copy, tmp_path / "ws")).generate


def test_composite_on_the_chosen_sample_and_keep(generate, tmp_path):
    request = _composite_request(
        generate.classes, ["cat"], 1, 1, "gaussian", 3, 0, 0.3, 0.3, 0.5, 1.2, 15, 3, 2, "coffee"
    )
    items = generate.run_composite("s", request, lambda f, m="": None)
    assert len(items) == 2 and "composite · coffee" in items[0][1]
    assert items[0][0].shape[1] == 2 * 600  # image beside its label map overlay
    assert generate.keep("s", [0]) == (["kept_composite_000001"], [])
    assert generate.keep("s", None) == (["kept_composite_000002"], ["kept_composite_000001"])  # never twice
    record = json.loads((tmp_path / "ws" / "generated" / "manifest.jsonl").read_text().splitlines()[0])
    assert record["background"] == "coffee" and record["params"]["blending"] == "gaussian" and record["seed"] == 3


def test_models_are_marked_unavailable_with_the_install_message(generate):
    labels = dict((value, label) for label, value in generate.model_choices("controlnet"))
    assert labels["controlnet-sd15-canny"] == "controlnet-sd15-canny (weights missing)"
    note = generate.model_status("controlnet", "controlnet-sd15-canny")
    assert "Unavailable" in note and "control_v11p_sd15_canny" in note and "stable-diffusion-v1-5" in note
    assert generate.model_status("composite", None).startswith("Compositing needs no model")


def test_diffusion_from_the_tab_with_a_tiny_pipeline(generate):
    save_tiny_sd15()
    save_tiny_controlnet()
    assert generate.model_status("controlnet", "controlnet-sd15-canny") == "Ready."
    view, condition, prompt, note = generate.source_views("chelsea")
    assert prompt == "cat" and condition.shape == (300, 451, 3) and "no saved prior" in note
    settings = _diffusion_settings("", "", 2, 7.5, 1.0, 32, 32, 5, 2, 1, False, False, False)
    steps = []
    items = generate.run_diffusion(
        "s", "chelsea", "controlnet", "controlnet-sd15-canny", settings, lambda f, m="": steps.append(f)
    )
    assert len(items) == 2 and items[0][0].shape == (300, 902, 3) and steps[-1] == 1.0
    assert generate.keep("s", None) == (["kept_controlnet_000001", "kept_controlnet_000002"], [])
    with pytest.raises(InvalidInput, match="nothing to keep"):
        generate.keep("other", None)


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
)
def test_composite_and_keep_in_the_browser(samples_copy, tmp_path):
    with (
        running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url,
        chromium_page(1400, 1100) as page,
    ):
        page.goto(url)
        page.get_by_role("tab", name="Generate").click()
        page.locator("#gen-source img").first.wait_for(timeout=30_000)
        page.locator("#gen-run").click()
        page.locator("#gen-results img").first.wait_for(timeout=60_000)
        page.locator("#gen-keep-all").click()
        page.wait_for_function("document.querySelector('#gen-kept-note').innerText.includes('kept_composite_000004')",
                               timeout=30_000)  # fmt: skip
    lines = (tmp_path / "ws" / "generated" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["background"] == "astronaut" for line in lines)


def test_preview_grid_and_class_roles_saved_in_the_workspace(generate, samples_copy, tmp_path):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in samples_copy.rglob("*"))
    request = _composite_request(generate.classes, [], 1, 2, "gaussian", 3, 0, 0.3, 0.3, 0.5, 1.2, 15, 11, 4,
                                 size_mode="data", background_overlap=0.3, position="data")  # fmt: skip
    image, note = generate.preview_grid(request, lambda f, m="": None)
    assert image.shape[1] == 4 * 324 - 4 and image.shape[0] < 4 * 324 - 4 and "16 composites" in note  # wide cells
    assert generate.roles() == ["background", "diningtable"]  # VOC defaults: table tops are stuff
    assert generate.save_roles(["background"]).endswith("unchanged): background.")
    assert generate.roles() == ["background"]
    assert generate.reset_roles()[0] == ["background", "diningtable"]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in samples_copy.rglob("*")) == before


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
)
def test_preview_grid_and_roles_editor_in_the_browser(samples_copy, tmp_path):
    from core.labels.roles import ROLES_FILE

    before = sorted((p.name, p.stat().st_mtime_ns) for p in samples_copy.rglob("*"))
    with (
        running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url,
        chromium_page(1400, 1400) as page,
    ):
        page.goto(url)
        page.get_by_role("tab", name="Generate").click()
        page.locator("#gen-source img").first.wait_for(timeout=30_000)
        page.locator("#gen-preview").click()
        page.wait_for_function("(document.querySelector('#gen-preview-note') || {innerText: ''}).innerText"
                               ".includes('16 composites')", timeout=90_000)  # fmt: skip
        assert page.locator("#gen-preview-grid img").count() >= 1
        page.get_by_text("Class roles (stuff is never cut out as an object)").click()
        stuff = page.locator("#gen-stuff")
        stuff.get_by_text("diningtable").wait_for(timeout=10_000)
        stuff.locator("[aria-label='Remove diningtable'], .token-remove").last.click()  # the last tag: diningtable
        page.locator("#gen-stuff-save").click()
        page.wait_for_function("document.querySelector('#gen-roles-note').innerText.includes('saved in the workspace')",
                               timeout=20_000)  # fmt: skip
        assert "diningtable" not in page.locator("#gen-roles-note").inner_text()
        page.screenshot(path=str(tmp_path / "preview.png"), full_page=True)
    saved = list((tmp_path / "ws").rglob(ROLES_FILE))
    assert len(saved) == 1 and "diningtable" not in saved[0].read_text()
    assert sorted((p.name, p.stat().st_mtime_ns) for p in samples_copy.rglob("*")) == before
