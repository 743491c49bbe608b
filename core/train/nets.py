"""Small, width-configurable networks for the two GAN kinds.

- :class:`PairGenerator` (DCGAN-style): latent ``z`` -> ``3 + C`` channels, image ``tanh`` plus class logits.
- :class:`PairCritic` (WGAN-GP): strided convolutions on the concatenated image + class scores, no batch
  norm (the gradient penalty is per sample, which batch statistics would break).
- :class:`SpadeGenerator` (OASIS-style): one-hot label map with 3D noise concatenated as channels, SPADE
  residual blocks (instance norm modulated by the label map + noise), upsampling to the image size.
- :class:`SegDiscriminator` (OASIS-style): a small U-Net giving ``N + 1`` per-pixel logits (N classes + fake).

Images are ``B x 3 x S x S`` float in ``[-1, 1]``; label inputs are ``B x C x S x S`` one-hot float (all zero
where ignored).

Cost (issue 13, CPU profile of a 128 x 128, batch 8, width 32 step): the SPADE layers, not the main
convolutions, dominated the generator: each of a block's three norms ran its own ``3 x 3`` conv on the
``C + z_dim`` conditioning channels, then two more ``3 x 3`` convs for ``gamma`` and ``beta``, all at the block's
full resolution. Here each block runs one conditioning trunk shared by its two norms and one conv giving all
their ``gamma`` and ``beta`` (``3 x 3`` up to 16 x 16, ``1 x 1`` above, where the trunk's ``3 x 3`` already gives
the neighbourhood), with a hidden width that shrinks where the block is narrow; the learned shortcut is a plain
``1 x 1`` conv. The discriminator's decoder adds the projected upsampled features to the skip instead of
concatenating them, so its full-resolution convs see a third of the channels. The pair generator uses DCGAN's
``4 x 4`` stride-2 transposed convolutions (4 multiply-adds per output pixel and channel pair, against 9 for
upsampling + ``3 x 3``). Forward FLOPs at 128, batch 8, width 32: label2image generator 35 G (was 94 G with 64 noise
channels), discriminator 14 G (was 28 G), pair generator 6 G (was 18 G).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def _levels(size: int, start: int = 4) -> int:
    """Upsampling steps from ``start`` to ``size`` (both powers of two)."""
    return max(0, int(round(math.log2(size / start))))


def _ch(width: int, level: int, levels: int, cap: int = 8) -> int:
    """Channels at ``level`` (0 = coarsest): ``width * 2**(levels - level)`` capped at ``cap * width``."""
    return width * min(cap, 2 ** max(0, levels - level))


def _hidden(width: int, channels: int) -> int:
    """SPADE hidden channels of a block with ``channels`` outputs: ``width`` at low resolution, down to
    ``channels / 2`` (at least 8) where the block is wide in pixels and narrow in channels."""
    return max(8, min(width, channels // 2))


NETWORK_NAMES = ("PairGenerator", "PairCritic", "SpadeBlock", "SpadeGenerator", "SegDiscriminator")


@functools.cache
def network_classes() -> dict[str, type]:
    """The network classes by name, defined on first use (importing this module does not load torch)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class PairGenerator(nn.Module):
        """``z (B x z_dim)`` -> ``(image B x 3 x S x S in [-1, 1], logits B x C x S x S)``.

        DCGAN's layout: a linear projection to ``4 x 4``, then ``4 x 4`` stride-2 transposed convolutions with
        batch norm and ReLU, the last one straight to the ``3 + C`` output channels.
        """

        def __init__(self, size: int, num_classes: int, width: int = 32, z_dim: int = 64):
            super().__init__()
            self.size, self.num_classes, self.z_dim = size, num_classes, z_dim
            start = min(4, size)
            levels = _levels(size, start)
            c0 = _ch(width, 0, levels)
            self.start, self.c0 = start, c0
            self.project = nn.Linear(z_dim, c0 * start * start)
            self.bn0 = nn.BatchNorm2d(c0)
            blocks = []
            cin = c0
            for level in range(1, levels):
                cout = _ch(width, level, levels)
                blocks += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.BatchNorm2d(cout),
                           nn.ReLU(inplace=True)]  # fmt: skip
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            if levels:
                self.out = nn.ConvTranspose2d(cin, 3 + num_classes, 4, stride=2, padding=1)
            else:
                self.out = nn.Conv2d(cin, 3 + num_classes, 3, padding=1)

        def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.project(z).view(z.shape[0], self.c0, self.start, self.start)
            x = self.blocks(F.relu(self.bn0(x)))
            y = self.out(x)
            return torch.tanh(y[:, :3]), y[:, 3:]

    class PairCritic(nn.Module):
        """``(image B x 3 x S x S, class scores B x C x S x S)`` -> ``B`` scores (no normalisation layers)."""

        def __init__(self, size: int, num_classes: int, width: int = 32):
            super().__init__()
            levels = _levels(size, min(4, size))
            layers, cin = [], 3 + num_classes
            for level in range(levels):
                cout = width * min(8, 2**level)
                layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
                cin = cout
            if not layers:
                layers = [nn.Conv2d(cin, width, 3, padding=1), nn.LeakyReLU(0.2)]
                cin = width
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(cin * min(4, size) ** 2, 1)

        def forward(self, image: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            x = self.features(torch.cat([image, scores], dim=1))
            return self.head(x.flatten(1)).squeeze(1)

    class SpadeBlock(nn.Module):
        """A SPADE residual block: ``x`` (``B x cin x R x R``) and the conditioning map at the same resolution
        (``B x cond x R x R``) -> ``B x cout x R x R``.

        One conditioning trunk (``3 x 3`` conv + ReLU to ``hidden`` channels) is shared by both norms, and one
        ``3 x 3`` conv gives both norms' ``gamma`` and ``beta``: ``norm(x) * (1 + gamma) + beta`` with
        ``norm`` an instance norm without affine parameters.
        """

        def __init__(self, cin: int, cout: int, cond_channels: int, hidden: int, affine_kernel: int = 3):
            super().__init__()
            mid = min(cin, cout)
            self.splits = [cin, cin, mid, mid]
            self.trunk = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
            self.affine = nn.Conv2d(hidden, sum(self.splits), affine_kernel, padding=affine_kernel // 2)
            self.conv1, self.conv2 = nn.Conv2d(cin, mid, 3, padding=1), nn.Conv2d(mid, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None

        def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            gamma1, beta1, gamma2, beta2 = self.affine(self.trunk(cond)).split(self.splits, dim=1)
            s = x if self.skip is None else self.skip(x)
            h = self.conv1(F.leaky_relu(F.instance_norm(x) * (1 + gamma1) + beta1, 0.2))
            h = self.conv2(F.leaky_relu(F.instance_norm(h) * (1 + gamma2) + beta2, 0.2))
            return s + h

    class SpadeGenerator(nn.Module):
        """``(one-hot B x C x S x S, noise B x z_dim x S x S)`` -> image ``B x 3 x S x S`` in ``[-1, 1]``.

        The noise is concatenated to the one-hot map as extra channels (OASIS's 3D noise): the conditioning of
        every SPADE block and the coarse input both see it, so one label map gives diverse images. The
        conditioning is resized (nearest) once per resolution.
        """

        def __init__(self, size: int, num_classes: int, width: int = 32, z_dim: int = 64):
            super().__init__()
            self.size, self.num_classes, self.z_dim = size, num_classes, z_dim
            start = min(4, size)
            levels = _levels(size, start)
            cond = num_classes + z_dim
            self.start = start
            c0 = _ch(width, 0, levels)
            self.inp = nn.Conv2d(cond, c0, 3, padding=1)
            self.blocks = nn.ModuleList()
            cin = c0
            for level in range(levels + 1):
                cout, side = _ch(width, level, levels), start * 2**level
                self.blocks.append(SpadeBlock(cin, cout, cond, _hidden(width, cout), 3 if side <= 16 else 1))
                cin = cout
            self.out = nn.Conv2d(cin, 3, 3, padding=1)

        def forward(self, onehot: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            cond = torch.cat([onehot, noise], dim=1)
            x = self.inp(F.interpolate(cond, size=(self.start, self.start), mode="nearest"))
            side = self.start
            for i, block in enumerate(self.blocks):
                if i > 0:
                    x = F.interpolate(x, scale_factor=2, mode="nearest")
                    side *= 2
                c = cond if side == cond.shape[-1] else F.interpolate(cond, size=(side, side), mode="nearest")
                x = block(x, c)
            return torch.tanh(self.out(F.leaky_relu(x, 0.2)))

    class SegDiscriminator(nn.Module):
        """image ``B x 3 x S x S`` -> per-pixel logits ``B x (N + 1) x S x S`` (channel N = fake).

        A U-Net: strided convolutions down to about ``S / 8``; back up, each level projects the upsampled
        features to the skip's channels (``1 x 1``), adds the skip and runs a ``3 x 3`` conv.
        """

        def __init__(self, size: int, num_classes: int, width: int = 32):
            super().__init__()
            depth = max(1, min(3, _levels(size, 4)))
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.2))
            chans, cin = [width], width
            self.down = nn.ModuleList()
            for level in range(depth):
                cout = width * min(8, 2 ** (level + 1))
                self.down.append(nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)))
                cin = cout
                chans.append(cin)
            self.project, self.up = nn.ModuleList(), nn.ModuleList()
            for level in reversed(range(depth)):
                skip = chans[level]
                self.project.append(nn.Conv2d(cin, skip, 1))
                self.up.append(nn.Sequential(nn.Conv2d(skip, skip, 3, padding=1), nn.LeakyReLU(0.2)))
                cin = skip
            self.head = nn.Conv2d(cin, num_classes + 1, 1)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = self.stem(image)
            skips = [x]
            for block in self.down:
                x = block(x)
                skips.append(x)
            skips.pop()
            for project, block in zip(self.project, self.up, strict=True):
                skip = skips.pop()
                x = block(F.interpolate(project(x), size=skip.shape[-2:], mode="nearest") + skip)
            return self.head(x)

    return {"PairGenerator": PairGenerator, "PairCritic": PairCritic, "SpadeBlock": SpadeBlock,
            "SpadeGenerator": SpadeGenerator, "SegDiscriminator": SegDiscriminator}


def __getattr__(name: str):
    """``PairGenerator``, ``PairCritic``, ... (module attributes resolved lazily, PEP 562)."""
    if name in NETWORK_NAMES:
        return network_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_networks(kind: str, size: int, num_classes: int, width: int, z_dim: int) -> tuple[nn.Module, nn.Module]:
    """``(generator, critic or discriminator)`` for a kind."""
    n = network_classes()
    if kind == "pair":
        return n["PairGenerator"](size, num_classes, width, z_dim), n["PairCritic"](size, num_classes, width)
    return n["SpadeGenerator"](size, num_classes, width, z_dim), n["SegDiscriminator"](size, num_classes, width)
