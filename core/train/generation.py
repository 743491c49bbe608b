"""Generating from a trained run: ``load_run(run_dir)`` -> :class:`GanModel`.

- ``pair`` runs make new ``(image, label map)`` samples: :meth:`GanModel.generate_pairs`.
- ``label2image`` runs make an image for each given label map, which is kept exactly:
  :meth:`GanModel.generate_from_maps`.

Sample ``i`` of a call with seed ``s`` uses noise seeded with ``(s, i)`` and the generator runs in eval mode,
so it does not depend on how many samples are asked for at once. Every result carries its settings
(run folder, checkpoint sha256, step, seed, index).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InvalidInput
from core.types import ClassSet


@dataclass
class GanModel:
    """A loaded generator.

    Attributes:
        run_dir: the run folder; kind, size: its settings; classes: the dataset's class set; present: the class
            indices a pair run may produce; step: the checkpoint's step; checkpoint_sha256: the hash of the
            weights file used; ema: whether the EMA generator was loaded.
    """

    run_dir: Path
    kind: str
    size: int
    z_dim: int
    classes: ClassSet
    present: list[int]
    step: int
    checkpoint_sha256: str
    ema: bool
    net: object = field(repr=False)
    device: str = "cpu"
    batch: int = 16

    def record(self, seed: int, index: int | None = None) -> dict:
        """The settings of a generated sample (JSON-serialisable)."""
        rec = {"backend": "gan", "kind": self.kind, "run": str(self.run_dir), "checkpoint_sha256": self.checkpoint_sha256,
               "step": self.step, "ema": self.ema, "size": self.size, "seed": int(seed)}  # fmt: skip
        if index is not None:
            rec["index"] = int(index)
        return rec

    def _noise(self, seed: int, start: int, count: int):
        import torch

        rows = [torch.randn(self.z_dim, generator=torch.Generator().manual_seed(_sample_seed(seed, i)))
                for i in range(start, start + count)]  # fmt: skip
        return torch.stack(rows).to(self.device)

    def generate_pairs(self, n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """``n`` new samples from a ``pair`` run.

        Returns:
            ``n`` pairs ``(size x size x 3 uint8 RGB, size x size uint8 label map)``; label values are only the
            run's present classes (never 255).

        Raises:
            InvalidInput: the run is not a pair run, or ``n`` < 1.
        """
        import torch

        from core.train.trainer import pair_labels, to_uint8_images

        if self.kind != "pair":
            raise InvalidInput(f"{self.run_dir} is a {self.kind} run; generate_pairs needs a pair run "
                               f"(use generate_from_maps)")  # fmt: skip
        if n < 1:
            raise InvalidInput(f"n must be at least 1, got {n}")
        out = []
        with torch.no_grad():
            for start in range(0, n, self.batch):
                count = min(self.batch, n - start)
                images, logits = self.net(self._noise(seed, start, count))
                labels = pair_labels(logits, self.present).cpu().numpy()
                out += list(zip(to_uint8_images(images), labels, strict=True))
        return out

    def generate_from_maps(self, label_maps: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
        """An image for each label map of a ``label2image`` run.

        Each map is resized (nearest) to the run's size, turned one-hot (ignore 255 -> no class), the image
        generated and resized (bilinear) back to the map's size; the map itself is not changed.

        Args:
            label_maps: ``H x W uint8`` maps (sizes may differ) with values in the run's class set or 255.

        Returns:
            one ``H x W x 3 uint8`` RGB image per map, the map's size.

        Raises:
            InvalidInput: the run is not a label2image run, or a map is malformed or holds unknown classes.
        """
        import cv2
        import torch

        from core.train.data import one_hot
        from core.train.trainer import spatial_noise, to_uint8_images

        if self.kind != "label2image":
            raise InvalidInput(f"{self.run_dir} is a {self.kind} run; generate_from_maps needs a label2image run "
                               f"(use generate_pairs)")  # fmt: skip
        n = len(self.classes.names)
        small = []
        for i, lab in enumerate(label_maps):
            lab = np.asarray(lab)
            if lab.ndim != 2 or lab.dtype != np.uint8:
                raise InvalidInput(f"label map {i} must be H x W uint8, got shape {lab.shape} and dtype {lab.dtype}")
            bad = sorted(set(np.unique(lab).tolist()) - set(range(n)) - {self.classes.ignore_index})
            if bad:
                raise InvalidInput(f"label map {i} holds values {bad[:8]} outside the run's classes 0..{n - 1} "
                                   f"and {self.classes.ignore_index} (ignore)")  # fmt: skip
            small.append(cv2.resize(np.ascontiguousarray(lab), (self.size, self.size), interpolation=cv2.INTER_NEAREST))
        out = []
        with torch.no_grad():
            for start in range(0, len(small), self.batch):
                chunk = np.stack(small[start : start + self.batch])
                onehot = torch.from_numpy(one_hot(chunk, n)).to(self.device)
                noise = spatial_noise(self._noise(seed, start, len(chunk)), self.size)
                for j, image in enumerate(to_uint8_images(self.net(onehot, noise))):
                    h, w = label_maps[start + j].shape
                    out.append(
                        image
                        if (h, w) == image.shape[:2]
                        else cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
                    )
        return out


def _sample_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index), 7]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def load_run(run_dir: str | Path, *, ema: bool = True, device: str = "cpu") -> GanModel:
    """Load a run's latest checkpoint for generation.

    Args:
        run_dir: a folder written by :func:`core.train.trainer.train`.
        ema: load the EMA generator (default) rather than the raw one.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (see :mod:`core.device`); generation runs in fp32.

    Raises:
        InvalidInput: the folder holds no checkpoint, or its weights file does not match its recorded hash.
    """
    from safetensors.torch import load_file

    from core.device import resolve_policy
    from core.train.config import TrainConfig
    from core.train.nets import build_networks
    from core.train.trainer import NET_FILES, read_checkpoint, sha256_file

    run_dir = Path(run_dir)
    doc = read_checkpoint(run_dir)
    config = TrainConfig.from_json(doc["config"])
    classes = ClassSet.from_json(doc["classes"])
    name = "generator_ema" if ema else "generator"
    path = run_dir / doc["folder"] / NET_FILES[name]
    if not path.is_file():
        raise InvalidInput(f"{path} is missing; the run's checkpoint is incomplete")
    sha = sha256_file(path)
    if sha != doc["nets"][name]["sha256"]:
        raise InvalidInput(f"{path} does not match the sha256 recorded in {run_dir / 'checkpoint.json'}; "
                           f"the file was changed or damaged")  # fmt: skip
    policy = resolve_policy(device)
    net, _ = build_networks(config.kind, config.size, len(classes.names), config.width, config.z_dim)
    net.load_state_dict(load_file(str(path)))
    net = net.to(policy.device).eval()
    return GanModel(run_dir.resolve(), config.kind, config.size, config.z_dim, classes, list(doc["present"]),
                    int(doc["step"]), sha, ema, net, policy.device)  # fmt: skip


def read_log(run_dir: str | Path) -> list[dict]:
    """The run's log records (``{"step", "seconds", "losses"}``), oldest first; lines cut by a crash are skipped."""
    from core.io.runlog import read_log as read_jsonl_log

    return read_jsonl_log(Path(run_dir) / "log.jsonl")
