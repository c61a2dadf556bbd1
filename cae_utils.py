"""Helpers for the convolutional-autoencoder (CAE) image-compression course.

Every notebook in ``notebooks/`` imports this one module, so the notebooks can stay
about ideas while the code lives here, documented and tested (``tests/``).

Sections
--------
1. Settings: quick mode, folders, seeds, quiet TensorFlow.
2. Data: ``load_mnist`` (IDX files from a folder, else Keras' download).
3. Models: the original 2018 "seed" CAE and an improved CAE, both with a
   128-number latent; encoder and decoder usable on their own.
4. Losses and metrics: summed squared error (the original's unit), MSE, PSNR.
5. Training: ``train_autoencoder`` and the recipes; 5b: the classroom ``TrainingPanel``.
6. Saving and loading models (``.keras`` + a JSON card, safe mode).
7. Any image file in, an MNIST-like 28x28 digit out (``image_to_digit``).
8. The ``.cae`` file, format version 0 (the float latent, with a model fingerprint).
9. The command line: ``python cae_utils.py encode|decode ...`` (``main``).
10. Real compression: a rate-distortion CAE (GDN, factorized prior), code tables, and
    ``LearnedCodec`` with constriction's range coder.
11. The ``.cae`` file, format version 1 (quantized, entropy-coded; a 7-byte header).
11b. Any image size and real photos: the photo codec (``build_photo_cae``,
    ``PhotoCodec``, tiles with a halo, ``.cae`` format version 2), its training on
    scikit-image's photos, and its evaluation on a folder of photos (notebook 06).
12. Figures and results: ``save_fig``, ``record_results`` and plotting helpers.
13. Helpers written for particular notebooks (04, 03, 01-02, 05 in that order): small
    plots and tools, plus notebook 05's classic codecs, the PCA baseline, the digit
    classifier, Bjontegaard deltas and the whole rate-distortion comparison.
14. The classroom codec app (``CodecApp``, ``make app``): an image, the CAE, and JPEG and
    WebP at a matched size.

The command line lives in section 9; run ``python cae_utils.py --help``.

Conventions: images are ``float32`` arrays in [0, 1] shaped ``(N, 28, 28, 1)``
(batch, height, width, channel) unless a docstring says otherwise; labels are
``uint8``; sizes are in bytes; PSNR is in dB with a peak value of 1.0.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import re
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------
# 1. Settings
# --------------------------------------------------------------------------------------

#: Project root: the folder that holds this file.
ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data"
MODELS_DIR = ROOT / "models"  # the small pretrained models shipped with the course


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

# TensorFlow's C++ start-up chatter goes to stderr. It would land in the notebooks'
# stored outputs and make nbval fail, so it is silenced here, once, for every user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _stderr_silenced():
    """Send file descriptor 2 to /dev/null for the duration of the block.

    TensorFlow writes its start-up log lines from C++ before Python logging is set up,
    so only an OS-level redirect hides them.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some embedded consoles): nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _stderr_silenced():
    import keras  # noqa: E402  (imported here on purpose, after the log settings)
    import tensorflow as tf  # noqa: E402,F401  (the backend; imported for its side effects)

from keras import layers  # noqa: E402

# Python-side TensorFlow warnings (e.g. "retracing") are for library developers; they would
# only clutter a student's notebook.
tf.get_logger().setLevel("ERROR")


def _current_umask() -> int:
    """The process umask: from /proc on Linux (no side effect), else by setting it briefly."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class CAEError(Exception):
    """A user-facing problem: bad input, missing data, a mismatched file or model.

    The message says what is wrong and what to do. The command line prints it as one
    line; notebooks show it without a deep TensorFlow traceback.
    """


def set_seed(seed: int = 42) -> None:
    """Seed Python, NumPy and TensorFlow so that a training cell repeats exactly.

    Call it at the top of every cell that initialises or trains a model.
    """
    keras.utils.set_random_seed(int(seed))


def mode_banner() -> str:
    """One line telling the reader whether this run is in quick or full mode."""
    if QUICK:
        return (f"QUICK mode (CAE_QUICK=1): {QUICK_SIZES[0]} training and {QUICK_SIZES[1]} test "
                "images, 1-2 epochs. Numbers are rough; unset CAE_QUICK for the real results.")
    return "FULL mode: all 60,000 training and 10,000 test images."


# --------------------------------------------------------------------------------------
# 2. Data: MNIST from IDX files, else Keras' download
# --------------------------------------------------------------------------------------

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def _where_to_put_mnist() -> str:
    names = "\n".join(f"    {n}" for n in MNIST_FILES.values())
    return (f"Put the four MNIST files\n{names}\ninto {DATA_DIR / 'mnist'} (or any folder, then set "
            "CAE_MNIST_DIR=that/folder or call load_mnist(path=...)).")


def _read_idx_bytes(path: Path) -> bytes:
    """Whole contents of an IDX file, gunzipped if it is gzip; clear errors if broken."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CAEError(f"Cannot read MNIST file {path}: {exc.strerror}.") from None
    if raw[:2] != b"\x1f\x8b":  # not gzip: an already-uncompressed IDX file
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise CAEError(
            f"MNIST file {path} is not a valid gzip file ({exc}); it is probably truncated or "
            "corrupt. Download it again.") from None


def _parse_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Parse an IDX file of unsigned bytes, checking its header against its contents.

    Returns a ``uint8`` array shaped ``(count, *item_shape)``.
    """
    data = _read_idx_bytes(path)
    ndim = 1 + len(item_shape)
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise CAEError(f"MNIST file {path} is too short ({len(data)} bytes) to hold an IDX header; "
                       "it is truncated. Download it again.")
    found_magic = struct.unpack(">I", data[:4])[0]
    if found_magic != magic:
        raise CAEError(
            f"MNIST file {path} has magic number 0x{found_magic:08x}, expected 0x{magic:08x}: it is "
            "not the right IDX file (images and labels swapped?) or it is corrupt.")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    if tuple(dims[1:]) != item_shape:
        raise CAEError(f"MNIST file {path} holds items of shape {tuple(dims[1:])}, expected "
                       f"{item_shape} (28x28 digits).")
    count = dims[0]
    expected = count * int(np.prod(item_shape, dtype=np.int64))
    body = len(data) - header_len
    if body != expected:
        raise CAEError(
            f"MNIST file {path} says it holds {count} items ({expected} bytes) but has {body} bytes "
            "of data: it is truncated or corrupt. Download it again.")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape((count, *item_shape)).copy()


def _find_idx_file(folder: Path, name: str) -> Path | None:
    """The gzip file ``name`` in ``folder``, or its uncompressed twin, or None."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_mnist_idx(folder: str | os.PathLike) -> tuple[tuple[np.ndarray, np.ndarray],
                                                         tuple[np.ndarray, np.ndarray]]:
    """Read the four MNIST IDX files from ``folder``; raw ``uint8`` images and labels.

    Returns ``(x_train, y_train), (x_test, y_test)`` with images shaped ``(N, 28, 28)``.
    Raises :class:`CAEError` naming the file if one is missing, truncated or corrupt.
    """
    folder = Path(folder)
    paths = {key: _find_idx_file(folder, name) for key, name in MNIST_FILES.items()}
    missing = [MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise CAEError(f"MNIST folder {folder} is missing {', '.join(missing)}. "
                       + _where_to_put_mnist())
    arrays = {}
    for key, path in paths.items():
        if key.endswith("images"):
            arrays[key] = _parse_idx(path, _IDX_IMAGES_MAGIC, (28, 28))
        else:
            arrays[key] = _parse_idx(path, _IDX_LABELS_MAGIC, ())
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise CAEError(f"MNIST {split} set in {folder} has {n_img} images but {n_lab} labels; "
                           "one of the two files is from a different download.")
        if n_lab and arrays[f"{split}_labels"].max() > 9:
            raise CAEError(f"MNIST {split} labels in {folder} contain values above 9: the labels "
                           "file is corrupt.")
    return ((arrays["train_images"], arrays["train_labels"]),
            (arrays["test_images"], arrays["test_labels"]))


def _load_mnist_keras():
    """Keras' normal download (cached in ~/.keras/datasets/mnist.npz)."""
    try:
        return keras.datasets.mnist.load_data()
    except Exception as exc:  # offline, proxy, corrupt cache: one clear message instead
        raise CAEError(
            "MNIST is not on this machine and Keras could not download it "
            f"({type(exc).__name__}: {str(exc)[:120]}). " + _where_to_put_mnist()) from None


def load_mnist(path: str | os.PathLike | None = None, *, quick: bool | None = None):
    """Load MNIST as ``(x_train, y_train), (x_test, y_test)``.

    Images are ``float32`` in [0, 1] shaped ``(N, 28, 28, 1)``; labels are ``uint8``.
    Full mode gives 60,000 training and 10,000 test images; quick mode (``quick=True``,
    or ``CAE_QUICK=1`` when ``quick`` is None) keeps the first ``QUICK_SIZES`` of each.

    Where the data comes from, in order:

    1. ``path``, if given: a folder with the four gzip IDX files (it must have them);
    2. the folder in ``$CAE_MNIST_DIR``, if set (it must have them);
    3. ``data/mnist/`` if it holds the files;
    4. otherwise Keras' normal download and cache.

    Raises :class:`CAEError` with instructions when no source works, or when a file
    is truncated or corrupt.
    """
    quick = QUICK if quick is None else quick
    chosen = path if path not in (None, "") else os.environ.get("CAE_MNIST_DIR") or None
    if chosen is not None:
        folder = Path(chosen).expanduser()
        if folder.is_file():
            raise CAEError(f"MNIST path {folder} is a file, not a folder. " + _where_to_put_mnist())
        if not folder.is_dir():
            raise CAEError(f"MNIST folder {folder} does not exist. " + _where_to_put_mnist())
        (xtr, ytr), (xte, yte) = load_mnist_idx(folder)
    elif all(_find_idx_file(DATA_DIR / "mnist", n) for n in MNIST_FILES.values()):
        (xtr, ytr), (xte, yte) = load_mnist_idx(DATA_DIR / "mnist")
    else:
        (xtr, ytr), (xte, yte) = _load_mnist_keras()
    if quick:
        xtr, ytr = xtr[:QUICK_SIZES[0]], ytr[:QUICK_SIZES[0]]
        xte, yte = xte[:QUICK_SIZES[1]], yte[:QUICK_SIZES[1]]
    return (to_float_images(xtr), ytr.astype(np.uint8)), (to_float_images(xte), yte.astype(np.uint8))


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


# --------------------------------------------------------------------------------------
# 3. Models
# --------------------------------------------------------------------------------------

LATENT_DIM = 128  # the original project's bottleneck: 128 numbers per 784-pixel digit


def build_seed_cae(leak: float = 0.2):
    """The original 2018 CAE, layer for layer, as Keras models.

    Encoder: five ``Conv2D`` (kernel 4, stride 2, ``same``, leaky ReLU) with 32, 64, 128,
    128, 128 filters: 28x28x1 -> 14 -> 7 -> 4 -> 2 -> 1x1x128.
    Decoder: ``Conv2DTranspose`` 128 (k3, s2) -> 2x2, 64 (k3, s2) -> 4x4, 32 (k7, s7)
    -> 28x28, then 1 (k3, s1) -> 28x28x1 with a *linear* output, clipped to [0, 1] only
    when decoding. (A sigmoid output collapses to an all-black image within a few dozen
    Adam steps and stops learning, with the summed loss and with MSE alike: Adam's first
    steps are large whatever the loss scale, and they push the sigmoid into saturation,
    where its gradient vanishes. Notebook 02 measures it.)

    Returns ``(autoencoder, encoder, decoder)``: image -> image, image ``(N,28,28,1)``
    -> latent ``(N,1,1,128)``, latent -> image. The three share weights.
    """
    act = dict(activation=layers.LeakyReLU(negative_slope=leak))
    enc_in = keras.Input((28, 28, 1), name="image")
    x = enc_in
    for i, filters in enumerate((32, 64, 128, 128, 128), start=1):
        x = layers.Conv2D(filters, 4, strides=2, padding="same", name=f"conv{i}", **act)(x)
    encoder = keras.Model(enc_in, x, name="seed_encoder")

    dec_in = keras.Input((1, 1, LATENT_DIM), name="code")
    y = layers.Conv2DTranspose(128, 3, strides=2, padding="same", name="deconv1", **act)(dec_in)
    y = layers.Conv2DTranspose(64, 3, strides=2, padding="same", name="deconv2", **act)(y)
    y = layers.Conv2DTranspose(32, 7, strides=7, padding="same", name="deconv3", **act)(y)
    y = layers.Conv2DTranspose(1, 3, strides=1, padding="same", name="deconv4")(y)
    decoder = keras.Model(dec_in, y, name="seed_decoder")

    return _chain(encoder, decoder, "seed_cae"), encoder, decoder


def build_improved_cae(latent_dim: int = LATENT_DIM):
    """A better CAE with the same 128-number bottleneck (the design is argued in notebook 02).

    What changes, and why:

    * Three strided 3x3 convolutions (28 -> 14 -> 7 -> 4) keep the spatial layout while
      it is cheap, then a ``Dense`` layer maps the 4x4x64 features to the latent. Every
      latent number can then "see" the whole digit, instead of the seed's 1x1 convolution
      chain squeezing through 2x2 and 1x1 maps.
    * The decoder mirrors it with ``Conv2DTranspose`` layers (4 -> 8, cropped to 7 -> 14
      -> 28) and ends with a linear 3x3 convolution (clipped to [0, 1] when decoding).
    * ReLU activations; trained with per-pixel MSE (a loss whose scale does not depend on
      batch or image size, so the learning rate carries over) and Adam with a short
      warm-up and cosine decay, at batch 128.

    Returns ``(autoencoder, encoder, decoder)``: the encoder maps ``(N,28,28,1)`` to
    ``(N, latent_dim)``; the decoder maps that back to ``(N,28,28,1)``.
    """
    enc_in = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv1")(enc_in)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv3")(x)
    x = layers.Flatten(name="flatten")(x)
    z = layers.Dense(latent_dim, name="latent")(x)
    encoder = keras.Model(enc_in, z, name="improved_encoder")

    dec_in = keras.Input((latent_dim,), name="code")
    y = layers.Dense(4 * 4 * 64, activation="relu", name="expand")(dec_in)
    y = layers.Reshape((4, 4, 64), name="reshape")(y)
    y = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu",
                               name="deconv1")(y)
    y = layers.Cropping2D(((0, 1), (0, 1)), name="crop_to_7x7")(y)
    y = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu",
                               name="deconv2")(y)
    y = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu",
                               name="deconv3")(y)
    y = layers.Conv2D(1, 3, padding="same", name="to_pixels")(y)
    decoder = keras.Model(dec_in, y, name="improved_decoder")

    return _chain(encoder, decoder, "improved_cae"), encoder, decoder


def _chain(encoder, decoder, name: str):
    """The autoencoder ``decoder(encoder(x))`` as one model sharing both sets of weights."""
    inp = keras.Input(encoder.input_shape[1:], name="image")
    return keras.Model(inp, decoder(encoder(inp)), name=name)


def layer_shapes(model) -> list[tuple[str, str, tuple]]:
    """``(layer name, layer type, output shape without batch)`` for each layer, in order.

    Nested models (an autoencoder's encoder and decoder) are walked into, so the list
    shows every tensor from the image to the reconstruction.
    """
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            rows.extend(r for r in layer_shapes(layer) if r[1] != "InputLayer" or not rows)
        else:
            shape = tuple(layer.output.shape[1:]) if hasattr(layer, "output") else ()
            rows.append((layer.name, type(layer).__name__, shape))
    return rows


# --------------------------------------------------------------------------------------
# 4. Losses and metrics
# --------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="cae")
class SummedSquaredError(keras.losses.Loss):
    """The original project's loss: squared error summed over pixels *and* over the batch.

    With batches of 8 this is the unit the 2018 project reported ("loss 100 to 120").
    Its gradients are about batch x 784 times larger than per-pixel MSE's, which is why
    plain SGD needs a tiny learning rate with it (notebook 03).
    """

    def __init__(self, name: str = "summed_squared_error", **kwargs):
        kwargs.setdefault("reduction", "sum")
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        diff = keras.ops.convert_to_tensor(y_pred) - keras.ops.cast(y_true, y_pred.dtype)
        return keras.ops.sum(keras.ops.square(diff), axis=(1, 2, 3))


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


def reconstruct(autoencoder, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Run ``autoencoder`` on ``(N,28,28,1)`` images; output clipped to [0, 1], float32."""
    out = autoencoder.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------
# 5. Training
# --------------------------------------------------------------------------------------

#: Bounds a classroom may choose from (the widgets use them; ``train_autoencoder`` checks them).
EPOCH_RANGE = (1, 50)
BATCH_SIZE_RANGE = (1, 1024)
OPTIMIZERS = ("adam", "sgd")
LOSSES = ("sse", "mse")

#: The 2018 project's recipe: summed squared error, batches of 8, 2000 steps, Adam 1e-3.
SEED_RECIPE = dict(loss="sse", batch_size=8, steps=2000, optimizer="adam", learning_rate=1e-3)

#: The improved model's recipe: per-pixel MSE, batch 128, Adam 2e-3 with warm-up + cosine decay.
#: Measured in notebook 03: about 35 s per epoch of 60,000 images on 2 CPU cores.
IMPROVED_RECIPE = dict(loss="mse", batch_size=128, epochs=5, optimizer="adam", learning_rate=2e-3)


def _check_int(name: str, value, low: int, high: int) -> int:
    """``value`` as an int if ``low <= value <= high``; a clear :class:`CAEError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise CAEError(f"{name} must be a whole number between {low} and {high}, got {value!r}.")
    if not low <= int(value) <= high:
        raise CAEError(f"{name} must be between {low} and {high}, got {value}.")
    return int(value)


def make_optimizer(name: str, learning_rate: float, total_steps: int | None = None,
                   warmup_steps: int = 0):
    """A fresh Keras optimizer: ``"adam"`` or plain ``"sgd"`` (no momentum).

    With ``total_steps`` the learning rate follows a linear warm-up over ``warmup_steps``
    and then a cosine decay to zero, which lets a higher peak rate train stably.
    """
    name = str(name).lower()
    if name not in OPTIMIZERS:
        raise CAEError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}.")
    if not (isinstance(learning_rate, (int, float)) and 0 < learning_rate < 10):
        raise CAEError(f"learning_rate must be a positive number below 10, got {learning_rate!r}.")
    lr = float(learning_rate)
    if total_steps:
        warmup_steps = min(int(warmup_steps), max(int(total_steps) - 1, 0))
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup_steps else lr, max(int(total_steps) - warmup_steps, 1),
            warmup_target=lr if warmup_steps else None, warmup_steps=warmup_steps)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    return keras.optimizers.SGD(learning_rate=lr)


def make_loss(name: str):
    """``"sse"``: the original summed squared error; ``"mse"``: mean per-pixel squared error."""
    if name == "sse":
        return SummedSquaredError()
    if name == "mse":
        return keras.losses.MeanSquaredError()
    raise CAEError(f"loss must be one of {', '.join(LOSSES)}, got {name!r}.")


class BatchLossLogger(keras.callbacks.Callback):
    """Records the loss of every single training batch, and the wall time of each epoch.

    Keras reports a running mean over the epoch in ``on_train_batch_end``, weighted by
    the number of images in each batch. With ``n_samples`` images per epoch in batches of
    ``batch_size`` (the last one may be smaller), the loss of the batch just finished is
    ``(mean_now * seen_now - mean_before * seen_before) / images_in_batch``. The
    per-batch curve is what shows the noise of small batches (notebook 03).

    Attributes: ``batch_losses`` (list of float, one per step), ``epoch_seconds``.
    """

    def __init__(self, n_samples: int, batch_size: int):
        super().__init__()
        self.n_samples, self.batch_size = int(n_samples), int(batch_size)
        self.batch_losses: list[float] = []
        self.epoch_seconds: list[float] = []
        self._seen, self._prev_total = 0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        import time
        self._t0 = time.perf_counter()
        self._seen, self._prev_total = 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        n = max(1, min(self.batch_size, self.n_samples - self._seen))
        self._seen += n
        total = float(logs["loss"]) * self._seen
        self.batch_losses.append((total - self._prev_total) / n)
        self._prev_total = total

    def on_epoch_end(self, epoch, logs=None):
        import time
        self.epoch_seconds.append(time.perf_counter() - self._t0)


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """Stops training when the loss becomes NaN or infinite, and remembers that it did."""

    diverged = False

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.diverged = True
        super().on_batch_end(batch, logs)


def _step_indices(n_images: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """Image indices for exactly ``steps`` batches: shuffled passes over the data, concatenated."""
    rng = np.random.default_rng(seed)
    needed = steps * batch_size
    passes = [rng.permutation(n_images) for _ in range(-(-needed // n_images))]
    return np.concatenate(passes)[:needed]


def train_autoencoder(autoencoder, x_train: np.ndarray, *, epochs: int | None = None,
                      steps: int | None = None, batch_size: int = 128, optimizer: str = "adam",
                      learning_rate: float = 1e-3, loss: str = "mse", schedule: bool = False,
                      x_test: np.ndarray | None = None, callbacks=(), seed: int = 42,
                      verbose: int = 0) -> dict:
    """Train ``autoencoder`` to reproduce ``x_train`` (``(N,28,28,1)`` float32 in [0, 1]).

    Give either ``epochs`` (full passes) or ``steps`` (a fixed number of batches, as the
    2018 project did: 2000 steps of 8). ``loss`` is ``"sse"`` (summed, the original) or
    ``"mse"``; ``optimizer`` is ``"adam"`` or ``"sgd"``; ``schedule=True`` adds a short
    warm-up and cosine decay. Seeds are set first so that runs repeat.

    Returns a dict: ``batch_losses`` (one per step, in the loss's own unit),
    ``epoch_seconds``, ``seconds`` (total wall time), ``steps``, ``images_per_second``,
    ``diverged`` (True if the loss became NaN/inf), the settings, and, with ``x_test``,
    ``test`` = :func:`reconstruction_metrics` on it. Bad settings raise :class:`CAEError`
    before any TensorFlow work starts.
    """
    import time

    x_train = np.asarray(x_train, np.float32)
    if x_train.ndim != 4 or x_train.shape[1:] != tuple(autoencoder.input_shape[1:]):
        raise CAEError(f"Training images must be shaped (N, {', '.join(map(str, autoencoder.input_shape[1:]))}),"
                       f" got {x_train.shape}.")
    if (epochs is None) == (steps is None):
        raise CAEError("Give exactly one of epochs= or steps=.")
    batch_size = _check_int("batch_size", batch_size, *BATCH_SIZE_RANGE)
    if epochs is not None:
        epochs = _check_int("epochs", epochs, *EPOCH_RANGE)
        total_steps = epochs * -(-len(x_train) // batch_size)
    else:
        steps = _check_int("steps", steps, 1, 10_000_000)
        total_steps = steps
    loss_fn = make_loss(loss)
    make_optimizer(optimizer, learning_rate)  # validates both before anything is seeded
    set_seed(seed)
    opt = make_optimizer(optimizer, learning_rate, total_steps if schedule else None,
                         warmup_steps=min(200, total_steps // 10) if schedule else 0)
    autoencoder.compile(optimizer=opt, loss=loss_fn)
    n_fitted = len(x_train) if epochs is not None else steps * batch_size
    logger, nan_guard = BatchLossLogger(n_fitted, batch_size), StopOnNaN()
    cbs = [logger, nan_guard, *callbacks]
    start = time.perf_counter()
    if epochs is not None:
        autoencoder.fit(x_train, x_train, batch_size=batch_size, epochs=epochs, shuffle=True,
                        callbacks=cbs, verbose=verbose)
        images = epochs * len(x_train)
    else:
        idx = _step_indices(len(x_train), steps, batch_size, seed)
        # One "epoch" over exactly steps x batch_size images, already shuffled.
        autoencoder.fit(x_train[idx], x_train[idx], batch_size=batch_size, epochs=1,
                        shuffle=False, callbacks=cbs, verbose=verbose)
        images = len(idx)
    seconds = time.perf_counter() - start
    result = dict(batch_losses=logger.batch_losses, epoch_seconds=logger.epoch_seconds,
                  seconds=seconds, steps=len(logger.batch_losses),
                  images_per_second=images / seconds if seconds > 0 else float("nan"),
                  diverged=nan_guard.diverged, loss=loss, optimizer=optimizer,
                  learning_rate=learning_rate, batch_size=batch_size, epochs=epochs,
                  schedule=schedule, seed=seed, train_images=len(x_train))
    if x_test is not None:
        result["test"] = (reconstruction_metrics(x_test, reconstruct(autoencoder, x_test))
                          if not nan_guard.diverged else None)
    return result


def loss_in_original_unit(batch_losses, loss: str, batch_size: int) -> np.ndarray:
    """Convert per-step losses to the 2018 unit: summed squared error over a batch of 8.

    ``"sse"`` losses are sums over ``batch_size`` images, so they scale by 8/batch_size;
    ``"mse"`` losses are per pixel, so they scale by 784 x 8.
    """
    values = np.asarray(batch_losses, np.float64)
    if loss == "sse":
        return values * 8.0 / batch_size
    if loss == "mse":
        return values * 28 * 28 * 8
    raise CAEError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}.")


def smooth(values, window: int = 50) -> np.ndarray:
    """Moving average of a 1-D series (``window`` points, shorter at the start)."""
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return values
    window = max(1, min(int(window), len(values)))
    csum = np.cumsum(np.insert(values, 0, 0.0))
    out = (csum[window:] - csum[:-window]) / window
    head = csum[1:window] / np.arange(1, window)
    return np.concatenate([head, out])


# --------------------------------------------------------------------------------------
# 5b. A classroom training panel (ipywidgets)
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
        return {"epochs": _check_int("epochs", self.epochs.value, *EPOCH_RANGE),
                "batch_size": _check_int("batch_size", self.batch_size.value, *BATCH_SIZE_RANGE),
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
# 6. Saving and loading trained models (native .keras + a JSON card beside it)
# --------------------------------------------------------------------------------------

#: The shipped pretrained model (trained by ``scripts/train_pretrained.py``).
DEFAULT_MODEL = MODELS_DIR / "improved_cae.keras"


def library_versions() -> dict:
    """Versions of the libraries that shape a trained model's numbers."""
    import platform

    import PIL

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "pillow": PIL.__version__}


def model_fingerprint(model) -> bytes:
    """4 bytes that identify a model's weights: the start of a SHA-256 over all of them.

    Written into every ``.cae`` file so that decoding with a different model is refused
    instead of silently producing a wrong image.
    """
    import hashlib

    h = hashlib.sha256()
    for w in model.weights:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w), dtype="<f4").tobytes())
    return h.digest()[:4]


def save_model(autoencoder, path: str | os.PathLike, card: dict, overwrite: bool = False) -> Path:
    """Save ``autoencoder`` as ``path`` (``.keras``) plus ``path`` with ``.json`` (its card).

    The card records whatever the caller passes (data, epochs, batch size, optimizer,
    test metrics...) plus library versions, parameter count and the weight fingerprint.
    Both files are written atomically; an existing model is kept unless ``overwrite``.
    """
    import json
    import tempfile

    path = Path(path)
    if path.suffix != ".keras":
        raise CAEError(f"Model files must end in .keras, got {path.name}.")
    if path.exists() and not overwrite:
        raise CAEError(f"{path} already exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    card = {**card, "model": autoencoder.name, "parameters": int(autoencoder.count_params()),
            "fingerprint": model_fingerprint(autoencoder).hex(), "versions": library_versions()}
    # Save an uncompiled twin with the same weights: the optimizer's state (Adam keeps two
    # numbers per weight) would triple the file and is of no use for encoding/decoding.
    # (from_config, not clone_model: clone_model recompiles a compiled model.)
    twin = keras.Model.from_config(autoencoder.get_config())
    twin.set_weights(autoencoder.get_weights())
    with tempfile.TemporaryDirectory(dir=path.parent) as tmpdir:
        tmp = Path(tmpdir) / path.name
        twin.save(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    _atomic_write_bytes(path.with_suffix(".json"),
                        (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    return path


def update_model_card(path: str | os.PathLike, **fields) -> Path:
    """Add or replace ``fields`` in the JSON card beside model ``path`` (atomically)."""
    import json

    card_path = Path(path).with_suffix(".json")
    card = _read_card(Path(path))
    card.update(fields)
    _atomic_write_bytes(card_path, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    return Path(path)


def load_model(path: str | os.PathLike | None = None):
    """Load a saved autoencoder in Keras' safe mode (no arbitrary code runs).

    ``path`` defaults to the shipped :data:`DEFAULT_MODEL`. Returns ``(autoencoder,
    encoder, decoder, card)``; ``card`` is the JSON beside the model (``{}`` if absent).
    Raises :class:`CAEError` if the file is missing or not a CAE model.
    """
    import json
    import zipfile

    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        raise CAEError(f"Model file {path} not found. Use the shipped {DEFAULT_MODEL.relative_to(ROOT)} "
                       "or train one in notebook 03.")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise CAEError(f"{path} is not a Keras model file (.keras).")
    try:
        with _stderr_silenced():
            autoencoder = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # a damaged or foreign .keras file
        raise CAEError(f"Could not load the model in {path}: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:160]}") from None
    parts = [layer for layer in autoencoder.layers if isinstance(layer, keras.Model)]
    if len(parts) != 2:
        raise CAEError(f"{path} holds a model without a separate encoder and decoder; it is not "
                       "one of this course's autoencoders.")
    return autoencoder, parts[0], parts[1], _read_card(path)


def _read_card(model_path: Path) -> dict:
    """The JSON card beside ``model_path`` (``{}`` if there is none)."""
    import json

    card_path = Path(model_path).with_suffix(".json")
    if not card_path.is_file():
        return {}
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise CAEError(f"The model card {card_path} is damaged ({exc}); restore it or delete it.") from None
    if not isinstance(card, dict):
        raise CAEError(f"The model card {card_path} is damaged (not a JSON object); restore it or delete it.")
    return card


# --------------------------------------------------------------------------------------
# 7. Any image file in, an MNIST-like 28x28 digit out
# --------------------------------------------------------------------------------------

def open_image(path: str | os.PathLike):
    """Open an image file with Pillow and load its pixels; :class:`CAEError` if impossible."""
    path = Path(path)
    if not path.exists():
        raise CAEError(f"Input file {path} does not exist.")
    if not path.is_file():
        raise CAEError(f"Input {path} is not a file.")
    if path.stat().st_size == 0:
        raise CAEError(f"Input file {path} is empty (0 bytes).")
    return _pillow_load(path, f"Input file {path}")


def _pillow_load(source, what: str):
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


# --------------------------------------------------------------------------------------
# 8. The .cae file, format version 0: the float latent, honestly stored
# --------------------------------------------------------------------------------------
#
#   offset size  field
#   0      3     magic b"CAE"
#   3      1     format version (0)
#   4      4     model fingerprint: model_fingerprint() of the whole autoencoder that wrote
#                it (encoder and decoder), the same value as in the model's JSON card
#   8      4*D   the latent: D float32 values, little-endian
#   8+4D   4     CRC-32 of everything before it (catches corruption and truncation)
#
# 128 latent numbers make a 524-byte file, against 784 raw bytes and about 280 bytes for
# the same digit as a PNG: this is not yet compression (notebook 04 measures it).

CAE_MAGIC = b"CAE"
CAE_VERSION_FLOAT = 0
_CAE_HEADER = struct.Struct("<3sB4s")


def pack_float_latent(latent: np.ndarray, fingerprint: bytes) -> bytes:
    """The bytes of a version-0 ``.cae`` file for one latent vector (any shape, float32)."""
    latent = np.asarray(latent, dtype="<f4").ravel()
    if not np.all(np.isfinite(latent)):
        raise CAEError("The latent contains NaN or infinity; the model is broken.")
    body = _CAE_HEADER.pack(CAE_MAGIC, CAE_VERSION_FLOAT, bytes(fingerprint)) + latent.tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def unpack_float_latent(data: bytes, fingerprint: bytes, latent_size: int,
                        source: str = "the .cae data") -> np.ndarray:
    """Check and read a version-0 ``.cae`` file; returns the ``float32`` latent, flat.

    Every field is checked before use. Raises :class:`CAEError` for: too short, wrong
    magic (not a .cae file), unsupported version, model mismatch, wrong length
    (truncated or padded), failed CRC (corrupt), or non-finite values.
    """
    data = bytes(data)
    if len(data) == 0:
        raise CAEError(f"{source} is empty (0 bytes).")
    if data[:3] != CAE_MAGIC[:len(data[:3])]:
        raise CAEError(f"{source} is not a .cae file (it does not start with the bytes 'CAE').")
    if len(data) < _CAE_HEADER.size:
        raise CAEError(f"{source} is truncated: {len(data)} bytes is shorter than the header.")
    _, version, file_fp = _CAE_HEADER.unpack_from(data)
    if version != CAE_VERSION_FLOAT:
        raise CAEError(f"{source} uses .cae format version {version}; this code reads version "
                       f"{CAE_VERSION_FLOAT}. Update the course code or re-encode the image.")
    expected = _CAE_HEADER.size + 4 * latent_size + 4
    if len(data) != expected and file_fp != bytes(fingerprint):
        raise CAEError(f"{source} was written by a different model (fingerprint {file_fp.hex()}, "
                       f"a latent of {(len(data) - _CAE_HEADER.size - 4) / 4:g} numbers), but the "
                       f"model in use has fingerprint {bytes(fingerprint).hex()} and {latent_size}. "
                       "Decode with --model pointing at the model that encoded it.")
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long (extra bytes)"
        raise CAEError(f"{source} is {what}: {len(data)} bytes, expected {expected}.")
    if struct.unpack("<I", data[-4:])[0] != zlib.crc32(data[:-4]):
        raise CAEError(f"{source} is corrupt: its checksum does not match its contents.")
    if file_fp != bytes(fingerprint):
        raise CAEError(f"{source} was written by a different model (fingerprint {file_fp.hex()}), "
                       f"but the model in use has fingerprint {bytes(fingerprint).hex()}. Decode "
                       "with --model pointing at the model that encoded it.")
    latent = np.frombuffer(data, dtype="<f4", count=latent_size, offset=_CAE_HEADER.size)
    if not np.all(np.isfinite(latent)):
        raise CAEError(f"{source} holds NaN or infinite values: it is corrupt.")
    return latent.astype(np.float32)


def encode_digits(encoder, digits: np.ndarray) -> np.ndarray:
    """Latents of ``(N,28,28,1)`` digits: ``(N, latent...)`` float32 from ``encoder``."""
    digits = np.asarray(digits, np.float32)
    if digits.ndim == 3:
        digits = digits[None]
    expected = tuple(encoder.input_shape[1:])
    if digits.shape[1:] != expected:
        raise CAEError(f"The encoder takes images shaped {expected}, got {digits.shape[1:]}.")
    return _run_model(encoder, digits)


def decode_latents(decoder, latents: np.ndarray) -> np.ndarray:
    """Images ``(N,28,28,1)`` in [0, 1] from latents shaped for ``decoder``."""
    shape = tuple(decoder.input_shape[1:])
    latents = np.asarray(latents, np.float32).reshape((-1, *shape))
    return np.clip(_run_model(decoder, latents), 0, 1).astype(np.float32)


def _run_model(model, batch: np.ndarray, chunk: int = 500) -> np.ndarray:
    """``model`` on ``batch`` in chunks, as float32 NumPy. Calling the model directly (not
    ``predict``) avoids building a new traced function for every freshly loaded model."""
    outs = [keras.ops.convert_to_numpy(model(batch[i:i + chunk], training=False))
            for i in range(0, len(batch), chunk)]
    if not outs:
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    return np.concatenate(outs).astype(np.float32)


def encode_image_file(in_path, out_path, model_path=None, force: bool = False,
                      quality: int | None = None, mode: str = "digit") -> dict:
    """Encode an image file into a ``.cae`` file.

    ``mode="photo"`` (needs ``quality``): the photo codec, for an image of any size; it
    is converted to grayscale and kept at its own size (``.cae`` format version 2). The
    returned dict then holds ``image`` ((H, W) uint8, what was encoded) and ``bpp``.
    ``mode="digit"`` (the default) is the 28x28 digit path described next.

    Without ``quality``: format version 0, the float latent of the improved CAE
    (``model_path`` or the shipped model). With ``quality`` (1..7): format version 1,
    really compressed by the learned codec of that quality (``model_path`` may point at
    another rate-distortion model). Returns a dict with the output path, its size in
    bytes and the 28x28 digit. The output is written atomically and an existing file is
    kept unless ``force``.
    """
    out_path = Path(out_path)
    if mode not in ("digit", "photo"):
        raise CAEError(f"mode must be 'digit' or 'photo', got {mode!r}.")
    _check_output_path(out_path, force)
    if mode == "photo":
        if quality is None:
            known = ", ".join(map(str, photo_qualities())) or "none shipped"
            raise CAEError(f"The photo codec needs a quality: add --quality N ({known}).")
        codec = load_photo_codec(quality, model_path)
        image = photo_to_gray_u8(in_path)
        data = codec.compress(image)
        _write_output(out_path, data, force)
        return {"path": out_path, "bytes": len(data), "image": image,
                "bpp": 8.0 * len(data) / image.size}
    if quality is not None:
        codec = load_codec(quality, model_path)
        digit = image_to_digit(in_path)
        data = codec.compress(digit[None])[0]
        _write_output(out_path, data, force)
        return {"path": out_path, "bytes": len(data), "digit": digit}
    digit = image_to_digit(in_path)
    autoencoder, encoder, _, _ = load_model(model_path)
    latent = encode_digits(encoder, digit)[0]
    data = pack_float_latent(latent, model_fingerprint(autoencoder))
    _write_output(out_path, data, force)
    return {"path": out_path, "bytes": len(data), "digit": digit, "latent": latent}


def decode_cae_file(in_path, out_path, model_path=None, force: bool = False,
                    quality: int | None = None) -> dict:
    """Decode a ``.cae`` file (version 0, 1 or 2, told apart by its first byte) into a PNG.

    Version 2 (photo codec) files decode to their own size as a grayscale ``uint8``
    ``(H, W)`` image; versions 0 and 1 to a 28x28 digit.

    For version 1 the quality is read from the file; a ``quality`` given here must match
    it. Returns a dict with the output path and the decoded image ``(28,28,1)`` in [0, 1].
    """
    from PIL import Image
    import io

    in_path, out_path = Path(in_path), Path(out_path)
    _check_output_path(out_path, force)
    if in_path.is_dir():
        raise CAEError(f"Input {in_path} is a folder, not a .cae file.")
    if not in_path.is_file():
        raise CAEError(f"Input file {in_path} does not exist.")
    data = in_path.read_bytes()
    if data[:1] == bytes([CAE_V2_FIRST_BYTE]):
        file_quality, *_ = unpack_v1(data, source=str(in_path), expect_quality=quality,
                                     first_byte=CAE_V2_FIRST_BYTE)
        image = load_photo_codec(file_quality, model_path).decompress(data, source=str(in_path))
        buf = io.BytesIO()
        Image.fromarray(image, mode="L").save(buf, format="PNG", optimize=True)
        _write_output(out_path, buf.getvalue(), force)
        return {"path": out_path, "image": image}
    if data[:1] == bytes([CAE_V1_FIRST_BYTE]):
        file_quality, *_ = unpack_v1(data, source=str(in_path), expect_quality=quality)
        codec = load_codec(file_quality, model_path)
        image = codec.decompress([data], source=str(in_path))[0]
    else:
        if quality is not None and data[:3] == CAE_MAGIC:
            raise CAEError(f"{in_path} is a version-0 .cae file (float latent); decode it "
                           "without --quality.")
        autoencoder, _, decoder, _ = load_model(model_path)
        latent = unpack_float_latent(data, model_fingerprint(autoencoder),
                                     int(np.prod(decoder.input_shape[1:])), source=str(in_path))
        image = decode_latents(decoder, latent)[0]
    buf = io.BytesIO()
    Image.fromarray(to_uint8_images(image), mode="L").save(buf, format="PNG", optimize=True)
    _write_output(out_path, buf.getvalue(), force)
    return {"path": out_path, "image": image}


def _check_output_path(out_path: Path, force: bool) -> None:
    """Refuse early (before any work) an output that exists or cannot be written."""
    if out_path.is_dir():
        raise CAEError(f"Output {out_path} is a folder; give a file name.")
    if out_path.exists() and not force:
        raise CAEError(f"Output {out_path} already exists; choose another name or pass --force.")
    parent = out_path.parent if str(out_path.parent) else Path(".")
    if not parent.is_dir():
        raise CAEError(f"Cannot write {out_path}: the folder {parent} does not exist.")
    if not os.access(parent, os.W_OK):
        raise CAEError(f"Cannot write {out_path}: no permission to write in {parent}.")


def _write_output(out_path: Path, data: bytes, force: bool) -> None:
    try:
        _atomic_write_bytes(out_path, data, overwrite=force)
    except OSError as exc:
        raise CAEError(f"Cannot write {out_path}: {exc.strerror or exc}.") from None


# --------------------------------------------------------------------------------------
# 9. Command line:  python cae_utils.py encode|decode ...
# --------------------------------------------------------------------------------------

def _build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python cae_utils.py",
        description="Encode an image into a .cae file with the course's convolutional "
                    "autoencoder, or decode a .cae file back into a PNG. Two modes: "
                    "'digit' (the default) turns any image into a 28x28 MNIST-like digit first; "
                    "'photo' (--mode photo --quality N) keeps the image at its own size, any "
                    "size up to 8192x8192, converted to grayscale.",
        epilog="examples:  python cae_utils.py encode digit.png digit.cae --quality 3\n"
               "           python cae_utils.py encode photo.jpg out.cae --mode photo --quality 3\n"
               "           python cae_utils.py decode out.cae out.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{encode,decode}")
    enc = sub.add_parser("encode", help="image file -> .cae file",
                         description="Encode IN_IMAGE (PNG, JPEG, BMP, GIF, ...) into OUT.cae.")
    enc.add_argument("input", metavar="IN_IMAGE")
    enc.add_argument("output", metavar="OUT.cae")
    enc.add_argument("--mode", choices=("digit", "photo"), default="digit",
                     help="digit (default): a 28x28 MNIST-like digit; photo: any size, grayscale, "
                          "the photo codec (needs --quality)")
    dec = sub.add_parser("decode", help=".cae file -> PNG image",
                         description="Decode IN.cae into a 28x28 grayscale PNG.")
    dec.add_argument("input", metavar="IN.cae")
    dec.add_argument("output", metavar="OUT.png")
    for p in (enc, dec):
        p.add_argument("--quality", metavar="N", type=int, default=None,
                       help="learned codec quality, 1 = smallest file: digits 1..7 (.cae v1), "
                            "photos 1..6 (.cae v2). Without it, digit encode writes the float "
                            "latent (v0); decode reads the quality from the file.")
        p.add_argument("--model", metavar="PATH", default=None,
                       help=f"model file (.keras); default: the shipped {DEFAULT_MODEL.relative_to(ROOT)},"
                            " models/rd_q<N>.keras with --quality, or models/photo_q<N>.keras "
                            "in photo mode")
        p.add_argument("--force", action="store_true", help="replace OUT if it already exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 bad input, 2 bad usage).

    Problems are printed to stderr as one line starting with ``error:``.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "encode":
            info = encode_image_file(args.input, args.output, args.model, args.force, args.quality,
                                     args.mode)
            extra = ""
            if args.mode == "photo":
                h, w = info["image"].shape
                extra = f", {w}x{h} grayscale, {info['bpp']:.3f} bits per pixel"
            print(f"wrote {info['path']} ({info['bytes']} bytes{extra})")
        else:
            info = decode_cae_file(args.input, args.output, args.model, args.force, args.quality)
            h, w = info["image"].shape[:2]
            print(f"wrote {info['path']} ({w}x{h} PNG)")
    except CAEError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------
# 10. Real compression: a rate-distortion CAE, a learned prior and a range coder
# --------------------------------------------------------------------------------------
#
# The model (Balle et al. 2017, "End-to-end optimized image compression", made small):
#   encoder  x (28x28x1) -> y (7x7xC)          strided convolutions with GDN
#   quantize y_hat = round(y - median) + median  (training: y + uniform noise instead)
#   prior    p(y_hat) = prod over values of CDF_c(y_hat + 1/2) - CDF_c(y_hat - 1/2),
#            one learned, non-parametric CDF per channel c ("factorized prior")
#   decoder  y_hat -> x_hat (28x28x1)
#   loss     bits per pixel + lambda * MSE (on the 0..255 scale)
# The rate term is the model's own estimate of the file size: -log2 p(y_hat) bits. The
# range coder (constriction) then writes real bytes that come within a few bytes of it.

@keras.saving.register_keras_serializable(package="cae")
class GDN(layers.Layer):
    """Generalized divisive normalization (Balle et al. 2016), or its inverse.

    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)`` (``inverse=True`` multiplies
    instead). It normalises local energy across channels, which suits image codecs better
    than ReLU. ``beta`` and ``gamma`` are kept non-negative; shapes are unchanged.
    """

    def __init__(self, inverse: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.inverse = bool(inverse)

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.beta = self.add_weight(name="beta", shape=(c,), initializer="ones",
                                    constraint=keras.constraints.NonNeg())
        self.gamma = self.add_weight(name="gamma", shape=(c, c),
                                     initializer=keras.initializers.Identity(0.1),
                                     constraint=keras.constraints.NonNeg())

    def call(self, x):
        ops = keras.ops
        norm = ops.tensordot(ops.square(x), self.gamma, axes=[[3], [0]]) + self.beta + 1e-6
        return x * ops.sqrt(norm) if self.inverse else x * ops.rsqrt(norm)

    def get_config(self):
        return {**super().get_config(), "inverse": self.inverse}


@keras.saving.register_keras_serializable(package="cae")
class FactorizedPrior(layers.Layer):
    """A learned probability model for each latent channel (Balle et al. 2018, appendix 6.1).

    Each channel's cumulative distribution is a tiny monotone network of the value
    (``filters`` hidden units per layer), so its shape is learned, not assumed. Called on
    latents ``(N, H, W, C)`` (with uniform noise added in training), it returns the
    likelihood of each value, ``CDF(y + 1/2) - CDF(y - 1/2)``, same shape, in (0, 1].
    """

    def __init__(self, filters=(3, 3, 3), init_scale: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.init_scale = tuple(int(f) for f in filters), float(init_scale)

    def build(self, input_shape):
        c = int(input_shape[-1])
        dims = (1, *self.filters, 1)
        scale = self.init_scale ** (1.0 / (len(dims) - 1))
        self.matrices, self.biases, self.factors = [], [], []
        for i in range(len(dims) - 1):
            init = float(np.log(np.expm1(1.0 / scale / dims[i + 1])))
            self.matrices.append(self.add_weight(
                name=f"matrix{i}", shape=(c, dims[i + 1], dims[i]),
                initializer=keras.initializers.Constant(init)))
            self.biases.append(self.add_weight(
                name=f"bias{i}", shape=(c, dims[i + 1], 1),
                initializer=keras.initializers.RandomUniform(-0.5, 0.5)))
            if i < len(dims) - 2:
                self.factors.append(self.add_weight(
                    name=f"factor{i}", shape=(c, dims[i + 1], 1), initializer="zeros"))

    def logits_cdf(self, x):
        """The CDF's logits at values ``x`` shaped ``(C, 1, M)``; result ``(C, 1, M)``."""
        ops = keras.ops
        logits = x
        for i, matrix in enumerate(self.matrices):
            logits = ops.matmul(ops.softplus(matrix), logits) + self.biases[i]
            if i < len(self.factors):
                logits = logits + ops.tanh(self.factors[i]) * ops.tanh(logits)
        return logits

    def call(self, y):
        ops = keras.ops
        shape = ops.shape(y)
        c = shape[-1]
        values = ops.reshape(ops.transpose(y, (3, 0, 1, 2)), (c, 1, -1))
        lower, upper = self.logits_cdf(values - 0.5), self.logits_cdf(values + 0.5)
        # Work on the side of the distribution where the sigmoid is not saturated.
        sign = -ops.sign(lower + upper)
        sign = ops.where(ops.equal(sign, 0.0), ops.ones_like(sign), sign)
        lik = ops.abs(ops.sigmoid(sign * upper) - ops.sigmoid(sign * lower))
        lik = ops.maximum(lik, 1e-9)
        lik = ops.reshape(lik, (c, shape[0], shape[1], shape[2]))
        return ops.transpose(lik, (1, 2, 3, 0))

    def get_config(self):
        return {**super().get_config(), "filters": list(self.filters), "init_scale": self.init_scale}


@keras.saving.register_keras_serializable(package="cae")
class UniformNoise(layers.Layer):
    """Adds uniform noise in [-1/2, 1/2) while training: a differentiable stand-in for
    rounding. At inference it passes values through unchanged (the codec rounds them)."""

    def call(self, y, training=None):
        if training:
            return y + keras.random.uniform(keras.ops.shape(y), -0.5, 0.5)
        return y


@keras.saving.register_keras_serializable(package="cae")
class BitsPerImage(layers.Layer):
    """Likelihoods ``(N, H, W, C)`` -> information content ``-sum log2 p`` in bits, ``(N,)``."""

    def call(self, lik):
        return -keras.ops.sum(keras.ops.log(lik), axis=(1, 2, 3)) / float(np.log(2.0))


def build_rd_cae(channels: int = 16, width: int = 64):
    """A rate-distortion CAE for 28x28 digits with a 7x7x``channels`` integer latent.

    Encoder: Conv 5x5/2 -> GDN -> Conv 5x5/2 -> GDN -> Conv 3x3 (28 -> 14 -> 7).
    Decoder: Conv-transpose mirrors it with inverse GDN; linear output.
    Returns ``(trainer, encoder, decoder, prior)``: ``trainer`` maps an image to
    ``{"x_hat": (N,28,28,1), "bits": (N,)}`` with noise in training; ``encoder`` maps
    ``(N,28,28,1)`` -> ``(N,7,7,C)``; ``decoder`` the reverse; ``prior`` is the
    :class:`FactorizedPrior` layer.
    """
    enc_in = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(width, 5, strides=2, padding="same", name="conv1")(enc_in)
    x = GDN(name="gdn1")(x)
    x = layers.Conv2D(width, 5, strides=2, padding="same", name="conv2")(x)
    x = GDN(name="gdn2")(x)
    y = layers.Conv2D(channels, 3, padding="same", name="to_latent")(x)
    encoder = keras.Model(enc_in, y, name="rd_encoder")

    dec_in = keras.Input((7, 7, channels), name="latent")
    z = layers.Conv2DTranspose(width, 3, padding="same", name="deconv1")(dec_in)
    z = GDN(inverse=True, name="igdn1")(z)
    z = layers.Conv2DTranspose(width, 5, strides=2, padding="same", name="deconv2")(z)
    z = GDN(inverse=True, name="igdn2")(z)
    out = layers.Conv2DTranspose(1, 5, strides=2, padding="same", name="to_pixels")(z)
    decoder = keras.Model(dec_in, out, name="rd_decoder")

    inp = keras.Input((28, 28, 1), name="image")
    y = encoder(inp)
    y_noisy = UniformNoise(name="noise")(y)
    prior_layer = FactorizedPrior(name="prior")
    lik = prior_layer(y_noisy)
    bits = BitsPerImage(name="bits")(lik)
    x_hat = decoder(y_noisy)
    x_hat = layers.Identity(name="x_hat")(x_hat)
    trainer = keras.Model(inp, {"x_hat": x_hat, "bits": bits}, name=f"rd_cae_{channels}")
    return trainer, encoder, decoder, prior_layer



@keras.saving.register_keras_serializable(package="cae")
class MeanOfPrediction(keras.losses.Loss):
    """A 'loss' that is simply the model output averaged over the batch (the rate term)."""

    def call(self, y_true, y_pred):
        return y_pred


#: Quality levels 1..7 of the shipped learned codec: the rate-distortion trade-off lambda
#: (loss = bits per pixel + lambda * MSE on the 0..255 scale). Higher = bigger, better.
QUALITY_LAMBDAS = {1: 0.0015, 2: 0.004, 3: 0.01, 4: 0.025, 5: 0.07, 6: 0.2, 7: 0.5}


def rd_model_path(quality: int) -> Path:
    """Where the shipped model for ``quality`` lives: ``models/rd_q<N>.keras``."""
    return MODELS_DIR / f"rd_q{int(quality)}.keras"


def train_rd_cae(trainer, x_train: np.ndarray, lam: float, *, epochs: int = 5,
                 batch_size: int = 64, learning_rate: float = 1e-3, seed: int = 42,
                 callbacks=(), verbose: int = 0) -> dict:
    """Train a :func:`build_rd_cae` model for ``bits/784 + lam * MSE_255``.

    ``x_train``: ``(N,28,28,1)`` float32 in [0, 1]. Adam with warm-up and cosine decay.
    Returns ``{"seconds", "history"}`` where history holds per-epoch ``loss``,
    ``bits_loss`` (bits per pixel) and ``x_hat_loss`` (lambda-weighted distortion).
    """
    import time

    epochs = _check_int("epochs", epochs, *EPOCH_RANGE)
    batch_size = _check_int("batch_size", batch_size, *BATCH_SIZE_RANGE)
    if not lam > 0:
        raise CAEError(f"lambda must be positive, got {lam!r}.")
    set_seed(seed)
    steps = epochs * -(-len(x_train) // batch_size)
    trainer.compile(
        optimizer=make_optimizer("adam", learning_rate, steps, warmup_steps=min(300, steps // 10)),
        loss={"x_hat": keras.losses.MeanSquaredError(), "bits": MeanOfPrediction()},
        loss_weights={"x_hat": float(lam) * 255.0 ** 2, "bits": 1.0 / (28 * 28)})
    targets = {"x_hat": x_train, "bits": np.zeros(len(x_train), np.float32)}
    start = time.perf_counter()
    hist = trainer.fit(x_train, targets, batch_size=batch_size, epochs=epochs, shuffle=True,
                       callbacks=list(callbacks), verbose=verbose)
    return {"seconds": time.perf_counter() - start, "history": hist.history}


def _prior_logits_np(weights: list[np.ndarray], n_layers: int, x: np.ndarray) -> np.ndarray:
    """NumPy float64 twin of :meth:`FactorizedPrior.logits_cdf`; ``x`` is ``(C, 1, M)``."""
    mats, biases, factors = weights[0::3], weights[1::3], weights[2::3]
    logits = x
    for i in range(n_layers):
        m = np.logaddexp(0.0, mats[i])  # softplus
        logits = m @ logits + biases[i]
        if i < n_layers - 1:
            logits = logits + np.tanh(factors[i]) * np.tanh(logits)
    return logits


def _prior_weights_np(prior) -> tuple[list[np.ndarray], int]:
    """The prior's weights in (matrix, bias, factor) order as float64 arrays."""
    n = len(prior.matrices)
    ws = []
    for i in range(n):
        ws.append(np.asarray(prior.matrices[i].numpy(), np.float64))
        ws.append(np.asarray(prior.biases[i].numpy(), np.float64))
        ws.append(np.asarray(prior.factors[i].numpy(), np.float64) if i < n - 1 else None)
    return ws, n


def build_code_tables(prior, tail: float = 1e-7, max_symbols: int = 255) -> dict:
    """Probability tables for the range coder, from the learned per-channel CDFs.

    For channel ``c`` with median ``m_c``, symbol ``k`` (the integer ``round(y - m_c)``,
    from ``offset_c`` to ``offset_c + K_c - 1``) gets ``CDF(m_c + k + 1/2) - CDF(m_c + k - 1/2)``;
    the probability beyond either end is folded into the end symbols, so every integer
    is codable (values past the ends are clamped). Computed in float64 and stored beside
    the model, so encoder and decoder use bit-identical tables on every machine.

    Returns ``{"medians": (C,), "offsets": (C,) int32, "pmfs": (C, Kmax) float64,
    "sizes": (C,) int32}``.
    """
    from scipy.special import expit

    ws, n = _prior_weights_np(prior)
    channels = ws[0].shape[0]
    grid = np.arange(-200.0, 200.0, 0.01)
    cdf = expit(_prior_logits_np(ws, n, np.broadcast_to(grid, (channels, 1, grid.size))))[:, 0, :]
    medians, offsets, sizes, pmfs = [], [], [], []
    for c in range(channels):
        med = grid[np.searchsorted(cdf[c], 0.5)]
        lo = grid[min(np.searchsorted(cdf[c], tail), grid.size - 1)]
        hi = grid[min(np.searchsorted(cdf[c], 1 - tail), grid.size - 1)]
        # At least three symbols: constriction cannot code a one-symbol alphabet.
        kmin, kmax = min(int(np.floor(lo - med)), -1), max(int(np.ceil(hi - med)), 1)
        if kmax - kmin + 1 > max_symbols:  # a very wide channel: keep the central symbols
            half = max_symbols // 2
            kmin, kmax = max(kmin, -half), min(kmax, half)
        ks = np.arange(kmin, kmax + 1, dtype=np.float64)
        edges = np.concatenate([ks - 0.5, [kmax + 0.5]]) + med
        ws_c = [w[c:c + 1] if w is not None else None for w in ws]  # this channel's network only
        cdf_edges = expit(_prior_logits_np(ws_c, n, edges[None, None, :])[0, 0])
        pmf = np.diff(cdf_edges)
        pmf[0] += cdf_edges[0]
        pmf[-1] += 1.0 - cdf_edges[-1]
        pmf = np.maximum(pmf, 1e-12)
        medians.append(med); offsets.append(kmin); sizes.append(len(pmf)); pmfs.append(pmf / pmf.sum())
    table = np.zeros((channels, max(sizes)), np.float64)
    for c, pmf in enumerate(pmfs):
        table[c, :len(pmf)] = pmf
    return {"medians": np.array(medians, np.float64), "offsets": np.array(offsets, np.int32),
            "pmfs": table, "sizes": np.array(sizes, np.int32)}


class LearnedCodec:
    """A trained rate-distortion CAE plus its code tables: digits <-> ``.cae`` v1 bytes.

    Load a shipped quality with :func:`load_codec`. ``compress`` and ``decompress`` work
    on batches; :meth:`estimate_bits` gives the model's own rate estimate for comparison
    with the real bytes.
    """

    def __init__(self, encoder, decoder, tables: dict, quality: int, fingerprint: bytes,
                 card: dict | None = None):
        import constriction

        self.encoder, self.decoder, self.quality = encoder, decoder, int(quality)
        self.fingerprint, self.card = bytes(fingerprint), card or {}
        self.medians = np.asarray(tables["medians"], np.float64)
        self.offsets = np.asarray(tables["offsets"], np.int32)
        self.sizes = np.asarray(tables["sizes"], np.int32)
        self.pmfs = [np.asarray(tables["pmfs"][c, :self.sizes[c]], np.float64)
                     for c in range(len(self.sizes))]
        self.latent_shape = tuple(None if d is None else int(d) for d in decoder.input_shape[1:])
        self._models = [constriction.stream.model.Categorical(p, perfect=False) for p in self.pmfs]
        self._log2 = [np.log2(p) for p in self.pmfs]

    # -- quantization ----------------------------------------------------------------
    def quantize(self, latents: np.ndarray) -> np.ndarray:
        """Latents ``(N,7,7,C)`` float -> symbols ``(N,7,7,C)`` int32, each in ``[0, K_c)``."""
        q = np.round(np.asarray(latents, np.float64) - self.medians) - self.offsets
        return np.clip(q, 0, self.sizes - 1).astype(np.int32)

    def dequantize(self, symbols: np.ndarray) -> np.ndarray:
        """Symbols -> the latent values the decoder sees (float32)."""
        return (np.asarray(symbols, np.float64) + self.offsets + self.medians).astype(np.float32)

    def estimate_bits(self, symbols: np.ndarray) -> np.ndarray:
        """The model's own rate: ``-sum log2 p(symbol)`` per image, in bits, shape ``(N,)``."""
        symbols = np.asarray(symbols)
        bits = np.zeros(len(symbols))
        for c, lg in enumerate(self._log2):
            bits -= lg[symbols[..., c].reshape(len(symbols), -1)].sum(axis=1)
        return bits

    # -- bytes -------------------------------------------------------------------------
    def _code(self, symbols: np.ndarray) -> bytes:
        import constriction

        coder = constriction.stream.queue.RangeEncoder()
        for c, model in enumerate(self._models):  # channel by channel, 49 values each
            coder.encode(np.ascontiguousarray(symbols[..., c].ravel(), np.int32), model)
        return _words_to_bytes(coder.get_compressed())

    def _uncode(self, payload: bytes) -> np.ndarray:
        import constriction

        decoder = constriction.stream.queue.RangeDecoder(_bytes_to_words(payload))
        per_channel = int(np.prod(self.latent_shape[:-1]))
        chans = [decoder.decode(model, per_channel) for model in self._models]
        return np.stack(chans, axis=-1).reshape(self.latent_shape).astype(np.int32)

    def _symbols_of(self, digits: np.ndarray) -> np.ndarray:
        latents = encode_digits(self.encoder, digits)
        if not np.all(np.isfinite(latents)):
            raise CAEError("The latent contains NaN or infinity; the model is broken.")
        return self.quantize(latents)

    def compress(self, digits: np.ndarray) -> list[bytes]:
        """Digits ``(N,28,28,1)`` in [0, 1] -> one complete ``.cae`` v1 file (bytes) each."""
        symbols = self._symbols_of(digits)
        h, w = 28, 28
        return [pack_v1(self.quality, self.fingerprint, h, w, self._code(s)) for s in symbols]

    def decompress(self, files, source: str = "the .cae data") -> np.ndarray:
        """``.cae`` v1 files (bytes) -> digits ``(N,28,28,1)`` float32 in [0, 1].

        Each file is fully checked first (:func:`unpack_v1`); any problem raises
        :class:`CAEError` naming it.
        """
        symbols = []
        for data in files:
            quality, _, h, w, payload = unpack_v1(data, self.fingerprint, source=source,
                                                  expect_quality=self.quality)
            if (h, w) != (28, 28):
                raise CAEError(f"{source} holds a {w}x{h} image; this digit codec only "
                               "decodes 28x28 images.")
            try:
                symbols.append(self._uncode(payload))
            except Exception as exc:  # constriction found the payload inconsistent
                raise CAEError(f"{source} is corrupt: its coded data cannot be decoded ({exc}).") from None
        if not symbols:
            return np.zeros((0, 28, 28, 1), np.float32)
        return decode_latents(self.decoder, self.dequantize(np.stack(symbols)))

    def symbols_roundtrip(self, digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(symbols the model produced, symbols read back from the bytes): must be equal."""
        symbols = self._symbols_of(digits)
        back = np.stack([self._uncode(unpack_v1(f, self.fingerprint)[4])
                         for f in [pack_v1(self.quality, self.fingerprint, 28, 28, self._code(s))
                                   for s in symbols]])
        return symbols, back


def _words_to_bytes(words: np.ndarray) -> bytes:
    """Range-coder words (uint32) -> bytes, big-endian, with up to 3 trailing zero bytes
    dropped (the decoder pads them back): every byte shows at 50-byte file sizes."""
    raw = np.asarray(words, ">u4").tobytes()
    strip = 0
    while strip < 3 and len(raw) - strip > 0 and raw[len(raw) - 1 - strip] == 0:
        strip += 1
    return raw[:len(raw) - strip]


def _bytes_to_words(data: bytes) -> np.ndarray:
    """Inverse of :func:`_words_to_bytes`."""
    data = bytes(data) + b"\x00" * (-len(data) % 4)
    return np.frombuffer(data, ">u4").astype(np.uint32)


# --------------------------------------------------------------------------------------
# 11. The .cae file, format version 1: quantized and entropy-coded
# --------------------------------------------------------------------------------------
#
#   byte 0      0xC1: magic (high nibble 0xC) and format version 1 (low nibble)
#   byte 1      quality level (1..15)
#   byte 2      model check: the first byte of the model's weight fingerprint
#   bytes 3..   image height, then width, each a LEB128 varint (1 byte each below 128)
#   next 2      CRC-16 (CCITT) of the header before it and of the payload
#   the rest    the range-coded payload
#
# For a 28x28 digit the header is 7 bytes. v0 files (float latents) start with b"CAE".

CAE_V1_FIRST_BYTE = 0xC1
CAE_MAX_DIMENSION = 1 << 20  # refuse absurd claimed sizes before allocating anything


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int, source: str) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(len(data), pos + 4)):
        value |= (data[i] & 0x7F) << shift
        shift += 7
        if not data[i] & 0x80:
            return value, i + 1
    raise CAEError(f"{source} is truncated or corrupt: its image size field is incomplete.")


def pack_v1(quality: int, fingerprint: bytes, height: int, width: int, payload: bytes,
            first_byte: int = CAE_V1_FIRST_BYTE) -> bytes:
    """A complete ``.cae`` v1 file: the header (see the layout above) then ``payload``.

    ``first_byte=CAE_V2_FIRST_BYTE`` writes the same layout as version 2 (photo codec)."""
    import binascii

    quality = _check_int("quality", quality, 1, 15)
    if len(bytes(fingerprint)) < 1:
        raise CAEError("A model fingerprint of at least one byte is needed to write a .cae file.")
    height = _check_int("height", height, 1, CAE_MAX_DIMENSION)
    width = _check_int("width", width, 1, CAE_MAX_DIMENSION)
    if first_byte not in (CAE_V1_FIRST_BYTE, CAE_V2_FIRST_BYTE):
        raise CAEError(f"Unknown .cae first byte 0x{first_byte:02x}.")
    head = bytes([first_byte, quality, fingerprint[0]]) + _varint(height) + _varint(width)
    crc = binascii.crc_hqx(payload, binascii.crc_hqx(head, 0xFFFF))
    return head + struct.pack(">H", crc) + bytes(payload)


def unpack_v1(data: bytes, fingerprint: bytes | None = None, source: str = "the .cae data",
              expect_quality: int | None = None,
              first_byte: int = CAE_V1_FIRST_BYTE) -> tuple[int, int, int, int, bytes]:
    """Check a ``.cae`` v1 file and split it: ``(quality, model_byte, height, width, payload)``.

    ``first_byte=CAE_V2_FIRST_BYTE`` reads a version-2 (photo codec) file instead, whose
    claimed size must also stay within :data:`CAE_MAX_PIXELS`.

    Checks, in order: not empty, the magic/version byte, a complete and sane size, the
    CRC (so a damaged byte is reported as corruption), then the quality and the model
    byte (against ``fingerprint`` if given). Raises :class:`CAEError` saying which check
    failed and what to do.
    """
    import binascii

    data = bytes(data)
    if not data:
        raise CAEError(f"{source} is empty (0 bytes).")
    if data[0] != first_byte:
        if data[0] == CAE_V2_FIRST_BYTE:
            raise CAEError(f"{source} was written by the photo codec (.cae version 2); decode it "
                           "with the photo codec (the command line picks it automatically).")
        if data[0] == CAE_V1_FIRST_BYTE:
            raise CAEError(f"{source} was written by the 28x28 digit codec (.cae version 1); "
                           "decode it with the digit codec (the command line picks it automatically).")
        if data[:3] == CAE_MAGIC[:len(data[:3])]:
            raise CAEError(f"{source} is a version-0 .cae file (float latent); decode it without "
                           "--quality.")
        if data[0] >> 4 == 0xC:
            raise CAEError(f"{source} uses .cae format version {data[0] & 0xF}; this code reads "
                           "versions 0, 1 and 2.")
        raise CAEError(f"{source} is not a .cae file (its first byte is 0x{data[0]:02x}).")
    if len(data) < 7:
        raise CAEError(f"{source} is truncated: {len(data)} bytes is shorter than the header.")
    quality, model_byte = data[1], data[2]
    height, pos = _read_varint(data, 3, source)
    width, pos = _read_varint(data, pos, source)
    if not (1 <= height <= CAE_MAX_DIMENSION and 1 <= width <= CAE_MAX_DIMENSION):
        raise CAEError(f"{source} is corrupt: it claims an image of {width}x{height} pixels.")
    if first_byte == CAE_V2_FIRST_BYTE and height * width > CAE_MAX_PIXELS:
        raise CAEError(f"{source} claims an image of {width}x{height} pixels, more than the "
                       f"photo codec's limit of {CAE_MAX_PIXELS:,}; it is corrupt or not ours.")
    if len(data) < pos + 2:
        raise CAEError(f"{source} is truncated: the header ends early.")
    (crc,) = struct.unpack(">H", data[pos:pos + 2])
    payload = data[pos + 2:]
    if binascii.crc_hqx(payload, binascii.crc_hqx(data[:pos], 0xFFFF)) != crc:
        raise CAEError(f"{source} is corrupt or truncated: its checksum does not match.")
    if not 1 <= quality <= 15:
        raise CAEError(f"{source} is corrupt: quality {quality} is not a valid level.")
    if expect_quality is not None and quality != expect_quality:
        raise CAEError(f"{source} was written at quality {quality}, but the codec in use is "
                       f"quality {expect_quality}; decode it with --quality {quality}.")
    if fingerprint is not None and model_byte != fingerprint[0]:
        raise CAEError(f"{source} was written by a different model (model byte 0x{model_byte:02x}, "
                       f"this model has 0x{fingerprint[0]:02x}); decode it with the model that "
                       "encoded it.")
    return quality, model_byte, height, width, payload


def save_codec(trainer, encoder, decoder, prior, quality: int, card: dict,
               overwrite: bool = False) -> Path:
    """Save a trained rate-distortion CAE as quality ``quality``: the trainer model
    (``models/rd_q<N>.keras``), its card (``.json``) and its code tables (``.npz``)."""
    import io

    path = rd_model_path(quality)
    tables = build_code_tables(prior)
    save_model(trainer, path, {**card, "quality": int(quality)}, overwrite=overwrite)
    buf = io.BytesIO()
    np.savez(buf, **tables)
    _atomic_write_bytes(path.with_suffix(".npz"), buf.getvalue())
    return path


_CODEC_CACHE: dict = {}


def load_codec(quality: int, path: str | os.PathLike | None = None) -> LearnedCodec:
    """The learned codec for ``quality`` (1..7), loaded once and cached.

    ``path`` overrides the shipped ``models/rd_q<N>.keras`` (its ``.npz`` tables must
    sit beside it). Raises :class:`CAEError` for an unknown quality or missing files.
    """
    quality = _check_int("quality", quality, 1, 15)
    path = Path(path) if path is not None else rd_model_path(quality)
    # The file's modification time is part of the key, so a retrained model is reloaded.
    key = (quality, str(path.resolve()), path.stat().st_mtime_ns) if path.exists() else (quality, str(path))
    if key in _CODEC_CACHE:
        return _CODEC_CACHE[key]
    if path == rd_model_path(quality) and not path.is_file():
        known = sorted(int(m.group(1)) for p in MODELS_DIR.glob("rd_q*.keras")
                       if (m := re.fullmatch(r"rd_q([0-9]+)", p.stem)))
        raise CAEError(f"There is no shipped model for quality {quality}; available: "
                       f"{', '.join(map(str, known)) or 'none'}.")
    trainer, encoder, decoder, card = load_model(path)
    if card.get("quality") not in (None, quality):
        raise CAEError(f"{path} is the model for quality {card['quality']}, not {quality}; "
                       f"use --quality {card['quality']} with it.")
    tables_path = path.with_suffix(".npz")
    if not tables_path.is_file():
        raise CAEError(f"The code tables {tables_path} are missing; they ship beside the model.")
    with np.load(tables_path) as npz:
        tables = {k: npz[k] for k in npz.files}
    codec = LearnedCodec(encoder, decoder, tables, quality, model_fingerprint(trainer), card)
    _CODEC_CACHE[key] = codec
    return codec


# --------------------------------------------------------------------------------------
# 11b. Any image size and real photos: a fully convolutional codec
# --------------------------------------------------------------------------------------
#
# The digit codec above only takes 28x28 images. The photo codec below has no fixed size:
#   encoder  x (H x W x 1) -> y (H/8 x W/8 x 64)   an 8x8 stride-8 convolution, started from
#                                                  JPEG's DCT basis and then trained
#   decoder  y_hat -> x_hat (H x W x 1)            the transposed convolution plus a small
#                                                  residual CNN that removes block artefacts
# Any H x W is first padded (by repeating its edge pixels) to a multiple of 8, the stride,
# and the decoded image is cropped back to the true size, which the header stores.
# Big images are processed in tiles with a margin ("halo") wider than the network's
# reach, so every value is exactly what the whole image would give: no seams, and memory
# stays near the size of the image itself.
#
# .cae format version 2 is version 1's layout with first byte 0xC2, meaning "photo codec":
#   0xC2, quality, model byte, varint height, varint width, CRC-16, range-coded payload.

CAE_V2_FIRST_BYTE = 0xC2
PHOTO_STRIDE = 8           # the photo encoder's stride: one latent vector per 8x8 block
PHOTO_HALO = 16            # tile margin in pixels (2 latent rows), wider than the decoder's reach
PHOTO_TILE = 1024          # tile size in pixels (a multiple of PHOTO_STRIDE)
CAE_MAX_PIXELS = 1 << 26   # 67 million pixels (8192 x 8192): larger claims are refused

#: Photo codec qualities: lambda in loss = bits per pixel + lambda * MSE (0..255 scale),
#: and the DCT gain each starts from (the initial quantization step is 1/gain). Both grow
#: by a factor sqrt(2) (gain) and 2 (lambda) per level: at high rate the best lambda
#: scales as 1/MSE, i.e. as gain squared.
PHOTO_QUALITY_LAMBDAS = {1: 0.0003, 2: 0.0006, 3: 0.0012, 4: 0.0024, 5: 0.0048, 6: 0.0096}
PHOTO_QUALITY_GAINS = {1: 1.2, 2: 1.7, 3: 2.4, 4: 3.4, 5: 4.8, 6: 6.8}

#: Photographs shipped inside scikit-image (no download needed) used to TRAIN the photo
#: codec. The evaluation photos (Kodak) are never used for training.
PHOTO_TRAINING_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins",
                         "moon", "clock", "brick", "grass", "gravel", "hubble_deep_field",
                         "immunohistochemistry", "retina", "page", "text")


def dct_filters(n: int = 8) -> np.ndarray:
    """The orthonormal 2-D DCT-II basis (JPEG's transform) as convolution filters,
    ``(n, n, 1, n*n)`` float32: filter ``u*n + v`` is the basis image of frequency (u, v)."""
    k = np.arange(n)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return np.einsum("ui,vj->ijuv", basis, basis).reshape(n, n, 1, n * n).astype(np.float32)


def build_photo_cae(gain: float = 8.0, filters: int = 32, patch: int = 128):
    """A fully convolutional rate-distortion CAE for grayscale images of any size.

    Encoder: one 8x8 convolution with stride 8 (64 filters, no bias), **started from
    JPEG's DCT basis** times ``gain``: ``(N,H,W,1) -> (N,H/8,W/8,64)``. Decoder: the
    transposed convolution (started from the inverse DCT) followed by a small residual
    CNN at full resolution (three 3x3 convolutions, ``filters`` wide, ReLU) that learns to
    remove block artefacts. Training changes every weight, the DCT included.

    Why not a random start like the digit codec? On photos, a Balle-style GDN network
    from random weights needs far more steps than 2 CPU cores give in minutes (notebook
    06 quotes the measured gap); the DCT start puts training straight into a good region.
    ``gain`` sets the initial quantization step (larger = finer = more bits).
    ``H`` and ``W`` must be multiples of 8 (:class:`PhotoCodec` pads). Returns
    ``(trainer, encoder, decoder, prior)`` like :func:`build_rd_cae`.
    """
    dct = dct_filters(PHOTO_STRIDE)
    channels = dct.shape[-1]
    enc_in = keras.Input((None, None, 1), name="image")
    analysis = layers.Conv2D(channels, PHOTO_STRIDE, strides=PHOTO_STRIDE, padding="valid",
                             use_bias=False, name="analysis")
    encoder = keras.Model(enc_in, analysis(enc_in), name="photo_encoder")
    analysis.set_weights([dct * float(gain)])

    dec_in = keras.Input((None, None, channels), name="latent")
    synthesis = layers.Conv2DTranspose(1, PHOTO_STRIDE, strides=PHOTO_STRIDE, padding="valid",
                                       use_bias=False, name="synthesis")
    z = synthesis(dec_in)
    r = layers.Conv2D(filters, 3, padding="same", activation="relu", name="post1")(z)
    r = layers.Conv2D(filters, 3, padding="same", activation="relu", name="post2")(r)
    r = layers.Conv2D(1, 3, padding="same", kernel_initializer="zeros", name="post3")(r)
    out = layers.Add(name="deblocked")([z, r])
    decoder = keras.Model(dec_in, out, name="photo_decoder")
    synthesis.set_weights([dct / float(gain)])

    inp = keras.Input((patch, patch, 1), name="image")
    y = encoder(inp)
    y_noisy = UniformNoise(name="noise")(y)
    prior_layer = FactorizedPrior(name="prior")
    bits = BitsPerImage(name="bits")(prior_layer(y_noisy))
    x_hat = layers.Identity(name="x_hat")(decoder(y_noisy))
    trainer = keras.Model(inp, {"x_hat": x_hat, "bits": bits}, name="photo_cae")
    return trainer, encoder, decoder, prior_layer


def photo_model_path(quality: int) -> Path:
    """Where the shipped photo model for ``quality`` lives: ``models/photo_q<N>.keras``."""
    return MODELS_DIR / f"photo_q{int(quality)}.keras"


def photo_qualities() -> list[int]:
    """The photo-codec qualities whose model and code tables ship in ``models/``."""
    found = (re.fullmatch(r"photo_q([0-9]+)", p.stem) for p in MODELS_DIR.glob("photo_q*.keras"))
    return sorted(int(m.group(1)) for m in found
                  if m and photo_model_path(int(m.group(1))).with_suffix(".npz").is_file())


def photo_training_images(names=PHOTO_TRAINING_IMAGES) -> dict[str, np.ndarray]:
    """scikit-image's bundled photographs as grayscale ``uint8`` arrays ``(H, W)``.

    Colour photos are converted with ITU-R 601 luma weights (Pillow's "L" mode), the same
    conversion the codec applies to colour input. Images that would need a download are
    skipped, so this works offline.
    """
    from PIL import Image
    import skimage.data

    out = {}
    for name in names:
        try:
            with _stderr_silenced():
                arr = np.asarray(getattr(skimage.data, name)())
        except Exception:  # not bundled in this scikit-image (needs pooch and a download)
            continue
        if arr.dtype != np.uint8:
            arr = (255 * (arr.astype(np.float64) / max(float(arr.max()), 1e-12))).astype(np.uint8)
        if arr.ndim == 3:
            arr = np.asarray(Image.fromarray(arr[..., :3]).convert("L"))
        out[name] = arr
    if not out:
        raise CAEError("None of scikit-image's sample photos could be loaded; is scikit-image "
                       "installed (pip install -r requirements.txt)?")
    return out


def photo_patches(images, n: int, size: int = 128, seed: int = 0,
                  scales=(1.0, 0.75, 0.5)) -> np.ndarray:
    """``n`` random ``size`` x ``size`` crops, ``(n, size, size, 1)`` uint8.

    Each source image is also used shrunk by ``scales`` (antialiased), which gives more
    texture per patch, closer to downsampled test photos; crops are flipped and rotated
    at random. Every source photo gets the same share of crops, whatever its size (the
    1411x1411 retina scan would otherwise give a third of them), and nearly flat crops
    (standard deviation below 3 grey levels: black sky, empty background) are mostly
    redrawn, since they teach the codec little.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    pool, owner = [], []
    for k, arr in enumerate(images.values() if isinstance(images, dict) else images):
        for s in scales:
            h, w = int(round(arr.shape[0] * s)), int(round(arr.shape[1] * s))
            if min(h, w) < size:
                continue
            img = arr if s == 1.0 else np.asarray(Image.fromarray(arr).resize((w, h), Image.LANCZOS))
            pool.append(img)
            owner.append(k)
    if not pool:
        raise CAEError(f"No training image is at least {size}x{size} pixels.")
    owner = np.array(owner)
    weights = np.array([p.size for p in pool], np.float64)
    for k in set(owner.tolist()):  # each photo's scales share one equal slice
        weights[owner == k] /= weights[owner == k].sum()
    picks = rng.choice(len(pool), size=n, p=weights / weights.sum())
    out = np.empty((n, size, size, 1), np.uint8)
    for i, k in enumerate(picks):
        img = pool[k]
        for _ in range(5):  # redraw nearly flat crops, up to 4 times
            r, c = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
            crop = img[r:r + size, c:c + size]
            if crop.std() >= 3.0:
                break
        crop = np.rot90(crop, rng.integers(4))
        out[i, ..., 0] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def train_photo_cae(trainer, patches_u8: np.ndarray, lam: float, *, steps: int = 4000,
                    batch_size: int = 8, learning_rate: float = 5e-4, seed: int = 42,
                    log_every: int = 500, verbose: int = 0, callbacks=(),
                    prior_warmup_steps: int = 300) -> dict:
    """Train a :func:`build_photo_cae` model for ``bits per pixel + lam * MSE_255``.

    ``patches_u8``: ``(N, P, P, 1)`` uint8 crops (see :func:`photo_patches`); batches are
    drawn from them at random for ``steps`` steps. Adam with warm-up and cosine decay.
    First the prior alone is fitted to the encoder's latents for ``prior_warmup_steps``
    (:func:`fit_prior_to_encoder`; 0 skips it). Returns ``{"seconds", "history"}``;
    history holds the mean loss, bits per patch and MSE over each ``log_every`` steps.
    """
    import time
    import tensorflow as tf

    if not lam > 0:
        raise CAEError(f"lambda must be positive, got {lam!r}.")
    steps = _check_int("steps", steps, 1, 10_000_000)
    set_seed(seed)
    size = int(patches_u8.shape[1])
    trainer.compile(
        optimizer=make_optimizer("adam", learning_rate, steps, warmup_steps=min(200, steps // 10)),
        loss={"x_hat": keras.losses.MeanSquaredError(), "bits": MeanOfPrediction()},
        loss_weights={"x_hat": float(lam) * 255.0 ** 2, "bits": 1.0 / (size * size)})
    data = (tf.data.Dataset.from_tensor_slices(patches_u8)
            .shuffle(min(len(patches_u8), 4096), seed=seed).repeat()
            .map(lambda p: (tf.cast(p, tf.float32) / 255.0,) * 2)
            .map(lambda x, t: (x, {"x_hat": t, "bits": tf.zeros(())}))
            .batch(batch_size, drop_remainder=True).prefetch(2))
    log_every = max(1, min(int(log_every), steps))
    start = time.perf_counter()
    if prior_warmup_steps:
        fit_prior_to_encoder(trainer, patches_u8[:prior_warmup_steps * batch_size], batch_size,
                             prior_warmup_steps)
    hist = trainer.fit(data, epochs=-(-steps // log_every), steps_per_epoch=log_every,
                       callbacks=list(callbacks), verbose=verbose)
    return {"seconds": time.perf_counter() - start, "history": hist.history}


def fit_prior_to_encoder(trainer, patches_u8: np.ndarray, batch_size: int = 8, steps: int = 300,
                         learning_rate: float = 1e-2) -> float:
    """Fit the trainer's prior (alone, at a high learning rate) to the latents its encoder
    gives on ``patches_u8``, before the real training starts. The prior's generic start
    (a wide density for every channel) would charge several bits for every DCT
    coefficient, even the many that are nearly always zero; at the usual learning rate it
    takes thousands of steps to learn that. Returns the final bits per pixel."""
    encoder = next(l for l in trainer.layers if isinstance(l, keras.Model) and l.name.endswith("encoder"))
    prior = trainer.get_layer("prior")
    latents = _run_model(encoder, patches_u8.astype(np.float32) / 255.0, chunk=64)
    inp = keras.Input(latents.shape[1:], name="latent")
    bits = BitsPerImage(name="bits")(prior(UniformNoise(name="noise")(inp)))
    model = keras.Model(inp, bits)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=MeanOfPrediction())
    epochs = max(1, steps * batch_size // len(latents))
    hist = model.fit(latents, np.zeros(len(latents), np.float32), batch_size=batch_size,
                     epochs=epochs, shuffle=True, verbose=0)
    return float(hist.history["loss"][-1]) / float(np.prod(patches_u8.shape[1:3]))


def pad_to_multiple(image: np.ndarray, multiple: int = PHOTO_STRIDE) -> np.ndarray:
    """Pad a 2-D image on the bottom and right, repeating its edge pixels, so that both
    sides are multiples of ``multiple``. (Edge repetition costs almost no bits; zeros
    would add a sharp edge the codec must spend bits on.)"""
    h, w = image.shape
    return np.pad(image, ((0, -h % multiple), (0, -w % multiple)), mode="edge")


def _tile_ranges(n: int, core: int, halo: int):
    """Split ``range(n)`` (latent rows or columns) into ``core``-long pieces; for each
    return ``(start, stop, in_start, in_stop)``: the piece, and the piece widened by
    ``halo`` on each side (clipped to the image) that the network actually sees."""
    for start in range(0, n, core):
        stop = min(start + core, n)
        yield start, stop, max(start - halo, 0), min(stop + halo, n)


def encode_tiled(encoder, image: np.ndarray, tile: int = PHOTO_TILE,
                 halo: int = PHOTO_HALO) -> np.ndarray:
    """A padded image ``(H, W)`` float32 in [0, 1] (H, W multiples of
    :data:`PHOTO_STRIDE`) -> latent ``(H/8, W/8, C)`` float32, computed tile by tile.

    Each tile is ``tile`` pixels square plus ``halo`` pixels of real neighbours on each
    side; only the tile's own latents are kept. With ``halo=0`` the tiles are coded
    independently and seams appear (notebook 06 shows them)."""
    s = PHOTO_STRIDE
    h, w = image.shape
    if h % s or w % s:
        raise CAEError(f"encode_tiled needs sides that are multiples of {s}, got {w}x{h}; "
                       "use pad_to_multiple first.")
    lh, lw, ct, hl = h // s, w // s, max(tile // s, 1), -(-halo // s)
    out = None
    for r0, r1, ir0, ir1 in _tile_ranges(lh, ct, hl):
        for c0, c1, ic0, ic1 in _tile_ranges(lw, ct, hl):
            patch = image[ir0 * s:ir1 * s, ic0 * s:ic1 * s][None, :, :, None]
            y = keras.ops.convert_to_numpy(encoder(patch.astype(np.float32), training=False))[0]
            if out is None:
                out = np.empty((lh, lw, y.shape[-1]), np.float32)
            out[r0:r1, c0:c1] = y[r0 - ir0:r1 - ir0, c0 - ic0:c1 - ic0]
    return out


def decode_tiled(decoder, latent: np.ndarray, tile: int = PHOTO_TILE,
                 halo: int = PHOTO_HALO) -> np.ndarray:
    """Latent ``(h, w, C)`` -> image ``(16h, 16w)`` uint8, tile by tile (see
    :func:`encode_tiled`). Each tile is decoded with ``halo`` pixels' worth of
    neighbouring latents and cropped, so tiles join without seams."""
    s = PHOTO_STRIDE
    lh, lw, _ = latent.shape
    ct, hl = max(tile // s, 1), -(-halo // s)
    out = np.empty((lh * s, lw * s), np.uint8)
    for r0, r1, ir0, ir1 in _tile_ranges(lh, ct, hl):
        for c0, c1, ic0, ic1 in _tile_ranges(lw, ct, hl):
            y = latent[ir0:ir1, ic0:ic1][None].astype(np.float32)
            x = keras.ops.convert_to_numpy(decoder(y, training=False))[0, :, :, 0]
            x = x[(r0 - ir0) * s:(r1 - ir0) * s, (c0 - ic0) * s:(c1 - ic0) * s]
            out[r0 * s:r1 * s, c0 * s:c1 * s] = np.round(np.clip(x, 0.0, 1.0) * 255.0)
    return out


def check_photo_size(height: int, width: int, source: str = "the image") -> None:
    """Refuse sizes the photo codec cannot handle, before anything is allocated."""
    if height < 1 or width < 1:
        raise CAEError(f"{source} has no pixels ({width}x{height}); nothing to encode.")
    if max(height, width) > CAE_MAX_DIMENSION or height * width > CAE_MAX_PIXELS:
        raise CAEError(f"{source} is {width}x{height} pixels; the photo codec takes at most "
                       f"{CAE_MAX_PIXELS:,} pixels ({CAE_MAX_PIXELS_TEXT}). Shrink it or cut it "
                       "into parts.")


CAE_MAX_PIXELS_TEXT = "8192 x 8192"


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
            return np.asarray(Image.fromarray(_as_u8(arr[..., :3])).convert("L"))
        if arr.ndim != 2:
            raise CAEError(f"Expected a 2-D grayscale image (H, W), got an array of shape {arr.shape}.")
        check_photo_size(*arr.shape, source="the image")
        return _as_u8(arr)
    img = open_image(img_or_array) if isinstance(img_or_array, (str, os.PathLike)) else img_or_array
    return np.round(image_to_gray_array(img) * 255.0).astype(np.uint8)


def _as_u8(arr: np.ndarray) -> np.ndarray:
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


class PhotoCodec(LearnedCodec):
    """The photo codec of one quality: grayscale images of any size <-> ``.cae`` v2 bytes.

    Load a shipped quality with :func:`load_photo_codec`. ``compress`` takes one
    ``(H, W)`` uint8 image; ``decompress`` gives it back at exactly ``(H, W)``.
    """

    def __init__(self, encoder, decoder, tables: dict, quality: int, fingerprint: bytes,
                 card: dict | None = None, tile: int = PHOTO_TILE):
        import constriction

        super().__init__(encoder, decoder, tables, quality, fingerprint, card)
        if tile % PHOTO_STRIDE or tile < PHOTO_STRIDE:
            raise CAEError(f"tile must be a positive multiple of {PHOTO_STRIDE}, got {tile}.")
        self.tile = int(tile)
        # DC prediction (as JPEG does): channel 0 is each block's average brightness, which
        # changes little from one block to the next, so its symbols are coded as the
        # difference from the left neighbour (the above one in the first column), with a
        # table of such differences counted on the training photos. Without "dc_pmf" in
        # the tables, channel 0 is coded like the others.
        dc = tables.get("dc_pmf") if hasattr(tables, "get") else None
        self.dc_pmf = None if dc is None else np.asarray(dc, np.float64)
        if self.dc_pmf is not None:
            if len(self.dc_pmf) != 2 * self.sizes[0] - 1:
                raise CAEError("The code tables are inconsistent (DC table size); restore the .npz file.")
            self._dc_model = constriction.stream.model.Categorical(self.dc_pmf, perfect=False)
            self._dc_log2 = np.log2(self.dc_pmf)

    # -- DC prediction -----------------------------------------------------------------
    def dc_residuals(self, s0: np.ndarray) -> np.ndarray:
        """Channel-0 symbols ``(h, w)`` -> prediction residuals ``(h, w)``, shifted to
        ``0 .. 2K-2`` (K = the channel's alphabet size): the residual symbols coded."""
        s0 = np.asarray(s0, np.int64)
        r = np.empty_like(s0)
        r[:, 1:] = s0[:, 1:] - s0[:, :-1]
        r[1:, 0] = s0[1:, 0] - s0[:-1, 0]
        r[0, 0] = s0[0, 0] - self.sizes[0] // 2
        return (r + self.sizes[0] - 1).astype(np.int32)

    def dc_from_residuals(self, res: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`dc_residuals` (clipped into the alphabet, so a corrupt
        payload cannot produce an out-of-range symbol)."""
        r = np.asarray(res, np.int64) - (self.sizes[0] - 1)
        first = self.sizes[0] // 2 + np.cumsum(r[:, 0])
        s0 = first[:, None] + np.concatenate([np.zeros((len(r), 1), np.int64),
                                              np.cumsum(r[:, 1:], axis=1)], axis=1)
        return np.clip(s0, 0, self.sizes[0] - 1).astype(np.int32)

    def _code(self, symbols: np.ndarray) -> bytes:
        import constriction

        if self.dc_pmf is None:
            return super()._code(symbols)
        coder = constriction.stream.queue.RangeEncoder()
        coder.encode(np.ascontiguousarray(self.dc_residuals(symbols[..., 0]).ravel()), self._dc_model)
        for c in range(1, len(self._models)):
            coder.encode(np.ascontiguousarray(symbols[..., c].ravel(), np.int32), self._models[c])
        return _words_to_bytes(coder.get_compressed())

    def latent_of(self, image_u8: np.ndarray, halo: int = PHOTO_HALO) -> np.ndarray:
        """``(H, W)`` uint8 -> float latent ``(ceil(H/8), ceil(W/8), C)``."""
        image = pad_to_multiple(image_u8).astype(np.float32) / 255.0
        latent = encode_tiled(self.encoder, image, self.tile, halo)
        if not np.all(np.isfinite(latent)):
            raise CAEError("The latent contains NaN or infinity; the model is broken.")
        return latent

    def image_of(self, latent: np.ndarray, height: int, width: int, halo: int = PHOTO_HALO) -> np.ndarray:
        """Float latent -> the ``(height, width)`` uint8 image (decoded, then cropped)."""
        return decode_tiled(self.decoder, latent, self.tile, halo)[:height, :width]

    def symbols_of(self, image_u8: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 -> integer symbols ``(ceil(H/8), ceil(W/8), C)``."""
        return self.quantize(self.latent_of(image_u8))

    def estimate_image_bits(self, symbols: np.ndarray) -> float:
        """The rate estimate for one image's symbols, in bits: ``-sum log2 p`` under the
        tables the coder uses (the DC residual table for channel 0 if there is one)."""
        if self.dc_pmf is None:
            return float(self.estimate_bits(symbols[None])[0])
        bits = -self._dc_log2[self.dc_residuals(symbols[..., 0])].sum()
        for c in range(1, len(self._log2)):
            bits -= self._log2[c][symbols[..., c]].sum()
        return float(bits)

    def _uncode_shape(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        import constriction

        decoder = constriction.stream.queue.RangeDecoder(_bytes_to_words(payload))
        per_channel = shape[0] * shape[1]
        if self.dc_pmf is None:
            chans = [decoder.decode(model, per_channel) for model in self._models]
        else:
            res = np.asarray(decoder.decode(self._dc_model, per_channel)).reshape(shape[:2])
            chans = [self.dc_from_residuals(res).ravel()]
            chans += [decoder.decode(self._models[c], per_channel) for c in range(1, len(self._models))]
        return np.stack(chans, axis=-1).reshape(shape).astype(np.int32)

    def compress(self, image) -> bytes:
        """One grayscale image (``(H, W)`` uint8, or anything :func:`photo_to_gray_u8`
        takes) -> a complete ``.cae`` v2 file (bytes)."""
        image = photo_to_gray_u8(image)
        check_photo_size(*image.shape)
        symbols = self.symbols_of(image)
        return pack_v1(self.quality, self.fingerprint, image.shape[0], image.shape[1],
                       self._code(symbols), first_byte=CAE_V2_FIRST_BYTE)

    def decompress(self, data: bytes, source: str = "the .cae data") -> np.ndarray:
        """A ``.cae`` v2 file -> the image, ``(H, W)`` uint8, H and W from its header.

        The header is fully checked (size limits, CRC, quality, model) before anything
        is allocated; a damaged payload raises :class:`CAEError`."""
        _, _, h, w, payload = unpack_v1(data, self.fingerprint, source=source,
                                        expect_quality=self.quality,
                                        first_byte=CAE_V2_FIRST_BYTE)
        shape = (-(-h // PHOTO_STRIDE), -(-w // PHOTO_STRIDE), len(self._models))
        try:
            symbols = self._uncode_shape(payload, shape)
        except Exception as exc:  # constriction found the payload inconsistent
            raise CAEError(f"{source} is corrupt: its coded data cannot be decoded ({exc}).") from None
        return self.image_of(self.dequantize(symbols), h, w)


def save_photo_codec(trainer, prior, quality: int, card: dict, overwrite: bool = False) -> Path:
    """Save a trained photo codec as ``models/photo_q<N>.keras`` + ``.json`` + ``.npz``."""
    import io

    path = photo_model_path(quality)
    tables = build_code_tables(prior)
    save_model(trainer, path, {**card, "quality": int(quality), "kind": "photo"}, overwrite=overwrite)
    buf = io.BytesIO()
    np.savez(buf, **tables)
    _atomic_write_bytes(path.with_suffix(".npz"), buf.getvalue())
    return path


def dc_prediction_table(codec: PhotoCodec, images) -> np.ndarray:
    """The probability table of DC prediction residuals (see :class:`PhotoCodec`),
    counted on ``images`` (the TRAINING photos, never the evaluation ones), with a small
    count added to every possible residual so that any image remains codable. Float64,
    ``2K - 1`` entries (K = channel 0's alphabet size)."""
    k = int(codec.sizes[0])
    counts = np.zeros(2 * k - 1, np.float64)
    for img in (images.values() if isinstance(images, dict) else images):
        res = codec.dc_residuals(codec.symbols_of(img)[..., 0])
        counts += np.bincount(res.ravel(), minlength=2 * k - 1)
    counts += 0.1
    return counts / counts.sum()


def add_dc_prediction(quality: int, images=None) -> dict:
    """Add DC prediction to the shipped photo codec ``quality``: count the residual
    table on the training photos and store it in its ``.npz`` (atomically). Returns the
    tables. The model's weights are unchanged, so its fingerprint is too."""
    import io

    path = photo_model_path(quality)
    images = photo_training_images() if images is None else images
    with np.load(path.with_suffix(".npz")) as npz:
        tables = {k: npz[k] for k in npz.files if k != "dc_pmf"}
    base = load_photo_codec(quality)
    plain = PhotoCodec(base.encoder, base.decoder, tables, quality, base.fingerprint, base.card)
    tables["dc_pmf"] = dc_prediction_table(plain, images)
    buf = io.BytesIO()
    np.savez(buf, **tables)
    _atomic_write_bytes(path.with_suffix(".npz"), buf.getvalue())
    _CODEC_CACHE.clear()
    return tables


def load_photo_codec(quality: int, path: str | os.PathLike | None = None,
                     tile: int = PHOTO_TILE) -> PhotoCodec:
    """The photo codec for ``quality`` (see :func:`photo_qualities`), loaded once and cached.

    ``path`` overrides the shipped ``models/photo_q<N>.keras`` (its ``.npz`` tables must
    sit beside it)."""
    quality = _check_int("quality", quality, 1, 15)
    path = Path(path) if path is not None else photo_model_path(quality)
    if not path.is_file():
        known = photo_qualities()
        raise CAEError(f"There is no photo model for quality {quality} ({path} is missing); "
                       f"available photo qualities: {', '.join(map(str, known)) or 'none'}.")
    tables_path = path.with_suffix(".npz")
    key = ("photo", quality, str(path.resolve()), path.stat().st_mtime_ns, int(tile),
           tables_path.stat().st_mtime_ns if tables_path.is_file() else None)
    if key in _CODEC_CACHE:
        return _CODEC_CACHE[key]
    trainer, encoder, decoder, card = load_model(path)
    if card.get("kind", "photo") != "photo" or encoder.input_shape[1] is not None:
        raise CAEError(f"{path} is not a photo-codec model (it takes fixed-size digits); "
                       "use it without --mode photo.")
    if card.get("quality") not in (None, quality):
        raise CAEError(f"{path} is the photo model for quality {card['quality']}, not {quality}.")
    if not tables_path.is_file():
        raise CAEError(f"The code tables {tables_path} are missing; they ship beside the model.")
    with np.load(tables_path) as npz:
        tables = {k: npz[k] for k in npz.files}
    codec = PhotoCodec(encoder, decoder, tables, quality, model_fingerprint(trainer), card, tile=tile)
    _CODEC_CACHE[key] = codec
    return codec


# ---- evaluation on a folder of photos (notebook 06 and benchmarks/photo_rate_distortion.py) ----

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm")


def photo_eval_folder() -> Path | None:
    """The folder of evaluation photos: ``$CAE_PHOTO_DIR`` if set, else ``data/photos``
    if it holds images, else the Kodak copy in ``../shared/data/kodak-gray256`` beside the
    project if present; ``None`` if there is none. (Never train on these photos.)"""
    env = os.environ.get("CAE_PHOTO_DIR")
    if env:
        return Path(env)
    for folder in (DATA_DIR / "photos", ROOT.parent / "shared" / "data" / "kodak-gray256"):
        if folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
            return folder
    return None


def load_photo_folder(folder, limit: int | None = None) -> dict[str, np.ndarray]:
    """Every image in ``folder`` (sorted by name) as grayscale ``uint8`` ``(H, W)``,
    keyed by file name. Colour is converted to luma. :class:`CAEError` if the folder is
    missing or holds no image; files that are not images are reported by name."""
    if folder is None:
        raise CAEError("No folder of evaluation photos: set CAE_PHOTO_DIR to a folder of images "
                       "or put some in data/photos/.")
    folder = Path(folder)
    if not folder.is_dir():
        raise CAEError(f"The photo folder {folder} does not exist; set CAE_PHOTO_DIR to a folder "
                       "of images.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CAEError(f"The photo folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return {p.name: photo_to_gray_u8(p) for p in files[:limit]}


def photo_metrics(original_u8: np.ndarray, decoded_u8: np.ndarray) -> dict:
    """``mse`` (0..1 scale), ``psnr_db`` (peak 1.0) and ``ssim`` of one ``(H, W)`` pair."""
    if original_u8.shape != decoded_u8.shape:
        raise CAEError(f"Decoded size {decoded_u8.shape} differs from the original {original_u8.shape}.")
    mse = float(np.mean((original_u8.astype(np.float64) - decoded_u8) ** 2)) / 255.0 ** 2
    ssim = float(ssim_per_image(original_u8[None], decoded_u8[None])[0]) if min(original_u8.shape) >= 7 else float("nan")
    return {"mse": mse, "psnr_db": psnr_from_mse(mse), "ssim": ssim}


def _photo_summary(codec: str, setting, per_image: list[dict], folder=None) -> dict:
    """Means over images: ``bpp``, ``psnr_db`` (mean of per-image PSNR, the usual way to
    report Kodak results) and ``ssim``; the per-image rows are kept too."""
    keys = ("bytes", "bpp", "psnr_db", "ssim", "mse")
    out = {"codec": codec, "setting": setting, "images": len(per_image),
           **{k: float(np.mean([r[k] for r in per_image])) for k in keys},
           "per_image": per_image}
    if folder is not None:
        out["folder"] = str(folder)
    if per_image and "estimated_bpp" in per_image[0]:
        out["estimated_bpp"] = float(np.mean([r["estimated_bpp"] for r in per_image]))
    return out


def measure_photo_codec(codec: PhotoCodec, images: dict, folder=None) -> dict:
    """Encode and decode every image through real ``.cae`` bytes; see :func:`_photo_summary`."""
    rows = []
    for name, img in images.items():
        data = codec.compress(img)
        dec = codec.decompress(data)
        est = codec.estimate_image_bits(codec.symbols_of(img)) / img.size
        rows.append({"name": name, "bytes": len(data), "bpp": 8.0 * len(data) / img.size,
                     "estimated_bpp": est, **photo_metrics(img, dec)})
    return _photo_summary("cae", codec.quality, rows, folder or photo_eval_folder())


def measure_photo_classic(images: dict, fmt: str, quality: int | None) -> dict:
    """The same measurement for a classic codec (:func:`classic_encode`) at ``quality``."""
    rows = []
    for name, img in images.items():
        data = classic_encode(img, fmt, quality)
        rows.append({"name": name, "bytes": len(data), "bpp": 8.0 * len(data) / img.size,
                     **photo_metrics(img, classic_decode(data))})
    return _photo_summary(fmt, quality, rows)


#: Quality sweeps for the classic codecs on photos; they cover about 0.05 to 2 bpp.
PHOTO_CLASSIC_SWEEPS = {"jpeg": (2, 5, 10, 15, 20, 30, 40, 50, 60, 75, 85, 90),
                        "webp": (0, 5, 10, 20, 30, 40, 50, 60, 75, 85, 90),
                        "avif": (0, 10, 20, 30, 40, 50, 60, 70, 80)}


#: Bjontegaard deltas on photos are computed over this range of bits per pixel.
PHOTO_BD_RANGE_BPP = (0.1, 1.0)


def _summary_row(result: dict) -> dict:
    """A rate-distortion row without its per-image details (for tables and JSON)."""
    return {k: v for k, v in result.items() if k != "per_image"}


def photo_rate_distortion(images: dict, qualities=None, sweeps=None, with_avif: bool = True,
                          keep_per_image: bool = False) -> list[dict]:
    """The photo codec at every shipped quality and the classic codecs over their quality
    sweeps, all on the same ``images`` (``{name: (H, W) uint8}``), in one run.

    Returns one row per (codec, setting): ``codec``, ``setting``, ``images``, mean
    ``bytes``, ``bpp``, ``psnr_db`` (mean of per-image PSNR), ``ssim``, and for the CAE
    ``estimated_bpp``; with ``keep_per_image`` also ``per_image``.
    """
    sweeps = dict(PHOTO_CLASSIC_SWEEPS if sweeps is None else sweeps)
    if not with_avif or not avif_supported():
        sweeps.pop("avif", None)
    rows = []
    for q in (photo_qualities() if qualities is None else qualities):
        rows.append(measure_photo_codec(load_photo_codec(q), images))
    for fmt, settings in sweeps.items():
        rows.extend(measure_photo_classic(images, fmt, s) for s in settings)
    return rows if keep_per_image else [_summary_row(r) for r in rows]


def photo_bd_table(rows, a: str = "cae", against=("jpeg", "webp", "avif"),
                   bpp_range=PHOTO_BD_RANGE_BPP, metric: str = "psnr_db") -> dict:
    """BD-rate (and BD-PSNR) of codec ``a`` against each other codec on photos.

    Only the points whose mean rate lies within ``bpp_range`` are used, for both codecs,
    so the delta describes that range of rates. Returns ``{codec: bd_compare dict +
    "points": (n_a, n_b)}`` for each codec present in ``rows``."""
    lo, hi = bpp_range

    def points(codec):
        sel = [r for r in rows if r["codec"] == codec and lo <= r["bpp"] <= hi]
        return np.array([r["bpp"] for r in sel]), np.array([r[metric] for r in sel])

    ra, pa = points(a)
    out = {}
    for b in against:
        if not any(r["codec"] == b for r in rows):
            continue
        rb, pb = points(b)
        method = "cubic" if min(len(ra), len(rb)) >= 4 else "pchip"
        out[b] = {**bd_compare(ra, pa, rb, pb, method), "points": (len(ra), len(rb)),
                  "bpp_range": (lo, hi), "metric": metric}
    return out


def digit_codec_on_photo(image_u8: np.ndarray, quality: int) -> dict:
    """The MNIST-trained digit codec forced onto a photo: the photo is cut into 28x28
    tiles (edges repeated), each tile is coded as if it were a digit, and the tiles are
    put back together. Counts the payload bytes of every tile plus one 9-byte header.
    Returns ``{"bytes", "bpp", "decoded", **photo_metrics}``. (This is limitation 2 of
    the 2018 project: a model trained only on digits, shown on real photos.)"""
    codec = load_codec(quality)
    h, w = image_u8.shape
    padded = np.pad(image_u8, ((0, -h % 28), (0, -w % 28)), mode="edge")
    th, tw = padded.shape[0] // 28, padded.shape[1] // 28
    tiles = padded.reshape(th, 28, tw, 28).transpose(0, 2, 1, 3).reshape(-1, 28, 28, 1)
    files = codec.compress(tiles.astype(np.float32) / 255.0)
    payload = sum(len(unpack_v1(f)[4]) for f in files)
    dec = np.round(np.clip(codec.decompress(files)[..., 0], 0, 1) * 255).astype(np.uint8)
    dec = dec.reshape(th, tw, 28, 28).transpose(0, 2, 1, 3).reshape(th * 28, tw * 28)[:h, :w]
    size = payload + 9
    return {"bytes": size, "bpp": 8.0 * size / image_u8.size, "decoded": dec,
            **photo_metrics(image_u8, dec)}


def digit_codec_on_photos(images: dict, qualities=None) -> list[dict]:
    """:func:`digit_codec_on_photo` on every photo, at every digit quality (default: all
    shipped): one row per quality with the mean ``bytes``, ``bpp``, ``psnr_db`` and
    ``ssim``, codec ``"mnist_cae_tiles"``, in the layout of :func:`photo_rate_distortion`."""
    rows = []
    for q in (available_qualities() if qualities is None else qualities):
        per = [digit_codec_on_photo(img, q) for img in images.values()]
        rows.append({"codec": "mnist_cae_tiles", "setting": q,
                     **{k: float(np.mean([r[k] for r in per])) for k in ("bytes", "bpp", "psnr_db", "ssim")}})
    return rows


def cli_peak_memory(args: list[str], cwd=None, timeout: float = 1800) -> dict:
    """Run ``python cae_utils.py <args>`` in a fresh process and measure it: wall
    ``seconds``, ``peak_rss_mib`` (the process's peak resident memory, from
    ``getrusage``, TensorFlow included) and ``returncode``."""
    import json
    import subprocess
    import time

    code = ("import json, resource, sys; sys.path.insert(0, sys.argv[1]); import cae_utils as cu; "
            "rc = cu.main(sys.argv[2:]); "
            "print('@@' + json.dumps({'rc': rc, 'kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    line = next((l for l in proc.stdout.splitlines() if l.startswith("@@")), None)
    if line is None:
        raise CAEError(f"The measured command failed: {proc.stderr.strip()[-300:]}")
    info = json.loads(line[2:])
    return {"seconds": seconds, "peak_rss_mib": info["kb"] / 1024.0, "returncode": info["rc"],
            "stdout": "\n".join(l for l in proc.stdout.splitlines() if not l.startswith("@@"))}


def large_test_image(size: int = 4096, seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` uint8 photo mosaic for the large-image test: scikit-image's
    photos, resized to 1024x1024 tiles and laid side by side (with mirror flips so that
    neighbours differ)."""
    from PIL import Image

    photos = list(photo_training_images(("astronaut", "camera", "coffee", "rocket", "coins",
                                         "moon", "clock", "brick")).values())
    tile = min(1024, size)
    rng = np.random.default_rng(seed)
    out = np.empty((size, size), np.uint8)
    for r in range(0, size, tile):
        for c in range(0, size, tile):
            src = photos[rng.integers(len(photos))]
            t = np.asarray(Image.fromarray(src).resize((tile, tile), Image.LANCZOS))
            if rng.random() < 0.5:
                t = t[:, ::-1]
            out[r:r + tile, c:c + tile] = t[:size - r, :size - c]
    return out


# ---- notebook 06 helpers: pictures of photos and their rate-distortion curves ----

PHOTO_CODEC_STYLE = {"cae": ("C3", "o", "photo CAE (ours)"), "jpeg": ("C0", "s", "JPEG"),
                     "webp": ("C2", "^", "WebP"), "avif": ("C1", "D", "AVIF"),
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


def photo_bd_lines(bd: dict) -> list[str]:
    """One readable line per codec from :func:`photo_bd_table`'s result."""
    lines = []
    for codec, d in bd.items():
        lo, hi = d["bpp_range"]
        if d["bd_rate_percent"] is None:
            lines.append(f"against {codec}: no BD-rate ({d['reason']})")
            continue
        more = "fewer" if d["bd_rate_percent"] < 0 else "more"
        lines.append(f"against {codec.upper()}: BD-rate {d['bd_rate_percent']:+.1f}% "
                     f"(the CAE needs {abs(d['bd_rate_percent']):.1f}% {more} bits for the same "
                     f"{'PSNR' if d['metric'] == 'psnr_db' else 'SSIM'}), "
                     + ("BD-PSNR " if d["metric"] == "psnr_db" else "BD-SSIM ")
                     + ((f"{d['bd_psnr_db']:+.2f} dB" if d["metric"] == "psnr_db" else f"{d['bd_psnr_db']:+.4f}")
                        if d["bd_psnr_db"] is not None else "n/a")
                     + f"; points in {lo}-{hi} bpp: {d['points'][0]} CAE, {d['points'][1]} {codec}")
    return lines


def seam_demo(codec: PhotoCodec, image_u8: np.ndarray, tile: int = 64) -> dict:
    """Decode ``image_u8`` three ways with the same model: whole (one tile), in
    ``tile``-pixel tiles with the halo, and in tiles without it (each tile coded on its
    own, as naive tiling would). Returns the three images, their PSNRs and the largest
    pixel difference of each tiled version from the whole one."""
    padded = pad_to_multiple(image_u8).astype(np.float32) / 255.0
    h, w = image_u8.shape
    out = {}
    for name, t, halo in (("whole", 1 << 20, PHOTO_HALO), ("tiles_with_halo", tile, PHOTO_HALO),
                          ("tiles_no_halo", tile, 0)):
        sym = codec.quantize(encode_tiled(codec.encoder, padded, t, halo))
        img = decode_tiled(codec.decoder, codec.dequantize(sym), t, halo)[:h, :w]
        out[name] = {"image": img, "bits": codec.estimate_image_bits(sym),
                     **photo_metrics(image_u8, img)}
    for name in ("tiles_with_halo", "tiles_no_halo"):
        out[name]["max_diff_from_whole"] = int(np.abs(out[name]["image"].astype(int)
                                                      - out["whole"]["image"]).max())
    return out


def photo_card_rows() -> list[dict]:
    """One row per shipped photo quality: lambda, training steps and seconds (this
    stage and the whole lineage), and its recorded test metrics."""
    rows = []
    for q in photo_qualities():
        card = _read_card(photo_model_path(q))
        rows.append({"quality": q, "lambda": card.get("lambda"),
                     "stages": len(card.get("lineage", [])),
                     "steps": sum(s.get("steps", 0) for s in card.get("lineage", [])),
                     "train_seconds": card.get("train_seconds"),
                     "total_train_seconds": card.get("total_train_seconds"),
                     "warm_start_from": card.get("lineage", [{}])[-1].get("warm_start_from"),
                     "parameters": card.get("parameters"), **{f"test_{k}": v for k, v in card.get("test", {}).items()
                                                               if k in ("bpp", "psnr_db", "ssim")}})
    return rows


# --------------------------------------------------------------------------------------
# 12. Figures and results
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
        text = json.dumps(_finite_or_str(results), indent=2, sort_keys=True, allow_nan=False)
    _atomic_write_bytes(path, (text + "\n").encode())
    return path


def _finite_or_str(obj):
    """``obj`` with every non-finite float replaced by its string ("inf", "nan")."""
    if isinstance(obj, dict):
        return {k: _finite_or_str(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_str(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def _atomic_write_bytes(path: Path, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    A reader never sees half a file, and a crash leaves the old file intact. With
    ``overwrite=False`` an existing ``path`` is refused with :class:`CAEError`.
    """
    import tempfile

    path = Path(path)
    if not overwrite and path.exists():
        raise CAEError(f"{path} already exists; choose another name or pass --force to replace it.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); give it the usual mode a new file gets.
        os.chmod(tmp, 0o666 & ~_current_umask())
        if not overwrite and path.exists():
            raise CAEError(f"{path} already exists; choose another name or pass --force to replace it.")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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


def png_size(image_u8: np.ndarray) -> int:
    """Bytes of a whole PNG file (Pillow, ``optimize=True``) for one ``uint8`` 2-D image."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image_u8, np.uint8), mode="L").save(buf, format="PNG", optimize=True)
    return buf.getbuffer().nbytes



# ---- Notebook 04 helpers ----
# Small tools for notebooks/04_encode_decode.ipynb: how an image file looks, its
# preprocessing steps, the bytes of a .cae file field by field, and the 8-bit
# quantization experiment. Appended by the notebook-04 author; nothing above is changed.

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


def cae_fields(data: bytes) -> list[tuple[int, int, str, bytes]]:
    """Split the bytes of a version-0 ``.cae`` file into its fields (no checks made).

    Returns ``(offset, size, name, field bytes)`` for magic, version, fingerprint, the
    latent and the CRC-32, following the layout comment of section 8.
    """
    data = bytes(data)
    n = _CAE_HEADER.size
    return [(0, 3, "magic", data[0:3]), (3, 1, "format version", data[3:4]),
            (4, 4, "model fingerprint", data[4:n]),
            (n, len(data) - n - 4, "latent, float32 little-endian", data[n:-4]),
            (len(data) - 4, 4, "CRC-32 of all bytes before it", data[-4:])]


def latent_ranges(latents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension minimum and maximum of ``(N, D)`` latents (e.g. the training set's)."""
    latents = np.asarray(latents, np.float32).reshape(len(latents), -1)
    return latents.min(axis=0), latents.max(axis=0)


def quantize_uniform(latents: np.ndarray, low: np.ndarray, high: np.ndarray,
                     bits: int = 8) -> np.ndarray:
    """Uniform scalar quantization: each latent number to an integer code in ``0 .. 2**bits-1``.

    ``low`` and ``high`` (per dimension, from :func:`latent_ranges`) belong to the model,
    not to each file; values outside them are clipped. Returns ``uint8`` or ``uint16``.
    """
    if not 1 <= int(bits) <= 16:
        raise CAEError(f"bits must be between 1 and 16, got {bits}.")
    levels = 2 ** int(bits) - 1
    span = np.maximum(np.asarray(high, np.float64) - low, 1e-12)
    codes = np.round((np.clip(latents, low, high) - low) / span * levels)
    return codes.astype(np.uint8 if bits <= 8 else np.uint16)


def dequantize_uniform(codes: np.ndarray, low: np.ndarray, high: np.ndarray,
                       bits: int = 8) -> np.ndarray:
    """The latent values that :func:`quantize_uniform` codes stand for (``float32``)."""
    levels = 2 ** int(bits) - 1
    span = np.asarray(high, np.float64) - low
    return (low + np.asarray(codes, np.float64) / levels * span).astype(np.float32)


def stray_ink_share(digit: np.ndarray, radius: int = 2, strong: float = 0.5) -> float:
    """Share of a digit's total brightness lying more than ``radius`` pixels from any stroke.

    A stroke pixel is one at least ``strong`` (digits in [0, 1]); MNIST digits score close
    to 0. A large value means preprocessing let background (shadows, paper texture) into
    the digit.
    """
    d = np.squeeze(np.asarray(digit, np.float64))
    near = d >= strong
    padded = np.pad(near, radius)
    h, w = d.shape
    grown = np.zeros_like(near)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            grown |= padded[dy:dy + h, dx:dx + w]
    total = d.sum()
    return float(d[~grown].sum() / total) if total > 0 else 0.0


# ---- Notebook 03 helpers ----
# Tools for notebook 03 (training) and benchmarks/race_original.py: the 2018 project's
# reported numbers, a quiet-TensorFlow block, a learning-rate sweep, the size of a loss's
# gradients, the noise of a loss curve, loss-curve and digit-row plots, a Markdown table.
# Appended in one piece; nothing above was changed.

#: What the 2018 project reported for its seed CAE (training loss, SSE per batch of 8)
#: and the value it aimed for. Historical facts, used as reference lines and targets.
ORIGINAL_REPORTED_LOSS = (100.0, 120.0)
ORIGINAL_TARGET_LOSS = 50.0


def quiet_tensorflow():
    """A ``with`` block that hides TensorFlow's C++ log lines (file descriptor 2) inside it.

    The first time a process trains the seed CAE, TensorFlow's graph optimizer prints a
    harmless ``remapper failed: INVALID_ARGUMENT ... LeakyRelu`` line: it cannot fuse
    the convolution with its leaky ReLU for the gradient, leaves that part of the graph as
    it is, and training runs normally. The line would land in the notebook as a red stderr
    output. Python warnings and exceptions are not affected (they do not use descriptor 2
    in Jupyter). Use it around training calls only::

        with cu.quiet_tensorflow():
            result = cu.train_autoencoder(...)
    """
    return _stderr_silenced()


def gradient_norm(autoencoder, images: np.ndarray, loss: str) -> float:
    """Global L2 norm of the gradient of ``loss`` ("sse" or "mse") on one batch ``images``.

    Nothing is trained. Comparing ``"sse"`` with ``"mse"`` on the same batch of ``B``
    images shows the factor ``B x 784`` between the two losses' gradients, the reason
    plain SGD needs a tiny learning rate with the summed loss (notebook 03).
    """
    x = tf.convert_to_tensor(np.asarray(images, np.float32))
    loss_fn = make_loss(loss)
    with tf.GradientTape() as tape:
        value = loss_fn(x, autoencoder(x, training=True))
    grads = tape.gradient(value, autoencoder.trainable_variables)
    return float(tf.linalg.global_norm([g for g in grads if g is not None]).numpy())


def learning_rate_sweep(build, x_train: np.ndarray, learning_rates, *, steps: int,
                        optimizer: str = "sgd", loss: str = "sse", batch_size: int = 8,
                        window: int = 100, seed: int = 42) -> list[dict]:
    """Train a fresh model (``build()[0]``, seeded) for ``steps`` batches at each learning rate.

    Every run starts from the same weights and sees the same batches, so the runs differ
    only in the rate. Returns one dict per rate: ``learning_rate``, ``diverged`` (the loss
    became NaN/inf and training stopped there), ``steps`` run, ``final_loss`` (mean of the
    last ``window`` per-batch losses in the 2018 unit; NaN if diverged), ``start_loss``
    (mean of the first ``window``), ``seconds`` and ``batch_losses``. Keras' "Invalid
    loss, terminating training" lines are swallowed: ``diverged`` says it.
    """
    import io

    rows = []
    for lr in learning_rates:
        set_seed(seed)
        autoencoder = build()[0]
        with contextlib.redirect_stdout(io.StringIO()):
            r = train_autoencoder(autoencoder, x_train, steps=steps, batch_size=batch_size,
                                  optimizer=optimizer, learning_rate=float(lr), loss=loss, seed=seed)
        orig = loss_in_original_unit(r["batch_losses"], loss, batch_size)
        ok = not r["diverged"] and len(orig) > 0
        rows.append({"learning_rate": float(lr), "diverged": bool(r["diverged"]), "steps": r["steps"],
                     "start_loss": float(np.mean(orig[:window])) if ok else float("nan"),
                     "final_loss": float(np.mean(orig[-window:])) if ok else float("nan"),
                     "seconds": r["seconds"], "batch_losses": r["batch_losses"]})
    return rows


def loss_noise(batch_losses, loss: str, batch_size: int, window: int = 51) -> float:
    """How noisy a training curve is: std of the per-batch loss around its moving average.

    Losses are first put in the 2018 unit *per 8 images* (:func:`loss_in_original_unit`),
    so batches of different sizes compare fairly. The average is centred (``window``
    steps, fewer for short runs) and only the second half of the run is used, where the
    curve is nearly flat, so that the downward trend is not counted as noise.
    """
    values = loss_in_original_unit(batch_losses, loss, batch_size)
    if len(values) < 12:
        raise CAEError(f"Need at least 12 losses to measure noise, got {len(values)}.")
    window = max(3, min(int(window), len(values) // 4) | 1)  # odd: centred on a step
    centred = np.convolve(values, np.ones(window) / window, mode="valid")
    resid = values[window // 2: window // 2 + len(centred)] - centred
    return float(np.std(resid[len(resid) // 2:]))


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


# ---- Notebook 01-02 helpers ----
# Small helpers for notebooks 01 (data) and 02 (architecture): statistics, byte sizes,
# text tables and figures. Each returns plain numbers, text or a matplotlib figure.
# Appended in one piece; nothing above was changed.

def pixel_stats(images: np.ndarray) -> dict:
    """Pixel statistics of float images in [0, 1] (any shape): ``mean``, ``std``,
    ``frac_zero`` (share of pixels exactly 0) and ``frac_above_half`` (share > 0.5)."""
    x = np.asarray(images, dtype=np.float64)
    return {"mean": float(x.mean()), "std": float(x.std()),
            "frac_zero": float((x == 0).mean()), "frac_above_half": float((x > 0.5).mean())}


def png_sizes(images: np.ndarray) -> np.ndarray:
    """Whole-file PNG bytes (see :func:`png_size`) of each float image in [0, 1],
    ``(N,28,28[,1])``; returns ``int64`` of shape ``(N,)``."""
    return np.array([png_size(im) for im in to_uint8_images(images)], dtype=np.int64)


def json_floats_size(values) -> int:
    """Bytes of ``json.dumps`` of ``values`` written as Python floats, as the 2018 scripts
    saved a latent (each float32 printed with up to 17 significant digits)."""
    import json

    return len(json.dumps([float(v) for v in np.ravel(values)]).encode("utf-8"))


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


def mnist_source(path=None) -> str:
    """Which source :func:`load_mnist` reads for ``path`` (same order as its docstring)."""
    chosen = path if path is not None else os.environ.get("CAE_MNIST_DIR") or None
    if chosen is not None:
        return f"IDX files in {chosen}" + ("" if path is not None else " (from $CAE_MNIST_DIR)")
    if all(_find_idx_file(DATA_DIR / "mnist", n) for n in MNIST_FILES.values()):
        return f"IDX files in {DATA_DIR / 'mnist'}"
    return "Keras' download cache (~/.keras/datasets/mnist.npz)"


def entropy_bits_per_pixel(images: np.ndarray) -> float:
    """Zero-order entropy of the 8-bit pixel values of float images in [0, 1], in bits per
    pixel: the average cost of coding each pixel on its own with an ideal code for the
    histogram of all pixel values (neighbours ignored)."""
    p = np.bincount(to_uint8_images(images).ravel(), minlength=256) / np.size(images)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def taps_on_data(in_side: int, kernel: int, stride: int) -> int:
    """How many of a ``same``-padded strided convolution's ``kernel`` taps (per axis) ever
    touch a real input pixel rather than padding, for an input ``in_side`` pixels wide."""
    out = -(-in_side // stride)
    before = max((out - 1) * stride + kernel - in_side, 0) // 2
    return sum(any(0 <= o * stride - before + t < in_side for o in range(out)) for t in range(kernel))


def receptive_fields(encoder) -> list[tuple]:
    """Receptive field of each ``Conv2D`` layer of ``encoder``, in input pixels.

    Returns rows ``(name, kernel, stride, output side, jump, receptive field)``: the jump is
    the input-pixel distance between neighbouring outputs; the field grows by
    ``(kernel - 1) x previous jump`` per layer. ``Dense`` layers see the whole image.
    """
    rows, rf, jump = [], 1, 1
    for layer in encoder.layers:
        if isinstance(layer, layers.Conv2D):
            k, s = layer.kernel_size[0], layer.strides[0]
            rf, jump = rf + (k - 1) * jump, jump * s
            rows.append((layer.name, k, s, layer.output.shape[1], jump, rf))
        elif isinstance(layer, layers.Dense):
            rows.append((layer.name, "-", "-", 1, "-", "whole image"))
    return rows


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
    """Squares of each layer's receptive field (rows of :func:`receptive_fields`), drawn
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


def with_sigmoid_output(autoencoder):
    """The same autoencoder (shared weights) with a sigmoid squashing its linear output
    into (0, 1); used to show why the seed model's output is linear."""
    out = layers.Activation("sigmoid", name="sigmoid_output")(autoencoder.output)
    return keras.Model(autoencoder.input, out, name=autoencoder.name + "_sigmoid")


def sigmoid_slope(z) -> np.ndarray:
    """The sigmoid's slope ``s(z) (1 - s(z))`` for pre-activations ``z`` (any shape),
    computed as ``e / (1 + e)^2`` with ``e = exp(-|z|)`` so it never overflows; float64."""
    e = np.exp(-np.abs(np.asarray(z, dtype=np.float64)))
    return e / (1.0 + e) ** 2


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
    slope = sigmoid_slope(z)
    s = np.where(z >= 0, 1.0, np.exp(-np.abs(z))) / (1.0 + np.exp(-np.abs(z)))
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


# ---- 13. Classic codecs, baselines and rate-distortion tools (notebook 05) ----
# What notebook 05 and benchmarks/rate_distortion.py need to put the learned codec on the
# same axes as the classic formats (PNG, WebP, JPEG, AVIF), a PCA transform coder and the
# float latent of notebook 04: whole-file bytes, PSNR, SSIM, a digit classifier's accuracy,
# Bjontegaard deltas and matched-size comparisons. Conventions of this section: ``images_u8``
# are ``uint8`` arrays ``(N, 28, 28)`` (0..255); "bytes" always means whole files, headers
# included; PSNR is of the mean MSE over the images (peak 255 on uint8, which is the same
# number as peak 1.0 on [0, 1]); SSIM is the mean over the images. Appended in one piece;
# nothing above is changed.

PIXELS_PER_DIGIT = 28 * 28

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

#: PCA baseline settings ``(components k, quantizer step on the [0, 1] pixel scale)``. With
#: all 784 components the step alone sets the rate (weak components round to 0); fewer
#: components only help at the very lowest rates. Plots keep the Pareto front.
PCA_SETTINGS = ((16, 0.5), (32, 0.4), (64, 0.6), (128, 0.6), (784, 0.6), (784, 0.4),
                (784, 0.25), (784, 0.18), (784, 0.12), (784, 0.08), (784, 0.05), (784, 0.035))

#: File sizes (bytes) at which notebook 05 compares codecs head to head.
MATCHED_SIZES = (60, 80, 100, 120, 150, 200, 250)

#: Classifier accuracy from which decoded digits count as "readable".
READABLE_ACCURACY = 0.95

#: The quality number the PCA baseline writes into its v1-style header (the learned codec
#: uses 1..7; 15 is the largest the header allows and is never a learned quality).
PCA_HEADER_QUALITY = 15


def avif_supported() -> bool:
    """True when this Pillow can write and read AVIF files (Pillow 11.3+ built with libavif)."""
    from PIL import features

    return bool(features.check("avif"))


def _check_u8_image(image) -> np.ndarray:
    """``image`` as a 2-D ``uint8`` array, or :class:`CAEError`."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2 or image.dtype != np.uint8:
        raise CAEError(f"Expected one 2-D uint8 image, got shape {image.shape} dtype {image.dtype}.")
    return image


def classic_encode(image_u8_2d: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
    """One grayscale image as a complete file in a classic format (Pillow): the file's bytes.

    ``image_u8_2d``: ``uint8`` ``(H, W)``. ``fmt``: a key of :data:`CLASSIC_FORMATS`.
    ``quality`` is required for the lossy formats (``"webp"``, ``"jpeg"``, ``"avif"``) and
    ignored by the lossless ones. The bytes are the whole file, headers included.
    """
    import io

    from PIL import Image

    img = Image.fromarray(_check_u8_image(image_u8_2d), mode="L")
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


def _u8_batch(images) -> np.ndarray:
    """uint8 ``(N, 28, 28)`` or float ``(N, 28, 28[, 1])`` in [0, 1] -> uint8 ``(N, 28, 28)``."""
    images = np.asarray(images)
    return images if images.dtype == np.uint8 and images.ndim == 3 else to_uint8_images(images)


def rd_result(codec: str, setting, sizes, originals_u8: np.ndarray, decoded_u8: np.ndarray,
              classifier=None, labels=None, **extra) -> dict:
    """One point of a rate-distortion curve, in the form every ``measure_*`` function returns.

    ``sizes``: whole-file bytes per image ``(N,)``. Returns a dict with ``codec``,
    ``setting``, ``images``, ``mean_bytes``, ``bpp`` (bits per pixel = bytes x 8 / 784),
    ``mse``, ``psnr_db``, ``ssim``, ``background_level`` (mean decoded value, 0..255, of the
    pixels that are exactly 0 in the original: faint haze that PSNR barely sees and SSIM
    punishes), ``accuracy`` (the classifier's, on the decoded digits; None without a
    classifier), ``sizes`` (the array) and ``decoded`` (uint8 ``(N, 28, 28)``), plus
    ``extra``. :func:`rd_summary` strips the two arrays.
    """
    sizes = np.asarray(sizes, np.int64)
    decoded_u8 = _u8_batch(decoded_u8)
    mean_bytes = float(sizes.mean())
    black = np.asarray(originals_u8) == 0
    row = {"codec": codec, "setting": setting, "images": int(len(sizes)), "mean_bytes": mean_bytes,
           "bpp": mean_bytes * 8 / PIXELS_PER_DIGIT, **rd_metrics(originals_u8, decoded_u8),
           "background_level": float(decoded_u8[black].mean()) if black.any() else 0.0,
           "accuracy": (classifier_accuracy(classifier, decoded_u8, labels)
                        if classifier is not None else None)}
    return {**row, **extra, "sizes": sizes, "decoded": decoded_u8}


def rd_summary(result: dict) -> dict:
    """A :func:`rd_result` without its arrays (``sizes``, ``decoded``, ``kept``): JSON-ready."""
    return {k: v for k, v in result.items() if k not in ("sizes", "decoded", "kept")}


def measure_classic(images_u8: np.ndarray, fmt: str, quality: int | None = None,
                    classifier=None, labels=None) -> dict:
    """Encode and decode every image with a classic format; a :func:`rd_result` dict.

    ``images_u8``: ``uint8`` ``(N, 28, 28)``. Returns mean whole-file bytes, bpp, PSNR,
    SSIM (and classifier accuracy with ``classifier`` and ``labels``), the per-image sizes
    and the decoded images (``uint8`` ``(N, 28, 28)``).
    """
    images_u8 = _u8_batch(images_u8)
    files = [classic_encode(img, fmt, quality) for img in images_u8]
    decoded = np.stack([classic_decode(f) for f in files])
    return rd_result(fmt, quality, [len(f) for f in files], images_u8, decoded, classifier, labels)


def measure_learned(codec, images_u8: np.ndarray, classifier=None, labels=None) -> dict:
    """Real bytes through a :class:`LearnedCodec`: compress, decompress, measure.

    Besides the :func:`rd_result` fields it returns, per image on average, the header
    bytes (7 for 28x28), the range-coded ``payload_bytes``, the model's own estimate
    ``estimated_payload_bytes`` (``-sum log2 p`` of the symbols / 8) and
    ``gap_bytes`` = payload - estimate: what the range coder adds (its 32-bit words).
    """
    images_u8 = _u8_batch(images_u8)
    x = to_float_images(images_u8)
    files = codec.compress(x)
    decoded = codec.decompress(files)
    payload = np.array([len(unpack_v1(f)[4]) for f in files], np.float64)
    sizes = np.array([len(f) for f in files])
    estimate = codec.estimate_bits(codec.quantize(encode_digits(codec.encoder, x))) / 8.0
    return rd_result("cae", codec.quality, sizes, images_u8, decoded, classifier, labels,
                     header_bytes=float((sizes - payload).mean()), payload_bytes=float(payload.mean()),
                     estimated_payload_bytes=float(estimate.mean()),
                     gap_bytes=float((payload - estimate).mean()))


def measure_float_latent(images_u8: np.ndarray, model_path=None, classifier=None, labels=None) -> dict:
    """The 2018-style float latent as a ``.cae`` v0 file (notebook 04): 524 bytes per digit.

    Uses the shipped improved CAE (or ``model_path``): 128 float32 numbers (512 bytes of
    payload) plus 12 bytes of header and CRC, decoded back through the file.
    """
    images_u8 = _u8_batch(images_u8)
    _, encoder, decoder, _ = load_model(model_path)
    fp = model_fingerprint(encoder)
    files = [pack_float_latent(z, fp) for z in encode_digits(encoder, to_float_images(images_u8))]
    size = int(np.prod(decoder.input_shape[1:]))
    latents = np.stack([unpack_float_latent(f, fp, size) for f in files])
    return rd_result("float_latent_v0", "float32", [len(f) for f in files], images_u8,
                     decode_latents(decoder, latents), classifier, labels)


# ---- the PCA baseline: a linear transform coder with the same entropy coder and header ----

def fit_pca(x_train: np.ndarray, max_components: int = PIXELS_PER_DIGIT) -> dict:
    """Principal components of training digits (NumPy SVD of the centred data's scatter matrix).

    ``x_train``: ``(N, 28, 28[, 1])`` float in [0, 1] or uint8. Returns float64 arrays
    ``mean`` ``(784,)``, ``components`` ``(k, 784)`` (orthonormal rows, strongest first),
    ``variances`` ``(k,)`` on the [0, 1] pixel scale, and ``train_coefficients``: the
    training digits' coefficients ``(N, k)`` as float32, which :class:`PCACodec` turns
    into its code tables.
    """
    x = np.asarray(x_train)
    x = (x.astype(np.float64) / 255.0) if x.dtype == np.uint8 else x.astype(np.float64)
    x = x.reshape(len(x), -1)
    mean = x.mean(axis=0)
    centred = x - mean
    # The SVD of the 784 x 784 scatter matrix gives the same components (its singular
    # values are the squared singular values of the data) much faster than an SVD of the
    # N x 784 data itself.
    _, s, vt = np.linalg.svd(centred.T @ centred)
    k = min(int(max_components), vt.shape[0])
    return {"mean": mean, "components": vt[:k], "variances": s[:k] / max(len(x) - 1, 1),
            "train_coefficients": (centred @ vt[:k].T).astype(np.float32)}


class PCACodec:
    """A classic transform coder to compare against: PCA, uniform quantizer, range coder.

    * transform: the first ``k`` principal components of the training digits
      (:func:`fit_pca`); coefficients ``c = (x - mean) @ basis.T`` on the [0, 1] scale;
    * quantize: ``round(c / step)``, one ``step`` for every component (so weak components
      round to 0 and cost almost nothing: classic reverse water-filling);
    * entropy code: one categorical table per component from the training digits'
      histogram of those integers (add-one/Laplace smoothing over the training range;
      values beyond it are clamped to the end symbols, i.e. the tails are folded into
      them), coded with constriction's range coder like :class:`LearnedCodec`'s latents.
      Components that are 0 on every training digit carry no information and are skipped;
    * file: the same 7-byte v1 header (:func:`pack_v1`) with quality
      :data:`PCA_HEADER_QUALITY` and the first byte of a SHA-256 fingerprint of the basis,
      mean and step.

    Its bytes are therefore directly comparable with the learned codec's: what differs is
    the transform (linear and fixed) and the probability model (counted histograms instead
    of a prior learned jointly with a non-linear transform).
    """

    quality = PCA_HEADER_QUALITY

    def __init__(self, pca: dict, k: int, step: float, max_symbols: int = 1023):
        import constriction
        import hashlib

        self.k, self.step = int(k), float(step)
        if not (1 <= self.k <= len(pca["components"]) and self.step > 0):
            raise CAEError(f"PCA needs 1 <= k <= {len(pca['components'])} and step > 0.")
        self.mean = np.asarray(pca["mean"], np.float64)
        self.basis = np.asarray(pca["components"][:self.k], np.float64)
        half = max_symbols // 2
        raw = np.clip(np.round(pca["train_coefficients"][:, :self.k] / self.step), -half, half)
        raw = raw.astype(np.int32)
        self.offsets = raw.min(axis=0).astype(np.int64)
        self.sizes = raw.max(axis=0).astype(np.int64) - self.offsets + 1
        self.coded = np.flatnonzero(self.sizes > 1)  # a 1-symbol component carries no bits
        self.pmfs = [np.bincount(raw[:, j] - self.offsets[j], minlength=self.sizes[j]) + 1.0
                     for j in range(self.k)]
        self.pmfs = [c / c.sum() for c in self.pmfs]
        # Components are coded in groups of similar alphabet size (rounded up to a power of
        # two): one table row per component, zero-padded to the group's size, and one
        # constriction call per group. (Padding every row to the longest alphabet would
        # make coding ~10x slower: constriction reads every row for every symbol.)
        padded = 2 ** np.ceil(np.log2(np.maximum(self.sizes[self.coded], 2))).astype(np.int64)
        self._groups = []
        for width in np.unique(padded):
            members = self.coded[padded == width]
            table = np.zeros((len(members), int(width)), np.float64)
            for row, j in enumerate(members):
                table[row, :self.sizes[j]] = self.pmfs[j]
            self._groups.append((members, table))
        self._family = constriction.stream.model.Categorical(perfect=False)
        h = hashlib.sha256()
        for arr in (self.mean, self.basis, np.array([self.step])):
            h.update(np.ascontiguousarray(arr, "<f8").tobytes())
        self.fingerprint = h.digest()[:4]

    def quantize(self, images) -> np.ndarray:
        """Images (uint8 or float in [0, 1]) -> symbols ``(N, k)`` int32, component j in ``[0, size_j)``."""
        x = np.asarray(images)
        x = (x.astype(np.float64) / 255.0) if x.dtype == np.uint8 else x.astype(np.float64)
        coef = (x.reshape(len(x), -1) - self.mean) @ self.basis.T
        return np.clip(np.round(coef / self.step) - self.offsets, 0, self.sizes - 1).astype(np.int32)

    def reconstruct(self, symbols: np.ndarray) -> np.ndarray:
        """Symbols ``(N, k)`` -> digits ``(N, 28, 28, 1)`` float32 in [0, 1]."""
        coef = (np.asarray(symbols, np.float64) + self.offsets) * self.step
        return np.clip(coef @ self.basis + self.mean, 0, 1).reshape(-1, 28, 28, 1).astype(np.float32)

    def estimate_bits(self, symbols: np.ndarray) -> np.ndarray:
        """``-sum log2 p(symbol)`` per image under the tables, in bits, ``(N,)``."""
        symbols = np.asarray(symbols)
        bits = np.zeros(len(symbols))
        for j in self.coded:
            bits -= np.log2(self.pmfs[j][symbols[:, j]])
        return bits

    def compress(self, images) -> list[bytes]:
        """Digits -> one complete v1-style file (bytes) each: 7-byte header + range-coded payload."""
        import constriction

        files = []
        for s in self.quantize(images):
            coder = constriction.stream.queue.RangeEncoder()
            for members, table in self._groups:
                coder.encode(np.ascontiguousarray(s[members]), self._family, table)
            files.append(pack_v1(self.quality, self.fingerprint, 28, 28,
                                 _words_to_bytes(coder.get_compressed())))
        return files

    def decompress(self, files) -> np.ndarray:
        """Files from :meth:`compress` -> digits ``(N, 28, 28, 1)`` float32 in [0, 1]."""
        import constriction

        symbols = np.zeros((len(files), self.k), np.int32)
        for i, data in enumerate(files):
            payload = unpack_v1(data, self.fingerprint, expect_quality=self.quality)[4]
            decoder = constriction.stream.queue.RangeDecoder(_bytes_to_words(payload))
            for members, table in self._groups:
                symbols[i, members] = decoder.decode(self._family, table)
        return self.reconstruct(symbols)


def measure_pca(codec: PCACodec, images_u8: np.ndarray, classifier=None, labels=None) -> dict:
    """Real bytes through a :class:`PCACodec`; a :func:`rd_result` dict (setting ``"k=.., step=.."``)."""
    images_u8 = _u8_batch(images_u8)
    files = codec.compress(images_u8)
    estimate = codec.estimate_bits(codec.quantize(images_u8)) / 8.0
    return rd_result("pca", f"k={codec.k}, step={codec.step:g}", [len(f) for f in files], images_u8,
                     codec.decompress(files), classifier, labels, k=codec.k, step=codec.step,
                     estimated_payload_bytes=float(estimate.mean()))


# ---- a digit classifier: are the decoded digits still readable? ----

def build_digit_classifier():
    """A small CNN for 28x28 digits: 2 x (Conv 3x3 + ReLU + max-pool 2), Dense 128 + ReLU,
    dropout 0.3, Dense 10 + softmax.

    Input ``(N, 28, 28, 1)`` float in [0, 1]; output ``(N, 10)`` class probabilities.
    About 225,000 parameters (most in the Dense 128 layer; the convolutions cost the time).
    """
    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(inp)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="hidden")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    out = layers.Dense(10, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out, name="digit_classifier")


def train_digit_classifier(x_train: np.ndarray, y_train: np.ndarray, epochs: int = 3,
                           batch_size: int = 128, seed: int = 42):
    """Train :func:`build_digit_classifier` on clean digits (Adam 1e-3, seeded); returns the model.

    ``x_train``: ``(N, 28, 28, 1)`` float in [0, 1] (or uint8 ``(N, 28, 28)``); ``y_train``:
    labels 0..9. On all 60,000 training digits, 3 epochs take one to two minutes on 2 CPU
    cores and give about 99 % on the clean test digits (quick mode's 2,000 digits need about
    12 epochs for about 96 %).
    """
    epochs = _check_int("epochs", epochs, *EPOCH_RANGE)
    x = to_float_images(x_train) if np.asarray(x_train).dtype == np.uint8 else np.asarray(x_train, np.float32)
    set_seed(seed)
    model = build_digit_classifier()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, np.asarray(y_train, np.int64), batch_size=batch_size, epochs=epochs, shuffle=True,
              verbose=0)
    return model


def classifier_accuracy(model, images, labels) -> float:
    """Share of ``images`` (uint8 ``(N, 28, 28)`` or float ``(N, 28, 28, 1)`` in [0, 1]) that
    ``model`` labels correctly, in [0, 1]."""
    images = np.asarray(images)
    x = to_float_images(images) if images.dtype == np.uint8 else images.astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    probs = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(probs, axis=1) == np.asarray(labels)))


# ---- comparing curves: Pareto front, matched sizes, Bjontegaard deltas ----

def pareto_front(rates, quality) -> np.ndarray:
    """Indices of the points no other point beats (fewer or equal bytes AND higher quality),
    sorted by rate: the best a codec can do at each size. ``rates``, ``quality``: ``(P,)``."""
    rates, quality = np.asarray(rates, np.float64), np.asarray(quality, np.float64)
    order = np.lexsort((-quality, rates))
    keep, best = [], -np.inf
    for i in order:
        if quality[i] > best:
            keep.append(i)
            best = quality[i]
    return np.array(keep, dtype=np.int64)


def psnr_at_bytes(rates, psnrs, target_bytes):
    """PSNR a codec reaches at ``target_bytes``, interpolated linearly in log(bytes).

    ``rates``/``psnrs``: the codec's measured points (mean bytes, dB), any order; only the
    Pareto front is used. ``target_bytes``: a number or a sequence. Returns a float (or a
    list) with ``None`` where the target lies outside the measured sizes: no
    extrapolation, a codec that cannot make a file that small (or large) has no value.
    """
    idx = pareto_front(rates, psnrs)
    r = np.log(np.asarray(rates, np.float64)[idx])
    p = np.asarray(psnrs, np.float64)[idx]

    def one(t):
        t = np.log(float(t))
        if len(r) == 0 or t < r[0] - 1e-12 or t > r[-1] + 1e-12:
            return None
        return float(np.interp(t, r, p))

    return [one(t) for t in target_bytes] if np.ndim(target_bytes) else one(target_bytes)


def bytes_at_psnr(rates, psnrs, target_psnr):
    """Mean bytes a codec needs for ``target_psnr`` dB (the inverse of :func:`psnr_at_bytes`,
    interpolated in log(bytes) along the Pareto front); ``None`` outside the measured range."""
    idx = pareto_front(rates, psnrs)
    r = np.log(np.asarray(rates, np.float64)[idx])
    p = np.asarray(psnrs, np.float64)[idx]
    if len(p) == 0 or not p[0] - 1e-12 <= target_psnr <= p[-1] + 1e-12:
        return None
    return float(np.exp(np.interp(target_psnr, p, r)))


def _bd_fit(x, y, method: str):
    """A curve y(x) through sorted points: a least-squares cubic (``"cubic"``, the original
    Bjontegaard fit) or a monotone piecewise cubic (``"pchip"``); returns its integral F(a, b)."""
    from scipy.interpolate import PchipInterpolator

    if method == "pchip":
        f = PchipInterpolator(x, y)
        return lambda a, b: float(f.integrate(a, b))
    poly = np.polyint(np.polyfit(x, y, min(3, len(x) - 1)))
    return lambda a, b: float(np.polyval(poly, b) - np.polyval(poly, a))


def bd_compare(rate_a, psnr_a, rate_b, psnr_b, method: str = "cubic") -> dict:
    """Bjontegaard deltas of codec A against codec B (VCEG-M33, 2001), with the details.

    Each codec is given by its measured points (mean bytes, PSNR in dB); only finite points
    are used, sorted, and each curve needs at least 2 of them (4 for a true cubic).

    * **BD-rate**: fit log(rate) as a function of PSNR for each codec (a cubic polynomial,
      or ``method="pchip"``), integrate both over the PSNR interval where the two curves
      overlap, and turn the mean difference into a percentage:
      ``(exp(mean(log r_A - log r_B)) - 1) * 100``. Negative = A needs that many percent
      fewer bytes than B for the same PSNR, on average over the interval.
    * **BD-PSNR**: the same with the axes swapped (PSNR as a function of log rate, over the
      overlapping log-rate interval): mean dB that A gains over B at equal bytes.

    Returns ``{"bd_rate_percent", "bd_psnr_db", "psnr_overlap_db": (lo, hi),
    "bytes_overlap": (lo, hi), "method", "reason"}``; a delta is ``None`` when the curves do
    not overlap on that axis (or have too few points), and ``reason`` says why.
    """
    def clean(r, p):
        r, p = np.asarray(r, np.float64), np.asarray(p, np.float64)
        ok = np.isfinite(r) & np.isfinite(p) & (r > 0)
        order = np.argsort(p[ok])
        return np.log(r[ok][order]), p[ok][order]

    (lra, pa), (lrb, pb) = clean(rate_a, psnr_a), clean(rate_b, psnr_b)
    out = {"bd_rate_percent": None, "bd_psnr_db": None, "psnr_overlap_db": None,
           "bytes_overlap": None, "method": method, "reason": None}
    if min(len(pa), len(pb)) < 2:
        out["reason"] = "each curve needs at least 2 finite points"
        return out
    lo, hi = max(pa[0], pb[0]), min(pa[-1], pb[-1])
    if hi > lo:
        fa, fb = _bd_fit(pa, lra, method), _bd_fit(pb, lrb, method)
        out["bd_rate_percent"] = float((np.exp((fa(lo, hi) - fb(lo, hi)) / (hi - lo)) - 1) * 100)
        out["psnr_overlap_db"] = (float(lo), float(hi))
    else:
        out["reason"] = (f"the PSNR ranges do not overlap (A: {pa[0]:.2f}..{pa[-1]:.2f} dB, "
                         f"B: {pb[0]:.2f}..{pb[-1]:.2f} dB)")
    ia, ib = np.argsort(lra), np.argsort(lrb)
    rlo, rhi = max(lra.min(), lrb.min()), min(lra.max(), lrb.max())
    if rhi > rlo:
        ga, gb = _bd_fit(lra[ia], pa[ia], method), _bd_fit(lrb[ib], pb[ib], method)
        out["bd_psnr_db"] = float((ga(rlo, rhi) - gb(rlo, rhi)) / (rhi - rlo))
        out["bytes_overlap"] = (float(np.exp(rlo)), float(np.exp(rhi)))
    else:
        out["reason"] = ((out["reason"] + "; ") if out["reason"] else "") + (
            f"the byte ranges do not overlap (A: {np.exp(lra.min()):.0f}..{np.exp(lra.max()):.0f} B, "
            f"B: {np.exp(lrb.min()):.0f}..{np.exp(lrb.max()):.0f} B)")
    return out


def bd_rate(rate_a, psnr_a, rate_b, psnr_b, method: str = "cubic") -> float | None:
    """Bjontegaard delta rate of A against B in percent (negative: A is smaller at equal
    PSNR); ``None`` if the PSNR ranges do not overlap. See :func:`bd_compare` for the method
    and the reason when there is no value."""
    return bd_compare(rate_a, psnr_a, rate_b, psnr_b, method)["bd_rate_percent"]


def bd_psnr(rate_a, psnr_a, rate_b, psnr_b, method: str = "cubic") -> float | None:
    """Bjontegaard delta PSNR of A against B in dB (positive: A is better at equal bytes);
    ``None`` if the byte ranges do not overlap. See :func:`bd_compare`."""
    return bd_compare(rate_a, psnr_a, rate_b, psnr_b, method)["bd_psnr_db"]


# ---- the whole comparison, shared by notebook 05 and benchmarks/rate_distortion.py ----

def available_qualities() -> list[int]:
    """The learned-codec qualities whose model, card and tables are all in ``models/``."""
    found = []
    for q in sorted(QUALITY_LAMBDAS):
        p = rd_model_path(q)
        if p.is_file() and p.with_suffix(".npz").is_file():
            found.append(q)
    return found


def rate_distortion_rows(images_u8: np.ndarray, labels=None, classifier=None, *, qualities=None,
                         pca_codecs=(), jpeg_qualities=JPEG_QUALITIES, webp_qualities=WEBP_QUALITIES,
                         avif_qualities=AVIF_QUALITIES, avif_images: int | None = 500, keep=(),
                         progress=None) -> list[dict]:
    """Measure every codec on the same digits: the learned codec (each quality), the float
    latent (v0), PNG, WebP lossless, JPEG, WebP, AVIF sweeps and the given PCA codecs.

    ``images_u8``: uint8 ``(N, 28, 28)``; ``labels`` and ``classifier`` add accuracy.
    AVIF encodes slowly (about 40 ms a digit), so it runs on the first ``avif_images``
    digits only (None: all); its rows say how many. ``keep``: indices of digits whose
    decoded images are kept in each row as ``"kept"`` (uint8 ``(len(keep), 28, 28)``);
    the full decoded arrays are dropped to save memory, the per-image ``sizes`` stay.
    ``progress``: called with each finished row (e.g. to print it). Returns the rows
    (:func:`rd_result` dicts) in a fixed order.
    """
    import time

    images_u8 = _u8_batch(images_u8)
    qualities = available_qualities() if qualities is None else list(qualities)
    jobs = [(f"cae q{q}", lambda q=q: measure_learned(load_codec(q), images_u8, classifier, labels))
            for q in qualities]
    jobs.append(("float latent", lambda: measure_float_latent(images_u8, None, classifier, labels)))
    jobs += [(fmt, lambda fmt=fmt: measure_classic(images_u8, fmt, None, classifier, labels))
             for fmt in ("png", "webp_lossless")]
    for fmt, sweep in (("jpeg", jpeg_qualities), ("webp", webp_qualities)):
        jobs += [(f"{fmt} q{q}", lambda fmt=fmt, q=q: measure_classic(images_u8, fmt, q, classifier, labels))
                 for q in sweep]
    if avif_qualities and avif_supported():
        n = len(images_u8) if avif_images is None else min(int(avif_images), len(images_u8))
        sub_labels = None if labels is None else np.asarray(labels)[:n]
        jobs += [(f"avif q{q}", lambda q=q, n=n, sl=sub_labels:
                  measure_classic(images_u8[:n], "avif", q, classifier, sl)) for q in avif_qualities]
    jobs += [(f"pca k{c.k}", lambda c=c: measure_pca(c, images_u8, classifier, labels)) for c in pca_codecs]
    keep = np.asarray(keep, np.int64)
    rows = []
    for _, job in jobs:
        t0 = time.perf_counter()
        row = job()
        row["seconds"] = time.perf_counter() - t0
        row["kept"] = row["decoded"][keep[keep < len(row["decoded"])]]
        del row["decoded"]
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def rd_curve(rows, codec: str, metric: str = "psnr_db") -> tuple[np.ndarray, np.ndarray]:
    """``(mean bytes, metric)`` arrays of one codec's rows, sorted by bytes."""
    pts = sorted((r["mean_bytes"], r[metric]) for r in rows if r["codec"] == codec)
    return np.array([p[0] for p in pts], np.float64), np.array([p[1] for p in pts], np.float64)


def pareto_rows(rows, codec: str, metric: str = "psnr_db") -> list[dict]:
    """One codec's rows on its Pareto front (no other setting is smaller AND better)."""
    mine = [r for r in rows if r["codec"] == codec]
    idx = pareto_front([r["mean_bytes"] for r in mine], [r[metric] for r in mine])
    return [mine[i] for i in idx]


def matched_size_table(rows, sizes=MATCHED_SIZES, a: str = "cae", b: str = "webp") -> list[dict]:
    """PSNR of codec ``a`` and codec ``b`` at each file size in ``sizes`` (bytes).

    Each codec's PSNR at a size is interpolated along its measured points
    (:func:`psnr_at_bytes`; for the learned codec a point between two qualities stands for
    a quality level that would have to be trained). Each row: ``bytes``, ``psnr_a``,
    ``psnr_b`` (None if the codec cannot make files that small or large), ``winner``
    (``a``, ``b`` or None) and ``note``. When only one codec reaches the size, it wins
    only if its PSNR also beats the other codec's nearest file (a codec that cannot go
    that small loses by default at that size; the note says so).
    """
    ra, pa = rd_curve(rows, a)
    rb, pb = rd_curve(rows, b)
    out = []
    for s in sizes:
        va, vb = psnr_at_bytes(ra, pa, s), psnr_at_bytes(rb, pb, s)
        note, winner = "", None
        if va is not None and vb is not None:
            winner = a if va > vb else b
        elif va is None and vb is None:
            note = f"neither {a} nor {b} makes files of this size"
        else:
            have, miss = (a, b) if vb is None else (b, a)
            r_miss, p_miss = (rb, pb) if vb is None else (ra, pa)
            v_have = va if vb is None else vb
            small = s < r_miss.min()
            edge_psnr = float(p_miss[np.argmin(r_miss)] if small else p_miss.max())
            edge_bytes = float(r_miss.min() if small else r_miss[np.argmax(p_miss)])
            if small:
                winner = have
                note = (f"{miss} cannot go this small (smallest file {edge_bytes:.0f} B, "
                        f"{edge_psnr:.1f} dB)")
            else:
                winner = miss if edge_psnr > v_have else have
                note = (f"{miss} has no setting this large (its best: {edge_bytes:.0f} B, "
                        f"{edge_psnr:.1f} dB)")
        out.append({"bytes": s, f"psnr_{a}": va, f"psnr_{b}": vb,
                    "difference_db": (va - vb) if va is not None and vb is not None else None,
                    "winner": winner, "note": note})
    return out


def codec_throughput(codec, images: np.ndarray, warmup: int = 64) -> dict:
    """Wall time to compress and then decompress ``images`` in one batch through ``codec``.

    ``images``: ``(N, 28, 28, 1)`` float in [0, 1] (or uint8). Includes the neural networks
    and the range coding of every file, excludes model loading; a ``warmup`` batch runs
    first so that TensorFlow's one-off graph tracing is not counted. Returns
    ``{"images", "encode_seconds", "decode_seconds", "seconds", "images_per_second"}``.
    """
    import time

    x = np.asarray(images)
    x = to_float_images(x) if x.dtype == np.uint8 else x.astype(np.float32)
    if warmup:
        codec.decompress(codec.compress(x[:warmup]))
    t0 = time.perf_counter()
    files = codec.compress(x)
    t1 = time.perf_counter()
    codec.decompress(files)
    t2 = time.perf_counter()
    return {"images": int(len(x)), "encode_seconds": t1 - t0, "decode_seconds": t2 - t1,
            "seconds": t2 - t0, "images_per_second": len(x) / (t2 - t0)}


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
        if c == "avif" and mine[0]["images"] < max(r["images"] for r in rows):
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


def smallest_row(rows, codec: str, min_accuracy: float | None = None) -> dict | None:
    """The row of ``codec`` with the fewest mean bytes, optionally among those whose classifier
    accuracy is at least ``min_accuracy``; None if there is none."""
    mine = [r for r in rows if r["codec"] == codec
            and (min_accuracy is None or (r.get("accuracy") is not None and r["accuracy"] >= min_accuracy))]
    return min(mine, key=lambda r: r["mean_bytes"]) if mine else None


def bd_table(rows, a: str = "cae", against=("webp", "jpeg", "pca", "avif")) -> dict:
    """Bjontegaard deltas of codec ``a`` against each codec in ``against`` (those present).

    Every curve is first reduced to its Pareto front (PSNR against mean bytes). Returns
    ``{other: bd_compare(...) plus "pchip": the same with a monotone piecewise-cubic fit}``;
    the cubic is the standard headline, the piecewise fit a check on it.
    """
    def front(c):
        pts = pareto_rows([r for r in rows if np.isfinite(r["psnr_db"])], c)
        return [r["mean_bytes"] for r in pts], [r["psnr_db"] for r in pts]

    ra, pa = front(a)
    out = {}
    for b in against:
        if not any(r["codec"] == b for r in rows):
            continue
        rb, pb = front(b)
        res = bd_compare(ra, pa, rb, pb, "cubic")
        res["pchip"] = {k: bd_compare(ra, pa, rb, pb, "pchip")[k] for k in ("bd_rate_percent", "bd_psnr_db")}
        out[b] = res
    return out


def rd_bars(rows, bd: dict, matched: list[dict], throughput: dict | None = None,
            full_test_images: int = 10_000) -> list[dict]:
    """Check the learned codec against the course issue's four bars, from measured numbers.

    1. at every size in ``matched`` (:func:`matched_size_table` against WebP) the CAE wins;
    2. BD-rate against WebP <= -30 % and against JPEG <= -70 % (from ``bd``, :func:`bd_table`);
    3. readable digits (classifier accuracy >= :data:`READABLE_ACCURACY`) at fewer mean
       bytes than WebP's smallest file;
    4. encode + decode of ``full_test_images`` digits in <= 30 s at every quality
       (``throughput``: quality -> :func:`codec_throughput`; measured on fewer images,
       the time is scaled up and marked as a projection).

    Returns one dict per bar: ``bar`` (text), ``met`` (True/False), ``evidence`` (text).
    """
    bars = []
    losses = [m for m in matched if m["winner"] != "cae"]
    bars.append({"bar": "CAE PSNR beats WebP at every matched size "
                        f"({matched[0]['bytes']}-{matched[-1]['bytes']} B)" if matched else "matched sizes",
                 "met": bool(matched) and not losses,
                 "evidence": ("CAE wins at all sizes" if not losses else "CAE loses or ties at "
                              + ", ".join(f"{m['bytes']} B" for m in losses))})
    for other, limit in (("webp", -30.0), ("jpeg", -70.0)):
        res = bd.get(other, {})
        value = res.get("bd_rate_percent")
        bars.append({"bar": f"BD-rate vs {other.upper()} <= {limit:.0f} %",
                     "met": value is not None and value <= limit,
                     "evidence": (f"{value:+.1f} % over {res['psnr_overlap_db'][0]:.1f}-"
                                  f"{res['psnr_overlap_db'][1]:.1f} dB" if value is not None
                                  else f"no value: {res.get('reason', 'not measured')}")})
    readable, webp_min = smallest_row(rows, "cae", READABLE_ACCURACY), smallest_row(rows, "webp")
    if readable is None or webp_min is None:
        bars.append({"bar": "readable digits below WebP's smallest file", "met": False,
                     "evidence": "no CAE quality reaches the accuracy" if readable is None
                                 else "WebP not measured"})
    else:
        bars.append({"bar": f"readable digits (accuracy >= {READABLE_ACCURACY:.0%}) at fewer bytes "
                            "than WebP's smallest file",
                     "met": readable["mean_bytes"] < webp_min["mean_bytes"],
                     "evidence": (f"CAE q{readable['setting']}: {readable['mean_bytes']:.1f} B at "
                                  f"{readable['accuracy']:.1%}; WebP q{webp_min['setting']}: "
                                  f"{webp_min['mean_bytes']:.1f} B at {webp_min['accuracy']:.1%}")})
    if throughput:
        worst_q = max(throughput, key=lambda q: throughput[q]["seconds"] / throughput[q]["images"])
        t = throughput[worst_q]
        projected = t["seconds"] * full_test_images / t["images"]
        how = ("measured" if t["images"] == full_test_images
               else f"projected from {t['images']} digits")
        bars.append({"bar": f"encode + decode of {full_test_images:,} digits <= 30 s",
                     "met": projected <= 30.0,
                     "evidence": f"slowest quality q{worst_q}: {projected:.1f} s ({how})"})
    return bars


def rd_table_text(rows) -> str:
    """The measured rows as a plain-text table (one line per codec setting)."""
    head = (f"{'codec':<16}{'setting':>13}{'digits':>7}{'bytes':>8}{'bpp':>6}{'PSNR dB':>9}"
            f"{'SSIM':>7}{'acc %':>7}{'est. payload':>13}{'gap B':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        est = r.get("estimated_payload_bytes")
        gap = r.get("gap_bytes")
        lines.append(
            f"{r['codec']:<16}{str(r['setting']):>13}{r['images']:>7}{r['mean_bytes']:>8.1f}"
            f"{r['bpp']:>6.2f}{r['psnr_db']:>9.2f}{r['ssim']:>7.3f}"
            f"{(100 * r['accuracy']) if r.get('accuracy') is not None else float('nan'):>7.1f}"
            f"{est if est is not None else float('nan'):>13.1f}{gap if gap is not None else float('nan'):>7.1f}")
    return "\n".join(lines).replace(" nan", "   -")


# ---- looking inside: where the bits go, the v1 header, the classic formats' overhead ----

def symbol_bits(codec, digits: np.ndarray) -> np.ndarray:
    """Bits each latent value of each digit costs under ``codec``'s prior: ``-log2 p(symbol)``.

    ``digits``: ``(N, 28, 28, 1)`` float in [0, 1] (or uint8). Returns float64
    ``(N, 7, 7, C)``; summed over everything but N it equals :meth:`LearnedCodec.estimate_bits`.
    """
    x = np.asarray(digits)
    x = to_float_images(x) if x.dtype == np.uint8 else x.astype(np.float32)
    symbols = codec.quantize(encode_digits(codec.encoder, x))
    bits = np.zeros(symbols.shape, np.float64)
    for c, lg in enumerate(codec._log2):
        bits[..., c] = -lg[symbols[..., c]]
    return bits


def cae_v1_fields(data: bytes) -> list[tuple[int, int, str, bytes]]:
    """Split a ``.cae`` v1 file into its fields (checked with :func:`unpack_v1` first).

    Returns ``(offset, size, name, field bytes)`` for the magic/version byte, quality,
    model byte, height and width varints, CRC-16 and the payload (section 11's layout).
    """
    data = bytes(data)
    unpack_v1(data)
    _, pos_h = _read_varint(data, 3, "the .cae data")
    _, pos_w = _read_varint(data, pos_h, "the .cae data")
    return [(0, 1, "magic 0xC + version 1", data[0:1]), (1, 1, "quality", data[1:2]),
            (2, 1, "model byte (fingerprint[0])", data[2:3]),
            (3, pos_h - 3, "height (varint)", data[3:pos_h]),
            (pos_h, pos_w - pos_h, "width (varint)", data[pos_h:pos_w]),
            (pos_w, 2, "CRC-16 of header and payload", data[pos_w:pos_w + 2]),
            (pos_w + 2, len(data) - pos_w - 2, "range-coded payload", data[pos_w + 2:])]


def jpeg_header_bytes(data: bytes) -> int:
    """Bytes of a JPEG file before its entropy-coded scan: every marker segment up to and
    including the start-of-scan header (quantization and Huffman tables, frame header...).
    The 2-byte end marker comes on top. :class:`CAEError` if ``data`` is not a baseline JPEG."""
    data = bytes(data)
    at = data.find(b"\xff\xda")
    if not data.startswith(b"\xff\xd8") or at < 0 or at + 4 > len(data):
        raise CAEError("Not a JPEG file with a start-of-scan marker.")
    return at + 2 + struct.unpack(">H", data[at + 2:at + 4])[0]


# --------------------------------------------------------------------------------------
# 14. Classroom codec app (ipywidgets; notebooks/app_codec.ipynb, `make app` with Voila)
# --------------------------------------------------------------------------------------
#
# One image in, four out: the original, the learned codec's reconstruction, and JPEG and
# WebP at a matched size (the largest classic file that is not bigger than the .cae file),
# each with its bytes, bits per pixel, PSNR and SSIM. Everything is computed by
# compare_at_matched_size; CodecApp only puts widgets around it, so the notebook stays two
# lines and tests/test_app.py can check the numbers without a browser.

#: Quality range searched for each classic format (Pillow's own ranges).
APP_CLASSIC_QUALITIES = {"jpeg": (1, 100), "webp": (0, 100), "avif": (0, 100)}

#: The app's picker: MNIST test digits (by index) and photos shipped inside scikit-image.
APP_MNIST_DIGITS = (0, 1, 2, 3, 4, 7)
APP_SAMPLE_PHOTOS = ("camera", "astronaut", "coffee", "coins")

#: Photos with a longer side than this are scaled down first (a phone picture stays quick).
APP_MAX_SIDE = 1024

#: Uploads above this size are refused before Pillow opens them.
APP_MAX_UPLOAD_BYTES = 30_000_000

#: Default digit quality: the middle of the shipped range (WebP fits under it, JPEG not).
APP_DEFAULT_DIGIT_QUALITY = 5

_APP_SAMPLES: dict = {}


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
    if len(data) > APP_MAX_UPLOAD_BYTES:
        raise CAEError(f"{name} is {len(data):,} bytes; the app takes images up to "
                       f"{APP_MAX_UPLOAD_BYTES:,} bytes.")
    with _pillow_load(io.BytesIO(data), name) as img:
        if img.width == 0 or img.height == 0:
            raise CAEError(f"{name} has no pixels (width or height 0).")
        gray = image_to_gray_array(img)
    return np.round(gray * 255.0).astype(np.uint8)


def app_sample_image(key: str) -> tuple[np.ndarray, str]:
    """A built-in picture of the app: ``"mnist:<test index>"`` or ``"photo:<skimage name>"``.

    Returns ``(uint8 (H, W), description)``. MNIST comes from :func:`load_mnist` (quick
    subset, so ``$CAE_MNIST_DIR`` or ``data/mnist`` is used as everywhere else); the photos
    are scikit-image's bundled samples, converted to gray (no download).
    """
    if key in _APP_SAMPLES:
        return _APP_SAMPLES[key]
    kind, _, name = key.partition(":")
    if kind == "mnist":
        index = int(name)
        (_, _), (x_test, y_test) = load_mnist(quick=True)
        if not 0 <= index < len(x_test):
            raise CAEError(f"There is no MNIST test digit #{index}.")
        image = to_uint8_images(x_test[index])
        sample = (image, f"MNIST test digit #{index} (a {int(y_test[index])})")
    elif kind == "photo" and name in APP_SAMPLE_PHOTOS:
        import skimage.data
        from PIL import Image

        rgb_or_gray = np.asarray(getattr(skimage.data, name)())
        img = Image.fromarray(rgb_or_gray)
        image = np.asarray(img.convert("L"), dtype=np.uint8)  # ITU-R 601 luma, as uploads
        sample = (image, f"the '{name}' photo (scikit-image, in gray)")
    else:
        raise CAEError(f"Unknown sample image {key!r}.")
    _APP_SAMPLES[key] = sample
    return sample


def app_digit(image_u8_2d: np.ndarray) -> tuple[np.ndarray, str]:
    """What the digit codec is given: ``(uint8 (28, 28), how it was made)``.

    A 28x28 image with a dark border is taken as an MNIST digit as it is; anything else
    goes through :func:`image_to_digit` (invert a light background, crop to the ink,
    longer side 20 px, centre in 28x28), as in notebook 04.
    """
    from PIL import Image

    image = _check_u8_image(image_u8_2d)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    if image.shape == (28, 28) and np.median(border) < 128:
        return image, "a 28x28 digit (white ink on black), used as it is"
    digit = image_to_digit(Image.fromarray(image, mode="L"))
    return (to_uint8_images(digit),
            f"the {image.shape[1]}x{image.shape[0]} image made MNIST-like (cu.image_to_digit: "
            "ink made white, cropped, longer side 20 px, centred in 28x28)")


def photo_mode_problem() -> str | None:
    """None when the app's photo mode can work, else the reason, in words for the app."""
    loader, lister = globals().get("load_photo_codec"), globals().get("photo_qualities")
    if not callable(loader) or not callable(lister):
        return ("Photo mode is not available yet: this version of cae_utils has no photo codec "
                "(cu.load_photo_codec).")
    try:
        qualities = list(lister())
    except Exception as exc:  # noqa: BLE001  (a broken models/ folder must not break the app)
        return f"Photo mode is not available: listing the photo models failed ({exc})."
    if not qualities:
        return "Photo mode is not available yet: no photo models are shipped in models/."
    return None


def app_qualities(mode: str) -> list[int]:
    """The qualities the app offers in ``mode`` ("digit" or "photo"); empty if none."""
    if mode == "digit":
        return available_qualities()
    if mode == "photo":
        return [] if photo_mode_problem() else sorted(int(q) for q in globals()["photo_qualities"]())
    raise CAEError(f"Unknown mode {mode!r}; choose 'digit' or 'photo'.")


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
    image = _check_u8_image(image)
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
    """The largest ``fmt`` file ("jpeg", "webp" or "avif") of the image that is not bigger than
    ``max_bytes``, found by binary search on the quality; None if even the lowest quality
    makes a bigger file.

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


def compare_at_matched_size(image_u8_2d: np.ndarray, quality: int, mode: str = "digit",
                            formats=("jpeg", "webp")) -> dict:
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
    image = _check_u8_image(image_u8_2d)
    if image.size == 0:
        raise CAEError("The image has no pixels.")
    notes = []
    if mode == "digit":
        original, note = app_digit(image)
        notes.append(note)
        codec = load_codec(quality)
        data = codec.compress(to_float_images(original[None]))[0]
        decoded = to_uint8_images(codec.decompress([data])[0])
    elif mode == "photo":
        problem = photo_mode_problem()
        if problem:
            raise CAEError(problem)
        original, note = _fit_photo(image)
        if note:
            notes.append(note)
        codec = globals()["load_photo_codec"](quality)
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


_APP_NAMES = {"cae": "CAE (.cae)", "jpeg": "JPEG", "webp": "WebP"}


def _png_data_uri(image_u8: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image_u8, np.uint8), mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt_db(psnr: float) -> str:
    return "lossless" if not np.isfinite(psnr) else f"{psnr:.2f} dB"


def app_result_html(result: dict) -> str:
    """The app's result panel as HTML: four images side by side and a table of numbers."""
    import html

    h, w = result["height"], result["width"]
    show_w = 168 if max(h, w) <= 64 else min(w, 270)  # digits enlarged 6x; four photos in a row
    pixelated = "image-rendering:pixelated;" if max(h, w) <= 64 else ""
    style = f"width:{show_w}px;{pixelated}border:1px solid #bbb;display:block"

    def card(key: str, title: str, body: str, image=None) -> str:
        img = f"<img src='{_png_data_uri(image)}' style='{style}' alt='{html.escape(title)}'>" if image is not None else (
            f"<div style='width:{show_w}px;height:{round(show_w * h / w)}px;border:1px dashed #bbb;"
            "display:flex;align-items:center;justify-content:center;color:#777;text-align:center;"
            "padding:6px;box-sizing:border-box'>no file this small</div>")
        return (f"<div class='cae-app-card' data-codec='{key}' style='margin:0 14px 8px 0'>"
                f"<div style='font-weight:bold'>{html.escape(title)}</div>{img}"
                f"<div style='font-size:90%;line-height:1.35'>{body}</div></div>")

    cae = result["cae"]
    cards = [card("original", f"original {w}x{h}",
                  f"raw 8-bit pixels: {result['raw_bytes']:,} bytes", result["original"])]
    rows = []
    for key, r in [("cae", cae), *result["classic"].items()]:
        name = _APP_NAMES.get(key, key)
        if r["fits"]:
            ssim = "" if r["ssim"] is None else f" &middot; SSIM {r['ssim']:.3f}"
            body = (f"<span class='cae-bytes'>{r['bytes']:,} bytes</span> &middot; {r['bpp']:.3f} bpp<br>"
                    f"PSNR <span class='cae-psnr'>{_fmt_db(r['psnr_db'])}</span>{ssim}<br>"
                    f"quality {r['quality']}")
            cards.append(card(key, name, body, r["decoded"]))
            ssim_cell = "" if r["ssim"] is None else f"{r['ssim']:.3f}"
            rows.append(f"<tr><td>{name}</td><td>{r['quality']}</td><td>{r['bytes']:,}</td>"
                        f"<td>{r['bpp']:.3f}</td><td>{_fmt_db(r['psnr_db'])}</td><td>{ssim_cell}</td></tr>")
        else:
            body = (f"<span class='cae-nofit'>{name} cannot go this small</span>: its smallest file "
                    f"is {r['smallest_bytes']:,} bytes (quality {r['smallest_quality']}), the .cae "
                    f"file {r['target_bytes']:,} bytes.")
            cards.append(card(key, name, body))
            rows.append(f"<tr><td>{name}</td><td colspan='5'>cannot go this small (smallest file "
                        f"{r['smallest_bytes']:,} bytes)</td></tr>")
    table = ("<style>.cae-app-table td,.cae-app-table th{padding:2px 10px;text-align:right}"
             ".cae-app-table td:first-child,.cae-app-table th:first-child{text-align:left}</style>"
             "<table class='cae-app-table' style='border-collapse:collapse;margin-top:4px'>"
             "<tr><th style='text-align:left'>codec</th><th>quality</th><th>bytes</th>"
             "<th>bits/pixel</th><th>PSNR</th><th>SSIM</th></tr>" + "".join(rows) + "</table>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result["notes"])
    explain = ("JPEG and WebP are shown at the <b>largest file that is not bigger than the .cae "
               "file</b> (binary search on their quality setting). PSNR and SSIM are measured "
               "against the original shown on the left.")
    return (f"<div class='cae-app-result'><div style='display:flex;flex-wrap:wrap'>{''.join(cards)}</div>"
            f"{table}<p style='margin:6px 0'>{explain}</p>"
            + (f"<ul style='margin:0'>{notes}</ul>" if notes else "") + "</div>")


def _app_error(message: str) -> str:
    import html

    return f"<span class='cae-app-error' style='color:#b00'><b>Cannot encode:</b> {html.escape(message)}</span>"


class CodecApp:
    """The classroom codec app: pick or upload an image, choose mode and quality, press
    **Encode**; see the reconstruction and JPEG/WebP at a matched size.

    ``app.widget`` is the box to display (JupyterLab, or Voila via ``make app``);
    :meth:`run` does what the Encode button does, so a headless run shows a result with
    the default settings. Problems (a file that is not an image, photo mode without photo
    models...) end up as a message in ``app.status``, never as a traceback.
    """

    UPLOAD = "upload"

    def __init__(self, mode: str = "digit", quality: int | None = None, source: str | None = None):
        import ipywidgets as w

        self.result: dict | None = None
        self.upload_name: str | None = None
        self.upload_image: np.ndarray | None = None
        self.upload_problem: str | None = None
        options = ([(f"MNIST test digit #{i}", f"mnist:{i}") for i in APP_MNIST_DIGITS]
                   + [(f"photo: {name} (scikit-image)", f"photo:{name}") for name in APP_SAMPLE_PHOTOS]
                   + [("your upload (Upload button)", self.UPLOAD)])
        self.source = w.Dropdown(options=options, value=source or options[0][1], description="image")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload image")
        self.mode = w.ToggleButtons(options=[("digit 28x28", "digit"), ("photo, any size", "photo")],
                                    value="digit", tooltips=["any image -> a 28x28 MNIST-like digit",
                                                             "a grayscale photo of any size"])
        self.mode_note = w.HTML()
        self.quality = w.SelectionSlider(options=[0], value=0, description="quality",
                                         continuous_update=False)
        self.button = w.Button(description="Encode", button_style="primary", icon="compress")
        self.status = w.HTML(value="Choose an image, the mode and the quality, then press <b>Encode</b>.")
        self.output = w.HTML()
        for control in (self.source, self.quality):
            control.style = {"description_width": "70px"}
        self.mode.style.button_width = "125px"
        # ToggleButtons puts its description above the buttons; a label of our own sits beside.
        mode_label = w.HTML("<div style='width:70px;text-align:right;padding-right:8px'>mode</div>")
        self.source.layout.width = "340px"
        self.quality.layout.width = "340px"
        self._photo_problem = photo_mode_problem()
        if self._photo_problem:
            self.mode.disabled = True
            self.mode_note.value = f"<i style='color:#777'>{self._photo_problem}</i>"
        elif mode == "photo" or (source or "").startswith("photo:"):
            self.mode.value = "photo"
        if mode == "photo" and self._photo_problem:
            self.status.value = _app_error(self._photo_problem)
        self._set_qualities(quality)
        self.mode.observe(lambda _change: self._set_qualities(), names="value")
        self.source.observe(self._on_source, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.button.on_click(lambda _button: self.run())
        self.widget = w.VBox([w.HBox([self.source, self.upload]),
                              w.HBox([mode_label, self.mode, self.mode_note]),
                              w.HBox([self.quality, self.button]), self.status, self.output],
                             layout=w.Layout(padding="4px"))
        self.widget.add_class("cae-codec-app")

    # -- widget callbacks ----------------------------------------------------------------
    def _set_qualities(self, wanted: int | None = None) -> None:
        qualities = app_qualities(self.mode.value) or [0]
        if wanted is None:
            current = self.quality.value
            default = APP_DEFAULT_DIGIT_QUALITY if self.mode.value == "digit" else qualities[len(qualities) // 2]
            wanted = current if current in qualities and current != 0 else default
        if wanted not in qualities:
            wanted = qualities[len(qualities) // 2]
        self.quality.options = qualities
        self.quality.value = wanted
        self.quality.disabled = qualities == [0]

    def _on_source(self, change) -> None:
        new = change["new"]
        if not self._photo_problem:
            if new.startswith("photo:"):
                self.mode.value = "photo"
            elif new.startswith("mnist:"):
                self.mode.value = "digit"

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        first = files[0]
        self.load_upload(first.get("name") or "the uploaded file", bytes(first.get("content", b"")))

    def load_upload(self, name: str, data: bytes) -> None:
        """Take an uploaded file (as the Upload button does): check it and select it."""
        self.upload_name, self.upload_image, self.upload_problem = name, None, None
        try:
            self.upload_image = image_from_bytes(data, name=repr(name))
        except CAEError as exc:
            self.upload_problem = str(exc)
        self.source.value = self.UPLOAD
        if self.upload_problem:
            self.status.value = _app_error(self.upload_problem)
            self.output.value = ""
        else:
            h, w = self.upload_image.shape
            self.status.value = (f"Uploaded {name!r} ({len(data):,} bytes, {w}x{h}). "
                                 "Press <b>Encode</b>.")

    # -- the work ------------------------------------------------------------------------
    def current_image(self) -> tuple[np.ndarray, str]:
        """The chosen picture as ``uint8 (H, W)`` and its description; :class:`CAEError` if none."""
        if self.source.value == self.UPLOAD:
            if self.upload_problem:
                raise CAEError(self.upload_problem)
            if self.upload_image is None:
                raise CAEError("No image uploaded yet: press 'Upload image' first, or pick an image.")
            return self.upload_image, f"your upload {self.upload_name!r}"
        return app_sample_image(self.source.value)

    def run(self) -> dict | None:
        """Encode with the current settings (as the Encode button does); the result dict
        of :func:`compare_at_matched_size` plus ``source`` and ``seconds``, or None after
        showing what went wrong."""
        import time

        self.button.disabled = True
        self.status.value = "Encoding..."
        start = time.perf_counter()
        try:
            image, described = self.current_image()
            if self.mode.value == "photo" and self._photo_problem:
                raise CAEError(self._photo_problem)
            result = compare_at_matched_size(image, self.quality.value, self.mode.value)
        except CAEError as exc:
            self.result, self.output.value = None, ""
            self.status.value = _app_error(str(exc))
            return None
        except Exception as exc:  # noqa: BLE001  (the app shows every failure as a message)
            self.result, self.output.value = None, ""
            self.status.value = _app_error(f"unexpected {type(exc).__name__}: {exc}")
            return None
        finally:
            self.button.disabled = False
        result["source"], result["seconds"] = described, time.perf_counter() - start
        name = self.source.value.partition(":")[2]
        if (self.mode.value == "photo" and self.source.value.startswith("photo:")
                and name in globals().get("PHOTO_TRAINING_IMAGES", ())):
            result["notes"].append(f"'{name}' is one of the photo codec's training images, so the "
                                   "CAE has seen it: upload a photo of your own for a fair comparison.")
        self.result = result
        cae = result["cae"]
        self.status.value = (f"Encoded {described} in {self.mode.value} mode at quality "
                             f"{result['quality']}: the .cae file is <b>{cae['bytes']:,} bytes</b> "
                             f"({cae['bpp']:.3f} bits per pixel), PSNR <b>{_fmt_db(cae['psnr_db'])}</b> "
                             f"({result['seconds']:.1f} s).")
        self.output.value = app_result_html(result)
        return result


if __name__ == "__main__":
    sys.exit(main())
