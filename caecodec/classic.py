"""The classic codecs, as whole files: PNG, JPEG, WebP and AVIF through Pillow.

Every size is the complete file a user would get, headers included.
"""
from __future__ import annotations

import struct

import numpy as np

from .errors import CAEError
from .images import check_u8_image, to_uint8_images

#: The classic formats :func:`classic_encode` writes (Pillow), with the settings used.
CLASSIC_FORMATS = {
    "png": "PNG, lossless, optimize=True",
    "webp_lossless": "WebP lossless, method 4 (method 6 takes 30x longer for under 1 byte less)",
    "webp": "WebP lossy, method 6 (slowest, smallest), quality 0..100",
    "jpeg": "JPEG, grayscale, optimize=True (optimal Huffman tables), quality 1..95",
    "avif": "AVIF (libavif in Pillow), quality 0..100",
}
#: Default quality sweeps of the lossy classic formats (modest, so that a full-mode run on
#: 10,000 digits takes minutes, not hours).
JPEG_QUALITIES = (1, 5, 10, 20, 30, 50, 75, 90)
WEBP_QUALITIES = (0, 5, 10, 20, 30, 50, 75, 90, 100)
AVIF_QUALITIES = (0, 25, 50, 75, 90)


def avif_supported() -> bool:
    """True when this Pillow can write and read AVIF files (Pillow 11.3+ built with libavif)."""
    from PIL import features

    return bool(features.check("avif"))


def classic_encode(image_u8_2d: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
    """One grayscale image as a complete file in a classic format (Pillow): the file's bytes.

    ``image_u8_2d``: ``uint8`` ``(H, W)``. ``fmt``: a key of :data:`CLASSIC_FORMATS`.
    ``quality`` is required for the lossy formats (``"webp"``, ``"jpeg"``, ``"avif"``) and
    ignored by the lossless ones. The bytes are the whole file, headers included.
    """
    import io

    from PIL import Image

    img = Image.fromarray(check_u8_image(image_u8_2d), mode="L")
    if fmt not in CLASSIC_FORMATS:
        raise CAEError(f"Unknown format {fmt!r}; choose one of {', '.join(CLASSIC_FORMATS)}.")
    if fmt in ("webp", "jpeg", "avif") and quality is None:
        raise CAEError(f"{fmt} is lossy: give a quality.")
    if fmt == "avif" and not avif_supported():
        raise CAEError("This Pillow cannot write AVIF (it was built without libavif).")
    options = {
        "png": lambda: dict(format="PNG", optimize=True),
        "webp_lossless": lambda: dict(format="WEBP", lossless=True, quality=100, method=4),
        "webp": lambda: dict(format="WEBP", quality=int(quality), method=6),
        "jpeg": lambda: dict(format="JPEG", quality=int(quality), optimize=True),
        "avif": lambda: dict(format="AVIF", quality=int(quality)),
    }[fmt]()
    buf = io.BytesIO()
    img.save(buf, **options)
    return buf.getvalue()


def classic_decode(data: bytes) -> np.ndarray:
    """Any image file's bytes (PNG, WebP, JPEG, AVIF...) -> ``uint8`` gray ``(H, W)``.

    WebP stores gray as colour (Y'CbCr); it is converted back to gray ("L") here.
    """
    import io

    from PIL import Image

    with Image.open(io.BytesIO(bytes(data))) as img:
        img.load()
        return np.asarray(img.convert("L"), dtype=np.uint8)


def jpeg_header_bytes(data: bytes) -> int:
    """Bytes of a JPEG file before its entropy-coded scan: every marker segment up to and
    including the start-of-scan header (quantization and Huffman tables, frame header...).
    The 2-byte end marker comes on top. :class:`CAEError` if ``data`` is not a baseline JPEG."""
    data = bytes(data)
    at = data.find(b"\xff\xda")
    if not data.startswith(b"\xff\xd8") or at < 0 or at + 4 > len(data):
        raise CAEError("Not a JPEG file with a start-of-scan marker.")
    return at + 2 + struct.unpack(">H", data[at + 2:at + 4])[0]


def png_size(image_u8: np.ndarray) -> int:
    """Bytes of a whole PNG file (Pillow, ``optimize=True``) for one ``uint8`` 2-D image."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image_u8, np.uint8), mode="L").save(buf, format="PNG", optimize=True)
    return buf.getbuffer().nbytes


def png_sizes(images: np.ndarray) -> np.ndarray:
    """Whole-file PNG bytes (see :func:`png_size`) of each float image in [0, 1],
    ``(N,28,28[,1])``; returns ``int64`` of shape ``(N,)``."""
    return np.array([png_size(im) for im in to_uint8_images(images)], dtype=np.int64)
