"""The course's small helper: every notebook starts with ``import cae_utils as cu``.

The codec itself lives in the package :mod:`caecodec` (formats, entropy coding, the
digit and photo codecs, comparisons, the ``cae`` command, the app). This module holds
what the course adds around it, and names the package's tools each notebook uses, so
that ``cu.<name>`` reads like the course's table of contents:

1. Settings: quick mode, folders, seeds.
2. Data: :func:`load_mnist`.
3. Figures and results: :func:`save_fig`, :func:`record_results`, tables.
4. The training panel (notebook 03): :class:`TrainingPanel`.
5. What each notebook uses from :mod:`caecodec`, notebook by notebook.

The command line: ``python cae_utils.py encode|decode ...`` runs ``cae`` (see
``python cae_utils.py --help``).

Conventions: images are ``float32`` arrays in [0, 1] shaped ``(N, 28, 28, 1)`` (batch,
height, width, channel) unless a docstring says otherwise; labels are ``uint8``; sizes
are in bytes; PSNR is in dB with a peak value of 1.0.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from caecodec import paths
# caecodec.backend first: it silences TensorFlow's start-up log before Keras loads TensorFlow.
from caecodec.backend import device_name, keras, quiet_tensorflow, set_seed, tf  # noqa: F401
from keras import layers  # noqa: E402
from caecodec.errors import CAEError, check_int
from caecodec.fileio import atomic_write_bytes, finite_or_str
from caecodec.images import to_float_images, to_uint8_images  # noqa: F401  (cu.to_uint8_images: notebooks)
from caecodec.mnist import load_mnist_u8, mnist_source  # noqa: F401
from caecodec.models import build_improved_cae
from caecodec.plots import show_digits, show_pairs, show_rows  # noqa: F401
from caecodec.training import BATCH_SIZE_RANGE, EPOCH_RANGE, BatchLossLogger, smooth, train_autoencoder

# --------------------------------------------------------------------------------------
# 1. Settings
# --------------------------------------------------------------------------------------

#: The course checkout: the folder that holds this file.
ROOT = Path(__file__).resolve().parent
#: The trained models, shipped inside the package.
MODELS_DIR = paths.MODELS_DIR


def _env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to something truthy."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


#: Quick mode (``CAE_QUICK=1``): small data subsets and one or two epochs, so every
#: notebook runs in about a minute on 2 CPU cores. Tests and CI use it; users get full
#: mode by default.
QUICK = _env_flag("CAE_QUICK")

#: How many images quick mode keeps (train, test).
QUICK_SIZES = (2000, 500)

# Quick runs (tests, CI) write their figures and results to a "quick" subfolder (git-ignored),
# so they never replace the committed full-mode figures that the README shows.
FIGURES_DIR = ROOT / "figures" / ("quick" if QUICK else "")
RESULTS_DIR = ROOT / "results" / ("quick" if QUICK else "")


def mode_banner() -> str:
    """One line telling the reader whether this run is in quick or full mode, and where
    it trains."""
    where = f" Training runs on the {device_name()}."
    if QUICK:
        return (f"QUICK mode (CAE_QUICK=1): {QUICK_SIZES[0]} training and {QUICK_SIZES[1]} test "
                "images, 1-2 epochs. Numbers are rough; unset CAE_QUICK for the real results." + where)
    return "FULL mode: all 60,000 training and 10,000 test images." + where


# --------------------------------------------------------------------------------------
# 2. Data
# --------------------------------------------------------------------------------------

def load_mnist(path: str | os.PathLike | None = None, *, quick: bool | None = None):
    """Load MNIST as ``(x_train, y_train), (x_test, y_test)``.

    Images are ``float32`` in [0, 1] shaped ``(N, 28, 28, 1)``; labels are ``uint8``.
    Full mode gives 60,000 training and 10,000 test images; quick mode (``quick=True``,
    or ``CAE_QUICK=1`` when ``quick`` is None) keeps the first ``QUICK_SIZES`` of each.
    The files come from ``path``, ``$CAE_MNIST_DIR``, ``data/mnist/`` or Keras' download,
    in that order (:func:`caecodec.mnist.load_mnist_u8`); a missing, truncated or corrupt
    file raises :class:`CAEError` saying what to do.
    """
    quick = QUICK if quick is None else quick
    (xtr, ytr), (xte, yte) = load_mnist_u8(path)
    if quick:
        xtr, ytr = xtr[:QUICK_SIZES[0]], ytr[:QUICK_SIZES[0]]
        xte, yte = xte[:QUICK_SIZES[1]], yte[:QUICK_SIZES[1]]
    return (to_float_images(xtr), ytr.astype(np.uint8)), (to_float_images(xte), yte.astype(np.uint8))


# --------------------------------------------------------------------------------------
# 3. Figures, results and tables
# --------------------------------------------------------------------------------------

def save_fig(name: str, fig=None, dpi: int = 110, tight: bool = True) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` and return the path.

    Names are stable (no timestamps) so that reruns replace the old file. The file is
    written to a temporary name first and then renamed, so a crash never leaves half a
    PNG behind.
    """
    import matplotlib.pyplot as plt

    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise CAEError(f"Figure name {name!r} must be a plain file name like 'mnist_grid'.")
    fig = fig if fig is not None else plt.gcf()
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FIGURES_DIR / f"{name.removesuffix('.png')}.png"
    tmp = path.with_name(f".{path.name}.tmp")
    if tight:
        fig.tight_layout()
    try:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def record_results(notebook: str, results: dict) -> Path:
    """Write a notebook's headline numbers to ``results/<notebook>.json`` (atomically).

    ``make run`` prints them all at the end; the README's tables are made from them.
    Values must be JSON-serialisable (numbers, strings, lists, dicts).
    """
    import json

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{notebook}.json"
    try:  # strict JSON: an infinite PSNR (a perfect copy) is written as the string "inf"
        text = json.dumps(results, indent=2, sort_keys=True, allow_nan=False)
    except ValueError:
        text = json.dumps(finite_or_str(results), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())
    return path


def markdown_table(headers, rows, formats=None) -> str:
    """A Markdown table (for ``IPython.display.Markdown``) from ``headers`` and ``rows``.

    ``formats`` is an optional list of format specs, one per column (``".2f"``, ``",d"``;
    ``""`` for text); numbers get right-aligned columns. ``None`` and NaN print as a dash.
    """
    formats = list(formats) if formats is not None else [""] * len(headers)

    def cell(value, fmt):
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return "–"
        return value if isinstance(value, str) else format(value, fmt)

    lines = ["| " + " | ".join(map(str, headers)) + " |",
             "|" + "|".join("---:" if f else ":---" for f in formats) + "|"]
    lines += ["| " + " | ".join(cell(v, f) for v, f in zip(row, formats)) + " |" for row in rows]
    return "\n".join(lines)


def format_table(rows, headers) -> str:
    """Rows (sequences of values) as a fixed-width text table under a header line;
    columns of numbers (also as text, with commas or %) are right-aligned, others left."""
    cells = [[str(h) for h in headers]] + [[str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def is_num(v):
        try:
            float(str(v).replace(",", "").rstrip("%"))
            return True
        except ValueError:
            return False

    right = [any(is_num(r[i]) for r in rows) and all(is_num(r[i]) or r[i] == "-" for r in rows)
             for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if rj else c.ljust(w) for c, w, rj in zip(r, widths, right)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# 4. A classroom training panel (notebook 03; ipywidgets)
# --------------------------------------------------------------------------------------

#: Learning rates the panel starts from, per optimizer, for the per-pixel MSE loss.
#: (With MSE the gradients are small, so plain SGD needs a large step; see notebook 03.)
PANEL_LEARNING_RATES = {"adam": 2e-3, "sgd": 0.5}
PANEL_BATCH_SIZES = (8, 16, 32, 64, 128, 256, 512)


class LiveLossPlot(BatchLossLogger):
    """Redraws a loss curve (and moves a progress bar) while Keras trains.

    ``draw(steps, losses)`` is called every ``every`` batches with the per-batch losses
    so far; ``progress(step)`` after every batch. Both are plain functions, so the same
    callback drives a widget in JupyterLab or a print in a terminal.
    """

    def __init__(self, draw, progress=None, every: int = 20, *, n_samples: int, batch_size: int):
        super().__init__(n_samples, batch_size)
        self.draw, self.progress, self.every = draw, progress, max(1, int(every))

    def _redraw(self) -> None:
        self.draw(np.arange(1, len(self.batch_losses) + 1), self.batch_losses)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if self.progress is not None:
            self.progress(len(self.batch_losses))
        if len(self.batch_losses) % self.every == 0:
            self._redraw()

    def on_train_end(self, logs=None):
        self._redraw()


class TrainingPanel:
    """Sliders for epochs and batch size, an optimizer dropdown and a Train button.

    Pressing Train (or calling :meth:`run`) trains a fresh improved CAE on ``x_train``
    with the chosen settings and per-pixel MSE, showing a progress bar and a live loss
    plot, then prints the test PSNR. Run headless, :meth:`run` simply uses the widgets'
    current values, i.e. their defaults. ``panel.widget`` is the box to display.
    """

    def __init__(self, x_train: np.ndarray, x_test: np.ndarray, epochs: int = 1,
                 batch_size: int = 128, optimizer: str = "adam", max_epochs: int = 20):
        import ipywidgets as w

        self.x_train, self.x_test = x_train, x_test
        self.result: dict | None = None
        self.epochs = w.IntSlider(value=epochs, min=EPOCH_RANGE[0], max=min(max_epochs, EPOCH_RANGE[1]),
                                  description="epochs", continuous_update=False)
        self.batch_size = w.SelectionSlider(options=PANEL_BATCH_SIZES, value=batch_size,
                                            description="batch size", continuous_update=False)
        self.optimizer = w.Dropdown(options=[("Adam", "adam"), ("plain SGD", "sgd")],
                                    value=optimizer, description="optimizer")
        self.learning_rate = w.FloatLogSlider(value=PANEL_LEARNING_RATES[optimizer], base=10,
                                              min=-5, max=1, step=0.25, readout_format=".1e",
                                              description="learning rate", continuous_update=False)
        self.optimizer.observe(self._on_optimizer, names="value")
        self.button = w.Button(description="Train", button_style="primary", icon="play")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="steps")
        self.status = w.HTML(value="Choose settings and press <b>Train</b>.")
        self.plot = w.Output()
        self.button.on_click(lambda _button: self.run())
        style = {"description_width": "110px"}
        for control in (self.epochs, self.batch_size, self.optimizer, self.learning_rate, self.progress):
            control.style = style
        self.widget = w.VBox([w.HBox([self.epochs, self.batch_size]),
                              w.HBox([self.optimizer, self.learning_rate]),
                              w.HBox([self.button, self.progress]), self.status, self.plot])

    def _on_optimizer(self, change) -> None:
        self.learning_rate.value = PANEL_LEARNING_RATES[change["new"]]

    def settings(self) -> dict:
        """The current widget values, checked (a :class:`CAEError` if out of range)."""
        return {"epochs": check_int("epochs", self.epochs.value, *EPOCH_RANGE),
                "batch_size": check_int("batch_size", self.batch_size.value, *BATCH_SIZE_RANGE),
                "optimizer": self.optimizer.value, "learning_rate": float(self.learning_rate.value)}

    def _draw(self, steps, losses) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig, ax = plt.subplots(figsize=(6, 2.8))
        ax.plot(steps, losses, lw=0.6, alpha=0.4, label="each batch")
        ax.plot(steps, smooth(losses, 25), lw=1.5, label="moving average")
        ax.set_yscale("log"); ax.set_xlabel("training step"); ax.set_ylabel("MSE per pixel")
        ax.legend(loc="upper right"); fig.tight_layout()
        with self.plot:
            self.plot.clear_output(wait=True)
            display(fig)
        plt.close(fig)

    def run(self) -> dict | None:
        """Train with the current settings; returns :func:`train_autoencoder`'s result."""
        try:
            cfg = self.settings()
        except CAEError as exc:
            self.status.value = f"<span style='color:#b00'>{exc}</span>"
            return None
        steps_per_epoch = -(-len(self.x_train) // cfg["batch_size"])
        self.progress.max, self.progress.value = cfg["epochs"] * steps_per_epoch, 0
        self.button.disabled = True
        self.status.value = (f"Training: {cfg['epochs']} epoch(s) of {len(self.x_train)} images, "
                             f"batch {cfg['batch_size']}, {cfg['optimizer']} "
                             f"at {cfg['learning_rate']:.1e}...")
        live = LiveLossPlot(self._draw, lambda step: setattr(self.progress, "value", step),
                            every=max(10, self.progress.max // 25),
                            n_samples=len(self.x_train), batch_size=cfg["batch_size"])
        try:
            set_seed(42)
            autoencoder, _, _ = build_improved_cae()
            self.result = train_autoencoder(autoencoder, self.x_train, x_test=self.x_test,
                                            loss="mse", callbacks=[live], **cfg)
            self.result["model"] = autoencoder
        finally:
            self.button.disabled = False
        if self.result["diverged"]:
            self.status.value = ("<b>The loss became NaN: training diverged.</b> Lower the "
                                 "learning rate and try again.")
        else:
            t = self.result["test"]
            self.status.value = (f"Done in {self.result['seconds']:.0f} s: test PSNR "
                                 f"<b>{t['psnr_db']:.2f} dB</b> (MSE {t['mse']:.4f}; "
                                 f"{t['sse_per_8']:.0f} in the 2018 unit).")
        return self.result


# --------------------------------------------------------------------------------------
# 5. What each notebook uses from the codec package
# --------------------------------------------------------------------------------------
# The rest of the course's tools live in the codec package, one module per job. They are
# reached as ``cu.<module>.<name>``, so a cell says where its tool comes from:
#   notebook 02  cu.models (the builders), cu.plots (architecture figures)
#   notebook 03  cu.training (losses, the trainer, sweeps), cu.modelio (save and load),
#                cu.machine (the load average beside a timing)
#   notebook 04  cu.images (any image -> a digit), cu.formats (.cae bytes), cu.files, cu.cli
#   notebook 05  cu.digit_codec, cu.entropy, cu.keras_layers, cu.classic, cu.pca,
#                cu.compare, cu.bdrate, cu.rd_plots
#   notebook 06  cu.photo_codec, cu.photo_context, cu.photo_eval, cu.codec_training
#   the app      cu.app, cu.matched
#   notebook 07  cu.lossless (the codec), cu.lossless_model (Keras), cu.lossless_net (the
#                exact integer network), cu.lossless_eval (comparisons, where the bits go)
from caecodec import (  # noqa: E402,F401
    app, bdrate, classic, cli, codec_training, compare, digit_codec, entropy, files, formats,
    images, keras_layers, machine, matched, metrics, modelio, models, pca, photo_codec, photo_eval,
    plots, rd_plots, training)
from caecodec import photo_context  # noqa: E402,F401  (notebook 06: the photo codec's context model)
from caecodec import lossless, lossless_eval, lossless_model, lossless_net  # noqa: E402,F401
from caecodec.metrics import mse_per_image, psnr_from_mse, reconstruction_metrics  # noqa: E402,F401

if __name__ == "__main__":
    from caecodec.cli import main

    sys.exit(main(prog="python cae_utils.py"))
