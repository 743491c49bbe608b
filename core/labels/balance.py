"""Planning how many synthetic samples each class needs (class balancing).

``n_balance`` mode follows Che et al. (2025), Algorithm 1: map each class to the images that hold it,
order those images by how few classes they contain (an image with fewer classes raises the others
less), and, rarest class first, plan one generation after another from them (cycling) until the class
appears in ``n_balance`` images. Each planned sample counts for every class of its source image, so
co-occurring classes fill up together.

``synthetic_share`` mode fixes the budget instead: the synthetic part is ``share`` of the final dataset
(``n_syn = share / (1 - share) * n_real``; the papers found about 1:1, between 30 and 70 %, best), and each
planned sample goes to the class that currently appears in the fewest images.

Counts are appearance counts (images containing the class); background (class 0) is not balanced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InvalidInput
from core.labels.stats import entropy, imbalance_ratio
from core.types import ClassSet


@dataclass
class BalancePlan:
    """A class-balance plan: what to generate from which source, and the distribution expected after.

    Attributes:
        mode: ``n_balance`` or ``synthetic_share``.
        target: ``n_balance`` or the share.
        seed: base seed; sample ``i`` is generated with ``seed + i``.
        classes: class names in index order (background left out).
        before, after: appearance counts per class name.
        quotas: planned samples per target class name.
        samples: one dict per planned sample: ``id``, ``source``, ``target_class``, ``classes``, ``seed``.
        unreachable: classes that no image holds (nothing to generate them from).
        real_samples: how many labelled images the counts come from.
    """

    mode: str
    target: float
    seed: int
    classes: list[str]
    before: dict[str, int]
    after: dict[str, int]
    quotas: dict[str, int]
    samples: list[dict] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    real_samples: int = 0

    def to_json(self) -> dict:
        h_before, hn_before = entropy(self.before.values())
        h_after, hn_after = entropy(self.after.values())
        return {
            "mode": self.mode,
            "n_balance" if self.mode == "n_balance" else "synthetic_share": (
                int(self.target) if self.mode == "n_balance" else self.target
            ),
            "seed": self.seed, "real_samples": self.real_samples, "synthetic_samples": len(self.samples),
            "classes": self.classes, "quotas": self.quotas, "unreachable": self.unreachable,
            "before": self.before, "after": self.after,
            "entropy_before": round(h_before, 6), "entropy_after": round(h_after, 6),
            "entropy_normalised_before": round(hn_before, 6), "entropy_normalised_after": round(hn_after, 6),
            "imbalance_ratio_before": round(imbalance_ratio(self.before.values()), 6),
            "imbalance_ratio_after": round(imbalance_ratio(self.after.values()), 6),
            "samples": self.samples,
        }  # fmt: skip

    def save(self, path: str | Path) -> None:
        """Write the plan as JSON, atomically."""
        from core.io.atomic import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=2) + "\n")


def _index(image_classes: dict[str, set[int]], n_classes: int) -> dict[int, list[str]]:
    """Class -> images holding it, fewest classes first (then by id, for determinism)."""
    holders: dict[int, list[str]] = {c: [] for c in range(1, n_classes)}
    for image_id in sorted(image_classes, key=lambda i: (len(image_classes[i]), i)):
        for cls in image_classes[image_id]:
            if 0 < cls < n_classes:
                holders[cls].append(image_id)
    return holders


def plan_balance(
    image_classes: dict[str, set[int]],
    classes: ClassSet,
    *,
    n_balance: int | None = None,
    synthetic_share: float | None = None,
    seed: int = 0,
    max_samples: int = 1_000_000,
) -> BalancePlan:
    """Plan synthetic samples to balance class appearances.

    Args:
        image_classes: sample id -> classes present in its label map.
        n_balance: target number of images per class (Algorithm 1), or
        synthetic_share: target share of synthetic samples in the final dataset, in (0, 1).
        seed: base seed recorded for each planned sample.
        max_samples: a safety limit on the plan's size.

    Raises:
        InvalidInput: neither or both targets given, or a target out of range.
    """
    if (n_balance is None) == (synthetic_share is None):
        raise InvalidInput("give exactly one of n_balance (images per class) or synthetic_share (0..1)")
    if n_balance is not None and n_balance < 1:
        raise InvalidInput(f"n_balance must be at least 1, got {n_balance}")
    if synthetic_share is not None and not 0 < synthetic_share < 1:
        raise InvalidInput(f"synthetic share must be between 0 and 1 (exclusive), got {synthetic_share}")
    n_classes = len(classes)
    for image_id, present in image_classes.items():
        unknown = sorted(c for c in present if not 0 <= c < n_classes)
        if unknown:
            raise InvalidInput(
                f"sample {image_id!r} holds class indices {unknown} outside the class set (0..{n_classes - 1})"
            )
    holders = _index(image_classes, n_classes)
    counts = {c: len(holders[c]) for c in holders}
    before = dict(counts)
    quotas = dict.fromkeys(holders, 0)
    cursor = dict.fromkeys(holders, 0)
    samples: list[dict] = []

    def plan_one(cls: int) -> None:
        source = holders[cls][cursor[cls] % len(holders[cls])]
        cursor[cls] += 1
        for other in image_classes[source]:
            if other in counts:
                counts[other] += 1
        quotas[cls] += 1
        samples.append({
            "id": f"syn_{len(samples) + 1:06d}", "source": source, "target_class": classes.names[cls],
            "classes": [classes.names[c] for c in sorted(image_classes[source]) if 0 < c < n_classes],
            "seed": seed + len(samples),
        })  # fmt: skip
        if len(samples) > max_samples:
            raise InvalidInput(f"the plan would exceed {max_samples} samples; lower the target")

    reachable = [c for c in holders if holders[c]]
    if n_balance is not None:
        for cls in sorted(reachable, key=lambda c: (before[c], c)):
            while counts[cls] < n_balance:
                plan_one(cls)
        mode, target = "n_balance", float(n_balance)
    else:
        budget = round(synthetic_share / (1 - synthetic_share) * len(image_classes))
        for _ in range(budget if reachable else 0):
            plan_one(min(reachable, key=lambda c: (counts[c], c)))
        mode, target = "synthetic_share", float(synthetic_share)
    names = [classes.names[c] for c in holders]
    return BalancePlan(
        mode, target, seed, names, {classes.names[c]: before[c] for c in holders},
        {classes.names[c]: counts[c] for c in holders}, {classes.names[c]: quotas[c] for c in holders if quotas[c]},
        samples, [classes.names[c] for c in holders if not holders[c]], len(image_classes),
    )  # fmt: skip
