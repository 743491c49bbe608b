from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from core.types import Box, ClassSet
from core.viz import class_borders, class_shares, colorize, draw_boxes, overlay

VOC = ClassSet.builtin("voc")


def test_colorize_uses_the_palette_including_ignore():
    label = np.array([[0, 8], [255, 15]], dtype=np.uint8)
    rgb = colorize(label, VOC)
    assert rgb.shape == (2, 2, 3) and rgb[0, 1].tolist() == [64, 0, 0] and rgb[1, 0].tolist() == [224, 224, 192]


def test_class_borders_mark_both_sides_of_a_label_change():
    label = np.zeros((4, 6), np.uint8)
    label[:, 3:] = 8
    borders = class_borders(label)
    assert borders[:, 2].all() and borders[:, 3].all() and not borders[:, [0, 1, 4, 5]].any()


def test_overlay_tints_classes_outlines_their_border_and_leaves_background():
    image = np.full((6, 8, 3), 100, np.uint8)
    label = np.zeros((6, 8), np.uint8)
    label[1:5, 2:7] = 15
    out = overlay(image, label, VOC, 0.5)
    assert np.array_equal(out[label == 0], image[label == 0])
    assert out[3, 4].tolist() == [146, 114, 114]  # half way to person's (192, 128, 128)
    assert out[1, 2].tolist() == [192, 128, 128]  # border in full colour
    assert np.array_equal(overlay(image, label, VOC, 0.0), image)
    assert np.array_equal(overlay(image, None, VOC, 0.7), image)
    with pytest.raises(InvalidInput, match="opacity 1.5"):
        overlay(image, label, VOC, 1.5)
    with pytest.raises(InvalidInput, match="same size"):
        overlay(image, label[:3], VOC, 0.5)


def test_draw_boxes_draws_inside_the_image_and_skips_boxes_outside():
    image = np.zeros((60, 80, 3), np.uint8)
    out = draw_boxes(image, [Box(10, 20, 50, 55, 8), Box(500, 500, 510, 510, 8)], VOC)
    assert out.shape == image.shape and out[54, 30].tolist() == [64, 0, 0]
    assert np.array_equal(draw_boxes(image, [Box(500, 500, 510, 510, 8)], VOC), image)


def test_class_shares_sum_to_one():
    label = np.array([[0, 0, 8, 255]], np.uint8)
    assert class_shares(label, VOC) == {0: 0.5, 8: 0.25, 255: 0.25}
