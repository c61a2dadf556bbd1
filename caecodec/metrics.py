"""Distortion measures: MSE, PSNR and SSIM, for digits and photos (numpy only).

PSNR is in dB with a peak of 1.0 on [0, 1] images (the same number as peak 255 on
``uint8``). SSIM follows scikit-image's definition (7x7 window), batched.
"""
from __future__ import annotations

import numpy as np

from .errors import CAEError


def mse_per_image(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """Mean squared error of each image, in [0, 1] pixel units; shape ``(N,)``.

    ``x_hat`` is clipped to [0, 1] first, as a decoded image file would be.
    """
    x = np.asarray(x, dtype=np.float64)
    x_hat = np.clip(np.asarray(x_hat, dtype=np.float64), 0.0, 1.0)
    if x.shape != x_hat.shape:
        raise CAEError(f"Cannot compare images of shape {x.shape} and {x_hat.shape}.")
    if x.ndim == 0 or len(x) == 0:
        raise CAEError("Cannot measure the error of an empty batch of images.")
    return ((x - x_hat) ** 2).reshape(len(x), -1).mean(axis=1)


def psnr_from_mse(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for a peak of 1.0: ``10 log10(1 / mse)``."""
    return float("inf") if mse <= 0 else float(10.0 * np.log10(1.0 / mse))


def reconstruction_metrics(x: np.ndarray, x_hat: np.ndarray) -> dict:
    """Quality of reconstructions ``x_hat`` of images ``x`` (both ``(N,28,28,1)`` in [0,1]).

    Returns a dict with three units for the same error:

    * ``mse``: mean per-pixel squared error;
    * ``psnr_db``: PSNR of that mean MSE (peak 1.0);
    * ``sse_per_8``: the 2018 project's unit, summed squared error over a batch of 8
      images (= mse x 784 x 8); the original reported 100-120 and aimed below 50.
    """
    mse = float(mse_per_image(x, x_hat).mean())
    return {"mse": mse, "psnr_db": psnr_from_mse(mse), "sse_per_8": mse * 28 * 28 * 8}


def ssim_per_image(originals_u8: np.ndarray, decoded_u8: np.ndarray) -> np.ndarray:
    """SSIM of each image pair, ``float64`` ``(N,)``, for ``uint8`` ``(N, H, W)`` batches.

    Identical to ``skimage.metrics.structural_similarity(a, b, data_range=255,
    win_size=7)`` on each pair (a 7x7 uniform window, sample covariance, K1=0.01, K2=0.03,
    the 3-pixel border left out of the mean), computed for the whole batch at once: about
    100x faster on 28x28 digits. ``tests`` compare it with scikit-image.
    """
    from scipy.ndimage import uniform_filter

    x = np.asarray(originals_u8, np.float64)
    y = np.asarray(decoded_u8, np.float64)
    if x.shape != y.shape or x.ndim != 3:
        raise CAEError(f"SSIM needs two (N, H, W) batches of the same shape, got {x.shape} and {y.shape}.")
    win, rng = 7, 255.0
    box = lambda a: uniform_filter(a, size=(1, win, win))  # noqa: E731  (no mixing across images)
    ux, uy = box(x), box(y)
    cov = win * win / (win * win - 1.0)
    vx, vy = cov * (box(x * x) - ux * ux), cov * (box(y * y) - uy * uy)
    vxy = cov * (box(x * y) - ux * uy)
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return s[:, pad:-pad, pad:-pad].reshape(len(s), -1).mean(axis=1)


def rd_metrics(originals_u8: np.ndarray, decoded_u8: np.ndarray) -> dict:
    """Distortion of decoded digits, both ``uint8`` ``(N, 28, 28)``.

    Returns ``mse`` (mean over all pixels, on the [0, 1] scale), ``psnr_db`` (of that mean
    MSE, peak 1.0; ``inf`` for a lossless codec) and ``ssim`` (mean of
    :func:`ssim_per_image`).
    """
    x = np.asarray(originals_u8, np.float64) / 255.0
    y = np.asarray(decoded_u8, np.float64) / 255.0
    if x.shape != y.shape:
        raise CAEError(f"Cannot compare images of shape {x.shape} and {y.shape}.")
    mse = float(np.mean((x - y) ** 2))
    return {"mse": mse, "psnr_db": psnr_from_mse(mse),
            "ssim": float(ssim_per_image(originals_u8, decoded_u8).mean())}


def photo_metrics(original_u8: np.ndarray, decoded_u8: np.ndarray) -> dict:
    """``mse`` (0..1 scale), ``psnr_db`` (peak 1.0) and ``ssim`` of one ``(H, W)`` pair."""
    if original_u8.shape != decoded_u8.shape:
        raise CAEError(f"Decoded size {decoded_u8.shape} differs from the original {original_u8.shape}.")
    mse = float(np.mean((original_u8.astype(np.float64) - decoded_u8) ** 2)) / 255.0 ** 2
    ssim = float(ssim_per_image(original_u8[None], decoded_u8[None])[0]) if min(original_u8.shape) >= 7 else float("nan")
    return {"mse": mse, "psnr_db": psnr_from_mse(mse), "ssim": ssim}
