"""The classic codecs, as whole files: PNG, JPEG, WebP and AVIF through Pillow; JPEG XL,
JPEG 2000 and JPEG-LS through imagecodecs (libjxl, OpenJPEG, CharLS).

Every size is the complete file a user would get, headers included. :func:`classic_decode`
recognises each format by its first bytes.
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
    "jxl": "JPEG XL lossy (libjxl via imagecodecs), effort 7, quality 0..100 (libjxl's scale)",
    "jxl_lossless": "JPEG XL lossless (libjxl via imagecodecs), effort 9",
    "jpeg2000": "JPEG 2000 lossy (OpenJPEG via imagecodecs, JP2 file), level = target PSNR in dB",
    "jpeg2000_lossless": "JPEG 2000 reversible (OpenJPEG via imagecodecs, JP2 file)",
    "jpegls": "JPEG-LS lossless (CharLS via imagecodecs)",
}
#: The formats that need a quality (or level) setting.
LOSSY_FORMATS = ("webp", "jpeg", "avif", "jxl", "jpeg2000")
#: Default quality sweeps of the lossy classic formats (modest, so that a full-mode run on
#: 10,000 digits takes minutes, not hours).
JPEG_QUALITIES = (1, 5, 10, 20, 30, 50, 75, 90)
WEBP_QUALITIES = (0, 5, 10, 20, 30, 50, 75, 90, 100)
AVIF_QUALITIES = (0, 25, 50, 75, 90)
JXL_QUALITIES = (0, 10, 20, 30, 40, 50, 70, 90)
JPEG2000_LEVELS = (20, 25, 30, 35, 40, 45)


def avif_supported() -> bool:
    """True when this Pillow can write and read AVIF files (Pillow 11.3+ built with libavif)."""
    from PIL import features

    return bool(features.check("avif"))


def classic_encode(image_u8_2d: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
    """One grayscale image as a complete file in a classic format: the file's bytes.

    ``image_u8_2d``: ``uint8`` ``(H, W)``. ``fmt``: a key of :data:`CLASSIC_FORMATS`.
    ``quality`` is required for the lossy formats (:data:`LOSSY_FORMATS`; for
    ``"jpeg2000"`` it is OpenJPEG's level, a target PSNR in dB) and ignored by the
    lossless ones. The bytes are the whole file, headers included.
    """
    import io

    from PIL import Image

    image = check_u8_image(image_u8_2d)
    if fmt not in CLASSIC_FORMATS:
        raise CAEError(f"Unknown format {fmt!r}; choose one of {', '.join(CLASSIC_FORMATS)}.")
    if fmt in LOSSY_FORMATS and quality is None:
        raise CAEError(f"{fmt} is lossy: give a quality.")
    if fmt in ("jxl", "jxl_lossless", "jpeg2000", "jpeg2000_lossless", "jpegls"):
        return _imagecodecs_encode(image, fmt, quality)
    img = Image.fromarray(image, mode="L")
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


def _imagecodecs_encode(image: np.ndarray, fmt: str, quality) -> bytes:
    import imagecodecs

    if fmt == "jxl":
        return bytes(imagecodecs.jpegxl_encode(image, level=int(quality), effort=7))
    if fmt == "jxl_lossless":
        return bytes(imagecodecs.jpegxl_encode(image, lossless=True, effort=9))
    if fmt == "jpeg2000":
        return bytes(imagecodecs.jpeg2k_encode(image, level=float(quality)))
    if fmt == "jpeg2000_lossless":
        return bytes(imagecodecs.jpeg2k_encode(image, reversible=True))
    return bytes(imagecodecs.jpegls_encode(image))


_JXL_MAGICS = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")
_JPEG2000_MAGICS = (b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")


def _is_jpegls(data: bytes) -> bool:
    """A JPEG-LS file: a JPEG start marker and a JPEG-LS frame (SOF55, 0xFFF7) before the scan."""
    scan = data.find(b"\xff\xda")
    return data.startswith(b"\xff\xd8") and b"\xff\xf7" in data[:scan if scan > 0 else 512]


def classic_decode(data: bytes) -> np.ndarray:
    """Any classic image file's bytes (PNG, WebP, JPEG, AVIF, JPEG XL, JPEG 2000, JPEG-LS)
    -> ``uint8`` gray ``(H, W)``.

    WebP stores gray as colour (Y'CbCr); it is converted back to gray ("L") here.
    """
    import io

    from PIL import Image

    data = bytes(data)
    if data.startswith(_JXL_MAGICS) or data.startswith(_JPEG2000_MAGICS) or _is_jpegls(data):
        import imagecodecs

        decode = (imagecodecs.jpegxl_decode if data.startswith(_JXL_MAGICS) else
                  imagecodecs.jpeg2k_decode if data.startswith(_JPEG2000_MAGICS) else
                  imagecodecs.jpegls_decode)
        try:
            out = np.asarray(decode(data))
        except Exception as exc:  # the library found the file damaged
            raise CAEError(f"The image file is damaged: {exc}") from None
        return np.ascontiguousarray(out[..., 0] if out.ndim == 3 else out).astype(np.uint8)
    with Image.open(io.BytesIO(data)) as img:
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
