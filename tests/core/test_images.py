from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.errors import ImageLoadError, InvalidInput
from core.io.images import (
    check_label_map,
    encode_label_png,
    image_size,
    load_image,
    load_label_map,
    save_image,
    save_label_map,
    thumbnail,
)
from core.types import ClassSet

VOC = ClassSet.builtin("voc")


def _rgb(h=6, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _assert_rgb(arr, h, w):
    assert arr.shape == (h, w, 3) and arr.dtype == np.uint8 and arr.flags.c_contiguous


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F", "YCbCr"])
def test_every_common_mode_loads_as_rgb(tmp_path, mode):
    img = Image.fromarray(_rgb()).convert(mode)
    suffix = ".tif" if mode in ("CMYK", "I", "F", "YCbCr") else ".png"
    if mode == "YCbCr":
        suffix = ".jpg"
    path = tmp_path / f"img{suffix}"
    img.save(path)
    _assert_rgb(load_image(path), 6, 8)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    out = load_image(path)
    assert out[0, :, 0].tolist() == [0, 100, 255]


def test_rgba_is_flattened_onto_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = load_image(path)
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [255, 255, 255]


def test_exif_rotation_is_applied_and_reported_by_image_size(tmp_path):
    img = Image.fromarray(_rgb(4, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes())
    _assert_rgb(load_image(path), 10, 4)
    assert image_size(path) == (10, 4)


def test_truncated_file_fails_with_the_file_name(tmp_path):
    path = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="cut.jpg.*(truncated|corrupt)"):
        load_image(path)


def test_non_image_missing_file_and_folder_fail_clearly(tmp_path):
    (tmp_path / "notes.png").write_text("this is not a png")
    with pytest.raises(ImageLoadError, match="notes.png: not an image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "absent.jpg")
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path)


def test_decompression_bomb_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (200, 100)).save(path)
    monkeypatch.setenv("SEGSTUDIO_MAX_PIXELS", "10000")
    with pytest.raises(ImageLoadError, match=r"200x100 = 0.0 megapixels, above the limit.*SEGSTUDIO_MAX_PIXELS"):
        load_image(path)
    monkeypatch.setenv("SEGSTUDIO_MAX_PIXELS", "20000")
    _assert_rgb(load_image(path), 100, 200)
    monkeypatch.setenv("SEGSTUDIO_MAX_PIXELS", "lots")
    with pytest.raises(InvalidInput, match="SEGSTUDIO_MAX_PIXELS"):
        load_image(path)


def test_thumbnail_is_small_and_rgb(tmp_path):
    path = tmp_path / "x.jpg"
    Image.fromarray(_rgb(600, 300)).save(path)
    small = thumbnail(path, 128)
    assert max(small.shape[:2]) == 128 and small.shape[2] == 3


def test_save_image_round_trips_png_and_refuses_wrong_arrays(tmp_path):
    arr = _rgb()
    save_image(tmp_path / "a.png", arr)
    assert np.array_equal(load_image(tmp_path / "a.png"), arr)
    with pytest.raises(InvalidInput, match="H x W x 3 uint8"):
        save_image(tmp_path / "b.png", arr[..., 0])
    with pytest.raises(InvalidInput, match="unknown image suffix"):
        save_image(tmp_path / "b.xyz", arr)


# ---- label maps ------------------------------------------------------------------------------


def test_palette_png_round_trip_keeps_indices_and_uses_class_colours(tmp_path):
    label = np.array([[0, 15, 255], [8, 8, 0]], dtype=np.uint8)
    save_label_map(tmp_path / "l.png", label, VOC)
    with Image.open(tmp_path / "l.png") as img:
        assert img.mode == "P"
        assert img.getpalette()[15 * 3 : 15 * 3 + 3] == [192, 128, 128]
    assert np.array_equal(load_label_map(tmp_path / "l.png", VOC), label)


def test_colour_coded_label_map_is_read_by_exact_colour(tmp_path):
    label = np.array([[0, 15], [8, 255]], dtype=np.uint8)
    rgb = VOC.palette()[label]
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert np.array_equal(load_label_map(tmp_path / "c.png", VOC), label)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    with pytest.raises(InvalidInput, match="#010203"):
        load_label_map(tmp_path / "bad.png", VOC)


def test_label_map_with_wrong_size_names_both_sizes(tmp_path):
    save_label_map(tmp_path / "l.png", np.zeros((4, 5), np.uint8), VOC)
    with pytest.raises(InvalidInput, match=r"is 5x4 \(W x H\) but its image is 7x6"):
        load_label_map(tmp_path / "l.png", VOC, expected_size=(6, 7))


def test_label_map_values_outside_the_class_set_are_listed_with_pixel_counts(tmp_path):
    label = np.zeros((3, 3), np.uint8)
    label[0, 0] = 40
    label[1, :] = 21
    Image.fromarray(label).save(tmp_path / "l.png")
    with pytest.raises(InvalidInput, match=r"21 \(3 px\), 40 \(1 px\)"):
        load_label_map(tmp_path / "l.png", VOC)
    with pytest.raises(InvalidInput, match="values not in class set"):
        encode_label_png(label, VOC)
    assert not (tmp_path / "never.png").exists()


@pytest.mark.parametrize(
    "arr, message",
    [(np.zeros((2, 2, 3), np.uint8), "H x W"), (np.zeros((0, 4), np.uint8), "empty"),
     (np.zeros((2, 2), np.float32), "integers")],
)  # fmt: skip
def test_check_label_map_refuses_wrong_shapes_and_dtypes(arr, message):
    with pytest.raises(InvalidInput, match=message):
        check_label_map(arr, VOC)


# ---- property tests: malformed input never escapes as anything but a StudioError ------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".tif", ".gif"]))
def test_random_bytes_either_load_as_rgb_or_raise_image_load_error(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    try:
        arr = load_image(path)
    except ImageLoadError as exc:
        assert str(path) in str(exc)
    else:
        assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8


def _valid_png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_rgb(16, 16, seed)).save(buffer, format="PNG")
    return buffer.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 5), cut=st.floats(0.0, 1.0), flips=st.lists(st.integers(0, 10_000), max_size=8))
def test_damaged_pngs_either_load_or_raise_image_load_error(tmp_path, seed, cut, flips):
    data = bytearray(_valid_png(seed))
    data = data[: max(1, int(len(data) * cut))] if cut < 1 else data
    for position in flips:
        if data:
            data[position % len(data)] ^= 0xFF
    path = tmp_path / "damaged.png"
    path.write_bytes(bytes(data))
    try:
        arr = load_image(path)
    except ImageLoadError:
        return
    assert arr.shape == (16, 16, 3)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.integers(-5, 300), min_size=1, max_size=64),
    width=st.integers(1, 8),
    dtype=st.sampled_from([np.int16, np.int32, np.uint16]),
)
def test_random_label_arrays_are_accepted_exactly_when_every_value_is_a_class_or_ignore(values, width, dtype):
    arr = np.array(values[: max(1, len(values) // width * width)])
    arr = arr.reshape(-1, min(width, arr.size)).astype(dtype) if np.all(arr >= 0) or dtype != np.uint16 else None
    if arr is None:
        return
    valid = bool(np.all((arr >= 0) & ((arr < len(VOC)) | (arr == 255))))
    if valid:
        out = check_label_map(arr, VOC)
        assert out.dtype == np.uint8 and np.array_equal(out, arr)
    else:
        with pytest.raises(InvalidInput, match="values not in class set"):
            check_label_map(arr, VOC)
