"""Drawing label maps and boxes for people: colour renderings, overlays, box outlines, legends."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.errors import InvalidInput
from core.types import Box, ClassSet


def colorize(label_map: np.ndarray, classes: ClassSet) -> np.ndarray:
    """Render a label map in the class set's colours.

    Args:
        label_map: ``H x W uint8`` class indices.

    Returns:
        ``H x W x 3 uint8`` RGB.
    """
    import cv2

    palette = classes.palette()
    labels = np.ascontiguousarray(label_map, dtype=np.uint8)
    return cv2.merge([cv2.LUT(labels, np.ascontiguousarray(palette[:, c])) for c in range(3)])


def overlay(
    image: np.ndarray,
    label_map: np.ndarray | None,
    classes: ClassSet,
    opacity: float = 0.5,
    *,
    skip_background: bool = True,
    outline: bool = True,
    skip_ignore: bool = False,
) -> np.ndarray:
    """Blend a label map's colours over its image.

    Args:
        image: ``H x W x 3 uint8`` RGB.
        label_map: ``H x W uint8`` class indices of the same size, or ``None`` (image returned as is).
        opacity: weight of the class colours in ``[0, 1]``.
        skip_background: leave class 0 pixels untinted (the usual VOC background).
        outline: draw the borders between classes in full colour so that regions stay visible at low
            opacity and over similarly coloured objects.
        skip_ignore: leave ignore pixels untinted too (for images whose unknown pixels are most of them).

    Returns:
        ``H x W x 3 uint8`` RGB.

    Raises:
        InvalidInput: opacity out of range, or image and label map of different sizes.
    """
    if not 0.0 <= float(opacity) <= 1.0:
        raise InvalidInput(f"overlay opacity {opacity} is out of range; accepted: 0 to 1")
    if label_map is None or opacity == 0:
        return np.array(image, dtype=np.uint8, copy=True)
    if label_map.shape != image.shape[:2]:
        raise InvalidInput(
            f"label map is {label_map.shape[1]}x{label_map.shape[0]} but the image is "
            f"{image.shape[1]}x{image.shape[0]}; they must be the same size"
        )
    import cv2

    tint = colorize(label_map, classes)
    tinted = np.ones(label_map.shape, dtype=bool)
    if skip_background:
        tinted &= label_map != 0
    if skip_ignore:
        tinted &= label_map != classes.ignore_index
    base = np.ascontiguousarray(image, dtype=np.uint8)
    blended = cv2.addWeighted(base, 1.0 - float(opacity), tint, float(opacity), 0.0)
    out = base.copy()
    cv2.copyTo(blended, tinted.view(np.uint8), out)
    if outline:
        edge = class_borders(label_map) & tinted
        cv2.copyTo(tint, edge.view(np.uint8), out)
    return out


def class_borders(label_map: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour holds another label, ``H x W bool`` (a 1-pixel border).

    Args:
        label_map: ``H x W`` integer labels.
    """
    borders = np.zeros(label_map.shape, dtype=bool)
    horizontal = label_map[:, 1:] != label_map[:, :-1]
    vertical = label_map[1:, :] != label_map[:-1, :]
    borders[:, :-1] |= horizontal
    borders[:, 1:] |= horizontal
    borders[:-1, :] |= vertical
    borders[1:, :] |= vertical
    return borders


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_boxes(image: np.ndarray, boxes: list[Box], classes: ClassSet, *, width: int | None = None) -> np.ndarray:
    """Draw box outlines with class-name tags in the class colours.

    Args:
        image: ``H x W x 3 uint8`` RGB.
        boxes: half-open pixel boxes; parts outside the image are clipped.

    Returns:
        a new ``H x W x 3 uint8`` RGB image.
    """
    height, width_px = image.shape[:2]
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    line = width or max(2, round(max(height, width_px) / 250))
    font = _font(max(14, round(max(height, width_px) / 30)))
    for box in boxes:
        try:
            clipped = box.clip(width_px, height)
        except InvalidInput:
            continue
        color = classes.color_of(box.label) if box.label < len(classes) else (255, 0, 255)
        draw.rectangle((clipped.x0, clipped.y0, clipped.x1 - 1, clipped.y1 - 1), outline=color, width=line)
        name = classes.names[box.label] if box.label < len(classes) else f"class {box.label}"
        _, _, text_w, text_h = draw.textbbox((0, 0), name, font=font, anchor="lt")
        tag_h = text_h + 6
        tag_y = clipped.y0 - tag_h if clipped.y0 >= tag_h else clipped.y0
        draw.rectangle((clipped.x0, tag_y, clipped.x0 + text_w + 8, tag_y + tag_h), fill=color)
        text_color = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
        draw.text((clipped.x0 + 4, tag_y + 3), name, fill=text_color, font=font, anchor="lt")
    return np.asarray(canvas).copy()


def class_shares(label_map: np.ndarray, classes: ClassSet) -> dict[int, float]:
    """Share of the map's pixels per class present (ignore pixels counted under the ignore index).

    Args:
        label_map: ``H x W uint8``.

    Returns:
        class index -> fraction in ``(0, 1]``, summing to 1.
    """
    counts = np.bincount(np.asarray(label_map, dtype=np.uint8).ravel(), minlength=256)
    total = counts.sum()
    return {int(i): float(counts[i] / total) for i in np.flatnonzero(counts)}


def grid(tiles: list[np.ndarray], columns: int = 4, cell: int | tuple[int, int] = 192, gap: int = 4) -> np.ndarray:
    """Tiles laid out in a grid, each fitted (aspect kept, centred) into a cell.

    Args:
        tiles: ``h x w x 3 uint8`` images (any sizes).
        columns: tiles per row.
        cell: the cell's side, or ``(width, height)``.

    Returns:
        ``rows * (ch + gap) - gap x columns * (cw + gap) - gap x 3 uint8``, white between cells.
    """
    import cv2

    if not tiles:
        raise InvalidInput("a grid needs at least one tile")
    cw, ch = (cell, cell) if isinstance(cell, int) else cell
    rows = -(-len(tiles) // columns)
    out = np.full((rows * (ch + gap) - gap, columns * (cw + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        h, w = tile.shape[:2]
        f = min(cw / w, ch / h)
        nh, nw = max(1, round(h * f)), max(1, round(w * f))
        small = cv2.resize(np.ascontiguousarray(tile), (nw, nh), interpolation=cv2.INTER_AREA)
        y = (i // columns) * (ch + gap) + (ch - nh) // 2
        x = (i % columns) * (cw + gap) + (cw - nw) // 2
        out[y : y + nh, x : x + nw] = small
    return out
