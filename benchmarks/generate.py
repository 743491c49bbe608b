"""Generation speed.

    python benchmarks/generate.py [--seconds 5] [--skip-gpu]

1. Compositing at 512 x 512 with Gaussian blending (two objects per image, one process): images per second,
   next to a straightforward implementation measured in the same run (warping whole source images and
   masks to the target size and blurring a full-size alpha for every object). Target >= 100 images/s.
2. On a CUDA machine only (skipped otherwise): SD 1.5 ControlNet, 512 x 512, 30 steps, batch 4, fp16,
   with randomly initialised full-size weights (speed does not depend on the weights' values): SegStudio's
   pipeline settings (core/device.py's CUDA policy: fp16, channels-last UNet and ControlNet) next to
   diffusers' plain defaults (fp32 as loaded) on the same machine, images per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import calls_per_second  # noqa: E402
from core.generate.composite import CompositeParams, blend_alpha, composite  # noqa: E402
from core.labels.overlay import Placement, sample_transform  # noqa: E402
from core.labels.regions import class_components  # noqa: E402

SIZE = 512


def scene(rng: np.random.Generator):
    background = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[380:] = 11
    source = np.zeros((SIZE, SIZE), np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    source[((yy - 200) / 90.0) ** 2 + ((xx - 260) / 60.0) ** 2 <= 1] = 15
    source_image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return background, labels, source, source_image, class_components(source, 15, image=source_image)


def compositing_rate(seconds: float) -> tuple[float, float]:
    import cv2

    rng = np.random.default_rng(0)
    background, labels, source, source_image, objects = scene(rng)
    params = CompositeParams(placement=Placement(mode="random", max_translate=0.5, scale=(0.6, 1.2), max_rotate=15),
                             objects=(2, 2), max_truncation=1.0, max_overlap=1.0, blending="gaussian", blend_size=3)  # fmt: skip

    def ours(i: int) -> None:
        composite(background, labels, objects, params, np.random.default_rng(i))

    def anchor(i: int) -> None:
        r = np.random.default_rng(i)
        image, label_map = background.copy(), labels.copy()
        for _ in range(2):
            region = objects[0]
            t = sample_transform(region, (SIZE, SIZE), params.placement, r)
            x0, y0, _, _ = region.bbox
            m = t.matrix(region.mask.shape[1], region.mask.shape[0]) @ np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]])
            mask = cv2.warpAffine((source == 15).astype(np.uint8), m, (SIZE, SIZE), flags=cv2.INTER_NEAREST) > 0
            warped = cv2.warpAffine(source_image, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR)
            alpha = blend_alpha(mask, params, r)[..., None]
            image = np.clip(alpha * warped + (1 - alpha) * image, 0, 255).astype(np.uint8)
            label_map[mask] = 15

    return calls_per_second(ours, seconds), calls_per_second(anchor, seconds)


SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                 cross_attention_dim=768, attention_head_dim=8)  # fmt: skip


def gpu_rate(batch: int = 4, steps: int = 30, repeats: int = 3) -> tuple[float, float] | None:
    """(ours, plain diffusers) images/s for SD 1.5 ControlNet at 512 px, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionControlNetPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from tests.core.generate.tiny import write_tokenizer_files

    tok_dir = Path("/tmp/segstudio-bench-tokenizer")
    vocab = write_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)

    def build(dtype):
        unet = UNet2DConditionModel(**SD15_UNET)
        control = ControlNetModel.from_unet(unet)
        vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                            up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2)  # fmt: skip
        text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                            num_attention_heads=12, max_position_embeddings=77))  # fmt: skip
        pipe = StableDiffusionControlNetPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, controlnet=control,
                                                 scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                                 requires_safety_checker=False)  # fmt: skip
        return pipe.to("cuda", dtype)

    from PIL import Image

    condition = Image.new("RGB", (512, 512))

    def images_per_second(pipe, **kwargs) -> float:
        pipe(prompt="warm up", image=condition, num_inference_steps=2, num_images_per_prompt=batch, **kwargs)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            pipe(prompt="a photo", image=condition, num_inference_steps=steps, num_images_per_prompt=batch, **kwargs)
        torch.cuda.synchronize()
        return repeats * batch / (time.perf_counter() - start)

    plain = build(torch.float32)  # diffusers' defaults: weights as loaded (fp32), no other settings
    plain_rate = images_per_second(plain)
    del plain
    torch.cuda.empty_cache()
    ours = build(torch.float16)
    ours.unet.to(memory_format=torch.channels_last)
    ours.controlnet.to(memory_format=torch.channels_last)
    ours.set_progress_bar_config(disable=True)
    ours_rate = images_per_second(ours, output_type="np")
    return ours_rate, plain_rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--skip-gpu", action="store_true")
    args = parser.parse_args()
    ours, anchor = compositing_rate(args.seconds)
    ok = ours >= 100
    print(f"compositing 512x512, Gaussian blending, 2 objects: {ours:.0f} images/s | whole-frame warps and blurs "
          f"{anchor:.0f}/s | ratio {ours / anchor:.2f} (target >= 100/s: {'met' if ok else 'NOT met'})")  # fmt: skip
    if args.skip_gpu:
        return 0 if ok else 1
    rates = gpu_rate()
    if rates is None:
        print("SD 1.5 ControlNet on GPU: skipped (no CUDA device on this machine)")
    else:
        print(f"SD 1.5 ControlNet 512x512, 30 steps, batch 4, fp16: {rates[0]:.2f} images/s | diffusers defaults "
              f"{rates[1]:.2f} images/s | ratio {rates[0] / rates[1]:.2f}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
