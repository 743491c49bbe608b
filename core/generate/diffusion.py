"""What the ControlNet and T2I-Adapter backends share: settings, pipeline assembly through the model
registry, seeded batched generation with per-step progress and cancellation, and the settings record.

A control model (ControlNet or T2I-Adapter) names its base model in the registry (``ModelSpec.base``):
the pipeline is assembled from the base model's folder and the loaded control model, offline, and kept
in a one-entry cache (a second pipeline would double the memory of the first).
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.device import DevicePolicy, resolve_policy
from core.errors import Cancelled, InvalidInput, require_all
from core.models import ModelRegistry, default_registry
from core.progress import CancelToken, ProgressFn, no_progress

DEFAULT_NEGATIVE = "blurry, low quality, distorted, deformed, watermark, text"
MAX_SIDE = {"sd15": 768, "sdxl": 1536}
DEFAULT_SIDE = {"sd15": 512, "sdxl": 1024}


@dataclass(frozen=True)
class DiffusionSettings:
    """Every setting of one generation run.

    Attributes:
        prompt, negative_prompt: the text conditions (an empty prompt is filled per sample by the runner).
        steps: denoising steps.
        guidance_scale: classifier-free guidance.
        conditioning_scale: weight of the control (ControlNet / adapter conditioning scale).
        width, height: output size in pixels (multiples of 8); ``None``: the condition image's aspect ratio
            with the base model's native long side.
        seed: seed of the first image; image ``i`` uses ``seed + i``.
        count: images to make.
        batch_size: images per pipeline call.
        attention_slicing, vae_tiling, cpu_offload: memory savers (CUDA).
    """

    prompt: str
    negative_prompt: str = DEFAULT_NEGATIVE
    steps: int = 30
    guidance_scale: float = 7.5
    conditioning_scale: float = 1.0
    width: int | None = None
    height: int | None = None
    seed: int = 0
    count: int = 1
    batch_size: int = 1
    attention_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.prompt, str), f"the prompt must be text, got {type(self.prompt).__name__}"),
            (1 <= self.steps <= 200, f"steps must be 1..200, got {self.steps}"),
            (0 <= self.guidance_scale <= 50, f"guidance scale must be 0..50, got {self.guidance_scale}"),
            (0 <= self.conditioning_scale <= 5, f"conditioning scale must be 0..5, got {self.conditioning_scale}"),
            (1 <= self.count <= 10_000, f"count must be 1..10000, got {self.count}"),
            (1 <= self.batch_size <= 64, f"batch size must be 1..64, got {self.batch_size}"),
            (0 <= self.seed < 2**63, f"seed must be 0..2^63-1, got {self.seed}"),
        ]  # fmt: skip
        for size in (self.width, self.height):
            checks.append(
                (
                    size is None or (16 <= size <= 4096 and size % 8 == 0),
                    f"width and height must be multiples of 8 in 16..4096, got {size}",
                )
            )
        require_all(checks)

    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.count)]


@dataclass
class GenerationResult:
    """Images and how they were made.

    Attributes:
        images: ``H x W x 3 uint8`` RGB, one per seed.
        seeds: the seed of each image.
        record: the settings record (model ids and revisions, every parameter, seeds, device).
    """

    images: list[np.ndarray]
    seeds: list[int]
    record: dict = field(default_factory=dict)


def output_size(condition_hw: tuple[int, int], settings: DiffusionSettings, base: str) -> tuple[int, int]:
    """``(height, width)``: the settings' size, or the condition's aspect ratio at the base's native side."""
    if settings.width and settings.height:
        return settings.height, settings.width
    h, w = condition_hw
    side = DEFAULT_SIDE.get(base, 512)
    scale = side / max(h, w)
    rounded = (max(64, int(round(h * scale / 8)) * 8), max(64, int(round(w * scale / 8)) * 8))
    if settings.width:
        return max(64, int(round(settings.width * h / w / 8)) * 8), settings.width
    if settings.height:
        return settings.height, max(64, int(round(settings.height * w / h / 8)) * 8)
    return rounded


def revision_of(folder: Path) -> str:
    """The Hugging Face snapshot hash when the folder is one, else ``local:<folder name>``."""
    return folder.name if folder.parent.name == "snapshots" else f"local:{folder}"


_PIPELINES: dict[tuple, object] = {}
_PIPELINE_LOCK = threading.Lock()


def assemble_pipeline(
    pipeline_class_name: str,
    control_kwarg: str,
    control_id: str,
    registry: ModelRegistry,
    policy: DevicePolicy,
    settings: DiffusionSettings,
    progress: ProgressFn | None = None,
):
    """A diffusers pipeline of ``pipeline_class_name`` from the control model's base folder with the
    control model passed as ``control_kwarg`` (``controlnet`` or ``adapter``).

    Returns:
        ``(pipeline, record)`` where the record names the models and their revisions.

    Raises:
        ModelUnavailable: base or control weights missing (the message says where they go).
        InvalidInput: the control model has no base, or names an unknown one.
    """
    import diffusers

    spec = registry.spec(control_id)
    if not spec.base:
        raise InvalidInput(f"model {control_id!r} is not a ControlNet or T2I-Adapter (it names no base model)")
    base_folder = registry.require(spec.base, progress)
    control_folder = registry.require(control_id, progress)
    key = (pipeline_class_name, str(base_folder), control_id, policy, settings.cpu_offload)
    with _PIPELINE_LOCK:
        pipe = _PIPELINES.get(key)
        if pipe is None:
            control = registry.load(control_id, policy, progress)
            (progress or no_progress)(None, f"assembling {pipeline_class_name} from {spec.base} and {control_id}")
            cls = getattr(diffusers, pipeline_class_name)
            extra = (
                {"safety_checker": None, "requires_safety_checker": False} if "XL" not in pipeline_class_name else {}
            )
            pipe = cls.from_pretrained(str(base_folder), **{control_kwarg: control}, dtype=policy.torch_dtype,
                                       local_files_only=True, **extra)  # fmt: skip
            if settings.cpu_offload and policy.is_cuda:
                pipe.enable_model_cpu_offload()
            else:
                pipe = pipe.to(policy.device)
            if policy.is_cuda:  # convolution-heavy networks run faster channels-last on tensor cores
                import torch

                pipe.unet.to(memory_format=torch.channels_last)
                getattr(pipe, control_kwarg).to(memory_format=torch.channels_last)
            pipe.set_progress_bar_config(disable=True)
            _PIPELINES.clear()
            _PIPELINES[key] = pipe
    pipe.vae.enable_tiling() if settings.vae_tiling else pipe.vae.disable_tiling()
    pipe.enable_attention_slicing() if settings.attention_slicing else pipe.disable_attention_slicing()
    record = {
        "base": spec.base, "base_repo": registry.spec(spec.base).repo_id, "base_revision": revision_of(base_folder),
        "control": control_id, "control_repo": spec.repo_id, "control_revision": revision_of(control_folder),
        "pipeline": pipeline_class_name, "diffusers": diffusers.__version__,
    }  # fmt: skip
    return pipe, record


def _step_callback(pipe, total: int, done: list[int], progress: ProgressFn, cancel: CancelToken | None) -> dict:
    """Keyword arguments wiring per-step progress and cancellation into a pipeline call."""
    parameters = inspect.signature(pipe.__call__).parameters

    def report() -> None:
        done[0] += 1
        progress(min(done[0] / total, 1.0), f"denoising step {done[0]}/{total}")

    if "callback_on_step_end" in parameters:

        def on_step_end(pipeline, step, timestep, callback_kwargs):
            report()
            if cancel is not None and cancel.cancelled:
                pipeline._interrupt = True  # diffusers skips the remaining steps
            return callback_kwargs

        return {"callback_on_step_end": on_step_end}

    def legacy(step, timestep, latents):  # older pipelines (SD 1.5 / SDXL adapters) have no interrupt flag
        report()
        if cancel is not None:
            cancel.raise_if_cancelled("generation")

    return {"callback": legacy, "callback_steps": 1}


def run_pipeline(
    pipe,
    condition: np.ndarray,
    settings: DiffusionSettings,
    size: tuple[int, int],
    scale_kwarg: str,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[np.ndarray]:
    """Generate ``settings.count`` images in batches, image ``i`` from ``torch.Generator`` seeded ``seed + i``
    (on the CPU, so a seed gives the same noise on any device).

    Args:
        condition: ``h x w x 3 uint8`` condition image (resized to ``size`` here).
        size: ``(height, width)``.
        scale_kwarg: the pipeline's conditioning-scale argument name.

    Raises:
        Cancelled: when ``cancel`` was set (checked every denoising step).
    """
    import torch
    from PIL import Image

    progress = progress or no_progress
    height, width = size
    control_image = Image.fromarray(condition).resize((width, height), Image.Resampling.BILINEAR)
    seeds = settings.seeds()
    total = len(seeds) * settings.steps
    done = [0]
    images: list[np.ndarray] = []
    for start in range(0, len(seeds), settings.batch_size):
        batch = seeds[start : start + settings.batch_size]
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in batch]
        output = pipe(
            prompt=settings.prompt, negative_prompt=settings.negative_prompt, num_images_per_prompt=len(batch),
            image=control_image, height=height, width=width, num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale, generator=generators, output_type="np",
            **{scale_kwarg: settings.conditioning_scale}, **_step_callback(pipe, total, done, progress, cancel),
        )  # fmt: skip
        if cancel is not None and cancel.cancelled:
            raise Cancelled(f"generation was cancelled after {done[0]} of {total} steps")
        frames = np.asarray(output.images)
        images += [np.clip(np.rint(f * 255), 0, 255).astype(np.uint8) for f in frames]
    return images


def generate_with(
    backend: str,
    pipeline_names: dict[str, str],
    control_kwarg: str,
    scale_kwarg: str,
    condition: np.ndarray,
    settings: DiffusionSettings,
    model_id: str,
    *,
    registry: ModelRegistry | None = None,
    policy: DevicePolicy | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> GenerationResult:
    """The body both backends share (see :func:`core.generate.controlnet.generate`)."""
    registry = registry or default_registry()
    policy = policy or resolve_policy()
    if not settings.prompt.strip():
        raise InvalidInput("the prompt is empty; write one, or build it from the caption and classes in the Priors tab")
    condition = np.asarray(condition)
    if condition.ndim != 3 or condition.shape[2] != 3 or condition.dtype != np.uint8:
        raise InvalidInput(
            f"the condition image must be H x W x 3 uint8, got shape {condition.shape} dtype {condition.dtype}"
        )
    spec = registry.spec(model_id)
    if spec.task != backend:
        raise InvalidInput(f"model {model_id!r} is a {spec.task}, not a {backend}; pick a {backend} model")
    base = spec.base or "sd15"
    size = output_size(condition.shape[:2], settings, base)
    if max(size) > MAX_SIDE.get(base, 1536):
        raise InvalidInput(
            f"{size[1]}x{size[0]} is larger than {base} handles well (at most {MAX_SIDE[base]} px a side)"
        )
    pipe, models = assemble_pipeline(
        pipeline_names[base], control_kwarg, model_id, registry, policy, settings, progress
    )
    images = run_pipeline(pipe, condition, settings, size, scale_kwarg, progress=progress, cancel=cancel)
    record = {"backend": backend, "model": model_id, **models, **asdict(settings), "seeds": settings.seeds(),
              "width": size[1], "height": size[0], "device": policy.device, "dtype": policy.dtype_name}  # fmt: skip
    return GenerationResult(images, settings.seeds(), record)
