"""Take the README's screenshots of the studio in headless Chromium.

    python -m tests.make_screenshots

Starts the studio on the bundled samples (in a temporary workspace), drives it like a user and
writes PNGs to ``assets/screenshots/``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.browser import PROJECT_ROOT, chromium_browser, chromium_page, running_studio

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
        page.locator('#annotator button[aria-label="Create box"]').click()
        canvas = page.locator("#annotator canvas").first.bounding_box()
        page.mouse.move(canvas["x"] + canvas["width"] * 0.62, canvas["y"] + canvas["height"] * 0.55)
        page.mouse.down()
        page.mouse.move(canvas["x"] + canvas["width"] * 0.8, canvas["y"] + canvas["height"] * 0.98, steps=8)
        page.mouse.up()
        page.wait_for_function("document.querySelector('#annotate-status').innerText.includes('2 boxes')")
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
    conflict_and_problems()
    print(f"wrote {', '.join(str(p.relative_to(PROJECT_ROOT)) for p in sorted(OUT.glob('*.png')))}")


def conflict_and_problems() -> None:
    """Two people saving one sample (the conflict choice), and a folder with bad files (the problems list)."""
    from tests.reliability.helpers import spoil

    work = Path(tempfile.mkdtemp(prefix="segstudio-shots-"))
    data = work / "samples"
    shutil.copytree(PROJECT_ROOT / "assets" / "samples", data)
    with running_studio("--data", str(data), "--workspace", str(work / "ws")) as url, chromium_browser() as browser:
        pages = [browser.new_context(viewport={"width": 1400, "height": 900}).new_page() for _ in range(2)]
        for page in pages:
            page.goto(url)
            page.get_by_role("tab", name="Annotate").click()
            page.locator("#annotate-sample input").click()
            page.get_by_role("option", name="coffee").click()
            page.wait_for_function("document.querySelector('#annotate-status').innerText.includes('coffee')")
        for page, (x0, x1) in zip(pages, ((0.3, 0.45), (0.55, 0.7)), strict=True):
            page.locator('#annotator button[aria-label="Create box"]').click()
            canvas = page.locator("#annotator canvas").first.bounding_box()
            page.mouse.move(canvas["x"] + canvas["width"] * x0, canvas["y"] + canvas["height"] * 0.1)
            page.mouse.down()
            page.mouse.move(canvas["x"] + canvas["width"] * x1, canvas["y"] + canvas["height"] * 0.35, steps=8)
            page.mouse.up()
            page.wait_for_function("document.querySelector('#annotate-status').innerText.includes('2 boxes')")
        pages[1].locator("#save").click()
        pages[1].wait_for_function("document.querySelector('#save-status').innerText.includes('Saved')")
        pages[0].locator("#save").click()
        try:
            pages[0].wait_for_function("(document.querySelector('#annotate-conflict-text')?.innerText || '').includes('changed')")
        except Exception:
            pages[0].screenshot(path="/tmp/ui/conflict_fail.png", full_page=True)
            raise
        pages[0].wait_for_timeout(1500)
        pages[0].screenshot(path=str(OUT / "conflict.png"))
    spoil(data)
    with running_studio("--data", str(data), "--workspace", str(work / "ws2")) as url, chromium_page(1400, 900) as page:
        page.goto(url)
        page.locator("#sample-gallery .thumbnail-item").first.wait_for(timeout=30_000)
        page.locator("#file-problems").get_by_text("File problems").click()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(OUT / "problems.png"), full_page=True)


if __name__ == "__main__":
    main()
