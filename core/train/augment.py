"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for what the critic / discriminator sees.

Three transforms, as the paper defines them on images in ``[-1, 1]``, each with its own parameters per sample:

- ``color``: brightness ``x + U(-0.5, 0.5)``, saturation ``(x - mean_c) * U(0, 2) + mean_c`` (mean over the
  colour channels of each pixel), contrast ``(x - mean) * U(0.5, 1.5) + mean`` (mean over the whole image);
- ``translation``: a shift of up to 1/8 of the side in each direction, zeros moved in;
- ``cutout``: a square of half the side (centre anywhere in the image, clipped) set to zero.

Everything the discriminator sees goes through the same random transform family, real and fake alike, and
the generator's loss goes through it too (the transforms are differentiable). Geometric transforms move label
maps the same way: pixels moved in or cut out become ``ignore`` (255), so the class-balanced loss skips them.
Colour changes apply to the first three channels only (the image), never to class-score channels.

Parameters are drawn from an explicit ``torch.Generator`` (on the CPU), so a training step's augmentation is a
pure function of its seed. Pure functions (:func:`draw_params`, :func:`augment`, :func:`augment_labels`) sit
beside the thin :class:`DiffAugment` that holds a policy. torch is imported inside the functions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import InvalidInput

if TYPE_CHECKING:
    import torch

TRANSFORMS = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(text: str) -> tuple[str, ...]:
    """``"color,translation"`` -> ``("color", "translation")`` in the canonical order; ``""`` -> ``()``.

    Raises:
        InvalidInput: a name is not one of :data:`TRANSFORMS`, or is given twice.
    """
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise InvalidInput(f"diffaugment {text!r} names unknown transforms {unknown}; accepted: a comma list of "
                           f"{', '.join(TRANSFORMS)}, or '' for none")  # fmt: skip
    if len(set(names)) != len(names):
        raise InvalidInput(f"diffaugment {text!r} names a transform twice; accepted: each of "
                           f"{', '.join(TRANSFORMS)} at most once")  # fmt: skip
    return tuple(n for n in TRANSFORMS if n in names)


@dataclass
class AugmentParams:
    """One draw of per-sample parameters for a batch of ``B`` square ``size x size`` inputs (CPU tensors).

    Attributes:
        brightness, saturation, contrast: ``B`` float32 (``None`` without ``color``).
        shift: ``B x 2`` int64 row/column shifts in pixels (``None`` without ``translation``).
        cutout: ``B x 2`` int64 row/column centres of the cut square (``None`` without ``cutout``).
        cutout_size: the cut square's side in pixels.
    """

    batch: int
    size: int
    brightness: torch.Tensor | None = None
    saturation: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    cutout: torch.Tensor | None = None
    cutout_size: int = 0

    def repeat(self, times: int) -> AugmentParams:
        """The same parameters for ``times`` stacked copies of the batch (``times * B`` samples)."""
        tile = {k: None if v is None else v.repeat(times, *([1] * (v.dim() - 1)))
                for k, v in {"brightness": self.brightness, "saturation": self.saturation, "contrast": self.contrast,
                             "shift": self.shift, "cutout": self.cutout}.items()}  # fmt: skip
        return AugmentParams(self.batch * times, self.size, cutout_size=self.cutout_size, **tile)


def draw_params(policy: tuple[str, ...], batch: int, size: int, generator: torch.Generator) -> AugmentParams:
    """Per-sample parameters of ``policy`` (from :func:`parse_policy`) for ``batch`` inputs of side ``size``,
    drawn from ``generator`` (a CPU generator) in a fixed order."""
    import torch

    p = AugmentParams(batch, size)
    if "color" in policy:
        p.brightness = torch.rand(batch, generator=generator) - 0.5
        p.saturation = torch.rand(batch, generator=generator) * 2
        p.contrast = torch.rand(batch, generator=generator) + 0.5
    if "translation" in policy:
        reach = int(size * TRANSLATION_RATIO + 0.5)
        p.shift = torch.randint(-reach, reach + 1, (batch, 2), generator=generator)
    if "cutout" in policy:
        p.cutout_size = int(size * CUTOUT_RATIO + 0.5)
        p.cutout = torch.randint(0, size + (1 - p.cutout_size % 2), (batch, 2), generator=generator)
    return p


def _check(x: torch.Tensor, params: AugmentParams) -> None:
    if x.dim() < 3 or x.shape[0] != params.batch or tuple(x.shape[-2:]) != (params.size, params.size):
        raise InvalidInput(f"augmentation parameters are for {params.batch} inputs of {params.size} x {params.size}; "
                           f"got a tensor of shape {tuple(x.shape)}")  # fmt: skip


def _shift_index(params: AugmentParams, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source rows ``B x S``, source columns ``B x S`` (clamped) and the ``B x S x S`` mask of valid sources."""
    import torch

    ar = torch.arange(params.size, device=device)
    shift = params.shift.to(device)
    rows, cols = ar[None] - shift[:, :1], ar[None] - shift[:, 1:]
    ok_r, ok_c = (rows >= 0) & (rows < params.size), (cols >= 0) & (cols < params.size)
    rows, cols = rows.clamp(0, params.size - 1), cols.clamp(0, params.size - 1)
    return rows, cols, ok_r[:, :, None] & ok_c[:, None, :]


def _translate(x: torch.Tensor, params: AugmentParams, fill) -> torch.Tensor:
    """Shift every sample of ``x`` (``B x [C x] S x S``) by its ``params.shift``, ``fill`` moved in."""
    import torch

    rows, cols, ok = _shift_index(params, x.device)
    b = torch.arange(x.shape[0], device=x.device)[:, None, None]
    if x.dim() == 4:
        moved = x.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        return torch.where(ok[:, None], moved, torch.as_tensor(fill, dtype=x.dtype, device=x.device))
    moved = x[b, rows[:, :, None], cols[:, None, :]]
    return torch.where(ok, moved, torch.as_tensor(fill, dtype=x.dtype, device=x.device))


def _cutout_keep(params: AugmentParams, device) -> torch.Tensor:
    """``B x S x S`` bool: True outside each sample's cut square."""
    import torch

    ar = torch.arange(params.size, device=device)
    lo = params.cutout.to(device) - params.cutout_size // 2
    in_r = (ar[None] >= lo[:, :1]) & (ar[None] < lo[:, :1] + params.cutout_size)
    in_c = (ar[None] >= lo[:, 1:]) & (ar[None] < lo[:, 1:] + params.cutout_size)
    return ~(in_r[:, :, None] & in_c[:, None, :])


def augment(x: torch.Tensor, params: AugmentParams, color_channels: int = 3) -> torch.Tensor:
    """Apply ``params`` to a batch (differentiably): colour to the first ``color_channels`` channels, then
    translation and cutout to every channel (zeros moved in / cut out).

    Args:
        x: ``B x C x S x S`` float, images in ``[-1, 1]`` first (``C >= color_channels``), e.g. image + class
            scores for pair runs.
        params: from :func:`draw_params` for ``B`` inputs of side ``S``.

    Returns:
        ``B x C x S x S``, same dtype and device.
    """
    import torch

    _check(x, params)
    if params.brightness is not None and color_channels:
        dev, dt = x.device, x.dtype
        img = x[:, :color_channels]
        img = img + params.brightness.to(dev, dt).view(-1, 1, 1, 1)
        mean = img.mean(dim=1, keepdim=True)
        img = (img - mean) * params.saturation.to(dev, dt).view(-1, 1, 1, 1) + mean
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        img = (img - mean) * params.contrast.to(dev, dt).view(-1, 1, 1, 1) + mean
        x = torch.cat([img, x[:, color_channels:]], dim=1) if x.shape[1] > color_channels else img
    if params.shift is not None:
        x = _translate(x, params, 0.0)
    if params.cutout is not None:
        x = x * _cutout_keep(params, x.device)[:, None].to(x.dtype)
    return x


def augment_labels(labels: torch.Tensor, params: AugmentParams, ignore_index: int = 255) -> torch.Tensor:
    """Move label maps with the geometric part of ``params``: pixels moved in or cut out become ``ignore_index``.

    Args:
        labels: ``B x S x S`` integer class indices (``ignore_index`` = void).

    Returns:
        ``B x S x S``, same dtype: only the input's values and ``ignore_index``.
    """
    import torch

    _check(labels, params)
    if params.shift is not None:
        labels = _translate(labels, params, ignore_index)
    if params.cutout is not None:
        labels = torch.where(_cutout_keep(params, labels.device), labels,
                             torch.as_tensor(ignore_index, dtype=labels.dtype, device=labels.device))  # fmt: skip
    return labels


class DiffAugment:
    """A policy (``"color,translation,cutout"``; ``""`` = off) applied with parameters from a generator.

    ``DiffAugment("translation")(x, generator)`` augments ``x`` (``B x C x S x S``); :meth:`draw` gives the
    parameters for use on several tensors (images and their label maps) alike.
    """

    def __init__(self, policy: str = "color,translation,cutout"):
        self.policy = parse_policy(policy)

    def __bool__(self) -> bool:
        return bool(self.policy)

    def draw(self, batch: int, size: int, generator: torch.Generator) -> AugmentParams:
        return draw_params(self.policy, batch, size, generator)

    def __call__(self, x: torch.Tensor, generator: torch.Generator, color_channels: int = 3) -> torch.Tensor:
        if not self.policy:
            return x
        return augment(x, self.draw(x.shape[0], x.shape[-1], generator), color_channels)
