"""The Export tab: recipes saved in the workspace, inline recipe errors, run / cancel / resume, one run per folder,
and the review queue (controller tests without a browser, and one in headless Chromium with the A key)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import yaml

from core.errors import InvalidInput
from core.export.ledger import Ledger
from core.workspace import prepare_workspace
from studio.app import StudioConfig, build_app
from studio.tabs.export import ProgressAdapter, next_current, tab_wording
from tests.browser import CHROMIUM, PROJECT_ROOT, chromium_page, running_studio
from tests.reliability.helpers import tree_digest


@pytest.fixture
def app(samples_copy, tmp_path):
    return build_app(StudioConfig.for_data(samples_copy, tmp_path / "ws"))


@pytest.fixture
def export(app):
    return app.export


def _text(source, **changes) -> str:
    doc = {"source": str(source), "seed": 2, "generate": [{"backend": "composite", "count": 4}],
           "split": {"train": 0.5, "val": 0.5}, "formats": ["voc", "coco"]}  # fmt: skip
    return yaml.safe_dump({**doc, **changes}, sort_keys=False)


def _lines(path) -> list[str]:
    return path.read_text().split()


def test_the_default_recipe_is_for_the_open_dataset_and_checks(export, samples_copy):
    recipe = export.parse(export.default_recipe_text())
    assert recipe.source == str(samples_copy.resolve())
    assert recipe.formats == ("voc", "coco") and set(recipe.split) == {"train", "val"}
    assert [s.backend for s in recipe.generate] == ["composite"]
    assert export.check(export.default_recipe_text()).startswith("Recipe OK: 23 samples (3 real; step 1 composite: 20)")
    assert export.default_out("default").startswith(str(export.ctx.config.workspace.output_root))


def test_recipes_are_saved_in_the_workspace_and_load_back_with_their_comments(export, samples_copy, tmp_path):
    before = tree_digest(samples_copy)
    text = "# mine\n" + _text(samples_copy)
    path = export.save_recipe("mine", text)
    assert path == export.ctx.config.workspace.cache_root / "recipes" / "mine.yaml"
    assert path.is_relative_to(tmp_path / "ws") and not path.is_relative_to(samples_copy)
    assert export.saved_recipes() == ["mine"] and export.load_recipe("mine") == text
    export.save_recipe("mine", text.replace("seed: 2", "seed: 5"))  # saving again replaces it
    assert "seed: 5" in export.load_recipe("mine")
    with pytest.raises(InvalidInput, match="recipe name '../evil'"):
        export.save_recipe("../evil", text)
    with pytest.raises(InvalidInput, match="no saved recipe 'other'.*saved: mine"):
        export.load_recipe("other")
    export.run(text, str(tmp_path / "out"))
    assert tree_digest(samples_copy) == before  # neither the recipes nor the export touched the dataset


def test_recipe_errors_are_shown_inline_naming_the_key(app, export, samples_copy):
    with pytest.raises(InvalidInput, match="does not parse at line 2, column 10: mapping values are not allowed"):
        export.parse("seed: 1\nsource: a: b\n")
    with pytest.raises(InvalidInput, match="recipe: colour: unknown key; accepted: source, seed"):
        export.parse(_text(samples_copy, colour="red"))
    with pytest.raises(InvalidInput, match=r"generate\[0\].count: an integer 1..10000000, got 0"):
        export.parse(_text(samples_copy, generate=[{"backend": "composite", "count": 0}]))
    with pytest.raises(InvalidInput, match="formats: a list of voc, coco"):
        export.save_recipe("bad", _text(samples_copy, formats=["parquet"]))
    assert export.saved_recipes() == []  # a recipe that does not validate is not saved
    # the Check button's handler puts the message into the page (an HTML notice), not a toast
    (on_check,) = [f.fn for f in app.fns.values()
                   if f.name == "on_check" and [o.elem_id for o in f.outputs] == ["export-recipe-note"]]  # fmt: skip
    shown = on_check(_text(samples_copy, real="maybe"), "")
    assert "notice-error" in shown and "real: one of include, exclude" in shown
    fine = on_check(_text(samples_copy), "")
    assert "notice-info" in fine and "Recipe OK: 7 samples" in fine


def test_progress_reports_rate_and_time_left_of_this_run():
    now = [100.0]
    seen = []
    adapter = ProgressAdapter(lambda f, text: seen.append((f, text)), detail=lambda: "step 1 composite 3/8",
                              clock=lambda: now[0])  # fmt: skip
    adapter(None, "planning")
    now[0] = 102.0
    adapter(None, "checking models, classes and disk space")  # sampling starts here, 10 done before (resumed)
    now[0] = 104.0
    adapter(11 / 20, "sample 11/20")
    now[0] = 106.0
    adapter(12 / 20, "sample 12/20")
    assert seen[0] == (None, "planning")
    assert seen[-1] == (0.6, "sample 12/20 · step 1 composite 3/8 · 2.0 s per sample · about 0:16 left")
    now[0] = 108.0
    adapter(0.8, "sample 16/20")
    assert seen[-1][1].endswith("1.0 samples/s · about 0:04 left") and adapter.done == 16


def test_engine_advice_is_said_with_the_tab_buttons():
    said = tab_wording("/x holds this recipe's export already; pass --resume to finish it (finished jobs are kept), "
                       "or --force to start again")  # fmt: skip
    assert said.endswith("press Resume to finish it (finished jobs are kept), or press Start again")
    changed = tab_wording("the dataset changed since this export began; Pass --force to start again")
    assert changed.endswith("; Press Start again") and "--" not in said + changed
    assert next_current(["a", "b", "c"], "b", ["a", "c"], advance=True) == "c"
    assert next_current(["a", "b", "c"], "c", ["a", "b", "c"], advance=True) == "a"  # skip at the end wraps
    assert next_current(["a", "b"], "b", ["a", "b"], advance=False) == "b"
    assert next_current([], None, ["x"], advance=False) == "x" and next_current(["a"], "a", [], advance=True) is None


def test_cancel_then_resume_gives_the_same_export_as_one_run(export, samples_copy, tmp_path):
    text = _text(samples_copy, generate=[{"backend": "composite", "count": 10}])
    whole = export.run(text, str(tmp_path / "whole"))
    assert whole.summary.made == 13 and not whole.cancelled

    def cancel_after_four(fraction, message):
        if message.startswith("sample 4/"):
            export.cancel(str(tmp_path / "cut"))

    texts = []
    cut = export.run(text, str(tmp_path / "cut"), progress=lambda f, m: (texts.append(m), cancel_after_four(f, m)))
    assert cut.cancelled and cut.message.startswith("Cancelled after 4 of 13 samples; <b>Resume</b> finishes it")
    assert any("samples/s" in t or "s per sample" in t for t in texts) and any("left" in t for t in texts)
    assert "Resume" in export.out_status(text, str(tmp_path / "cut"))
    with pytest.raises(InvalidInput, match="press Resume to finish it") as refused:
        export.run(text, str(tmp_path / "cut"))
    assert "--" not in str(refused.value)
    resumed = export.run(text, str(tmp_path / "cut"), mode="resume")
    assert resumed.summary.skipped == 4 and resumed.summary.made == 9
    assert (tmp_path / "cut" / "manifest.jsonl").read_text() == (tmp_path / "whole" / "manifest.jsonl").read_text()

    def files(root):
        return {k: v for k, v in tree_digest(root).items() if "segstudio-export.sqlite" not in k}

    assert files(tmp_path / "cut") == files(tmp_path / "whole")
    rows = export.step_rows(str(tmp_path / "cut"))
    assert [r[:4] for r in rows] == [[0, "real", 3, 3], [1, "composite", 10, 10]]
    assert "finished export" in export.out_status(text, str(tmp_path / "cut"))
    other = text.replace("seed: 2", "seed: 3")
    assert "another recipe" in export.out_status(other, str(tmp_path / "cut"))
    assert "deletes the export" in export.restart_warning(str(tmp_path / "cut"))
    assert export.restart_warning(str(tmp_path / "empty")) == ""
    with pytest.raises(InvalidInput, match="holds the export of another recipe .* or press Start again to replace it"):
        export.run(other, str(tmp_path / "cut"))
    assert export.run(other, str(tmp_path / "cut"), mode="restart").summary.made == 13  # Start again


def test_start_again_asks_once_more_before_deleting_an_export(app, export, samples_copy, tmp_path):
    (on_restart,) = [f.fn for f in app.fns.values() if f.name == "on_restart"]
    text, out = _text(samples_copy), str(tmp_path / "out")
    assert "7 samples planned: 7 made now" in list(on_restart(text, out, 1, False, "local", "", 0.0))[-1][0]  # nothing to delete
    note, _, _, armed = list(on_restart(text, out, 1, False, "local", "", 0.0))[-1]
    assert "deletes the export" in note and "7 samples made" in note and armed > 0
    assert "7 samples planned: 7 made now, 0 done before" in list(on_restart(text, out, 1, False, "local", "", armed))[-1][0]


def test_one_export_per_folder_at_a_time_and_cancel_from_another_page(export, samples_copy, tmp_path):
    text, out = _text(samples_copy), str(tmp_path / "out")
    started, release = threading.Event(), threading.Event()
    result = {}

    def slow(fraction, message):
        if message.startswith("sample"):
            started.set()
            release.wait(10)

    worker = threading.Thread(target=lambda: result.setdefault("outcome", export.run(text, out, progress=slow)))
    worker.start()
    assert started.wait(20)
    with pytest.raises(InvalidInput, match="is running already .* press Cancel, or choose another output folder"):
        export.run(text, out, mode="resume")
    assert "running now" in export.out_status(text, out)
    assert export.cancel(out) == "Cancelling after the current sample…"  # any page may stop it
    release.set()
    worker.join(20)
    assert result["outcome"].cancelled and not export.running(out)
    assert export.cancel(out).startswith("No export is running")


def test_review_decisions_reach_the_ledger_and_the_final_split_files(export, samples_copy, tmp_path):
    text, out = _text(samples_copy, review=True), str(tmp_path / "out")
    first = export.run(text, out)
    assert first.waiting == 4 and "<b>4</b> generated samples wait for review" in first.message
    queue = export.queue(out)
    assert [i.output_id for i in queue] == [f"gen1_composite_{i:06d}" for i in range(4)]
    assert export.review_steps(out) == [("all steps", 0), ("step 1 · composite", 1)]
    view = export.view(out, queue[0])
    assert view.image.shape == view.labels.shape and view.image.dtype == np.uint8
    assert (
        view.source is not None
        and view.source.shape[2] == 3
        and queue[0].output_id in view.info
        and "class='legend'" in view.info
    )
    assert len(export.thumbnails(queue)) == 4 and max(export.thumbnails(queue)[0][0].shape[:2]) <= 160
    assert export.queue(out, step=2) == [] and len(export.queue(out, 1, 0.0, 1.0)) == 4
    assert export.decide(out, queue[0].job_id, "accept").endswith("accepted")
    assert export.decide(out, queue[1].job_id, "reject").endswith("rejected")
    assert export.decide(out, queue[2].job_id, "skip").endswith("skipped")
    ledger = Ledger(tmp_path / "out")
    try:
        assert ledger.review_counts() == {"pending": 2, "accepted": 1, "rejected": 1, "gate": 0}
    finally:
        ledger.close()
    with pytest.raises(InvalidInput, match="not waiting for review"):
        export.decide(out, queue[0].job_id, "reject")
    finished = export.run(text, out, mode="resume")  # Finish export
    assert finished.summary.made == 1 and finished.waiting == 3  # the rejected one's replacement waits too
    lists = tmp_path / "out" / "ImageSets" / "Segmentation"
    listed = _lines(lists / "train.txt") + _lines(lists / "val.txt")
    assert queue[0].output_id in listed and queue[1].output_id not in listed and queue[2].output_id not in listed
    assert [i.output_id for i in export.queue(out)][-1] == "gen1_composite_000004"
    rows = export.step_rows(out)
    assert rows[1][:7] == [1, "composite", 5, 1, 3, 1, 0]


# ---- in the browser ---------------------------------------------------------------------------


def _review_recipe(samples, count: int) -> str:
    return _text(samples, generate=[{"backend": "composite", "count": count}], review=True)


def _run_saved_review_recipe(page, url: str) -> None:
    """Open the Export tab, load the saved recipe ``review`` and press Run."""
    page.goto(url)
    page.get_by_role("tab", name="Export").click()
    page.locator("#export-saved input").click()
    page.get_by_role("option", name="review").click()
    page.locator("#export-load").click()
    page.wait_for_function("document.querySelector('#export-out textarea, #export-out input').value"
                           ".endsWith('exports/review')", timeout=30_000)  # fmt: skip
    page.locator("#export-run").click()


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
)
def test_run_a_review_recipe_and_accept_with_the_a_key(samples_copy, tmp_path):
    workspace = prepare_workspace(samples_copy, tmp_path / "ws")
    recipes = workspace.cache_root / "recipes"
    recipes.mkdir(parents=True)
    (recipes / "review.yaml").write_text(_review_recipe(samples_copy, 3))
    with (
        running_studio("--data", str(samples_copy), "--workspace", str(tmp_path / "ws")) as url,
        chromium_page(1400, 1100) as page,
    ):
        _run_saved_review_recipe(page, url)
        count = page.locator("#export-queue-count")
        page.wait_for_function("document.querySelector('#export-queue-count').innerText.includes('3 waiting')",
                               timeout=60_000)  # fmt: skip
        assert "samples planned" in page.locator("#export-run-note").inner_text()
        first = page.locator("#export-item-info").inner_text()
        assert "gen1_composite_000000" in first
        # typing in the recipe editor is not a shortcut
        page.locator("#export-recipe .cm-content").click()
        page.keyboard.press("End")
        page.keyboard.type(" a")
        page.wait_for_timeout(500)
        assert "3 waiting" in count.inner_text()
        page.locator("#export-queue-count").click()  # focus out of the editor
        page.keyboard.press("a")
        page.wait_for_function("document.querySelector('#export-queue-count').innerText.includes('2 waiting')",
                               timeout=30_000)  # fmt: skip
        assert "gen1_composite_000001" in page.locator("#export-item-info").inner_text()
        assert "accepted" in page.locator("#export-review-note").inner_text()
    ledger = Ledger(tmp_path / "ws" / "exports" / "review")
    try:
        assert ledger.review_counts()["accepted"] == 1
    finally:
        ledger.close()


def take_screenshots() -> None:
    """``python -m tests.studio.test_export_tab``: the README's pictures of the Export tab."""
    import shutil
    import tempfile
    from pathlib import Path

    shots = PROJECT_ROOT / "assets" / "screenshots"
    base = Path(tempfile.mkdtemp(prefix="segstudio-export-shots-"))
    samples = base / "samples"
    shutil.copytree(PROJECT_ROOT / "assets" / "samples", samples)
    workspace = prepare_workspace(samples, base / "ws")
    recipes = workspace.cache_root / "recipes"
    recipes.mkdir(parents=True)
    (recipes / "review.yaml").write_text(
        "# 12 composites that wait for a person's decision\n" + _review_recipe(samples, 12)
    )
    with (
        running_studio("--data", str(samples), "--workspace", str(base / "ws")) as url,
        chromium_page(1400, 1000) as page,
    ):
        _run_saved_review_recipe(page, url)
        page.wait_for_function("document.querySelector('#export-queue-count').innerText.includes('12 waiting')",
                               timeout=120_000)  # fmt: skip
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / "export.png"))
        page.locator("#export-queue-count").click()
        page.keyboard.press("a")
        page.wait_for_function("document.querySelector('#export-queue-count').innerText.includes('11 waiting')")
        page.wait_for_timeout(1500)
        page.mouse.move(5, 5)
        page.locator("#export-review").first.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.locator("#export-review").first.screenshot(path=str(shots / "export_review.png"))
    shutil.rmtree(base, ignore_errors=True)


def test_the_tab_runs_on_ray_to_the_same_export_as_on_this_machine(export, samples_copy, tmp_path):
    text = _text(samples_copy)
    local = export.run(text, str(tmp_path / "local"))
    on_ray = export.run(text, str(tmp_path / "ray"), runner="ray", workers=2)
    assert local.summary.made == on_ray.summary.made == 7
    assert (tmp_path / "ray" / "manifest.jsonl").read_text() == (tmp_path / "local" / "manifest.jsonl").read_text()


if __name__ == "__main__":
    take_screenshots()
