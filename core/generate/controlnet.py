"""ControlNet generation (SD 1.5 and SDXL) through diffusers, offline, from the model registry."""

from __future__ import annotations

import numpy as np

from core.device import DevicePolicy
from core.generate.diffusion import DiffusionSettings, GenerationResult, generate_with
from core.models import ModelRegistry
from core.progress import CancelToken, ProgressFn

BACKEND = "controlnet"
PIPELINES = {"sd15": "StableDiffusionControlNetPipeline", "sdxl": "StableDiffusionXLControlNetPipeline"}


def generate(
    condition: np.ndarray,
    settings: DiffusionSettings,
    model_id: str,
    *,
    registry: ModelRegistry | None = None,
    policy: DevicePolicy | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> GenerationResult:
    """Images from a condition image and a prompt with a ControlNet.

    Args:
        condition: ``H x W x 3 uint8`` condition image (a prior from the Priors tab or ``segstudio priors``).
        settings: prompt, steps, guidance, conditioning scale, size, seeds, batch size, memory options.
        model_id: a registry ControlNet (``controlnet-sd15-canny``, ``controlnet-sdxl-canny``, ...); its base
            model comes from the registry too.

    Returns:
        the images (``h x w x 3 uint8``) and the settings record.

    Raises:
        ModelUnavailable: weights missing. Cancelled: ``cancel`` set during denoising.
    """
    return generate_with(BACKEND, PIPELINES, "controlnet", "controlnet_conditioning_scale", condition, settings, model_id,
                         registry=registry, policy=policy, progress=progress, cancel=cancel)  # fmt: skip
