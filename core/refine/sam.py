"""Box prompts through Segment Anything (transformers' ``SamModel`` / ``SamProcessor``).

As in segment-anything's predictor, the expensive step (the image embedding) runs once per image and
is cached by the image's hash; each box prompt after that only runs the small mask decoder.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.device import DevicePolicy
from core.errors import InvalidInput
from core.types import Box

SAM_MODEL_ID = "sam-vit-base"
_EMBEDDINGS_KEPT = 4


@dataclass
class SamPredictor:
    """A loaded SAM with a small cache of image embeddings.

    Attributes:
        model: ``transformers.SamModel`` on the policy's device.
        processor: ``transformers.SamProcessor``.
        policy: device and dtype.
    """

    model: object
    processor: object
    policy: DevicePolicy
    _embeddings: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _embedding(self, image_key: str, image_rgb: np.ndarray):
        import torch

        with self._lock:
            if image_key in self._embeddings:
                self._embeddings.move_to_end(image_key)
                return self._embeddings[image_key]
        inputs = self.processor(images=image_rgb, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.policy.device, self.policy.torch_dtype)
        with torch.no_grad():
            embedding = self.model.get_image_embeddings(pixel_values)
        entry = (embedding, inputs["original_sizes"], inputs["reshaped_input_sizes"])
        with self._lock:
            self._embeddings[image_key] = entry
            while len(self._embeddings) > _EMBEDDINGS_KEPT:
                self._embeddings.popitem(last=False)
        return entry

    def predict(
        self,
        image_key: str,
        image_rgb: np.ndarray,
        box: Box,
        points: Sequence[tuple[int, int]] = (),
        labels: Sequence[int] = (),
    ) -> np.ndarray:
        """Foreground probability for one box prompt, with optional point prompts.

        Args:
            image_key: a hash identifying ``image_rgb`` (embeddings are cached under it).
            image_rgb: ``H x W x 3 uint8`` RGB.
            box: half-open pixel box.
            points: ``(x, y)`` pixel positions of correction clicks (pixel centres are used).
            labels: one per point: 1 for object, 0 for not object.

        Returns:
            ``H x W float32`` probability in ``[0, 1]``.
        """
        import torch

        if len(points) != len(labels):
            raise InvalidInput(f"{len(points)} prompt points but {len(labels)} labels; give one label per point")
        embedding, original_sizes, reshaped_sizes = self._embedding(image_key, image_rgb)
        # SAM's box corners are continuous coordinates: a half-open box [x0, x1) spans x0..x1.
        extra = {}
        if len(points):
            extra = {"input_points": [[[[x + 0.5, y + 0.5] for x, y in points]]],
                     "input_labels": [[[int(v) for v in labels]]]}  # fmt: skip
        prompt = self.processor(images=image_rgb, input_boxes=[[[box.x0, box.y0, box.x1, box.y1]]], return_tensors="pt",
                                **extra)  # fmt: skip
        boxes = prompt["input_boxes"].to(self.policy.device, self.policy.torch_dtype)
        inputs = {"input_boxes": boxes}
        if len(points):
            inputs["input_points"] = prompt["input_points"].to(self.policy.device, self.policy.torch_dtype)
            inputs["input_labels"] = prompt["input_labels"].to(self.policy.device)
        with torch.no_grad():
            outputs = self.model(image_embeddings=embedding, multimask_output=False, **inputs)
        logits = self.processor.image_processor.post_process_masks(
            outputs.pred_masks.float().cpu(), original_sizes, reshaped_sizes, binarize=False
        )[0]
        return torch.sigmoid(logits[0, 0]).numpy().astype(np.float32)


def load_sam(folder: Path, policy: DevicePolicy) -> SamPredictor:
    """Registry loader: ``SamModel`` and ``SamProcessor`` from one local folder."""
    from transformers import SamModel, SamProcessor

    from core.models import move_to_policy

    model = SamModel.from_pretrained(str(folder), local_files_only=True)
    processor = SamProcessor.from_pretrained(str(folder), local_files_only=True)
    return SamPredictor(move_to_policy(model, policy), processor, policy)
