"""Generating new samples over a dataset: each sample's label map is kept, its image is generated from
its condition image and prompt (saved in the Priors tab / by ``segstudio priors``, or made here with the
prior that suits the control model), and every setting goes into the sample's manifest line.

The ``gan`` backend (:mod:`core.generate.gan`) takes a training run folder as its model: a label2image run keeps
each label map and makes its image (no condition image or prompt), a pair run makes new samples."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from core.device import DevicePolicy
from core.errors import ImageLoadError, InvalidInput, SampleProblem
from core.generate import controlnet, t2i_adapter
from core.generate.diffusion import DiffusionSettings
from core.labels.overlay import Recombined
from core.labels.recombine import RecombinedSample
from core.models import ModelRegistry, default_registry
from core.priors.pipeline import PriorSettings, compute_priors, load_prior
from core.priors.prompts import build_prompt, class_names_of
from core.progress import CancelToken, ProgressFn, no_progress
from core.store import DatasetStore, SkipReport

BACKENDS = {"controlnet": controlnet.generate, "t2i-adapter": t2i_adapter.generate}
ALL_BACKENDS = ("composite", *BACKENDS, "gan")  # composite lives in core.generate.composite


def gan_settings(model_id: str, settings: DiffusionSettings):
    """The :class:`core.generate.gan.GanSettings` of a request made with diffusion-style settings (the run
    folder as the model, ``count`` and ``seed``; prompts and steps do not apply)."""
    from core.generate.gan import GanSettings

    return GanSettings(run=str(model_id or ""), count=settings.count, seed=settings.seed)


def default_prior_type(model_id: str) -> str:
    """The condition a control model was trained on: ``ade20k`` for segmentation ControlNets, Canny for
    Canny ones, the standard line art for line art, soft edge and sketch models."""
    name = model_id.lower()
    if "seg" in name:
        return "ade20k"
    if "canny" in name:
        return "canny"
    return "lineart_standard"


def condition_and_prompt(
    dataset: DatasetStore, sample_id: str, model_id: str, priors_root: Path | None, registry: ModelRegistry | None
) -> tuple[np.ndarray, str, str | None, dict]:
    """A sample's condition image, prompt, negative prompt (or None) and where they came from."""
    data = dataset.read(sample_id)
    image, label_map = data.image, data.label_map
    if label_map is None:
        raise SampleProblem(
            data.label_problem
            or f"sample {sample_id!r} has no label map: the generators keep the label map and make the image"
        )
    saved = load_prior(priors_root, sample_id) if priors_root is not None else None
    if saved is not None:
        condition, record = saved
        return condition, record.get("prompt") or build_prompt("", class_names_of(label_map, dataset.classes)), \
            record.get("negative_prompt"), {"source": "saved", "folder": str(priors_root), "prior": record.get("prior")}  # fmt: skip
    settings = PriorSettings.for_type(default_prior_type(model_id))
    condition = compute_priors(image, label_map, dataset.classes, settings, registry).condition
    prompt = build_prompt("", class_names_of(label_map, dataset.classes))
    return condition, prompt, None, {"source": "computed", "prior": settings.record()}


def generate_sample(
    dataset: DatasetStore,
    sample_id: str,
    backend: str,
    model_id: str,
    settings: DiffusionSettings,
    *,
    index: int = 0,
    priors_root: Path | None = None,
    registry: ModelRegistry | None = None,
    policy: DevicePolicy | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[RecombinedSample]:
    """Images for one sample (``settings.count`` of them), each paired with the sample's label map.

    With ``backend="gan"``, ``model_id`` is a run folder: see :func:`core.generate.gan.generate_for_sample`.

    The prompt in ``settings`` is used when given; an empty one is replaced by the saved or built prompt.
    Generated images are resized to the label map's size (bilinear) so that every pair lines up.
    """
    import cv2

    if backend == "gan":
        from core.generate import gan

        return gan.generate_for_sample(dataset, sample_id, gan_settings(model_id, settings), index=index,
                                       progress=progress, cancel=cancel)  # fmt: skip
    if backend not in BACKENDS:
        raise InvalidInput(f"unknown generator backend {backend!r}; accepted: {', '.join(ALL_BACKENDS)}")
    registry = registry or default_registry()
    condition, prompt, negative, prior_record = condition_and_prompt(
        dataset, sample_id, model_id, priors_root, registry
    )
    settings = replace(
        settings, prompt=settings.prompt.strip() or prompt, negative_prompt=negative or settings.negative_prompt
    )
    result = BACKENDS[backend](
        condition, settings, model_id, registry=registry, policy=policy, progress=progress, cancel=cancel
    )
    label_map = dataset.label_map(sample_id)
    out = []
    for k, (image, seed) in enumerate(zip(result.images, result.seeds, strict=True)):
        resized = cv2.resize(image, (label_map.shape[1], label_map.shape[0]), interpolation=cv2.INTER_LINEAR)
        record = {"id": f"{backend}_{index + k:06d}", "mode": backend, "source": sample_id, "seed": seed,
                  "index": index + k, "settings": {**result.record, "seeds": [seed]}, "condition": prior_record}  # fmt: skip
        out.append(RecombinedSample(record["id"], Recombined(label_map.copy(), resized, []), record))
    return out


def generate_dataset(
    dataset: DatasetStore,
    backend: str,
    model_id: str,
    settings: DiffusionSettings,
    *,
    priors_root: Path | None = None,
    registry: ModelRegistry | None = None,
    policy: DevicePolicy | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    skipped: SkipReport | None = None,
) -> list[RecombinedSample]:
    """``settings.count`` samples, cycling over the labelled samples in order; sample ``i`` uses seed
    ``settings.seed + i``. A sample that cannot be read is skipped (listed in ``skipped``) and the next
    one used, so one bad file never stops the batch. With ``backend="gan"``, ``model_id`` is a run folder (see
    :func:`core.generate.gan.generate_dataset`)."""
    from core.store import Problem

    if backend == "gan":  # a label2image run cycles over the labelled samples too; a pair run makes new ones
        from core.generate import gan

        return gan.generate_dataset(dataset, gan_settings(model_id, settings), progress=progress, cancel=cancel,
                                    skipped=skipped)  # fmt: skip
    labelled = dataset.labelled_ids()
    if not labelled:
        raise InvalidInput(f"{dataset.root} has no labelled sample to generate from")
    progress = progress or no_progress
    skipped = skipped if skipped is not None else SkipReport()
    bad: set[str] = set()
    out: list[RecombinedSample] = []
    for i in range(settings.count):
        if cancel is not None:
            cancel.raise_if_cancelled("generation")
        one = replace(settings, seed=settings.seed + i, count=1, batch_size=1)
        step = _scaled(progress, i, settings.count)
        for offset in range(len(labelled)):
            sample_id = labelled[(i + offset) % len(labelled)]
            if sample_id in bad:
                continue
            try:
                out += generate_sample(dataset, sample_id, backend, model_id, one, index=i, priors_root=priors_root,
                                       registry=registry, policy=policy, progress=step, cancel=cancel)  # fmt: skip
                break
            except (ImageLoadError, SampleProblem) as exc:
                bad.add(sample_id)
                skipped.add(Problem("", str(exc), sample_id))
        else:
            raise InvalidInput(f"no sample of {dataset.root} could be read; {skipped.summary()}")
    return out



def _scaled(progress: ProgressFn, index: int, total: int) -> ProgressFn:
    def report(fraction: float | None, message: str = "") -> None:
        overall = None if fraction is None else (index + fraction) / total
        progress(overall, f"sample {index + 1}/{total}: {message}")

    return report
