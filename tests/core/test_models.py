from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.device import DevicePolicy, resolve_policy
from core.errors import InvalidInput, ModelUnavailable
from core.models import ModelRegistry, ModelSpec, default_registry, default_specs, models_dir
from tests.conftest import PROJECT_ROOT

CPU = DevicePolicy("cpu", "float32")


def _tiny_clip_spec(model_id="tiny-clip", repo="tests/tiny-clip"):
    return ModelSpec(model_id, repo, "text-encoder", "transformers:CLIPTextModel",
                     (("config.json",), ("model.safetensors", "pytorch_model.bin")))  # fmt: skip


def _save_tiny_clip(folder):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=20)  # fmt: skip
    model = CLIPTextModel(config)
    model.save_pretrained(folder)
    return model


def test_tiny_model_saved_with_save_pretrained_loads_back_through_the_registry():
    import torch

    registry = ModelRegistry([_tiny_clip_spec()])
    assert registry.status("tiny-clip").state == "missing"
    original = _save_tiny_clip(models_dir() / "tests/tiny-clip")
    status = registry.status("tiny-clip")
    assert status.available and status.source == "models dir"
    loaded = registry.load("tiny-clip", CPU)
    assert type(loaded).__name__ == "CLIPTextModel" and not loaded.training
    ids = torch.tensor([[1, 5, 7, 2]])
    with torch.no_grad():
        assert torch.allclose(original(ids).last_hidden_state, loaded(ids).last_hidden_state)
    assert registry.load("tiny-clip", CPU) is loaded  # cached, not loaded twice
    assert registry.status("tiny-clip").state == "loaded"


def test_diffusers_model_loads_through_the_same_path():
    from diffusers import UNet2DModel

    spec = ModelSpec("tiny-unet", "tests/tiny-unet", "unet", "diffusers:UNet2DModel",
                     (("config.json",), ("diffusion_pytorch_model.safetensors",)))  # fmt: skip
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)  # fmt: skip
    unet.save_pretrained(models_dir() / "tests/tiny-unet")
    loaded = ModelRegistry([spec]).load("tiny-unet", CPU)
    assert type(loaded).__name__ == "UNet2DModel" and loaded.config.block_out_channels == [32, 64]


def test_weights_in_the_hugging_face_cache_layout_are_found(isolated_dirs):
    snapshot = isolated_dirs / "hf" / "models--tests--tiny-clip" / "snapshots" / "abc123"
    _save_tiny_clip(snapshot)
    (isolated_dirs / "hf" / "models--tests--tiny-clip" / "refs").mkdir()
    (isolated_dirs / "hf" / "models--tests--tiny-clip" / "refs" / "main").write_text("abc123")
    registry = ModelRegistry([_tiny_clip_spec()])
    status = registry.status("tiny-clip")
    assert status.available and status.source == "hf cache" and status.folder == snapshot
    assert type(registry.load("tiny-clip", CPU)).__name__ == "CLIPTextModel"


def test_missing_weights_message_names_the_folder_and_the_files():
    registry = ModelRegistry([_tiny_clip_spec()], allow_downloads=False)
    with pytest.raises(ModelUnavailable) as err:
        registry.load("tiny-clip", CPU)
    message = str(err.value)
    assert str(models_dir() / "tests/tiny-clip") in message
    assert "config.json, model.safetensors (or pytorch_model.bin)" in message
    assert "--allow-downloads" in message


def test_partial_folders_are_reported_as_partial(tmp_path):
    registry = ModelRegistry([_tiny_clip_spec()])
    folder = models_dir() / "tests/tiny-clip"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    status = registry.status("tiny-clip")
    assert status.state == "partial" and status.missing == ("model.safetensors",)


def test_corrupt_weights_raise_model_unavailable_and_keep_the_cache(tmp_path):
    registry = ModelRegistry([_tiny_clip_spec("good", "tests/good"), _tiny_clip_spec("bad", "tests/bad")])
    _save_tiny_clip(models_dir() / "tests/good")
    good = registry.load("good", CPU)
    bad = models_dir() / "tests/bad"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text(json.dumps({"model_type": "clip_text_model"}))
    (bad / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelUnavailable, match="could not be loaded from"):
        registry.load("bad", CPU)
    assert registry.loaded_ids() == ["good"] and registry.load("good", CPU) is good


def test_lru_keeps_only_the_most_recent_models():
    specs = [_tiny_clip_spec(f"m{i}", f"tests/m{i}") for i in range(3)]
    registry = ModelRegistry(specs, capacity=2)
    for i in range(3):
        _save_tiny_clip(models_dir() / f"tests/m{i}")
    registry.load("m0", CPU)
    registry.load("m1", CPU)
    registry.load("m0", CPU)  # m0 is now the most recent
    registry.load("m2", CPU)
    assert registry.loaded_ids() == ["m0", "m2"]
    registry.unload("m0")
    assert registry.loaded_ids() == ["m2"]


def test_callable_loaders_receive_the_folder_and_policy():
    seen = {}

    def loader(folder, policy):
        seen.update(folder=folder, policy=policy)
        return "model"

    registry = ModelRegistry([ModelSpec("fn", "tests/fn", "x", loader, (("weights.bin",),))])
    (models_dir() / "tests/fn").mkdir(parents=True)
    (models_dir() / "tests/fn" / "weights.bin").write_bytes(b"1")
    assert registry.load("fn", CPU) == "model" and seen["folder"] == models_dir() / "tests/fn" and seen["policy"] == CPU


def test_unknown_ids_and_bad_capacity_are_refused():
    with pytest.raises(InvalidInput, match="unknown model 'nope'; registered: tiny-clip"):
        ModelRegistry([_tiny_clip_spec()]).status("nope")
    with pytest.raises(InvalidInput, match="at least 1"):
        ModelRegistry(capacity=0)


def test_default_registry_lists_each_backend_and_nothing_is_available_offline():
    ids = [s.id for s in default_specs()]
    assert len(ids) == len(set(ids))
    for expected in ("sam-vit-base", "hed", "pidinet", "lineart", "teed", "blip-captioner", "sd15",
                     "controlnet-sd15-seg", "t2i-adapter-sdxl-lineart", "sdxl"):  # fmt: skip
        assert expected in ids
    assert {s.state for s in default_registry().statuses()} == {"missing"}


def test_device_policy_is_cpu_fp32_without_cuda_and_validates_names():
    import torch

    policy = resolve_policy("cpu")
    assert policy == CPU and policy.torch_dtype == torch.float32
    if not torch.cuda.is_available():
        assert resolve_policy("auto") == CPU
        with pytest.raises(InvalidInput, match="no CUDA device"):
            resolve_policy("cuda")
    with pytest.raises(InvalidInput, match="unknown device 'tpu'"):
        resolve_policy("tpu")


def test_models_command_prints_every_model_with_its_folder(isolated_dirs):
    out = subprocess.run([sys.executable, "-m", "core.cli", "models", "--json"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, check=True)  # fmt: skip
    rows = json.loads(out.stdout)
    assert [r["id"] for r in rows] == [s.id for s in default_specs()]
    sam = next(r for r in rows if r["id"] == "sam-vit-base")
    assert sam["state"] == "missing" and sam["folder"] == str(isolated_dirs / "models" / "facebook" / "sam-vit-base")
