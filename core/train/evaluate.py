"""Evaluating a GAN run: per-class colour statistics (weight-free), and FID / KID when Inception weights are there.

Per-class colour statistics compare, for every class, the RGB values of the real pixels of that class with the
generated pixels of that class:

- ``label2image``: images are generated from the real label maps of ``n`` real samples; a class's generated
  pixels are those its map marks in the generated image, its real pixels those it marks in the real image.
- ``pair``: ``n`` generated samples are grouped by their own generated labels; the real pixels come from ``n``
  real samples grouped by their label maps.

Per class: pixel count, mean and standard deviation of R, G, B (0-255) on each side, the mean-colour distance
``||mu_real - mu_gen||`` and the Fréchet distance between the two RGB Gaussians,
``d = sqrt(||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r^1/2 S_g S_r^1/2)^1/2))`` (0-255 units; FID reports ``d^2``).
The single figure, ``color_fd``, is the mean of ``d`` over the classes present on both sides; ``mean_color_l2``
is the mean of the mean-colour distances; classes present in the real pixels only are listed in
``missing`` (a pair generator that never draws a class), and ``class_share_tv`` is the total-variation distance
between the real and generated class pixel shares (0 for label2image, whose maps are the real ones).

FID / KID go through ``torchmetrics`` (with ``torch-fidelity``'s Inception v3) only when both packages and the
weights file ``weights-inception-2015-12-05-6726825d.pth`` are installed locally; nothing is downloaded.
Otherwise the entry is ``{"status": "skipped", "reason": ...}``, the reason naming what to install where.
With 64 samples these figures are noisy; they are for comparing runs of one dataset, not papers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from core.errors import InvalidInput

EVAL_FILE = "eval.json"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def class_color_stats(images: np.ndarray, label_maps: np.ndarray, num_classes: int,
                      ignore_index: int = 255) -> dict[int, dict]:  # fmt: skip
    """Per-class RGB statistics of labelled pixels.

    Args:
        images: ``N x H x W x 3 uint8`` RGB (or a list of ``H x W x 3``, sizes may differ per sample).
        label_maps: ``N x H x W uint8`` class indices matching the images (``ignore_index`` = void, skipped).
        num_classes: classes ``0 .. num_classes - 1`` are counted; other values are skipped.

    Returns:
        ``{class: {"count": int, "mean": [3 float], "std": [3 float], "cov": 3 x 3 float64 array}}`` for every
        class with at least one pixel.
    """
    if len(images) != len(label_maps):
        raise InvalidInput(f"got {len(images)} images but {len(label_maps)} label maps; they must pair up")
    sums = np.zeros((num_classes, 3))
    outer = np.zeros((num_classes, 3, 3))
    counts = np.zeros(num_classes, np.int64)
    for i, (image, labels) in enumerate(zip(images, label_maps, strict=True)):
        image, labels = np.asarray(image), np.asarray(labels)
        if image.ndim != 3 or image.shape[2] != 3 or labels.shape != image.shape[:2]:
            raise InvalidInput(f"sample {i}: the image must be H x W x 3 and its label map H x W of the same size, "
                               f"got {image.shape} and {labels.shape}")  # fmt: skip
        flat, px = labels.reshape(-1).astype(np.int64), image.reshape(-1, 3).astype(np.float64)
        keep = (flat != ignore_index) & (flat < num_classes)
        flat, px = flat[keep], px[keep]
        counts += np.bincount(flat, minlength=num_classes)
        np.add.at(sums, flat, px)
        np.add.at(outer, flat, px[:, :, None] * px[:, None, :])
    out = {}
    for c in np.flatnonzero(counts):
        mean = sums[c] / counts[c]
        cov = outer[c] / counts[c] - np.outer(mean, mean)
        cov = (cov + cov.T) / 2
        out[int(c)] = {"count": int(counts[c]), "mean": mean.tolist(), "std": np.sqrt(np.clip(np.diag(cov), 0, None)).tolist(),
                       "cov": cov}  # fmt: skip
    return out


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """``sqrt(||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2))`` for two Gaussians (any dimension)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    root1 = _sqrtm_psd(cov1)
    cross = np.trace(_sqrtm_psd(root1 @ cov2 @ root1))
    d2 = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross)
    return float(np.sqrt(max(d2, 0.0)))


def compare_color_stats(real: dict[int, dict], generated: dict[int, dict], names: list[str] | None = None) -> dict:
    """Per-class comparison and summary figures of two :func:`class_color_stats` results (see the module doc).

    Returns:
        ``{"color_fd", "mean_color_l2", "class_share_tv", "missing", "extra", "classes": {name: {...}}}``;
        ``color_fd`` and ``mean_color_l2`` are ``None`` when no class is present on both sides.
    """

    def name(c: int) -> str:
        return names[c] if names and c < len(names) else str(c)

    both = sorted(set(real) & set(generated))
    total_r = sum(s["count"] for s in real.values()) or 1
    total_g = sum(s["count"] for s in generated.values()) or 1
    classes, fds, l2s = {}, [], []
    for c in sorted(set(real) | set(generated)):
        r, g = real.get(c), generated.get(c)
        row = {
            "real_share": (r["count"] / total_r) if r else 0.0,
            "generated_share": (g["count"] / total_g) if g else 0.0,
        }
        for side, st in (("real", r), ("generated", g)):
            if st:
                row[f"{side}_mean"] = [round(v, 2) for v in st["mean"]]
                row[f"{side}_std"] = [round(v, 2) for v in st["std"]]
        if c in both:
            row["mean_l2"] = float(np.linalg.norm(np.subtract(r["mean"], g["mean"])))
            row["frechet"] = frechet_distance(r["mean"], r["cov"], g["mean"], g["cov"])
            fds.append(row["frechet"])
            l2s.append(row["mean_l2"])
        classes[name(c)] = row
    tv = 0.5 * sum(abs(v["real_share"] - v["generated_share"]) for v in classes.values())
    return {"color_fd": float(np.mean(fds)) if fds else None, "mean_color_l2": float(np.mean(l2s)) if l2s else None,
            "class_share_tv": float(tv), "missing": [name(c) for c in sorted(set(real) - set(generated))],
            "extra": [name(c) for c in sorted(set(generated) - set(real))], "classes": classes}  # fmt: skip


# ---- FID / KID (optional) -------------------------------------------------------------------------------------


def inception_weights_candidates() -> list[Path]:
    """Where the Inception weights are looked for: ``$SEGSTUDIO_MODELS/torch-fidelity/`` (see
    :func:`core.models.models_dir`), then torch hub's ``checkpoints/`` folder (where torch-fidelity itself keeps
    them)."""
    from core.models import models_dir

    places = [models_dir() / "torch-fidelity" / INCEPTION_FILE]
    torch_home = os.environ.get("TORCH_HOME")
    hub = Path(torch_home).expanduser() / "hub" if torch_home else Path.home() / ".cache" / "torch" / "hub"
    places.append(hub / "checkpoints" / INCEPTION_FILE)
    return places


def inception_metrics(real: list[np.ndarray], generated: list[np.ndarray], device: str = "cpu") -> dict:
    """FID and KID between two image sets, or why they were skipped.

    Args:
        real, generated: ``H x W x 3 uint8`` RGB images (at least 2 each).

    Returns:
        ``{"status": "ok", "fid", "kid_mean", "kid_std", "n_real", "n_generated", "weights"}`` or
        ``{"status": "skipped", "reason": ...}``.
    """
    import importlib.util

    need = [m for m in ("torchmetrics", "torch_fidelity") if importlib.util.find_spec(m) is None]
    weights = next((p for p in inception_weights_candidates() if p.is_file()), None)
    reasons = []
    if need:
        reasons.append(f"{' and '.join(need)} not installed (pip install 'torchmetrics[image]' torch-fidelity)")
    if weights is None:
        where = " or ".join(str(p.parent) for p in inception_weights_candidates())
        reasons.append(f"Inception weights absent: put {INCEPTION_FILE} (torch-fidelity's FID Inception v3) in {where}")
    if reasons:
        return {"status": "skipped", "reason": "; ".join(reasons)}
    if min(len(real), len(generated)) < 2:
        return {
            "status": "skipped",
            "reason": f"FID needs at least 2 images a side, got {len(real)} and {len(generated)}",
        }
    return _inception_scores(real, generated, weights, device)


def _inception_scores(real, generated, weights: Path, device: str) -> dict:
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
    from torchmetrics.image.kid import KernelInceptionDistance

    def batches(images):
        for i in range(0, len(images), 16):
            chunk = np.stack([np.asarray(im) for im in images[i : i + 16]])
            yield torch.from_numpy(chunk).permute(0, 3, 1, 2).contiguous().to(device)

    feature = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                 feature_extractor_weights_path=str(weights)).to(device)  # fmt: skip
    subset = min(50, len(real), len(generated))
    fid = FrechetInceptionDistance(feature=feature).to(device)
    kid = KernelInceptionDistance(feature=feature, subset_size=subset).to(device)
    with torch.no_grad():
        for is_real, images in ((True, real), (False, generated)):
            for batch in batches(images):
                fid.update(batch, real=is_real)
                kid.update(batch, real=is_real)
        kid_mean, kid_std = kid.compute()
        return {"status": "ok", "fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std),
                "n_real": len(real), "n_generated": len(generated), "weights": str(weights)}  # fmt: skip


# ---- runs ---------------------------------------------------------------------------------------------------


def choose_samples(count: int, n: int, seed: int) -> np.ndarray:
    """``min(n, count)`` sample indices, a seeded choice without repeats, in increasing order."""
    if n < 1:
        raise InvalidInput(f"n must be at least 1, got {n}")
    return np.sort(np.random.default_rng([seed, 11]).permutation(count)[: min(n, count)])


def evaluate_model(model, data, n: int = 64, seed: int = 0, fid: bool = True) -> dict:
    """Evaluate a loaded generator (:class:`core.train.generation.GanModel`) against training data
    (:class:`core.train.data.TrainData` at the model's size).

    Returns:
        ``{"kind", "step", "n", "seed", "color": compare_color_stats(...), "inception": {...}}``.
    """
    idx = choose_samples(len(data), n, seed)
    real_images, real_maps = data.images[idx], data.label_maps[idx]
    if model.kind == "label2image":
        gen_images = model.generate_from_maps(list(real_maps), seed=seed)
        gen_maps = list(real_maps)
    else:
        pairs = model.generate_pairs(len(idx), seed=seed)
        gen_images, gen_maps = [p[0] for p in pairs], [p[1] for p in pairs]
    names = list(data.classes.names)
    real = class_color_stats(real_images, real_maps, len(names), data.classes.ignore_index)
    generated = class_color_stats(gen_images, gen_maps, len(names), data.classes.ignore_index)
    doc = {"kind": model.kind, "step": model.step, "n": len(idx), "seed": seed,
           "color": compare_color_stats(real, generated, names)}  # fmt: skip
    if fid:
        doc["inception"] = inception_metrics(list(real_images), list(gen_images), model.device)
    return doc


def evaluate_run(run_dir: str | Path, data_root: str | Path, n: int = 64, seed: int = 0, *, ema: bool = True,
                 device: str = "cpu", cache_dir: Path | None = None, fid: bool = True, write: bool = False) -> dict:  # fmt: skip
    """Evaluate a run folder's latest checkpoint against a dataset (usually the one it was trained on).

    Args:
        run_dir: a folder written by :func:`core.train.trainer.train`.
        data_root: the dataset folder; its labelled samples are read at the run's size.
        n: samples to compare (at most the dataset's count); seed: which samples and the generation noise.
        write: also write the result to ``run_dir/eval.json``.

    Raises:
        InvalidInput: no checkpoint in ``run_dir``, an unreadable dataset, or ``n`` < 1.
    """
    from core.train.data import load_train_data
    from core.train.generation import load_run

    model = load_run(run_dir, ema=ema, device=device)
    data = load_train_data(data_root, model.size, cache_dir=cache_dir)
    doc = evaluate_model(model, data, n=n, seed=seed, fid=fid)
    if write:
        write_eval(run_dir, doc)
    return doc


def write_eval(run_dir: str | Path, doc: dict) -> Path:
    """Write ``doc`` to ``run_dir/eval.json`` atomically."""
    from core.io.atomic import atomic_write_text

    path = Path(run_dir) / EVAL_FILE
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path
