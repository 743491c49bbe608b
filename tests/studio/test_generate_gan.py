"""The Generate tab's gan backend: the run picker (the dataset's runs plus a typed folder), the message and the
greyed Generate button when no run exists, label2image on the chosen sample's map or on kept recombinations,
pair samples, and keeping results (controller tests, and one in headless Chromium)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import InvalidInput
from studio.app import StudioConfig, build_app
from tests.browser import CHROMIUM, chromium_page, running_studio
from tests.core.generate.gan_runs import gan_toy_dataset, one_torch_thread, tiny_run

pytest.importorskip("torch")


@pytest.fixture
def toy(tmp_path):
    return gan_toy_dataset(tmp_path / "toy")


def test_the_gan_backend_from_the_tab(toy, tmp_path):
    from core.labels.overlay import Recombined
    from core.labels.recombine import RecombinedSample, keep_samples

    app = build_app(StudioConfig.for_data(toy, tmp_path / "ws"))
    generate = app.generate
    assert generate.model_choices("gan") == []
    note, ok = generate.gan_status(None)
    assert not ok and "No GAN run yet" in note and "Train tab" in note and "segstudio train" in note
    with pytest.raises(InvalidInput, match="No GAN run yet"):
        generate.run_gan("s", "", "sample", "toy_0000", 0, 2, lambda f, m="": None)

    with one_torch_thread():
        run = tiny_run("label2image", toy, generate.runs_root / "l2i", tmp_path / "cache")
        pair = tiny_run("pair", toy, tmp_path / "elsewhere" / "pair", tmp_path / "cache")
        assert generate.model_choices("gan") == [("l2i · label2image · step 2/2", str(run))]
        assert generate.model_status("gan", str(run)).startswith("Ready: label2image run `l2i` at step 2")
        items = generate.run_gan("s", str(run), "sample", "toy_0001", 3, 2, lambda f, m="": None)
        assert len(items) == 2 and items[0][0].shape == (32, 64, 3)  # the image beside its label map
        assert items[1][1] == "gan label2image · toy_0001 · seed 4 #1"
        assert generate.keep("s", None) == (["kept_gan_000001", "kept_gan_000002"], [])
        kept = tmp_path / "ws" / "generated"
        record = json.loads((kept / "manifest.jsonl").read_text().splitlines()[0])
        assert record["settings"]["run"] == str(run.resolve()) and record["seed"] == 3 and record["source"] == "toy_0001"
        assert (kept / "SegmentationClass" / "kept_gan_000001.png").is_file()

        # label maps kept in the Label maps tab
        with pytest.raises(InvalidInput, match="no label map is kept"):
            generate.run_gan("s", str(run), "recombined", None, 0, 1, lambda f, m="": None)
        bands = np.zeros((20, 24), np.uint8)
        bands[10:] = 1
        keep_samples(generate.recombined_dir, generate.classes,
                     [RecombinedSample("r", Recombined(bands, None, []), {"mode": "reconstruct", "seed": 0})])  # fmt: skip
        items = generate.run_gan("s", str(run), "recombined", None, 0, 2, lambda f, m="": None)
        assert [caption.split(" · ")[1] for _, caption in items] == ["kept_reconstruct_000001"] * 2
        result = generate.per_session.peek("s", "results")[0]
        assert result.result.label_map.tobytes() == bands.tobytes()

        # a pair run typed as a folder makes new samples; the sample is not needed
        assert "makes new samples" in generate.model_status("gan", str(pair))
        items = generate.run_gan("s", str(pair), "sample", None, 0, 3, lambda f, m="": None)
        assert len(items) == 3 and "gan pair · new sample · seed 0 #0" == items[0][1]
        note = generate.model_status("gan", str(tmp_path / "nowhere"))
        assert note.startswith("**Unavailable.**") and "is not a folder" in note


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian package `chromium`; .ci/run installs it)"
)
def test_gan_backend_in_the_browser(toy, tmp_path):
    from core.train.runs import runs_root
    from core.workspace import dataset_cache_dir

    ws = tmp_path / "ws"
    with (
        running_studio("--data", str(toy), "--workspace", str(ws)) as url,
        chromium_page(1400, 1100) as page,
    ):
        page.goto(url)
        page.get_by_role("tab", name="Generate").click()
        page.locator("#gen-source img").first.wait_for(timeout=30_000)
        page.locator("#gen-backend label", has_text="gan").click()
        page.wait_for_function("document.querySelector('#gen-model-note').innerText.includes('No GAN run yet')",
                               timeout=30_000)  # fmt: skip
        assert "Train tab" in page.locator("#gen-model-note").inner_text()
        page.wait_for_function("document.querySelector('#gen-run').disabled", timeout=10_000)
        # a run appears (the Train tab, or segstudio train, wrote it): listed after a refresh, then used
        tiny_run("label2image", toy, runs_root(dataset_cache_dir(toy, ws)) / "l2i", tmp_path / "cache")
        page.locator("#gen-gan-refresh").click()
        page.wait_for_function("document.querySelector('#gen-model-note').innerText.includes('Ready: label2image')",
                               timeout=30_000)  # fmt: skip
        page.wait_for_function("!document.querySelector('#gen-run').disabled", timeout=10_000)
        page.locator("#gen-run").click()
        page.locator("#gen-results img").first.wait_for(timeout=90_000)
        page.locator("#gen-keep-all").click()
        page.wait_for_function("document.querySelector('#gen-kept-note').innerText.includes('kept_gan_000004')",
                               timeout=30_000)  # fmt: skip
    lines = [json.loads(line) for line in (ws / "generated" / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all(r["mode"] == "gan" and r["kind"] == "label2image" for r in lines)
    assert [r["seed"] for r in lines] == [0, 1, 2, 3] and len({r["source"] for r in lines}) == 1
