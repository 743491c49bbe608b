from __future__ import annotations

import urllib.error
import urllib.request

import gradio as gr
import numpy as np
import pytest

from core.errors import InvalidInput
from core.io.images import load_image
from studio.app import StudioConfig, build_app, launch_kwargs
from studio.errors import shows_errors
from studio.tabs.dataset import class_filter_choices, gallery_page, render_sample
from studio.tabs.models import models_html


@pytest.fixture
def ctx(samples_copy):
    return build_app(StudioConfig.for_data(samples_copy)).studio_context


def test_gallery_lists_every_sample_and_filters_by_class(ctx):
    items, ids, info, page = gallery_page(ctx, [], 0)
    assert ids == ["astronaut", "chelsea", "coffee", "grace_hopper"] and page == 0
    assert info.startswith("4 of 4 samples")
    thumb, caption = items[1]
    assert caption == "chelsea · cat · ✓ done" and load_image(thumb).shape[2] == 3
    assert gallery_page(ctx, ["person"], 0)[1] == ["astronaut", "grace_hopper"]
    assert gallery_page(ctx, ["person", "cat"], 0)[1] == []
    assert gallery_page(ctx, [], 99)[3] == 0  # pages are clamped
    with pytest.raises(InvalidInput, match="unknown class 'unicorn'"):
        gallery_page(ctx, ["unicorn"], 0)


def test_filter_choices_count_samples_per_class(ctx):
    assert ("person (2)", "person") in class_filter_choices(ctx)
    assert ("cat (1)", "cat") in class_filter_choices(ctx)


def test_render_overlays_the_label_map_with_the_chosen_opacity(ctx):
    plain, _, _ = render_sample(ctx, "chelsea", 0.0, False)
    tinted, details, legend = render_sample(ctx, "chelsea", 0.8, False)
    image = load_image(ctx.dataset.get("chelsea").image_path)
    assert np.array_equal(plain, image)
    assert plain.shape == tinted.shape and not np.array_equal(plain, tinted)
    assert "451×300" in details and "label map" in details
    assert "data-class='cat'" in legend and "rgb(64, 0, 0)" in legend  # VOC colour of cat
    boxed, _, _ = render_sample(ctx, "grace_hopper", 0.5, True)
    assert not np.array_equal(boxed, load_image(ctx.dataset.get("grace_hopper").image_path))


def test_sample_without_label_map_says_so(ctx):
    _, details, legend = render_sample(ctx, "grace_hopper", 0.5, True)
    assert "no label map yet" in details and "data-class='person'" in legend and "1 box" in legend


def test_models_page_greys_out_missing_models_with_the_install_message(ctx):
    page = models_html(ctx)
    assert "0 of" in page and "class='unavailable' data-model='sam-vit-base'" in page
    assert "facebook/sam-vit-base" in page and "--allow-downloads" in page


def test_studio_errors_become_gradio_errors_with_the_message_only():
    @shows_errors
    def handler(x):
        raise InvalidInput(f"bad value {x} <b>")

    with pytest.raises(gr.Error) as err:
        handler(3)
    assert err.value.message == "bad value 3 &lt;b&gt;"

    @shows_errors
    def generator():
        yield 1
        raise InvalidInput("late")

    with pytest.raises(gr.Error, match="late"):
        list(generator())


def test_server_serves_dataset_files_but_nothing_outside(samples_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-tmp"))
    config = StudioConfig.for_data(samples_copy, port=None)
    demo = build_app(config)
    kwargs = launch_kwargs(config) | {"server_port": None, "prevent_thread_lock": True, "quiet": True}
    demo.launch(**kwargs)
    try:
        base = demo.local_url.rstrip("/")
        inside = samples_copy.resolve() / "JPEGImages" / "chelsea.jpg"
        with urllib.request.urlopen(f"{base}/gradio_api/file={inside}") as response:
            assert response.status == 200 and response.read() == inside.read_bytes()
        outside = tmp_path / "secret.txt"
        outside.write_text("secret")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/gradio_api/file={outside}")
        assert err.value.code in (403, 404)
        assert kwargs["server_name"] == "127.0.0.1" and kwargs["share"] is False
    finally:
        demo.close()
