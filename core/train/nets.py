"""Small, width-configurable networks for the two GAN kinds.

- :class:`PairGenerator` (DCGAN-style): latent ``z`` -> ``3 + C`` channels, image ``tanh`` plus class logits.
- :class:`PairCritic` (WGAN-GP): strided convolutions on the concatenated image + class scores, no batch
  norm (the gradient penalty is per sample, which batch statistics would break).
- :class:`SpadeGenerator` (OASIS-style): one-hot label map with 3D noise concatenated as channels, SPADE
  residual blocks (instance norm modulated by the label map + noise), upsampling to the image size.
- :class:`SegDiscriminator` (OASIS-style): a small U-Net giving ``N + 1`` per-pixel logits (N classes + fake).

Images are ``B x 3 x S x S`` float in ``[-1, 1]``; label inputs are ``B x C x S x S`` one-hot float (all zero
where ignored).
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


NETWORK_NAMES = ("PairGenerator", "PairCritic", "Spade", "SpadeBlock", "SpadeGenerator", "SegDiscriminator")


@functools.cache
def network_classes() -> dict[str, type]:
    """The network classes by name, defined on first use (importing this module does not load torch)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class PairGenerator(nn.Module):
        """``z (B x z_dim)`` -> ``(image B x 3 x S x S in [-1, 1], logits B x C x S x S)``."""

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
            for level in range(1, levels + 1):
                cout = _ch(width, level, levels)
                blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1),
                           nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]  # fmt: skip
                cin = cout
            self.blocks = nn.Sequential(*blocks)
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


    class Spade(nn.Module):
        """Instance norm without affine, then ``gamma(seg) * x + beta(seg) + x`` with ``gamma``/``beta`` from a small
        conv net on the conditioning map resized (nearest) to ``x``."""

        def __init__(self, channels: int, cond_channels: int, hidden: int):
            super().__init__()
            self.norm = nn.InstanceNorm2d(channels, affine=False)
            self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
            self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
            self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

        def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
            h = self.shared(cond)
            return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


    class SpadeBlock(nn.Module):
        def __init__(self, cin: int, cout: int, cond_channels: int, hidden: int):
            super().__init__()
            mid = min(cin, cout)
            self.norm1, self.conv1 = Spade(cin, cond_channels, hidden), nn.Conv2d(cin, mid, 3, padding=1)
            self.norm2, self.conv2 = Spade(mid, cond_channels, hidden), nn.Conv2d(mid, cout, 3, padding=1)
            self.skip = None
            if cin != cout:
                self.skip_norm, self.skip = Spade(cin, cond_channels, hidden), nn.Conv2d(cin, cout, 1, bias=False)

        def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            s = x if self.skip is None else self.skip(self.skip_norm(x, cond))
            h = self.conv1(F.leaky_relu(self.norm1(x, cond), 0.2))
            h = self.conv2(F.leaky_relu(self.norm2(h, cond), 0.2))
            return s + h


    class SpadeGenerator(nn.Module):
        """``(one-hot B x C x S x S, noise B x z_dim x S x S)`` -> image ``B x 3 x S x S`` in ``[-1, 1]``.

        The noise is concatenated to the one-hot map as extra channels (OASIS's 3D noise): the conditioning of
        every SPADE layer and the coarse input both see it, so one label map gives diverse images.
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
                cout = _ch(width, level, levels)
                self.blocks.append(SpadeBlock(cin, cout, cond, hidden=max(16, width)))
                cin = cout
            self.out = nn.Conv2d(cin, 3, 3, padding=1)

        def forward(self, onehot: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            cond = torch.cat([onehot, noise], dim=1)
            x = self.inp(F.interpolate(cond, size=(self.start, self.start), mode="nearest"))
            for i, block in enumerate(self.blocks):
                if i > 0:
                    x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = block(x, cond)
            return torch.tanh(self.out(F.leaky_relu(x, 0.2)))


    class SegDiscriminator(nn.Module):
        """image ``B x 3 x S x S`` -> per-pixel logits ``B x (N + 1) x S x S`` (channel N = fake).

        A U-Net: strided convolutions down to about ``S / 8``, upsampling with skip connections back to ``S``.
        """

        def __init__(self, size: int, num_classes: int, width: int = 32):
            super().__init__()
            depth = max(1, min(3, _levels(size, 4)))
            self.down = nn.ModuleList()
            chans, cin = [], 3
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.2))
            cin = width
            chans.append(cin)
            for level in range(depth):
                cout = width * min(8, 2 ** (level + 1))
                self.down.append(nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)))
                cin = cout
                chans.append(cin)
            self.up = nn.ModuleList()
            for level in reversed(range(depth)):
                skip = chans[level]
                cout = skip
                self.up.append(nn.Sequential(nn.Conv2d(cin + skip, cout, 3, padding=1), nn.LeakyReLU(0.2)))
                cin = cout
            self.head = nn.Conv2d(cin, num_classes + 1, 1)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = self.stem(image)
            skips = [x]
            for block in self.down:
                x = block(x)
                skips.append(x)
            skips.pop()
            for block in self.up:
                skip = skips.pop()
                x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
                x = block(torch.cat([x, skip], dim=1))
            return self.head(x)

    return {"PairGenerator": PairGenerator, "PairCritic": PairCritic, "Spade": Spade, "SpadeBlock": SpadeBlock,
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
