"""Prompts: a caption from an image-to-text model (BLIP, BLIP-2 or any local one, through the model
registry) with the sample's class names appended (Che et al. 2025's class-prompt appending):

    "<caption>; <class>, <class>"      e.g. "a room with a table; sofa, chair, dining table"

Classes come in a stable order (class index), background and ignore left out. Without a captioner the
prompt is built from the class names alone, and the reason is reported.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.device import DevicePolicy
from core.errors import InvalidInput, ModelUnavailable
from core.models import ModelRegistry, default_registry
from core.types import ClassSet

DEFAULT_TEMPLATE = "{caption}; {classes}"
CLASSES_ONLY_TEMPLATE = "{classes}"
DEFAULT_NEGATIVE = "blurry, low quality, distorted, deformed, watermark, text"
CAPTIONER_ID = "blip-captioner"


@dataclass
class Captioner:
    """A loaded image-to-text model and its processor."""

    model: object
    processor: object
    policy: DevicePolicy

    def caption(self, image: np.ndarray, max_new_tokens: int = 30) -> str:
        """A caption for an ``H x W x 3 uint8`` RGB image."""
        import torch

        inputs = self.processor(images=image, return_tensors="pt")
        inputs = {k: v.to(self.policy.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.policy.torch_dtype)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens)
        return self.processor.decode(out[0], skip_special_tokens=True).strip()


def load_captioner(folder: Path, policy: DevicePolicy) -> Captioner:
    """Registry loader: any transformers image-to-text model (``AutoModelForImageTextToText``) and its
    processor from one local folder."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from core.models import move_to_policy

    model = AutoModelForImageTextToText.from_pretrained(str(folder), local_files_only=True)
    processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    return Captioner(move_to_policy(model, policy), processor, policy)


def class_names_of(label_map: np.ndarray, classes: ClassSet) -> list[str]:
    """Names of the object classes in a label map, by class index (background and ignore left out)."""
    values = np.unique(np.asarray(label_map))
    return [classes.names[int(v)] for v in values if 0 < int(v) < len(classes)]


def readable(name: str) -> str:
    """A class name as words: ``diningtable`` stays, ``traffic_light`` becomes ``traffic light``."""
    return name.replace("_", " ").strip()


def build_prompt(caption: str | None, class_names: list[str], template: str = DEFAULT_TEMPLATE) -> str:
    """Fill a prompt template.

    Args:
        caption: the image's caption, or ``None``/empty when there is none (the template's ``{caption}``
            part and the separator after it are then dropped).
        class_names: the sample's classes, in the order to write them.
        template: text with ``{caption}`` and ``{classes}`` placeholders.

    Raises:
        InvalidInput: the template uses another placeholder or is malformed.
    """
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise InvalidInput(
            f"prompt template {template!r} is malformed ({exc}); use {{caption}} and {{classes}}"
        ) from None
    unknown = fields - {"caption", "classes"}
    if unknown:
        raise InvalidInput(
            f"prompt template uses {', '.join(sorted('{' + f + '}' for f in unknown))}; accepted: {{caption}}, {{classes}}"
        )
    classes_text = ", ".join(readable(n) for n in class_names)
    if not (caption or "").strip():
        template = CLASSES_ONLY_TEMPLATE if "{classes}" in template else template
    text = template.format(caption=(caption or "").strip(), classes=classes_text)
    return " ".join(text.replace(" ,", ",").split()).strip(" ;,")


@dataclass
class PromptResult:
    """A prompt and how it was made.

    Attributes:
        prompt: the text.
        caption: the caption used ("" when none).
        classes: the class names appended.
        note: why there is no caption, when there is none.
    """

    prompt: str
    caption: str
    classes: list[str]
    note: str = ""


def prompt_for(
    image: np.ndarray,
    label_map: np.ndarray | None,
    classes: ClassSet,
    *,
    template: str = DEFAULT_TEMPLATE,
    caption: str | None = None,
    use_captioner: bool = True,
    registry: ModelRegistry | None = None,
    captioner_id: str = CAPTIONER_ID,
) -> PromptResult:
    """The prompt of one sample: a caption (given, or from the captioner when available) with the
    sample's classes appended; without a captioner, the class names alone and a note saying why."""
    names = class_names_of(label_map, classes) if label_map is not None else []
    note = ""
    if caption is None and use_captioner:
        try:
            captioner = (registry or default_registry()).load(captioner_id)
            caption = captioner.caption(image)
        except ModelUnavailable as exc:
            caption, note = "", f"no caption: {exc}"
    return PromptResult(build_prompt(caption, names, template), caption or "", names, note)
