"""GAN losses: WGAN-GP for ``pair``, OASIS's class-balanced N+1 cross-entropy (and LabelMix) for ``label2image``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch.nn import functional as F  # noqa: F401



def _flat_mix(eps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return eps.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def gradient_penalty(
    critic: Callable[..., torch.Tensor],
    real: torch.Tensor | tuple[torch.Tensor, ...],
    fake: torch.Tensor | tuple[torch.Tensor, ...],
    eps: torch.Tensor,
) -> torch.Tensor:
    """WGAN-GP's penalty ``E[(||grad_x critic(x_hat)||_2 - 1)^2]`` with ``x_hat = eps * real + (1 - eps) * fake``
    (Gulrajani et al. 2017, Algorithm 1), the norm taken per sample over every input tensor together.

    Args:
        critic: maps the inputs (one tensor, or several passed positionally) to ``B`` scores.
        real, fake: ``B x ...`` tensors (or matching tuples of them, e.g. image and class scores).
        eps: ``B`` mixing weights in ``[0, 1]``, one per sample.

    Returns:
        the penalty, a scalar (differentiable with respect to the critic's parameters).
    """
    import torch
    reals = real if isinstance(real, tuple) else (real,)
    fakes = fake if isinstance(fake, tuple) else (fake,)
    mixed = tuple((_flat_mix(eps, r) * r.detach() + (1 - _flat_mix(eps, r)) * f.detach()).requires_grad_(True)
                  for r, f in zip(reals, fakes, strict=True))  # fmt: skip
    scores = critic(*mixed)
    grads = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = torch.sqrt(sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads) + 1e-12)
    return ((norms - 1) ** 2).mean()


def wgan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """``E[D(fake)] - E[D(real)]`` (the critic minimises it; add the gradient penalty)."""
    return fake_scores.mean() - real_scores.mean()


def wgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """``-E[D(fake)]``."""
    return -fake_scores.mean()


def class_balance_weights(labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """OASIS's per-pixel weights: each class present in the batch weighs inversely to its pixel count, scaled so
    that a batch with every class equally frequent weighs 1 per pixel; ignored pixels weigh 0.

    Args:
        labels: ``B x H x W`` long class indices (``ignore_index`` for void).

    Returns:
        ``B x H x W float32``.
    """
    import torch
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    counts = torch.bincount(safe[valid].reshape(-1), minlength=num_classes).to(torch.float32)
    present = (counts > 0).sum().clamp(min=1)
    coeff = torch.where(
        counts > 0, valid.sum().to(torch.float32) / (counts.clamp(min=1) * present), torch.zeros_like(counts)
    )
    return coeff[safe] * valid.to(torch.float32)


def _weighted_ce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    from torch.nn import functional as F
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (ce * weights).sum() / weights.numel()


def oasis_real_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Class-balanced cross-entropy of the ``N + 1`` logits against the real label map (ignored pixels skipped):
    the discriminator's loss on real images and the generator's adversarial loss on fakes.

    Args:
        logits: ``B x (N + 1) x H x W``.
        labels: ``B x H x W`` long.
    """
    import torch
    num_classes = logits.shape[1] - 1
    weights = class_balance_weights(labels, num_classes, ignore_index)
    target = torch.where(labels == ignore_index, torch.zeros_like(labels), labels)
    return _weighted_ce(logits, target, weights)


def oasis_fake_loss(logits: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of every pixel of a generated image against the fake class (channel ``N``).

    Args:
        logits: ``B x (N + 1) x H x W``.
        valid: optional ``B x H x W`` bool: only these pixels count (augmentation's moved-in / cut-out pixels
            are left out); all pixels when ``None``.
    """
    import torch
    from torch.nn import functional as F
    target = torch.full(
        (logits.shape[0], *logits.shape[2:]), logits.shape[1] - 1, dtype=torch.long, device=logits.device
    )
    if valid is None:
        return F.cross_entropy(logits.float(), target)
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    weights = valid.to(torch.float32)
    return (ce * weights).sum() / weights.sum().clamp(min=1.0)


def labelmix_mask(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """OASIS's LabelMix map: for each sample, every class value (ignore included) is drawn from the real image
    (1) or the fake one (0) with probability 1/2.

    Args:
        labels: ``B x H x W`` long class indices (255 = ignore); ``generator`` a CPU generator.

    Returns:
        ``B x 1 x H x W float32`` in ``{0, 1}``.
    """
    import torch
    pick = torch.randint(0, 2, (labels.shape[0], 256), generator=generator).to(labels.device)
    return torch.gather(pick, 1, labels.reshape(labels.shape[0], -1)).reshape(labels.shape).unsqueeze(1).float()


def labelmix_loss(out_mixed: torch.Tensor, out_real: torch.Tensor, out_fake: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """OASIS's LabelMix consistency: the discriminator's logits on ``mask * real + (1 - mask) * fake`` should
    equal the same mix of its logits on the real and the fake image (mean squared error). The real and fake
    logits are those of the discriminator's main losses (OASIS reuses them too), so LabelMix costs one more
    discriminator pass, not three.

    Args:
        out_mixed, out_real, out_fake: ``B x (N + 1) x H x W`` logits.
        mask: ``B x 1 x H x W`` in ``{0, 1}`` (from :func:`labelmix_mask`).
    """
    from torch.nn import functional as F
    mask = mask.to(out_real.dtype)
    return F.mse_loss(out_mixed.float(), (mask * out_real + (1 - mask) * out_fake).float())
