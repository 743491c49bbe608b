"""The diffusion backends with tiny random pipelines, two steps on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.device import DevicePolicy
from core.errors import Cancelled, InvalidInput, ModelUnavailable
from core.generate import controlnet, t2i_adapter
from core.generate.diffusion import DiffusionSettings, output_size
from core.models import ModelRegistry, default_specs
from core.progress import CancelToken
from tests.conftest import PROJECT_ROOT
from tests.core.generate.tiny import (
    SIZE,
    save_tiny_adapter,
    save_tiny_controlnet,
    save_tiny_sd15,
    save_tiny_sdxl,
    save_tiny_sdxl_adapter,
    save_tiny_sdxl_controlnet,
)

CPU = DevicePolicy("cpu", "float32")
BACKENDS = [
    (controlnet, "controlnet-sd15-canny"),
    (t2i_adapter, "t2i-adapter-sd15-sketch"),
    (controlnet, "controlnet-sdxl-canny"),
    (t2i_adapter, "t2i-adapter-sdxl-lineart"),
]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """The tiny pipeline parts saved once for the module (the folders the registry looks in)."""
    import os

    folder = tmp_path_factory.mktemp("tiny-models")
    old = os.environ.get("SEGSTUDIO_MODELS")
    os.environ["SEGSTUDIO_MODELS"] = str(folder)
    save_tiny_sd15()
    save_tiny_controlnet()
    save_tiny_adapter()
    save_tiny_sdxl()
    save_tiny_sdxl_controlnet()
    save_tiny_sdxl_adapter()
    if old is None:
        os.environ.pop("SEGSTUDIO_MODELS")
    else:
        os.environ["SEGSTUDIO_MODELS"] = old
    return folder


@pytest.fixture
def registry(tiny_models, monkeypatch):
    monkeypatch.setenv("SEGSTUDIO_MODELS", str(tiny_models))
    return ModelRegistry(default_specs())


def _condition():
    cond = np.zeros((SIZE, SIZE, 3), np.uint8)
    cond[8:24, 8:24] = 255
    return cond


def _settings(**kwargs):
    return DiffusionSettings(**({"prompt": "a cat; cat", "steps": 2, "width": SIZE, "height": SIZE} | kwargs))


@pytest.mark.parametrize("backend, model_id", BACKENDS)
def test_outputs_shapes_determinism_and_record(registry, backend, model_id):
    result = backend.generate(
        _condition(), _settings(seed=7, count=3, batch_size=2), model_id, registry=registry, policy=CPU
    )
    assert [i.shape for i in result.images] == [(SIZE, SIZE, 3)] * 3 and result.images[0].dtype == np.uint8
    assert result.seeds == [7, 8, 9] and not np.array_equal(result.images[0], result.images[1])
    again = backend.generate(
        _condition(), _settings(seed=7, count=3, batch_size=2), model_id, registry=registry, policy=CPU
    )
    assert all(np.array_equal(a, b) for a, b in zip(result.images, again.images, strict=True))
    record = result.record
    assert record["model"] == model_id and record["base"] == ("sdxl" if "sdxl" in model_id else "sd15")
    assert record["steps"] == 2 and record["pipeline"].endswith(("ControlNetPipeline", "AdapterPipeline"))
    assert (
        record["seeds"] == [7, 8, 9]
        and record["control_revision"].startswith("local:")
        and record["dtype"] == "float32"
    )


def test_settings_reach_the_pipeline(registry, monkeypatch):
    seen = {}
    import functools

    import diffusers

    original = diffusers.StableDiffusionControlNetPipeline.__call__

    @functools.wraps(original)  # keeps the signature, so the step callback is wired the same way
    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(diffusers.StableDiffusionControlNetPipeline, "__call__", spy)
    settings = _settings(negative_prompt="ugly", guidance_scale=3.5, conditioning_scale=0.6, steps=3)
    controlnet.generate(_condition(), settings, "controlnet-sd15-canny", registry=registry, policy=CPU)
    assert seen["prompt"] == "a cat; cat" and seen["negative_prompt"] == "ugly" and seen["num_inference_steps"] == 3
    assert seen["guidance_scale"] == 3.5 and seen["controlnet_conditioning_scale"] == 0.6
    assert (seen["height"], seen["width"]) == (SIZE, SIZE)


@pytest.mark.parametrize("backend, model_id", BACKENDS)
def test_cancellation_mid_run(registry, backend, model_id):
    token = CancelToken()
    steps = []

    def progress(fraction, message=""):
        steps.append(fraction)
        if fraction and fraction >= 0.25:
            token.cancel()

    with pytest.raises(Cancelled, match="cancelled"):
        backend.generate(_condition(), _settings(steps=4), model_id, registry=registry, policy=CPU, progress=progress,
                         cancel=token)  # fmt: skip
    assert steps[-1] < 1.0


def test_missing_weights_and_bad_settings():
    registry = ModelRegistry(default_specs())
    with pytest.raises(ModelUnavailable, match="stable-diffusion-v1-5"):
        controlnet.generate(_condition(), _settings(), "controlnet-sd15-canny", registry=registry, policy=CPU)
    with pytest.raises(InvalidInput, match="is a controlnet, not a t2i-adapter"):
        t2i_adapter.generate(_condition(), _settings(), "controlnet-sd15-canny", registry=registry, policy=CPU)
    with pytest.raises(InvalidInput, match="prompt is empty"):
        controlnet.generate(_condition(), _settings(prompt=" "), "controlnet-sd15-canny", registry=registry, policy=CPU)
    with pytest.raises(InvalidInput, match="steps"):
        _settings(steps=0)
    with pytest.raises(InvalidInput, match="multiples of 8"):
        _settings(width=100)


def test_output_size_keeps_the_aspect_ratio_at_the_native_side():
    assert output_size((300, 451), DiffusionSettings("x"), "sd15") == (344, 512)
    assert output_size((300, 451), DiffusionSettings("x"), "sdxl") == (680, 1024)
    assert output_size((300, 451), DiffusionSettings("x", width=256), "sd15") == (168, 256)


def test_generate_command_pairs_generated_images_with_label_maps(registry, tiny_models, tmp_path, samples_copy):
    import os

    env = {**os.environ, "SEGSTUDIO_MODELS": str(tiny_models)}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "core.cli", "generate", str(samples_copy), "--backend", "controlnet",
                           "--model", "controlnet-sd15-canny", "--count", "2", "--steps", "2", "--width", "32",
                           "--height", "32", "--seed", "4", "--out", str(out)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [line["source"] for line in lines] == ["astronaut", "chelsea"] and [line["seed"] for line in lines] == [4, 5]
    assert lines[0]["settings"]["prompt"] == "person" and lines[0]["condition"]["source"] == "computed"
    from core.io.images import image_size

    assert image_size(out / "JPEGImages" / "controlnet_000001.jpg") == (300, 451)  # chelsea's size
    empty = {**os.environ, "SEGSTUDIO_MODELS": str(tmp_path / "no-models")}
    missing = subprocess.run([sys.executable, "-m", "core.cli", "generate", str(samples_copy), "--backend", "t2i-adapter",
                              "--model", "t2i-adapter-sdxl-lineart", "--out", str(tmp_path / "x")], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, env=empty, timeout=120)  # fmt: skip
    assert (
        missing.returncode == 2
        and "stable-diffusion-xl-base-1.0" in missing.stderr
        and "Traceback" not in missing.stderr
    )
