"""Rate-distortion plots for digits and photos, one style per codec.
"""
from __future__ import annotations

import numpy as np

from .bdrate import pareto_rows
from .photo_eval import PHOTO_BD_RANGE_BPP

#: How each codec is drawn in notebook 05's plots: (label, colour, marker).
CODEC_STYLE = {
    "cae": ("learned CAE (.cae v1)", "tab:red", "o"),
    "webp": ("WebP lossy", "tab:blue", "s"),
    "jpeg": ("JPEG", "tab:orange", "^"),
    "avif": ("AVIF", "tab:purple", "D"),
    "pca": ("PCA + range coder", "tab:green", "v"),
    "float_latent_v0": ("float latent (.cae v0)", "tab:brown", "X"),
    "png": ("PNG (lossless)", "tab:gray", "P"),
    "webp_lossless": ("WebP lossless", "black", "*"),
    "jxl": ("JPEG XL lossy", "tab:cyan", "h"),
    "jpeg2000": ("JPEG 2000", "tab:olive", "<"),
    "jxl_lossless": ("JPEG XL lossless", "tab:cyan", "*"),
    "jpegls": ("JPEG-LS (lossless)", "tab:pink", "*"),
}


def plot_rate_distortion(ax, rows, metric: str = "psnr_db", codecs=None, label_settings: bool = False):
    """Draw each codec's ``metric`` against mean bytes per digit (log x axis) on ``ax``.

    Lossy codecs are lines through their settings (PCA: its Pareto front only); single
    settings are points. Lossless codecs, whose PSNR is infinite, become vertical dashed
    lines at their size when ``metric="psnr_db"``. ``label_settings`` writes each
    learned quality next to its point. Returns ``ax``.
    """
    codecs = codecs or [c for c in CODEC_STYLE if any(r["codec"] == c for r in rows)]
    for c in codecs:
        label, color, marker = CODEC_STYLE.get(c, (c, None, "o"))
        mine = pareto_rows(rows, c, metric) if c == "pca" else [r for r in rows if r["codec"] == c]
        mine = sorted(mine, key=lambda r: r["mean_bytes"])
        if not mine:
            continue
        x = np.array([r["mean_bytes"] for r in mine])
        y = np.array([r[metric] for r in mine], np.float64)
        if mine[0]["images"] < max(r["images"] for r in rows):
            label += f" (first {mine[0]['images']} digits)"
        if not np.all(np.isfinite(y)):
            ax.axvline(x[0], color=color, ls="--", lw=1, label=f"{label}: {x[0]:.0f} B")
            continue
        ax.plot(x, y, color=color, marker=marker, ms=5, lw=1.5 if len(x) > 1 else 0, label=label)
        if label_settings and c == "cae":
            for r in mine:
                ax.annotate(f"q{r['setting']}", (r["mean_bytes"], r[metric]), textcoords="offset points",
                            xytext=(-4, 6), fontsize=7, color=color, ha="right")
    ax.set_xscale("log")
    ax.set_xlabel("mean file size per 28x28 digit (bytes, log scale; headers included)")
    ax.set_ylabel({"psnr_db": "PSNR (dB)", "ssim": "SSIM", "accuracy": "classifier accuracy"}.get(metric, metric))
    ax.grid(alpha=0.3, which="both")
    return ax


PHOTO_CODEC_STYLE = {"cae": ("C3", "o", "photo CAE (ours)"), "jpeg": ("C0", "s", "JPEG"),
                     "webp": ("C2", "^", "WebP"), "avif": ("C1", "D", "AVIF"),
                     "jxl": ("C4", "v", "JPEG XL"), "jpeg2000": ("C5", "P", "JPEG 2000"),
                     "mnist_cae_tiles": ("C7", "x", "MNIST-trained CAE on 28x28 tiles")}


def show_photos(images, titles=None, cols: int | None = None, crop=None, size: float = 3.2,
                suptitle: str | None = None):
    """A row (or grid) of grayscale ``uint8`` images with titles; ``crop`` =
    ``(top, left, height, width)`` zooms into the same region of each. Returns the figure."""
    import matplotlib.pyplot as plt

    images = list(images)
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows * 1.05), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, img in enumerate(images):
        if crop is not None:
            t, l, h, w = crop
            img = img[t:t + h, l:l + w]
        ax = axes.ravel()[i]
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_photo_rd(ax, rows, metric: str = "psnr_db", bpp_range=PHOTO_BD_RANGE_BPP,
                  extra_rows=(), label_settings: bool = True):
    """Rate-distortion curves on photos: ``metric`` (``"psnr_db"`` or ``"ssim"``)
    against bits per pixel, one line per codec, the BD range shaded."""
    for codec in dict.fromkeys(r["codec"] for r in list(rows) + list(extra_rows)):
        pts = sorted((r for r in list(rows) + list(extra_rows) if r["codec"] == codec),
                     key=lambda r: r["bpp"])
        color, marker, label = PHOTO_CODEC_STYLE.get(codec, (None, ".", codec))
        ax.plot([r["bpp"] for r in pts], [r[metric] for r in pts], marker=marker, color=color,
                label=label, lw=2 if codec == "cae" else 1.2, ms=5)
        if label_settings and codec == "cae":
            for r in pts:
                ax.annotate(f"q{r['setting']}", (r["bpp"], r[metric]), textcoords="offset points",
                            xytext=(4, -10), fontsize=7, color=color)
    if bpp_range:
        ax.axvspan(*bpp_range, color="0.92", zorder=0, label=f"BD range {bpp_range[0]}-{bpp_range[1]} bpp")
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (whole file, log scale)")
    ax.set_ylabel({"psnr_db": "PSNR (dB, mean over photos)", "ssim": "SSIM (mean over photos)"}.get(metric, metric))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return ax
