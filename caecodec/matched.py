"""One image, the learned codec and the classic codecs at a matched file size.

:func:`compare_at_matched_size` encodes an image with the CAE, then finds for each
classic format (JPEG, WebP, JPEG XL and JPEG 2000 by default; AVIF on request) the
largest file that is not bigger, by a binary search on its setting: the quality, or for
JPEG 2000 OpenJPEG's level (a target PSNR in dB). The app (:mod:`caecodec.app`) only
draws widgets around it.
"""
from __future__ import annotations

import numpy as np

from . import digit_codec, photo_codec
from .classic import classic_decode, classic_encode
from .errors import CAEError
from .images import check_u8_image, image_to_digit, to_float_images, to_uint8_images
from .metrics import psnr_from_mse, ssim_per_image

#: Setting range searched for each classic format: Pillow's quality ranges; libjxl's
#: quality without 100 (which switches JPEG XL to lossless, so its file size is not
#: monotone there); OpenJPEG's level, a target PSNR in dB (the file grows with it).
APP_CLASSIC_QUALITIES = {"jpeg": (1, 100), "webp": (0, 100), "avif": (0, 100), "jxl": (0, 99),
                         "jpeg2000": (1, 100)}
#: The classic formats the app shows beside the .cae file, in this order.
APP_FORMATS = ("jpeg", "webp", "jxl", "jpeg2000")
#: Photos with a longer side than this are scaled down first (a phone picture stays quick).
APP_MAX_SIDE = 1024


def photo_mode_problem() -> str | None:
    """None when the app's photo mode can work, else the reason, in words for the app."""
    try:
        qualities = list(photo_codec.photo_qualities())
    except Exception as exc:  # noqa: BLE001  (a broken models/ folder must not break the app)
        return f"Photo mode is not available: listing the photo models failed ({exc})."
    if not qualities:
        return "Photo mode is not available yet: no photo models are shipped in models/."
    return None


def _app_image_metrics(original_u8: np.ndarray, decoded_u8: np.ndarray, n_bytes: int) -> dict:
    """bytes, bits per pixel, MSE (0..1 scale), PSNR (dB, peak 1) and SSIM of one image.

    SSIM uses :func:`ssim_per_image` (7x7 window): None for images smaller than 7 pixels.
    """
    original_u8, decoded_u8 = np.asarray(original_u8), np.asarray(decoded_u8)
    if original_u8.shape != decoded_u8.shape:
        raise CAEError(f"The decoded image is {decoded_u8.shape[1]}x{decoded_u8.shape[0]}, "
                       f"the original {original_u8.shape[1]}x{original_u8.shape[0]}.")
    x = original_u8.astype(np.float64) / 255.0
    y = decoded_u8.astype(np.float64) / 255.0
    mse = float(np.mean((x - y) ** 2))
    ssim = (float(ssim_per_image(original_u8[None], decoded_u8[None])[0])
            if min(original_u8.shape) >= 7 else None)
    return {"bytes": int(n_bytes), "bpp": 8.0 * n_bytes / original_u8.size, "mse": mse,
            "psnr_db": psnr_from_mse(mse), "ssim": ssim}


def _classic_search(image: np.ndarray, fmt: str, max_bytes: int) -> tuple[dict | None, dict]:
    """(matched-size result or None, {quality: file bytes} of every file tried)."""
    image = check_u8_image(image)
    if fmt not in APP_CLASSIC_QUALITIES:
        raise CAEError(f"Matched-size search knows {', '.join(APP_CLASSIC_QUALITIES)}, not {fmt!r}.")
    low, high = APP_CLASSIC_QUALITIES[fmt]
    files: dict[int, bytes] = {}

    def size(q: int) -> int:
        if q not in files:
            files[q] = classic_encode(image, fmt, q)
        return len(files[q])

    if size(low) > max_bytes:
        return None, files
    if size(high) <= max_bytes:
        best, above = high, None
    else:  # invariant: size(low) <= max_bytes < size(high)
        while high - low > 1:
            mid = (low + high) // 2
            if size(mid) <= max_bytes:
                low = mid
            else:
                high = mid
        best, above = low, high
    data = files[best]
    decoded = classic_decode(data)
    result = {"format": fmt, "fits": True, "quality": best, "data": data, "decoded": decoded,
              "next_quality": above, "next_bytes": None if above is None else len(files[above]),
              "target_bytes": int(max_bytes), "files_tried": len(files),
              **_app_image_metrics(image, decoded, len(data))}
    return result, files


def classic_at_matched_size(image_u8_2d: np.ndarray, fmt: str, max_bytes: int) -> dict | None:
    """The largest ``fmt`` file (a key of :data:`APP_CLASSIC_QUALITIES`) of the image that
    is not bigger than ``max_bytes``, found by binary search on the quality (JPEG 2000: the
    level); None if even the lowest setting makes a bigger file.

    The search keeps "quality ``low`` fits, quality ``high`` does not", so the answer's
    quality fits and quality + 1 does not (``next_quality``, ``next_bytes``), unless the
    highest quality fits (then ``next_quality`` is None). File size grows with quality
    almost everywhere, so this is the largest file that fits in all but odd cases.
    Returns ``format``, ``quality``, ``bytes``, ``bpp``, ``mse``, ``psnr_db``, ``ssim``,
    ``data`` (the file), ``decoded`` (``uint8`` ``(H, W)``), ``next_quality``,
    ``next_bytes``, ``target_bytes``, ``files_tried`` and ``fits`` (True).
    """
    return _classic_search(image_u8_2d, fmt, int(max_bytes))[0]


def _fit_photo(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Scale a photo down so its longer side is at most :data:`APP_MAX_SIDE` pixels."""
    from PIL import Image

    h, w = image.shape
    if max(h, w) <= APP_MAX_SIDE:
        return image, None
    scale = APP_MAX_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(image, mode="L").resize(size, Image.Resampling.LANCZOS), np.uint8)
    return small, f"scaled down from {w}x{h} to {size[0]}x{size[1]} (the app's limit is {APP_MAX_SIDE} px)"


def app_digit(image_u8_2d: np.ndarray) -> tuple[np.ndarray, str]:
    """What the digit codec is given: ``(uint8 (28, 28), how it was made)``.

    A 28x28 image with a dark border is taken as an MNIST digit as it is; anything else
    goes through :func:`image_to_digit` (invert a light background, crop to the ink,
    longer side 20 px, centre in 28x28), as in notebook 04.
    """
    from PIL import Image

    image = check_u8_image(image_u8_2d)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    if image.shape == (28, 28) and np.median(border) < 128:
        return image, "a 28x28 digit (white ink on black), used as it is"
    digit = image_to_digit(Image.fromarray(image, mode="L"))
    return (to_uint8_images(digit),
            f"the {image.shape[1]}x{image.shape[0]} image made MNIST-like (cu.image_to_digit: "
            "ink made white, cropped, longer side 20 px, centred in 28x28)")


def compare_at_matched_size(image_u8_2d: np.ndarray, quality: int, mode: str = "digit",
                            formats=APP_FORMATS) -> dict:
    """Encode one image with the learned codec and with each classic format at a matched size.

    ``mode="digit"``: the image becomes a 28x28 digit (:func:`app_digit`) and goes through
    ``load_codec(quality)``. ``mode="photo"``: any size, through ``load_photo_codec(quality)``
    (longer side first limited to :data:`APP_MAX_SIDE`). Every codec sees the same
    ``original`` and is measured against it.

    Returns ``mode``, ``quality``, ``original`` (``uint8`` ``(H, W)``), ``height``,
    ``width``, ``raw_bytes`` (8 bits per pixel), ``notes`` (how the input was prepared),
    ``cae`` (``bytes``, ``bpp``, ``mse``, ``psnr_db``, ``ssim``, ``data``, ``decoded``,
    ``quality``) and ``classic``: per format either :func:`classic_at_matched_size`'s dict
    or, when that format cannot go as small as the .cae file, ``{"format", "fits": False,
    "smallest_bytes", "smallest_quality", "target_bytes"}``.
    """
    image = check_u8_image(image_u8_2d)
    if image.size == 0:
        raise CAEError("The image has no pixels.")
    notes = []
    if mode == "digit":
        original, note = app_digit(image)
        notes.append(note)
        codec = digit_codec.load_codec(quality)
        data = codec.compress(to_float_images(original[None]))[0]
        decoded = to_uint8_images(codec.decompress([data])[0])
    elif mode == "photo":
        problem = photo_mode_problem()
        if problem:
            raise CAEError(problem)
        original, note = _fit_photo(image)
        if note:
            notes.append(note)
        codec = photo_codec.load_photo_codec(quality)
        data = bytes(codec.compress(original))
        decoded = np.asarray(codec.decompress(data))
        if decoded.dtype != np.uint8:
            decoded = to_uint8_images(decoded)
        decoded = decoded.reshape(decoded.shape[:2])
    else:
        raise CAEError(f"Unknown mode {mode!r}; choose 'digit' or 'photo'.")
    cae = {"format": "cae", "fits": True, "quality": int(quality), "data": bytes(data),
           "decoded": decoded, **_app_image_metrics(original, decoded, len(data))}
    classic = {}
    for fmt in formats:
        found, tried = _classic_search(original, fmt, len(data))
        if found is None:
            low = APP_CLASSIC_QUALITIES[fmt][0]
            found = {"format": fmt, "fits": False, "smallest_quality": low,
                     "smallest_bytes": len(tried[low]), "target_bytes": len(data)}
        classic[fmt] = found
    return {"mode": mode, "quality": int(quality), "original": original,
            "height": int(original.shape[0]), "width": int(original.shape[1]),
            "raw_bytes": int(original.size), "notes": notes, "cae": cae, "classic": classic}
