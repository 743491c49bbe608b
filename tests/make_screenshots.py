"""Take the README's screenshots of the studio in headless Chromium.

    python -m tests.make_screenshots

Starts the studio on the bundled samples (in a temporary workspace), drives it like a user and
writes PNGs to ``assets/screenshots/``.
"""

from __future__ import annotations

import tempfile

from tests.browser import PROJECT_ROOT, chromium_page, running_studio

OUT = PROJECT_ROOT / "assets" / "screenshots"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    workspace = tempfile.mkdtemp(prefix="segstudio-shots-")
    with running_studio("--workspace", workspace) as url, chromium_page(1400, 900) as page:
        page.goto(url)
        thumbs = page.locator("#sample-gallery .thumbnail-item")
        thumbs.first.wait_for(timeout=30_000)
        thumbs.nth(0).click()
        page.locator("#sample-view img").first.wait_for(timeout=30_000)
        page.locator("#legend .item").first.wait_for(timeout=30_000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUT / "dataset.png"))
        page.get_by_role("tab", name="Annotate").click()
        page.locator("#annotate-sample input").click()
        page.get_by_role("option", name="chelsea").click()
        page.wait_for_function("document.querySelector('#annotate-status').innerText.includes('chelsea')")
        page.locator("#refine-all").click()
        page.wait_for_function("document.querySelector('#annotate-status').innerText.includes('1 refined')")
        page.wait_for_timeout(3000)  # let every output finish rendering (Gradio dims pending outputs)
        page.screenshot(path=str(OUT / "annotate.png"))
        page.locator("#compare").get_by_text("Compare methods").click()
        page.locator("#compare-run").click()
        page.locator("#compare-gallery .thumbnail-item").nth(2).wait_for(timeout=60_000)
        page.locator("#compare").scroll_into_view_if_needed()
        page.wait_for_timeout(800)
        page.locator("#compare").screenshot(path=str(OUT / "compare.png"))
        page.get_by_role("tab", name="Label maps").click()
        page.locator("#labels-class input").click()
        page.get_by_role("option", name="cat").click()
        page.locator("#labels-regions .thumbnail-item").first.wait_for(timeout=30_000)
        page.locator("#labels-preview").click()
        page.locator("#labels-previews .thumbnail-item").nth(3).wait_for(timeout=30_000)
        page.locator("#labels-keep-all").click()
        page.wait_for_function("document.querySelector('#labels-stats-line').innerText.includes('With kept')")
        page.wait_for_timeout(2500)
        page.screenshot(path=str(OUT / "labels.png"), full_page=True)
        page.get_by_role("tab", name="Priors").click()
        page.locator("#priors-blend img").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(OUT / "priors.png"))
        page.get_by_role("tab", name="Generate").click()
        page.locator("#gen-source img").first.wait_for(timeout=30_000)
        page.locator("#gen-run").click()
        page.locator("#gen-results img").first.wait_for(timeout=60_000)
        page.wait_for_timeout(2500)
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(300)
        page.screenshot(path=str(OUT / "generate.png"))
        page.get_by_role("tab", name="Models").click()
        page.locator("#models-table tr").first.wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUT / "models.png"))
    print(f"wrote {', '.join(str(p.relative_to(PROJECT_ROOT)) for p in sorted(OUT.glob('*.png')))}")


if __name__ == "__main__":
    main()
