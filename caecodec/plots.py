"""The course's plotting details: digit grids, histograms, loss curves, architecture
diagrams, receptive fields, preprocessing steps. Each function returns a matplotlib
figure (or draws on an ``ax``); ``cae_utils.save_fig`` saves it. Never imported when a
file is decoded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .backend import keras
from .images import image_to_digit, open_image
from .models import layer_shapes
from .training import loss_in_original_unit, smooth


def show_digits(images: np.ndarray, labels=None, n: int = 20, cols: int = 10, title: str | None = None):
    """A grid of the first ``n`` images (``(N,28,28[,1])``, values in [0, 1]). Returns the figure."""
    import matplotlib.pyplot as plt

    n = min(n, len(images))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.0 + (0.3 if title else 0)))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(np.squeeze(images[i]), cmap="gray", vmin=0, vmax=1)
            if labels is not None:
                ax.set_title(str(labels[i]), fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def show_pairs(originals: np.ndarray, reconstructions: np.ndarray, n: int = 10,
               row_titles=("original", "reconstruction")):
    """Originals on top, their reconstructions below (first ``n``). Returns the figure."""
    import matplotlib.pyplot as plt

    n = min(n, len(originals))
    fig, axes = plt.subplots(2, n, figsize=(n * 0.9, 2.1), squeeze=False)
    for i in range(n):
        for row, imgs in enumerate((originals, reconstructions)):
            ax = axes[row, i]
            ax.imshow(np.clip(np.squeeze(imgs[i]), 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]); ax.set_yticks([])
        if i == 0:
            axes[0, 0].set_ylabel(row_titles[0], fontsize=8)
            axes[1, 0].set_ylabel(row_titles[1], fontsize=8)
    return fig


def show_rows(image_rows, row_titles, n: int = 10, title: str | None = None):
    """Several rows of digits, one row per array in ``image_rows`` (first ``n`` of each).

    E.g. originals, then the reconstructions of two models, with ``row_titles`` written
    to the left of each row. Returns the figure.
    """
    import matplotlib.pyplot as plt

    n = min([n, *map(len, image_rows)])
    fig, axes = plt.subplots(len(image_rows), n, figsize=(1.6 + n * 0.8, 0.85 * len(image_rows) + 0.35),
                             squeeze=False)
    for r, imgs in enumerate(image_rows):
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(np.clip(np.squeeze(imgs[i]), 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]); ax.set_yticks([])
        axes[r, 0].set_ylabel(row_titles[r], fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_loss_curve(ax, result: dict, label: str, color: str | None = None, window: int = 50,
                    per: str = "step"):
    """Draw one :func:`train_autoencoder` result on ``ax`` in the 2018 unit (SSE per 8 images).

    Each batch's loss is drawn thin and faint, its ``window``-step moving average thick.
    ``per="step"`` puts training steps on the x axis, ``per="image"`` the number of
    training images seen (fair when batch sizes differ). A diverged run is drawn up to its
    last finite loss. Returns ``ax``.
    """
    values = loss_in_original_unit(result["batch_losses"], result["loss"], result["batch_size"])
    values = values[np.isfinite(values)]
    x = np.arange(1, len(values) + 1) * (result["batch_size"] if per == "image" else 1)
    raw, = ax.plot(x, values, lw=0.5, alpha=0.25, color=color)
    ax.plot(x, smooth(values, window), lw=2.0, color=raw.get_color(), label=label)
    ax.set_xlabel("training images seen" if per == "image" else "training step")
    ax.set_ylabel("loss (SSE per 8 images)")
    ax.grid(alpha=0.3)
    return ax


def plot_histogram(values, bins, xlabel: str, title: str, logy: bool = False, color="C0"):
    """A histogram of ``values`` (1-D numbers) with labelled axes. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.hist(np.ravel(values), bins=bins, color=color, edgecolor="white", linewidth=0.4)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel="count" + (" (log scale)" if logy else ""), title=title)
    return fig


def plot_scatter(x, y, xlabel: str, ylabel: str, title: str, highlight=None,
                 labels=("all", "highlighted")):
    """A scatter plot of two 1-D arrays of equal length; points where the boolean array
    ``highlight`` is True get a second colour, with ``labels`` in a legend. Returns the figure."""
    import matplotlib.pyplot as plt

    x, y = np.asarray(x), np.asarray(y)
    mask = np.zeros(len(x), bool) if highlight is None else np.asarray(highlight, bool)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.scatter(x[~mask], y[~mask], s=4, alpha=0.3, color="C0", edgecolors="none", label=labels[0])
    if mask.any():
        ax.scatter(x[mask], y[mask], s=6, alpha=0.6, color="C3", edgecolors="none", label=labels[1])
        ax.legend(markerscale=3, fontsize=8, loc="lower right")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    return fig


def plot_class_counts(y_train: np.ndarray, y_test: np.ndarray):
    """Bar charts of how many images of each digit 0-9 the train and test labels hold."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, y, name, color in zip(axes, (y_train, y_test), ("train", "test"), ("C0", "C1")):
        counts = np.bincount(np.asarray(y, np.int64), minlength=10)
        ax.bar(range(10), counts, color=color)
        ax.axhline(counts.mean(), color="k", lw=0.8, ls="--", label="mean")
        ax.set(xticks=range(10), xlabel="digit", ylabel="images",
               title=f"{name}: {counts.sum():,} images")
        ax.legend(loc="lower right", fontsize=8)
    return fig


_ARCH_COLORS = {"InputLayer": "#d9d9d9", "Conv2D": "#9ecae1", "Conv2DTranspose": "#fdae6b",
                "Dense": "#a1d99b"}


def plot_architecture(model, title: str | None = None):
    """Draw ``model`` as one box per layer (rows of :func:`layer_shapes`). Returns the figure.

    Box height follows the layer's spatial side (28 pixels = tallest; vectors count as 1),
    box width the log of its channel count; colour shows the layer type. Labels give the
    name and the output shape (without batch). For an autoencoder made of an encoder and a
    decoder, the latent (the encoder's output) is outlined in red.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Patch, Rectangle

    rows = layer_shapes(model)
    nested = [lay for lay in model.layers if isinstance(lay, keras.Model)]
    code_idx = len(layer_shapes(nested[0])) - 1 if len(nested) >= 2 else None
    side = [s[0] if len(s) == 3 else 1 for _, _, s in rows]
    chans = [s[-1] if s else 1 for _, _, s in rows]
    max_side, step, top = max(side), 1.25, 2.6
    fig, ax = plt.subplots(figsize=(max(6.0, 1.05 * len(rows) + 0.6), 3.9))
    for i, ((name, kind, shape), sd, ch) in enumerate(zip(rows, side, chans)):
        h, w = 0.25 + top * sd / max_side, 0.18 + 0.055 * np.log2(ch)
        x0 = i * step - w / 2
        edge, lw = ("red", 2.2) if i == code_idx else ("0.25", 0.8)
        ax.add_patch(Rectangle((x0, -h / 2), w, h, facecolor=_ARCH_COLORS.get(kind, "#eeeeee"),
                               edgecolor=edge, lw=lw))
        ax.text(i * step, top / 2 + 0.45, name, ha="center", va="bottom", fontsize=8.5,
                fontweight="bold", rotation=20)
        ax.text(i * step, -top / 2 - 0.4, "x".join(map(str, shape)), ha="center", va="top",
                fontsize=8.5, color="red" if i == code_idx else "black")
        if i:
            ax.add_patch(FancyArrowPatch(((i - 1) * step + 0.42, 0), (i * step - 0.42, 0),
                                         arrowstyle="-|>", mutation_scale=9, color="0.4", lw=0.8))
    if code_idx is not None:
        ax.text(code_idx * step, -top / 2 - 0.85, "latent", ha="center", va="top", fontsize=8.5,
                color="red", fontweight="bold")
        for lo, hi, label in ((0, code_idx - 0.1, "encoder"), (code_idx + 0.1, len(rows) - 1, "decoder")):
            ax.annotate("", xy=(lo * step, -top / 2 - 1.35), xytext=(hi * step, -top / 2 - 1.35),
                        arrowprops=dict(arrowstyle="|-|", color="0.4", lw=0.8))
            ax.text((lo + hi) * step / 2, -top / 2 - 1.45, label, ha="center", va="top", fontsize=9)
    kinds = [k for k in _ARCH_COLORS if any(r[1] == k for r in rows)]
    handles = [Patch(facecolor=_ARCH_COLORS[k], edgecolor="0.25", label=k) for k in kinds]
    if any(r[1] not in _ARCH_COLORS for r in rows):
        handles.append(Patch(facecolor="#eeeeee", edgecolor="0.25", label="other (no weights)"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=len(handles),
              fontsize=8, frameon=False)
    ax.set_xlim(-0.7, (len(rows) - 1) * step + 0.7)
    ax.set_ylim(-top / 2 - 2.0, top / 2 + 1.4)
    ax.axis("off")
    ax.set_title(title or model.name)
    return fig


def plot_receptive_fields(image: np.ndarray, rows, title: str = "receptive fields", ax=None,
                          half: float | None = None):
    """Squares of each layer's receptive field (rows of notebook 02's ``receptive_fields``), drawn
    centred on a 28x28 ``image`` in [0, 1]; fields wider than the image reach into the
    zero padding (drawn dark blue). ``half``: half-width of the view in pixels (default:
    fit the largest field). Draws into ``ax`` if given; returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(4.4, 4.4))
    sizes = [(r[0], r[5]) for r in rows if isinstance(r[5], int)]
    half = half or max(15, max(s for _, s in sizes) / 2 + 2)
    ax.set_facecolor("#1c2340")
    ax.imshow(np.squeeze(image), cmap="gray", vmin=0, vmax=1, extent=(-14, 14, 14, -14))
    for i, (name, size) in enumerate(sizes):
        ax.add_patch(Rectangle((-size / 2, -size / 2), size, size, fill=False, ec=f"C{i + 1}",
                               lw=1.8, label=f"{name}: {size}x{size} px"))
    for name in (r[0] for r in rows if not isinstance(r[5], int)):
        ax.add_patch(Rectangle((-14.5, -14.5), 29, 29, fill=False, ec="C6", lw=1.8, ls="--",
                               label=f"{name}: whole image"))
    if half > 15:
        ax.text(0, half - 1.5, "zero padding", color="white", ha="center", va="bottom", fontsize=8)
    ax.set(xlim=(-half, half), ylim=(half, -half), title=title, xticks=[], yticks=[])
    ax.legend(loc="upper left", fontsize=7.5, framealpha=0.9)
    return ax.figure


def plot_sigmoid_slope(z_seen=None):
    """The sigmoid ``s(z)`` and its slope ``s(1 - s)`` (log axis) against the pre-activation
    ``z``. If ``z_seen`` (an array of pre-activations) is given, its range is shaded (cut
    at the left edge of the plot if it reaches further). Returns the figure."""
    import matplotlib.pyplot as plt

    lo, hi = -12.0, 12.0
    if z_seen is not None:
        z_min, z_max = float(np.min(z_seen)), float(np.max(z_seen))
        lo, hi = min(lo, z_max - 12), max(hi, z_max + 4)
    z = np.linspace(lo, hi, 600)
    e = np.exp(-np.abs(z))  # written so that it never overflows
    s = np.where(z >= 0, 1.0, e) / (1.0 + e)
    slope = e / (1.0 + e) ** 2  # s (1 - s)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.3))
    a1.plot(z, s, color="C0")
    a1.set(xlabel="pre-activation z", ylabel="sigmoid(z)", title="output")
    a2.semilogy(z, slope, color="C3")
    a2.set(xlabel="pre-activation z", ylabel="slope s(1 - s)", title="gradient factor (log scale)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.set_xlim(lo, hi)
        if z_seen is not None:
            label = "after training" + (f" (down to {z_min:.0f})" if z_min < lo else "")
            a.axvspan(max(z_min, lo), z_max, color="C1", alpha=0.3, label=label)
    if z_seen is not None:
        a1.legend(loc="center right", fontsize=8)
    return fig


def image_preview(img_or_path) -> np.ndarray:
    """An image file as it looks to a person, as an array for ``plt.imshow``.

    Colour, palette and transparent images become RGB with any transparent part laid over
    a light checkerboard (so the transparency is visible); 16-bit, 32-bit and float
    images become gray scaled by their own range.
    """
    from PIL import Image, ImageOps

    img = img_or_path if isinstance(img_or_path, Image.Image) else open_image(img_or_path)
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        return ((arr - arr.min()) / max(float(np.ptp(arr)), 1e-12)).astype(np.float32)
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    yy, xx = np.indices(rgba.shape[:2])
    checks = np.where(((yy // 16) + (xx // 16)) % 2 == 0, 0.92, 0.78)[..., None]
    alpha = rgba[..., 3:]
    return rgba[..., :3] * alpha + checks * (1.0 - alpha)


def show_preprocessing(paths, titles=None):
    """One row per image file: the file as it looks, then each step of :func:`image_to_digit`.

    Every step is drawn with black = 0 and white = the step's brightest value, with its
    width x height under the title. Returns the figure.
    """
    import matplotlib.pyplot as plt

    rows = [image_to_digit(p, return_steps=True)[1] for p in paths]
    titles = list(titles) if titles is not None else [Path(p).name for p in paths]
    cols = 1 + max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.75 * cols, 1.95 * len(rows)), squeeze=False)
    for r, (path, steps) in enumerate(zip(paths, rows)):
        for ax in axes[r]:
            ax.axis("off")
        axes[r, 0].imshow(image_preview(path), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(titles[r], fontsize=8)
        for c, (title, arr) in enumerate(steps, start=1):
            axes[r, c].imshow(arr, cmap="gray", vmin=0, vmax=max(float(arr.max()), 1e-6))
            axes[r, c].set_title(f"{title}\n{arr.shape[1]}x{arr.shape[0]}", fontsize=7)
    return fig
