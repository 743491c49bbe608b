"""Automatic quality scores of generated samples: does the image show what the label map says, where it says it?

- ``boundary``: a boundary F-score between the label map's class boundaries and the image's edges. Boundaries
  are the pixels where the class changes (ignore pixels excluded); edges are Canny edges of the grey image
  (thresholds from its median). A boundary pixel counts as matched when an edge lies within ``tolerance``
  pixels, and an edge counts when a boundary lies within ``tolerance``; precision = matched edges / edges,
  recall = matched boundaries / boundaries, F = their harmonic mean. Limits: texture inside objects or in the
  background adds edges no label boundary explains (lowering precision), and an object the generator drew with
  soft, low-contrast outlines scores low although a person would accept it. It says nothing about whether the
  right *class* was drawn; compare scores within one generator and dataset, not across them.
- ``clip``: with a CLIP model installed (registry id ``clip-vit-b32``, offline), the cosine similarity of the
  image with ``"a photo of <classes present>"``, as CLIP defines it (about 0.2 to 0.35 for matching pairs).
  It checks that the classes are visible somewhere, not where.
- ``segmenter``: with a segmenter trained on the real data (``segstudio train-segmenter``), the mIoU of its
  prediction on the generated image against the sample's label map (classes present in either; the
  label-consistency figure SPADE / OASIS report): does a model that knows the real data see the classes where
  the map puts them? It is only as good as that segmenter (compare it with the segmenter's own test mIoU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.types import ClassSet

CLIP_MODEL_ID = "clip-vit-b32"


def label_boundaries(label_map: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """``H x W bool``: pixels whose right or lower neighbour has another class (neither side ignored)."""
    boundary = np.zeros(label_map.shape, bool)
    valid = label_map != ignore_index
    right = (label_map[:, 1:] != label_map[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    down = (label_map[1:, :] != label_map[:-1, :]) & valid[1:, :] & valid[:-1, :]
    boundary[:, :-1] |= right
    boundary[:-1, :] |= down
    return boundary


def image_edges(image: np.ndarray) -> np.ndarray:
    """``H x W bool`` Canny edges of an ``H x W x 3 uint8`` RGB image, thresholds from the grey median."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    grey = cv2.GaussianBlur(grey, (5, 5), 0)
    median = float(np.median(grey))
    low, high = int(max(0, 0.66 * median)), int(min(255, 1.33 * median))
    return cv2.Canny(grey, max(low, 10), max(high, 30)) > 0


def _near(mask: np.ndarray, tolerance: int) -> np.ndarray:
    import cv2

    size = 2 * tolerance + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


@dataclass(frozen=True)
class BoundaryScore:
    precision: float
    recall: float
    f: float

    def to_json(self) -> dict:
        return {"precision": round(self.precision, 4), "recall": round(self.recall, 4), "f": round(self.f, 4)}


def boundary_agreement(image: np.ndarray, label_map: np.ndarray, ignore_index: int = 255,
                       tolerance: int = 3) -> BoundaryScore | None:  # fmt: skip
    """Boundary F-score of ``label_map`` (``H x W uint8``) against the edges of ``image`` (``H x W x 3 uint8``).

    Returns ``None`` when the label map has no boundary (one class everywhere): nothing to check.

    Raises:
        ValueError: the image and the label map differ in size.
    """
    if image.shape[:2] != label_map.shape:
        raise ValueError(f"image {image.shape[:2]} and label map {label_map.shape} differ in size")
    boundary, edges = label_boundaries(label_map, ignore_index), image_edges(image)
    if not boundary.any():
        return None
    recall = float((boundary & _near(edges, tolerance)).sum() / boundary.sum())
    precision = float((edges & _near(boundary, tolerance)).sum() / edges.sum()) if edges.any() else 0.0
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return BoundaryScore(precision, recall, f)


def class_prompt(label_map: np.ndarray, classes: ClassSet) -> str:
    """``"a photo of cat, person"``: the classes present (background and ignore left out)."""
    present = [classes.names[c] for c in np.unique(label_map) if 0 < c < len(classes.names) and c != classes.ignore_index]
    return "a photo of " + (", ".join(present) if present else "a scene")


def load_clip(folder, policy=None):
    """Load a CLIP model and its processor from a local folder (``transformers`` layout)."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    return model, CLIPProcessor.from_pretrained(str(folder), local_files_only=True)


def clip_similarity(clip, image: np.ndarray, text: str) -> float:
    """Cosine similarity of CLIP's embeddings of ``image`` (``H x W x 3 uint8``) and ``text``."""
    import torch

    model, processor = clip
    inputs = processor(text=[text], images=[image], return_tensors="pt", padding=True)
    with torch.no_grad():
        image_features = model.get_image_features(pixel_values=inputs["pixel_values"])
        text_features = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    image_features = _as_tensor(image_features)
    text_features = _as_tensor(text_features)
    return float(torch.nn.functional.cosine_similarity(image_features, text_features).item())


def _as_tensor(features):
    """transformers 5 may return a model output instead of a tensor from ``get_*_features``."""
    if hasattr(features, "pooler_output"):
        return features.pooler_output
    return features


def segmenter_score(segmenter, image: np.ndarray, label_map: np.ndarray) -> float | None:
    """mIoU of ``segmenter`` (a :class:`core.task.evaluate.LoadedSegmenter`) on ``image`` against ``label_map``;
    ``None`` when the map is all ignore (nothing to score)."""
    from core.errors import SampleProblem
    from core.task.evaluate import score_sample

    try:
        return round(score_sample(segmenter, image, label_map), 4)
    except SampleProblem:
        return None


def score(image: np.ndarray, label_map: np.ndarray, classes: ClassSet, clip=None, segmenter=None) -> dict:
    """The scores of one generated sample: ``{"boundary": {precision, recall, f} | None, "clip": float | None,
    "segmenter": float | None (only with a segmenter), "score": the boundary F (the gate's number, ``None`` when
    there is no boundary)}``."""
    boundary = boundary_agreement(image, label_map, classes.ignore_index)
    clip_value = None if clip is None else round(clip_similarity(clip, image, class_prompt(label_map, classes)), 4)
    out = {"boundary": None if boundary is None else boundary.to_json(), "clip": clip_value,
           "score": None if boundary is None else round(boundary.f, 4)}  # fmt: skip
    if segmenter is not None:
        out["segmenter"] = segmenter_score(segmenter, image, label_map)
    return out


def passes(scores: dict, gate: dict) -> tuple[bool, str]:
    """Whether a sample passes the recipe's ``quality`` gate; the reason when not."""
    min_score, min_clip = gate.get("min_score"), gate.get("min_clip")
    if min_score is not None and scores.get("score") is not None and scores["score"] < min_score:
        return False, f"boundary score {scores['score']:.3f} < min_score {min_score}"
    if min_clip is not None and scores.get("clip") is not None and scores["clip"] < min_clip:
        return False, f"CLIP score {scores['clip']:.3f} < min_clip {min_clip}"
    min_seg = gate.get("min_segmenter")
    if min_seg is not None and scores.get("segmenter") is not None and scores["segmenter"] < min_seg:
        return False, f"segmenter mIoU {scores['segmenter']:.3f} < min_segmenter {min_seg}"
    return True, ""
