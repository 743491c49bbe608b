"""Segmentation networks: ``B x 3 x H x W`` float32 images in ``[0, 1]`` -> ``B x C x H x W`` float logits.

- ``"unet"``: a U-Net. ``depth`` 2x2 max-pool downsamplings; level ``i`` has ``width * 2**i`` channels (capped at
  ``8 * width``); each level is two ``3 x 3`` conv + norm + ReLU; upsampling by ``2 x 2`` stride-2 transposed
  convs, skips concatenated; a ``1 x 1`` head. Inputs whose sides are not multiples of ``2**depth`` are
  replicate-padded and the logits cropped back, so any ``H x W`` works.
- ``"lraspp_mobilenet_v3"`` / ``"deeplabv3_mobilenet_v3"``: torchvision's LR-ASPP and DeepLabV3 heads on a
  MobileNetV3-Large backbone. ``pretrained=True`` loads the backbone's ImageNet weights from a local file only
  (never a download): :func:`backbone_weights_path` says where; a missing file raises
  :class:`core.errors.ModelUnavailable` naming the file and the folder to put it in.

Every network normalises its input with the ImageNet mean and std itself, so callers always pass ``[0, 1]``.

Normalisation of the U-Net: GroupNorm (8 groups, or fewer where a level has fewer channels) by default, BatchNorm
on request (``norm="batch"``). GroupNorm because the batches this runs with are small (8 at 128 x 128 on a CPU,
2-4 at 256 on small GPUs), where BatchNorm's batch statistics are noisy and its running averages, used at
evaluation, lag behind the weights; with GroupNorm a network computes the same thing in training and evaluation
mode, per image, which keeps the in-run validation, ``predict`` and ``score_sample`` (one image at a time)
consistent with training. Both are deterministic on the CPU. Cost measured here (2 shared CPU cores, width 32,
depth 4, 128 x 128, batch 8, forward + backward, best of 4): GroupNorm 1.7 s, BatchNorm 2.1 s, within the noise of
the shared machine: no measurable penalty.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import InvalidInput, ModelUnavailable

if TYPE_CHECKING:
    from torch import nn

ARCHS = ("unet", "lraspp_mobilenet_v3", "deeplabv3_mobilenet_v3")
NORMS = ("group", "batch")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# MobileNetV3-Large ImageNet weights, the file torchvision's segmentation builders use by default (IMAGENET1K_V1).
BACKBONE_FILE = "mobilenet_v3_large-8738ca79.pth"
BACKBONE_URL = "https://download.pytorch.org/models/" + BACKBONE_FILE
MAX_CHANNEL_FACTOR = 8

NETWORK_NAMES = ("ConvBlock", "UNet", "TorchvisionSegmenter")


def level_channels(width: int, depth: int) -> list[int]:
    """Channels of the U-Net's levels 0 (full resolution) .. ``depth`` (the bottleneck)."""
    return [width * min(MAX_CHANNEL_FACTOR, 2**i) for i in range(depth + 1)]


def _groups(channels: int, most: int = 8) -> int:
    """The largest group count ``<= most`` dividing ``channels``."""
    return next(g for g in range(min(most, channels), 0, -1) if channels % g == 0)


@functools.cache
def network_classes() -> dict[str, type]:
    """The network classes by name, defined on first use (importing this module does not load torch)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def norm_layer(kind: str, channels: int) -> nn.Module:
        return nn.GroupNorm(_groups(channels), channels) if kind == "group" else nn.BatchNorm2d(channels)

    class _Normalise(nn.Module):
        """``[0, 1]`` -> ImageNet-normalised (non-persistent buffers: not part of the weights)."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    class ConvBlock(nn.Sequential):
        """Two ``3 x 3`` conv (no bias) + norm + ReLU: ``B x cin x H x W`` -> ``B x cout x H x W``."""

        def __init__(self, cin: int, cout: int, norm: str = "group"):
            super().__init__(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm_layer(norm, cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm_layer(norm, cout), nn.ReLU(inplace=True),
            )  # fmt: skip

    class UNet(nn.Module):
        """``B x 3 x H x W`` float in ``[0, 1]`` -> ``B x num_classes x H x W`` logits (see the module docstring)."""

        def __init__(self, num_classes: int, width: int = 32, depth: int = 4, norm: str = "group"):
            super().__init__()
            self.num_classes, self.width, self.depth, self.norm = num_classes, width, depth, norm
            chans = level_channels(width, depth)
            self.normalise = _Normalise()
            self.down = nn.ModuleList([ConvBlock(3, chans[0], norm)])
            for i in range(1, depth + 1):
                self.down.append(ConvBlock(chans[i - 1], chans[i], norm))
            self.upsample, self.up = nn.ModuleList(), nn.ModuleList()
            for i in reversed(range(depth)):
                self.upsample.append(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2))
                self.up.append(ConvBlock(2 * chans[i], chans[i], norm))
            self.head = nn.Conv2d(chans[0], num_classes, 1)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            h, w = image.shape[-2:]
            m = 2**self.depth
            ph, pw = (-h) % m, (-w) % m
            x = self.normalise(image)
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            skips = []
            for i, block in enumerate(self.down):
                if i:
                    x = F.max_pool2d(x, 2)
                x = block(x)
                skips.append(x)
            skips.pop()
            for upsample, block in zip(self.upsample, self.up, strict=True):
                x = block(torch.cat([upsample(x), skips.pop()], dim=1))
            return self.head(x)[..., :h, :w]

    class TorchvisionSegmenter(nn.Module):
        """torchvision's LR-ASPP or DeepLabV3 (MobileNetV3-Large) with ``[0, 1]`` input and plain logits output."""

        def __init__(self, arch: str, num_classes: int):
            super().__init__()
            from torchvision.models import segmentation

            self.arch, self.num_classes = arch, num_classes
            self.normalise = _Normalise()
            if arch == "lraspp_mobilenet_v3":
                self.net = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                  num_classes=num_classes)  # fmt: skip
            else:
                self.net = segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                     num_classes=num_classes, aux_loss=False)  # fmt: skip

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.net(self.normalise(image))["out"]

        def load_backbone(self, path: Path) -> None:
            """Load MobileNetV3-Large ImageNet weights (a torchvision classification state dict) into the backbone.

            Raises:
                ModelUnavailable: the file is unreadable or is not a MobileNetV3-Large state dict.
            """
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to the user
                raise ModelUnavailable(f"could not read backbone weights {path}: {exc}; replace the file with "
                                       f"{BACKBONE_URL}") from exc  # fmt: skip
            features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
            target = self.net.backbone.state_dict()
            missing = sorted(set(target) - set(features))
            if missing or any(features[k].shape != target[k].shape for k in target):
                raise ModelUnavailable(f"{path} is not a MobileNetV3-Large ImageNet state dict ({len(missing)} of the "
                                       f"backbone's tensors missing or of other shapes); use {BACKBONE_URL}")  # fmt: skip
            self.net.backbone.load_state_dict({k: features[k] for k in target})

    return {"ConvBlock": ConvBlock, "UNet": UNet, "TorchvisionSegmenter": TorchvisionSegmenter}


def __getattr__(name: str):
    """``UNet``, ``ConvBlock``, ``TorchvisionSegmenter`` (module attributes resolved lazily, PEP 562)."""
    if name in NETWORK_NAMES:
        return network_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def backbone_folders() -> list[Path]:
    """Where a MobileNetV3 backbone file is looked for: ``<models dir>/torchvision`` (see :func:`core.models.models_dir`),
    then torch hub's checkpoint folder (where torchvision keeps what it downloaded before)."""
    import os

    from core.models import models_dir

    folders = [models_dir() / "torchvision"]
    torch_home = os.environ.get("TORCH_HOME")
    hub = Path(torch_home).expanduser() / "hub" if torch_home else Path.home() / ".cache" / "torch" / "hub"
    folders.append(hub / "checkpoints")
    return folders


def backbone_weights_path() -> Path:
    """The local MobileNetV3-Large ImageNet weights file.

    Raises:
        ModelUnavailable: no folder of :func:`backbone_folders` holds it; the message names the file and folder.
    """
    folders = backbone_folders()
    for folder in folders:
        if (folder / BACKBONE_FILE).is_file():
            return folder / BACKBONE_FILE
    raise ModelUnavailable(
        f"pretrained MobileNetV3 backbone weights are not installed: put {BACKBONE_FILE} (from {BACKBONE_URL}) in "
        f"{folders[0]} (or {folders[1]}); nothing is downloaded. Or train with pretrained off (random init)."
    )


def check_model_options(arch: str, num_classes: int, width: int, depth: int, norm: str, pretrained: bool) -> None:
    """Raise :class:`InvalidInput` naming the first bad option."""
    if arch not in ARCHS:
        raise InvalidInput(f"arch {arch!r} is unknown; accepted: {', '.join(ARCHS)}")
    if not 1 <= num_classes <= 255:
        raise InvalidInput(f"num_classes must be 1 to 255 (255 is the ignore label), got {num_classes}")
    if arch == "unet":
        if not 1 <= width <= 512:
            raise InvalidInput(f"width must be 1 to 512 channels, got {width}")
        if not 1 <= depth <= 6:
            raise InvalidInput(f"depth must be 1 to 6 downsamplings, got {depth}")
        if norm not in NORMS:
            raise InvalidInput(f"norm {norm!r} is unknown; accepted: {', '.join(NORMS)}")
        if pretrained:
            raise InvalidInput("pretrained weights exist only for the torchvision archs "
                               f"({', '.join(ARCHS[1:])}); the U-Net starts from random weights")  # fmt: skip


def build_segmenter(arch: str = "unet", num_classes: int = 21, *, width: int = 32, depth: int = 4, norm: str = "group",
                    pretrained: bool = False) -> nn.Module:  # fmt: skip
    """A segmentation network taking ``B x 3 x H x W`` float32 in ``[0, 1]`` and giving ``B x num_classes x H x W``
    logits. Initialisation draws from torch's global generator: seed it (``torch.manual_seed``) for a fixed start.

    Args:
        arch: one of :data:`ARCHS`.
        num_classes: output channels.
        width, depth, norm: the U-Net's base channels, downsamplings and normalisation (ignored by the others).
        pretrained: load the MobileNetV3 backbone's ImageNet weights from a local file (torchvision archs only).

    Raises:
        InvalidInput: an unknown or out-of-range option.
        ModelUnavailable: ``pretrained`` and the backbone file is not installed (the message says where it goes).
    """
    check_model_options(arch, num_classes, width, depth, norm, pretrained)
    classes = network_classes()
    if arch == "unet":
        return classes["UNet"](num_classes, width, depth, norm)
    path = backbone_weights_path() if pretrained else None
    net = classes["TorchvisionSegmenter"](arch, num_classes)
    if path is not None:
        net.load_backbone(path)
    return net


def parameter_count(net: nn.Module) -> int:
    """Trainable parameters of a network."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
