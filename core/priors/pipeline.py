"""One sample's condition image and prompt: compute, save beside the workspace, read back.

Saved priors live in ``<workspace outputs>/priors/<sample id>.png`` (the condition image, the sample's
size) and ``<sample id>.json`` (prompt, negative prompt, caption, classes and every prior setting), where
the generators find them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from core.io.atomic import atomic_write_text
from core.models import ModelRegistry
from core.priors.blend import DEFAULT_W1, DEFAULT_W2, blend
from core.priors.edges import IMAGE_PRIORS, EdgeParams, image_prior
from core.priors.mask import MASK_PRIORS, mask_prior
from core.types import ClassSet

CONDITION_TYPES = (*IMAGE_PRIORS, "ade20k")


@dataclass(frozen=True)
class PriorSettings:
    """How a condition image is made.

    Attributes:
        image_prior: one of :data:`core.priors.edges.IMAGE_PRIORS`, or ``none``.
        mask_prior: ``boundary``, ``ade20k`` or ``none``.
        w1, w2: blend weights of the image and mask priors.
        thickness: boundary width in pixels.
        only_classes: draw boundaries of these class indices only (empty: all).
        edges: image-prior parameters.
    """

    image_prior: str = "canny"
    mask_prior: str = "boundary"
    w1: float = DEFAULT_W1
    w2: float = DEFAULT_W2
    thickness: int = 2
    only_classes: tuple[int, ...] = ()
    edges: EdgeParams = field(default_factory=EdgeParams)

    def __post_init__(self) -> None:
        if self.image_prior not in (*IMAGE_PRIORS, "none"):
            raise InvalidInput(f"unknown image prior {self.image_prior!r}; accepted: {', '.join(IMAGE_PRIORS)}, none")
        if self.mask_prior not in MASK_PRIORS:
            raise InvalidInput(f"unknown mask prior {self.mask_prior!r}; accepted: {', '.join(MASK_PRIORS)}")
        if self.image_prior == "none" and self.mask_prior == "none":
            raise InvalidInput("choose an image prior, a mask prior, or both")

    @classmethod
    def for_type(cls, kind: str, **kwargs) -> PriorSettings:
        """Settings for a command-line ``--type``: an image prior blended with boundaries, or ``ade20k``
        (the filled ADE20K rendering alone, for segmentation ControlNets)."""
        if kind == "ade20k":
            return cls(
                image_prior="none",
                mask_prior="ade20k",
                w1=0.0,
                w2=1.0,
                **{k: v for k, v in kwargs.items() if k not in ("w1", "w2")},
            )
        if kind not in IMAGE_PRIORS:
            raise InvalidInput(f"unknown prior type {kind!r}; accepted: {', '.join(CONDITION_TYPES)}")
        return cls(image_prior=kind, **kwargs)

    def record(self) -> dict:
        return asdict(self)


@dataclass
class Priors:
    """``v_image`` (``H x W uint8`` or None), ``v_mask`` (``H x W`` or ``H x W x 3 uint8``, or None) and
    ``condition`` (``H x W x 3 uint8``)."""

    v_image: np.ndarray | None
    v_mask: np.ndarray | None
    condition: np.ndarray


def compute_priors(
    image: np.ndarray, label_map: np.ndarray | None, classes: ClassSet, settings: PriorSettings,
    registry: ModelRegistry | None = None,
) -> Priors:  # fmt: skip
    """Both priors of a sample and their blend.

    Args:
        image: ``H x W x 3 uint8`` RGB.
        label_map: ``H x W uint8`` or ``None`` (then the mask prior is empty).
    """
    if label_map is not None and label_map.shape != image.shape[:2]:
        raise InvalidInput(
            f"label map is {label_map.shape[1]}x{label_map.shape[0]}, the image {image.shape[1]}x{image.shape[0]}"
        )
    v_image = (
        None if settings.image_prior == "none" else image_prior(image, settings.image_prior, settings.edges, registry)
    )
    v_mask = None
    if label_map is not None:
        v_mask = mask_prior(label_map, settings.mask_prior, classes, thickness=settings.thickness,
                            only_classes=settings.only_classes or None)  # fmt: skip
    if v_image is None and v_mask is None:
        raise InvalidInput("this sample has no label map, so the mask prior is empty; choose an image prior too")
    return Priors(v_image, v_mask, blend(v_image, v_mask, settings.w1, settings.w2, image.shape[:2]))


def priors_dir(output_root: str | Path) -> Path:
    return Path(output_root) / "priors"


def save_prior(
    output_root: str | Path, sample_id: str, condition: np.ndarray, prompt_record: dict
) -> tuple[Path, Path]:
    """Write a sample's condition image and prompt record atomically; returns both paths."""
    from core.io.images import save_image

    folder = priors_dir(output_root)
    image_path = folder / f"{sample_id}.png"
    record_path = folder / f"{sample_id}.json"
    save_image(image_path, condition)
    atomic_write_text(record_path, json.dumps(prompt_record, indent=2, sort_keys=True) + "\n")
    return image_path, record_path


def load_prior(output_root: str | Path, sample_id: str) -> tuple[np.ndarray, dict] | None:
    """A saved condition image and its record, or ``None`` when the sample has none."""
    from core.io.images import load_image

    folder = priors_dir(output_root)
    image_path, record_path = folder / f"{sample_id}.png", folder / f"{sample_id}.json"
    if not (image_path.is_file() and record_path.is_file()):
        return None
    return load_image(image_path), json.loads(record_path.read_text(encoding="utf-8"))
