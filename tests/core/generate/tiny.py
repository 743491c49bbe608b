"""Tiny, randomly initialised Stable Diffusion 1.5 parts, saved where the registry looks for the real ones.

UNet and VAE with ``block_out_channels=(32, 64)``, a 2-layer CLIP text model with a character-level
vocabulary written here, a DDIM scheduler, a tiny ControlNet and a tiny T2I-Adapter. Images of 32 x 32
pixels take a fraction of a second per step on a CPU.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

from core.models import models_dir

SIZE = 32


def write_tokenizer_files(folder: Path) -> int:
    """A character-level CLIP BPE vocabulary (no merges); returns the vocabulary size."""
    symbols = list(string.ascii_lowercase + string.digits + ",;.-'")
    tokens = ["<|startoftext|>", "<|endoftext|>"] + symbols + [s + "</w>" for s in symbols]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return len(tokens)


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)  # fmt: skip


def _tiny_text(folder: Path, projection_dim: int | None = None):
    """A character-level CLIP tokenizer (its files written beside ``folder``) and a 2-layer text config."""
    from transformers import CLIPTextConfig, CLIPTokenizer

    tok_dir = folder.parent / (folder.name + "-tokenizer-src")
    vocab_size = write_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    extra = {"projection_dim": projection_dim} if projection_dim else {}
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1, **extra)  # fmt: skip
    return tokenizer, config


def save_tiny_sd15(folder: Path | None = None) -> Path:
    """A tiny SD 1.5 pipeline folder (the registry's ``sd15`` place by default)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = folder or models_dir() / "stable-diffusion-v1-5" / "stable-diffusion-v1-5"
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=SIZE // 2, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
    )  # fmt: skip
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)  # fmt: skip
    tokenizer, config = _tiny_text(folder)
    vae, text_encoder = _tiny_vae(), CLIPTextModel(config)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def save_tiny_controlnet(repo: str = "lllyasviel/control_v11p_sd15_canny") -> Path:
    from diffusers import ControlNetModel

    torch.manual_seed(1)
    model = ControlNetModel(
        block_out_channels=(32, 64), layers_per_block=1, in_channels=4, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), conditioning_embedding_out_channels=(16, 32),
    )  # fmt: skip
    folder = models_dir() / repo
    model.save_pretrained(folder)
    return folder


def save_tiny_adapter(repo: str = "TencentARC/t2iadapter_sketch_sd15v2") -> Path:
    from diffusers import T2IAdapter

    torch.manual_seed(2)
    adapter = T2IAdapter(
        in_channels=3, channels=[32, 64], num_res_blocks=1, downscale_factor=2, adapter_type="full_adapter"
    )
    folder = models_dir() / repo
    adapter.save_pretrained(folder)
    return folder


SDXL_EXTRA = dict(attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
                  addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                  projection_class_embeddings_input_dim=80, cross_attention_dim=64)  # fmt: skip


def save_tiny_sdxl(folder: Path | None = None) -> Path:
    """A tiny SDXL pipeline folder (two text encoders) where the registry's ``sdxl`` belongs."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = folder or models_dir() / "stabilityai" / "stable-diffusion-xl-base-1.0"
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=SIZE // 2, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **SDXL_EXTRA)  # fmt: skip
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)  # fmt: skip
    tokenizer, config = _tiny_text(folder, projection_dim=32)
    vae = _tiny_vae()
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(config), text_encoder_2=CLIPTextModelWithProjection(config),
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def save_tiny_sdxl_controlnet(repo: str = "diffusers/controlnet-canny-sdxl-1.0") -> Path:
    from diffusers import ControlNetModel

    torch.manual_seed(3)
    model = ControlNetModel(block_out_channels=(32, 64), layers_per_block=2, in_channels=4,
                            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                            conditioning_embedding_out_channels=(16, 32), **SDXL_EXTRA)  # fmt: skip
    folder = models_dir() / repo
    model.save_pretrained(folder)
    return folder


def save_tiny_sdxl_adapter(repo: str = "TencentARC/t2i-adapter-lineart-sdxl-1.0") -> Path:
    from diffusers import T2IAdapter

    torch.manual_seed(4)
    adapter = T2IAdapter(
        in_channels=3, channels=[32, 64], num_res_blocks=2, downscale_factor=4, adapter_type="full_adapter_xl"
    )
    folder = models_dir() / repo
    adapter.save_pretrained(folder)
    return folder
