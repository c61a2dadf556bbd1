"""Image files and arrays in, the arrays each codec takes out. No Keras.

* reading any file Pillow opens (:func:`open_image`, :func:`image_from_bytes`), with a
  clear error for a missing, empty, foreign or damaged file;
* gray levels (:func:`image_to_gray_array`, :func:`photo_to_gray_u8`);
* the digit codec's input (:func:`digit_from_image`): an image that already is an
  MNIST-style digit goes through unchanged; any other picture goes through the digit
  preprocessing of notebook 04 (:func:`image_to_digit`), which makes it MNIST-like;
* conversions between ``uint8`` and float images.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import CAEError
from .formats import CAE_MAX_DIMENSION, CAE_MAX_PIXELS, CAE_MAX_PIXELS_TEXT

PIXELS_PER_DIGIT = 28 * 28


def to_float_images(images_u8: np.ndarray) -> np.ndarray:
    """``uint8`` images ``(N, 28, 28)`` in 0..255 to ``float32`` ``(N, 28, 28, 1)`` in [0, 1]."""
    return (np.asarray(images_u8, dtype=np.float32) / 255.0)[..., np.newaxis]


def to_uint8_images(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (any trailing channel of 1 dropped) to ``uint8`` 0..255.

    Values outside [0, 1] (a linear decoder can overshoot) are clipped first.
    """
    images = np.asarray(images)
    if images.ndim >= 3 and images.shape[-1] == 1:
        images = images[..., 0]
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def check_u8_image(image) -> np.ndarray:
    """``image`` as a 2-D ``uint8`` array, or :class:`CAEError`."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2 or image.dtype != np.uint8:
        raise CAEError(f"Expected one 2-D uint8 image, got shape {image.shape} dtype {image.dtype}.")
    return image


def u8_batch(images) -> np.ndarray:
    """uint8 ``(N, 28, 28)`` or float ``(N, 28, 28[, 1])`` in [0, 1] -> uint8 ``(N, 28, 28)``."""
    images = np.asarray(images)
    return images if images.dtype == np.uint8 and images.ndim == 3 else to_uint8_images(images)


def open_image(path: str | os.PathLike):
    """Open an image file with Pillow and load its pixels; :class:`CAEError` if impossible."""
    path = Path(path)
    if not path.exists():
        raise CAEError(f"Input file {path} does not exist.")
    if not path.is_file():
        raise CAEError(f"Input {path} is not a file.")
    if path.stat().st_size == 0:
        raise CAEError(f"Input file {path} is empty (0 bytes).")
    return pillow_load(path, f"Input file {path}")


def pillow_load(source, what: str):
    """Open ``source`` (a path or a file object) with Pillow and load its pixels; Pillow's
    failures become one :class:`CAEError` that starts with ``what``."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(source)
        img.load()
    except UnidentifiedImageError:
        raise CAEError(f"{what} is not an image Pillow can read "
                       "(PNG, JPEG, BMP, GIF, WebP, TIFF, ...).") from None
    except Image.DecompressionBombError as exc:
        raise CAEError(f"{what} is too large to open safely: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CAEError(f"{what} is damaged or truncated: {exc}") from None
    return img


def image_to_gray_array(img) -> np.ndarray:
    """Any Pillow image (RGB, RGBA, palette, 16-bit, float...) to ``float32`` gray in [0, 1].

    Transparent pixels are laid over white (a drawing on a transparent canvas becomes
    dark ink on paper). 16-bit and float images are scaled by their own range.
    Returns a 2-D array ``(height, width)``.
    """
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode in ("RGB", "L") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, rgba).convert("L")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = arr / peak if img.mode != "F" else (arr - arr.min()) / max(np.ptp(arr), 1e-12)
        return np.clip(arr, 0, 1).astype(np.float32)
    if img.mode == "1":
        img = img.convert("L")
    if img.mode != "L":
        img = img.convert("L")  # ITU-R 601 luma, as JPEG uses
    return np.asarray(img, dtype=np.float32) / 255.0


def _background_level(ink: np.ndarray) -> float:
    """The brightness of the background in an ink-is-bright image, to subtract.

    Otsu's threshold splits the pixels into background and ink; the 90th percentile of
    the background class is taken, so shadows and uneven lighting on paper are removed
    but faint anti-aliased stroke edges (which sit above it) are kept.
    """
    from skimage.filters import threshold_otsu

    if float(ink.max()) - float(ink.min()) < 1e-6:
        return float(ink.min())
    background = ink[ink <= threshold_otsu(ink)]
    return float(np.percentile(background, 90)) if background.size else float(ink.min())


def image_to_digit(img_or_path, return_steps: bool = False):
    """Turn any image into a 28x28 MNIST-like digit, the way MNIST itself was made.

    1. Grayscale in [0, 1] (:func:`image_to_gray_array`).
    2. Invert if the background is light: MNIST digits are white ink on black. The
       background is judged by the median of the border pixels. Then subtract the
       background's brightness (Otsu's split; see ``_background_level``) so shadows on
       paper do not count as ink.
    3. Crop to the ink's bounding box, then resize (keeping the aspect ratio) so the
       longer side is 20 pixels, as in MNIST.
    4. Paste into a 28x28 black canvas so the ink's centre of mass is at the centre.
    5. Stretch the contrast so the brightest ink pixel is 1.0.

    Returns a ``float32`` array ``(28, 28, 1)`` in [0, 1]; with ``return_steps=True``
    also a list of ``(title, 2-D array)`` showing each step.
    """
    from PIL import Image

    img = img_or_path if isinstance(img_or_path, Image.Image) else open_image(img_or_path)
    if img.width == 0 or img.height == 0:
        raise CAEError("The image has zero width or height.")
    gray = image_to_gray_array(img)
    steps = [("1. grayscale", gray)]
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = 1.0 - gray if np.median(border) > 0.5 else gray
    steps.append(("2. ink is white" + (" (inverted)" if ink is not gray else ""), ink))
    ink = np.clip(ink - _background_level(ink), 0, None)
    mask = ink > 0.1 * ink.max() if ink.max() > 0 else np.zeros_like(ink, bool)
    if not mask.any():  # a blank image: nothing to centre, the digit is all black
        digit = np.zeros((28, 28), np.float32)
        steps.append(("3-5. blank: nothing to draw", digit))
        return (digit[..., None], steps) if return_steps else digit[..., None]
    rows, cols = np.nonzero(mask)
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    steps.append(("3a. cropped to the ink", crop))
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    # BOX averages when shrinking (no ringing, so strokes keep their brightness);
    # BILINEAR when enlarging a tiny image.
    method = Image.Resampling.BOX if max(h, w) > 20 else Image.Resampling.BILINEAR
    small = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F")
                       .resize((new_w, new_h), method), dtype=np.float32)
    small = np.clip(small, 0, float(crop.max()))
    steps.append(("3b. longer side 20 px", small))
    total = small.sum()
    cy = (small.sum(axis=1) * np.arange(new_h)).sum() / total if total > 0 else new_h / 2
    cx = (small.sum(axis=0) * np.arange(new_w)).sum() / total if total > 0 else new_w / 2
    top = int(np.clip(round(14 - cy), 0, 28 - new_h))
    left = int(np.clip(round(14 - cx), 0, 28 - new_w))
    digit = np.zeros((28, 28), np.float32)
    digit[top:top + new_h, left:left + new_w] = small
    steps.append(("4. centred by mass in 28x28", digit.copy()))
    digit = np.clip(digit / max(float(digit.max()), 1e-12), 0, 1).astype(np.float32)
    steps.append(("5. contrast stretched", digit))
    return (digit[..., None], steps) if return_steps else digit[..., None]


def mnist_style_problem(img) -> str | None:
    """Why the Pillow image ``img`` is not an MNIST-style digit, or None if it is one.

    MNIST-style: 28x28 pixels, one gray channel (or RGB/RGBA with three equal channels
    and no transparency), dark background (the median of the border pixels at most 0.5,
    the same test :func:`image_to_digit` uses to decide whether to invert).
    """
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img)
    if img.size != (28, 28):
        return "not 28x28"
    if img.mode not in ("L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        rgba = np.asarray(img.convert("RGBA"))
        if (rgba[..., 3] < 255).any() or "transparency" in img.info:
            return "transparent pixels"
        if not ((rgba[..., 0] == rgba[..., 1]).all() and (rgba[..., 1] == rgba[..., 2]).all()):
            return "in colour"
    gray = image_to_gray_array(img)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:
        return "a light background"
    return None


def digit_from_image(img_or_path, preprocess: bool = True) -> tuple[np.ndarray, str]:
    """The 28x28 digit the digit codecs encode from an image, and what was done to get it.

    An image that already is an MNIST-style digit (:func:`mnist_style_problem`) goes
    through unchanged (as gray levels in [0, 1]), so an MNIST digit saved as a PNG is
    encoded exactly as in memory. Any other image is a *foreign* image and goes through
    :func:`image_to_digit`. With ``preprocess=False`` nothing but the conversion to gray
    is done, and the image must be 28x28.

    Returns ``(digit, note)``: ``digit`` float32 ``(28, 28, 1)`` in [0, 1]; ``note`` is
    ``""`` when the image was used as it is, else one line saying what was done to it.
    Raises :class:`CAEError` for a missing or unreadable file, or a wrong size with
    ``preprocess=False``.
    """
    from PIL import Image

    img = img_or_path if isinstance(img_or_path, Image.Image) else open_image(img_or_path)
    if img.width == 0 or img.height == 0:
        raise CAEError("The image has zero width or height.")
    if not preprocess:
        gray = image_to_gray_array(img)
        if gray.shape != (28, 28):
            raise CAEError(f"The image is {gray.shape[1]}x{gray.shape[0]} pixels; without "
                           "preprocessing the digit codec needs a 28x28 image (drop --no-preprocess "
                           "to have it resized).")
        return gray[..., None].astype(np.float32), ""
    problem = mnist_style_problem(img)
    if problem is None:
        return image_to_gray_array(img)[..., None].astype(np.float32), ""
    digit, steps = image_to_digit(img, return_steps=True)
    done = ["grayscale"] + (["inverted"] if "inverted" in steps[1][0] else [])
    shapes = {title[:2]: array.shape for title, array in steps}
    if "3a" in shapes:
        (ch, cw), (nh, nw) = shapes["3a"], shapes["3b"]
        done += [f"cropped to the ink ({cw}x{ch})", f"resized from {cw}x{ch} to {nw}x{nh}",
                 "centred by mass in 28x28", "contrast stretched"]
    else:
        done.append("no ink found, so an all-black digit")
    note = (f"foreign image, {img.width}x{img.height} {img.mode} ({problem}), made MNIST-style: "
            f"{', '.join(done)}")
    return digit, note


def photo_to_gray_u8(img_or_array) -> np.ndarray:
    """Any image (path, Pillow image, or array) -> grayscale ``uint8`` ``(H, W)``.

    Colour is converted to luma (ITU-R 601, Pillow's ``"L"`` mode): the photo codec is
    grayscale only. 16-bit and float images are rescaled to 0..255; transparency is
    composited onto white. Raises :class:`CAEError` for anything that is not an image.
    """
    if isinstance(img_or_array, np.ndarray):
        arr = img_or_array
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            from PIL import Image
            return np.asarray(Image.fromarray(as_u8(arr[..., :3])).convert("L"))
        if arr.ndim != 2:
            raise CAEError(f"Expected a 2-D grayscale image (H, W), got an array of shape {arr.shape}.")
        check_photo_size(*arr.shape, source="the image")
        return as_u8(arr)
    img = open_image(img_or_array) if isinstance(img_or_array, (str, os.PathLike)) else img_or_array
    return np.round(image_to_gray_array(img) * 255.0).astype(np.uint8)


def as_u8(arr: np.ndarray) -> np.ndarray:
    """Any numeric 2-D array as ``uint8``: booleans to 0/255, floats in [0, 1] scaled by 255,
    larger ranges scaled to 0..255; NaN, infinity or no pixels raise :class:`CAEError`."""
    if arr.size == 0:
        raise CAEError(f"The image has no pixels (shape {arr.shape}); nothing to encode.")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    arr = np.asarray(arr, np.float64)
    if not np.all(np.isfinite(arr)):
        raise CAEError("The image contains NaN or infinite values.")
    if arr.max() <= 1.0 and arr.min() >= 0.0:
        arr = arr * 255.0
    elif arr.max() > 255:
        arr = arr * (255.0 / arr.max())
    return np.round(np.clip(arr, 0, 255)).astype(np.uint8)


def check_photo_size(height: int, width: int, source: str = "the image") -> None:
    """Refuse sizes the photo codec cannot handle, before anything is allocated."""
    if height < 1 or width < 1:
        raise CAEError(f"{source} has no pixels ({width}x{height}); nothing to encode.")
    if max(height, width) > CAE_MAX_DIMENSION or height * width > CAE_MAX_PIXELS:
        raise CAEError(f"{source} is {width}x{height} pixels; the photo codec takes at most "
                       f"{CAE_MAX_PIXELS:,} pixels ({CAE_MAX_PIXELS_TEXT}). Shrink it or cut it "
                       "into parts.")


#: Uploads above this size are refused before Pillow opens them.
MAX_UPLOAD_BYTES = 30_000_000


def image_from_bytes(data: bytes, name: str = "the uploaded file") -> np.ndarray:
    """An image file's bytes (PNG, JPEG, WebP, BMP, GIF, TIFF...) -> ``uint8`` gray ``(H, W)``.

    Colour becomes luma, transparency is laid over white (:func:`image_to_gray_array`).
    Anything else (an empty file, a text file, a truncated image) raises :class:`CAEError`
    with a message meant for the person who uploaded it.
    """
    import io

    data = bytes(data)
    if not data:
        raise CAEError(f"{name} is empty (0 bytes): choose an image file (PNG, JPEG, WebP, ...).")
    if len(data) > MAX_UPLOAD_BYTES:
        raise CAEError(f"{name} is {len(data):,} bytes; the app takes images up to "
                       f"{MAX_UPLOAD_BYTES:,} bytes.")
    with pillow_load(io.BytesIO(data), name) as img:
        if img.width == 0 or img.height == 0:
            raise CAEError(f"{name} has no pixels (width or height 0).")
        gray = image_to_gray_array(img)
    return np.round(gray * 255.0).astype(np.uint8)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm")
