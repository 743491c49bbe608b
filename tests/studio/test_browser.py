"""The studio in a real browser: gallery, filter, opening a sample, overlay opacity, Models page."""

from __future__ import annotations

import pytest

from tests.browser import CHROMIUM, chromium_page, running_studio

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
    ),
]


def _view_src(page) -> str:
    return page.locator("#sample-view img").first.get_attribute("src") or ""


def test_dataset_tab_browses_filters_opens_and_overlays(samples_copy, tmp_path):
    with (
        running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url,
        chromium_page() as page,
    ):
        page.goto(url)
        thumbs = page.locator("#sample-gallery .thumbnail-item")
        thumbs.first.wait_for(timeout=30_000)
        assert thumbs.count() == 4
        assert "4 of 4 samples" in page.locator("#page-info").inner_text()

        # filter by class
        page.locator("#class-filter input").click()
        page.get_by_role("option", name="cat (1)").click()
        page.wait_for_function("document.querySelectorAll('#sample-gallery .thumbnail-item').length === 1")
        assert "chelsea" in thumbs.first.inner_text()
        page.keyboard.press("Escape")

        # open it: the overlay and the legend appear
        thumbs.first.click()
        page.locator("#sample-view img").first.wait_for(timeout=30_000)
        assert "chelsea" in page.locator("#sample-details").inner_text()
        assert page.locator("#legend [data-class='cat']").count() == 1
        before = _view_src(page)

        # moving the opacity changes the picture
        number = page.locator("#opacity input[type=number]")
        number.fill("0.95")
        number.press("Enter")
        page.wait_for_function(
            "(old) => { const i = document.querySelector('#sample-view img'); return i && i.src !== old; }", arg=before,
            timeout=30_000,
        )  # fmt: skip
        assert _view_src(page) != before

        # the Models page lists unavailable models with where their weights go
        page.get_by_role("tab", name="Models").click()
        row = page.locator("#models-table tr[data-model='sam-vit-base']")
        row.wait_for(timeout=30_000)
        assert "missing" in row.inner_text() and "facebook/sam-vit-base" in row.inner_text()
