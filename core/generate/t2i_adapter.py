"""T2I-Adapter generation (SD 1.5 and SDXL) through diffusers, offline, from the model registry."""

from __future__ import annotations

import numpy as np

from core.device import DevicePolicy
from core.generate.diffusion import DiffusionSettings, GenerationResult, generate_with
from core.models import ModelRegistry
from core.progress import CancelToken, ProgressFn

BACKEND = "t2i-adapter"
PIPELINES = {"sd15": "StableDiffusionAdapterPipeline", "sdxl": "StableDiffusionXLAdapterPipeline"}


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
    """Images from a condition image and a prompt with a T2I-Adapter (see
    :func:`core.generate.controlnet.generate` for the arguments)."""
    return generate_with(BACKEND, PIPELINES, "adapter", "adapter_conditioning_scale", condition, settings, model_id,
                         registry=registry, policy=policy, progress=progress, cancel=cancel)  # fmt: skip
