"""Measuring the lossless codec: against the classic lossless formats, and where its bits go.

Used by notebook 07 and ``benchmarks/lossless.py``. Every classic file is decoded again
and compared with the original pixels, so a "lossless" row that is not lossless shows.
Layer 3: no Keras.
"""
from __future__ import annotations

import time

import numpy as np

from .classic import CLASSIC_FORMATS, classic_decode, classic_encode
from .lossless_net import LEVELS, level_of_pixel

#: The classic lossless formats of the comparison, in the order the tables show them.
CLASSIC_LOSSLESS = ("png", "webp_lossless", "jxl_lossless", "jpegls", "jpeg2000_lossless")
#: Short names for tables.
LABELS = {"png": "PNG (optimize)", "webp_lossless": "WebP lossless", "jxl_lossless": "JPEG XL lossless (effort 9)",
          "jpegls": "JPEG-LS", "jpeg2000_lossless": "JPEG 2000 reversible", "cae_lossless": "CAE lossless (.cae v4)"}


def summary_row(name: str, sizes, exact, encode_seconds: float, decode_seconds: float, **extra) -> dict:
    """One table row: mean bytes, bits per pixel, how many digits came back exactly, times."""
    sizes = np.asarray(sizes, np.int64)
    return {"codec": name, "label": LABELS.get(name, name), "images": int(len(sizes)),
            "mean_bytes": float(sizes.mean()), "bpp": float(8 * sizes.mean() / 784),
            "bit_exact": int(np.sum(exact)), "encode_seconds": float(encode_seconds),
            "decode_seconds": float(decode_seconds), "sizes": sizes, **extra}


def classic_lossless_rows(x_u8: np.ndarray, formats=CLASSIC_LOSSLESS) -> list[dict]:
    """Each classic lossless format on every digit of ``x_u8`` (``uint8`` ``(N, 28, 28)``):
    whole-file bytes, decoded again and checked pixel for pixel. One row per format."""
    rows = []
    for fmt in formats:
        if fmt not in CLASSIC_FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        t0 = time.perf_counter()
        files = [classic_encode(d, fmt) for d in x_u8]
        t1 = time.perf_counter()
        exact = [np.array_equal(classic_decode(f), d) for f, d in zip(files, x_u8)]
        t2 = time.perf_counter()
        rows.append(summary_row(fmt, [len(f) for f in files], exact, t1 - t0, t2 - t1))
    return rows


def learned_lossless_row(codec, x_u8: np.ndarray, pixel_bits: np.ndarray | None = None) -> dict:
    """The learned codec on every digit: real ``.cae`` v4 bytes, decoded and checked, with
    the model's own estimate of the payload and the files themselves (``files``).
    ``pixel_bits``: ``codec.pixel_bits(x_u8)`` if already computed (saves a pass)."""
    t0 = time.perf_counter()
    files = codec.compress(x_u8)
    t1 = time.perf_counter()
    back = codec.decompress(files)
    t2 = time.perf_counter()
    estimate = (codec.estimate_bits(x_u8) if pixel_bits is None else pixel_bits.sum(axis=(1, 2))) / 8
    return summary_row("cae_lossless", [len(f) for f in files], np.all(back == x_u8, axis=(1, 2)),
                       t1 - t0, t2 - t1, estimated_payload_bytes=float(estimate.mean()),
                       estimates=estimate, files=files)


def pixel_classes(x_u8: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks ``(N, 28, 28)`` of four kinds of pixel: ``background`` (0, no ink within
    one pixel, diagonals included), ``beside ink`` (0, next to ink), ``stroke`` (250..255)
    and ``edge`` (1..249: the anti-aliased border of a stroke)."""
    ink = x_u8 > 0
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    near = np.zeros_like(ink)
    for di in range(3):
        for dj in range(3):
            near |= padded[:, di:di + 28, dj:dj + 28]
    return {"background": ~near, "beside ink": near & ~ink,
            "edge": ink & (x_u8 < 250), "stroke": x_u8 >= 250}


def bits_by_class(bits: np.ndarray, x_u8: np.ndarray) -> list[dict]:
    """Split per-pixel bits ``(N, 28, 28)`` by :func:`pixel_classes`: per class, the pixels
    per digit, the bits per digit and the bits per pixel."""
    rows = []
    for name, mask in pixel_classes(x_u8).items():
        count = mask.sum(axis=(1, 2)).mean()
        total = (bits * mask).sum(axis=(1, 2)).mean()
        rows.append({"class": name, "pixels_per_digit": float(count), "bits_per_digit": float(total),
                     "bits_per_pixel": float(total / count) if count else 0.0})
    return rows


def bits_by_level(bits: np.ndarray) -> list[dict]:
    """Split per-pixel bits ``(N, 28, 28)`` by coding level: pixels, bytes per digit, bits per pixel."""
    which = level_of_pixel()
    rows = []
    for k, level in enumerate(LEVELS):
        mask = which == k
        total = bits[:, mask].sum(axis=1).mean()
        rows.append({"level": level.name, "pixels": int(mask.sum()), "bytes_per_digit": float(total / 8),
                     "bits_per_pixel": float(total / mask.sum())})
    return rows


def zero_order_bits(x_u8: np.ndarray, train_u8: np.ndarray) -> float:
    """Mean bits per digit of a code that knows only how often each value 0..255 occurs in
    the training digits (every pixel coded on its own, neighbours ignored)."""
    counts = np.bincount(train_u8.ravel(), minlength=256) + 0.5
    cost = -np.log2(counts / counts.sum())
    return float(cost[x_u8].sum(axis=(1, 2)).mean())


def positional_bits(x_u8: np.ndarray, train_u8: np.ndarray) -> float:
    """Mean bits per digit of a code with one histogram of values per pixel position,
    counted on the training digits (still no neighbours)."""
    flat = train_u8.reshape(len(train_u8), -1)
    counts = np.zeros((flat.shape[1], 256))
    for pos in range(flat.shape[1]):
        counts[pos] = np.bincount(flat[:, pos], minlength=256)
    counts += 0.5
    cost = -np.log2(counts / counts.sum(axis=1, keepdims=True))
    test = x_u8.reshape(len(x_u8), -1)
    return float(cost[np.arange(test.shape[1]), test].sum(axis=1).mean())
