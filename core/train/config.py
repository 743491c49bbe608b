"""Training settings: one validated, JSON-serialisable dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from core.errors import refuse_unknown_keys, require_all

KINDS = ("label2image", "pair")
SIZES = (8, 16, 32, 64, 128, 256, 512)
# Chosen on grabcut50 at 32 px, width 16, batch 8, seeds 0 and 1 (mean per-class colour Fréchet distance, lower
# is better). label2image, 400 steps: none 32.6, translation 25.4, translation,cutout 24.1, all three 31.6.
# pair, 300 steps: none 54.8, translation,cutout 31.0, all three 43.9. Colour jitter hurts the per-class colours
# both kinds have to learn, so it is off by default.
DEFAULT_DIFFAUGMENT = "translation,cutout"


@dataclass(frozen=True)
class TrainConfig:
    """What a training run does.

    Attributes:
        kind: ``"label2image"`` or ``"pair"``.
        data: the dataset folder (read through :class:`core.store.DatasetStore`).
        size: the side images and label maps are resized to (square; a power of two from 8 to 512).
        steps: generator steps in all (a resumed run continues up to this).
        batch: samples per step.
        seed: seed of initialisation, shuffling, noise and the fixed sample noise.
        width: base channel count of the networks (small for tests, 32-64 for real runs).
        z_dim: noise channels (pair: latent size; label2image: the 3D noise channels).
        lr_g, lr_d: Adam learning rates of the generator and the critic/discriminator.
        beta1, beta2: Adam betas (WGAN-GP: 0.5, 0.9; OASIS: 0.0, 0.999).
        n_critic: critic steps per generator step (pair). WGAN-GP's 5 stays the default although the critic steps are
            most of a pair step's cost: on grabcut50 at 32 px with the same CPU time (about 50 s), n_critic 1, 2
            and 5 reached a per-class colour Fréchet distance of 66, 43 and 24.
        gp_lambda: gradient-penalty weight (pair; 10 as WGAN-GP defines it).
        labelmix_lambda: LabelMix regularisation weight (label2image; 0 turns it off).
        ema_decay: decay of the EMA generator (with the usual warm-up ``min(decay, (1+t)/(10+t))``).
        sample_every: write a sample grid every this many steps (0: never).
        checkpoint_every: write a checkpoint every this many steps (one is always written at the end).
        log_every: write a log line every this many steps.
        samples: tiles in each sample grid.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see :mod:`core.device`).
        amp: use mixed precision on CUDA (ignored on the CPU, which trains in fp32).
        diffaugment: DiffAugment transforms applied to everything the critic / discriminator sees, a comma list
            of ``color``, ``translation``, ``cutout`` (``""``: none); see :mod:`core.train.augment`.
        eval_samples: samples of the in-run evaluation written to ``eval.json`` at every checkpoint
            (0: none); see :mod:`core.train.evaluate`.
    """

    kind: str
    data: str
    size: int = 128
    steps: int = 1000
    batch: int = 8
    seed: int = 0
    width: int = 32
    z_dim: int = 64
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    n_critic: int = 5
    gp_lambda: float = 10.0
    labelmix_lambda: float = 0.0
    ema_decay: float = 0.999
    sample_every: int = 100
    checkpoint_every: int = 500
    log_every: int = 1
    samples: int = 8
    device: str = "auto"
    amp: bool = True
    diffaugment: str = DEFAULT_DIFFAUGMENT
    eval_samples: int = 64

    def __post_init__(self) -> None:
        from core.train.augment import parse_policy

        require_all(
            [
                (self.kind in KINDS, f"kind {self.kind!r} is unknown; accepted: {', '.join(KINDS)}"),
                (bool(str(self.data)), "data must name a dataset folder"),
                (self.size in SIZES, f"size {self.size} is not accepted; accepted: {', '.join(map(str, SIZES))}"),
                (self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
                (self.batch >= 1, f"batch must be at least 1, got {self.batch}"),
                (self.width >= 4, f"width must be at least 4, got {self.width}"),
                (self.z_dim >= 1, f"z_dim must be at least 1, got {self.z_dim}"),
                (self.lr_g > 0 and self.lr_d > 0, f"learning rates must be positive, got {self.lr_g}, {self.lr_d}"),
                (
                    0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
                    f"betas must lie in [0, 1), got {self.beta1}, {self.beta2}",
                ),
                (self.n_critic >= 1, f"n_critic must be at least 1, got {self.n_critic}"),
                (self.gp_lambda >= 0, f"gp_lambda must be 0 or more, got {self.gp_lambda}"),
                (self.labelmix_lambda >= 0, f"labelmix_lambda must be 0 or more, got {self.labelmix_lambda}"),
                (0 <= self.ema_decay < 1, f"ema_decay must lie in [0, 1), got {self.ema_decay}"),
                (self.sample_every >= 0, f"sample_every must be 0 or more, got {self.sample_every}"),
                (self.checkpoint_every >= 1, f"checkpoint_every must be at least 1, got {self.checkpoint_every}"),
                (self.log_every >= 1, f"log_every must be at least 1, got {self.log_every}"),
                (self.samples >= 1, f"samples must be at least 1, got {self.samples}"),
                (self.eval_samples >= 0, f"eval_samples must be 0 or more, got {self.eval_samples}"),
            ],
            "training settings",
        )
        parse_policy(self.diffaugment)

    @classmethod
    def for_kind(cls, kind: str, data: str, **overrides) -> TrainConfig:
        """The defaults of a kind (pair: WGAN-GP's Adam 1e-4, betas (0.5, 0.9); label2image: OASIS's
        betas (0.0, 0.999), generator lr 1e-4, discriminator lr 4e-4, LabelMix on, 16 noise channels), then
        ``overrides``.

        label2image's 3D noise has 16 channels rather than OASIS's 64: the noise enters every SPADE block's
        conditioning at full resolution, and on grabcut50 at 32 px (400 steps, 2 seeds) 16 channels gave a mean
        per-class colour Fréchet distance of 24.1 against 27.5 with 64 (:mod:`core.train.evaluate`).
        DiffAugment defaults to ``translation,cutout`` for both kinds (see :data:`DEFAULT_DIFFAUGMENT`)."""
        base: dict = {}
        if kind == "label2image":
            base = {"beta1": 0.0, "beta2": 0.999, "lr_d": 4e-4, "labelmix_lambda": 10.0, "z_dim": 16}
        base.update(overrides)
        return cls(kind=kind, data=str(data), **base)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> TrainConfig:
        """Read a config written by :meth:`to_json`; unknown keys are refused."""
        refuse_unknown_keys(cls, doc, "training config has")
        return cls(**doc)

    def replace(self, **changes) -> TrainConfig:
        doc = self.to_json()
        doc.update(changes)
        return TrainConfig.from_json(doc)
