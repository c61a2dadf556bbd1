"""The classic codecs as whole files: every format round-trips through classic_decode,
the lossless ones exactly, the lossy ones closer as their quality rises."""
from __future__ import annotations

import numpy as np
import pytest

from caecodec import classic
from caecodec.errors import CAEError

LOSSLESS = ("png", "webp_lossless", "jxl_lossless", "jpeg2000_lossless", "jpegls")
LOSSY = {"webp": (5, 90), "jpeg": (5, 90), "avif": (5, 90), "jxl": (10, 90), "jpeg2000": (25, 45)}


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    img = np.zeros((28, 31), np.uint8)  # not square, not a multiple of 8
    img[5:21, 9:15] = 220
    img += rng.integers(0, 25, img.shape, dtype=np.uint8)
    return img


@pytest.mark.parametrize("fmt", LOSSLESS)
def test_lossless_formats_give_back_every_pixel(image, fmt):
    if fmt == "avif" and not classic.avif_supported():
        pytest.skip("no AVIF in this Pillow")
    data = classic.classic_encode(image, fmt)
    assert np.array_equal(classic.classic_decode(data), image)


@pytest.mark.parametrize("fmt", sorted(LOSSY))
def test_lossy_formats_improve_with_quality(image, fmt):
    if fmt == "avif" and not classic.avif_supported():
        pytest.skip("no AVIF in this Pillow")
    low, high = LOSSY[fmt]
    errors, sizes = [], []
    for q in (low, high):
        data = classic.classic_encode(image, fmt, q)
        decoded = classic.classic_decode(data)
        assert decoded.shape == image.shape and decoded.dtype == np.uint8
        errors.append(np.mean((decoded.astype(float) - image) ** 2))
        sizes.append(len(data))
    assert errors[1] < errors[0] and sizes[1] > sizes[0]


def test_lossy_formats_need_a_quality_and_unknown_formats_are_refused(image):
    for fmt in classic.LOSSY_FORMATS:
        with pytest.raises(CAEError, match="lossy"):
            classic.classic_encode(image, fmt)
    with pytest.raises(CAEError, match="Unknown format"):
        classic.classic_encode(image, "gif")


def test_a_damaged_jpeg_xl_file_is_a_clear_error(image):
    data = classic.classic_encode(image, "jxl", 50)
    with pytest.raises(CAEError, match="damaged"):
        classic.classic_decode(data[: len(data) // 2])
