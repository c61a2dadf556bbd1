"""Training the codecs' models (used by ``scripts/train_*.py``; users never pay it).

Rate-distortion training for the digit and photo codecs, the photo training crops from
scikit-image's bundled photographs (the Kodak evaluation photos are never used), the
prior's warm start, the photo codec's DC-prediction and context-model tables (counted on
the training photos), and the digit classifier.
"""
from __future__ import annotations

import numpy as np

from . import modelio
from .backend import keras, set_seed, stderr_silenced
from .errors import CAEError, check_int
from .fileio import atomic_write_bytes
from .images import to_float_images
from .keras_layers import BitsPerImage, MeanOfPrediction, UniformNoise
from .modelio import run_model
from .models import build_digit_classifier
from .photo_codec import PHOTO_TRAINING_IMAGES, PhotoCodec, load_photo_codec, photo_model_path
from .photo_context import fit_context_model
from .training import BATCH_SIZE_RANGE, EPOCH_RANGE, make_optimizer


def train_rd_cae(trainer, x_train: np.ndarray, lam: float, *, epochs: int = 5,
                 batch_size: int = 64, learning_rate: float = 1e-3, seed: int = 42,
                 callbacks=(), verbose: int = 0) -> dict:
    """Train a :func:`build_rd_cae` model for ``bits/784 + lam * MSE_255``.

    ``x_train``: ``(N,28,28,1)`` float32 in [0, 1]. Adam with warm-up and cosine decay.
    Returns ``{"seconds", "history"}`` where history holds per-epoch ``loss``,
    ``bits_loss`` (bits per pixel) and ``x_hat_loss`` (lambda-weighted distortion).
    """
    import time

    epochs = check_int("epochs", epochs, *EPOCH_RANGE)
    batch_size = check_int("batch_size", batch_size, *BATCH_SIZE_RANGE)
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


def photo_training_images(names=PHOTO_TRAINING_IMAGES) -> dict[str, np.ndarray]:
    """scikit-image's bundled photographs as grayscale ``uint8`` arrays ``(H, W)``.

    Colour photos are converted with ITU-R 601 luma weights (Pillow's "L" mode), the same
    conversion the codec applies to colour input. Images that would need a download are
    skipped, so this works offline.
    """
    import skimage.data
    from PIL import Image

    out = {}
    for name in names:
        try:
            with stderr_silenced():
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
    steps = check_int("steps", steps, 1, 10_000_000)
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
                       shuffle=False,  # the dataset shuffles itself; Keras warns otherwise
                       callbacks=list(callbacks), verbose=verbose)
    return {"seconds": time.perf_counter() - start, "history": hist.history}


def train_photo_decoder(encoder, decoder, tables: dict, patches_u8: np.ndarray, *, steps: int = 1200,
                        batch_size: int = 8, learning_rate: float = 3e-4, seed: int = 42,
                        log_every: int = 100, verbose: int = 0) -> dict:
    """Stage 2 of the photo codec: train ``decoder`` alone, for the mean squared error, on
    what it really receives when decoding a file: the (frozen) ``encoder``'s latents of
    the crops, rounded exactly as the codec rounds them (``tables``: the ``medians``,
    ``offsets`` and ``sizes`` of its code tables). Stage 1 trained it on a noisy stand-in
    for rounding. The encoder and the prior are untouched, so the symbols, the tables and
    the rate stay exactly the same; only the pixels get better.

    ``patches_u8``: ``(N, P, P, 1)`` uint8 crops. Adam with warm-up and cosine decay.
    Returns ``{"seconds", "history"}``; history holds the mean MSE (0..1 scale) over
    each ``log_every`` steps.
    """
    import time

    import tensorflow as tf

    steps = check_int("steps", steps, 1, 10_000_000)
    set_seed(seed)
    medians = np.asarray(tables["medians"], np.float32)
    offsets = np.asarray(tables["offsets"], np.float32)
    top = np.asarray(tables["sizes"], np.float32) - 1.0

    def round_like_the_codec(y):  # symbols = clip(round(y - median) - offset, 0, K - 1)
        ops = keras.ops
        return ops.clip(ops.round(y - medians) - offsets, 0.0, top) + offsets + medians

    encoder.trainable = False
    try:
        inp = keras.Input(patches_u8.shape[1:], name="image")
        rounded = keras.layers.Lambda(round_like_the_codec, name="round_like_the_codec")(encoder(inp))
        model = keras.Model(inp, decoder(rounded), name="decoder_on_rounded_latents")
        model.compile(optimizer=make_optimizer("adam", learning_rate, steps, warmup_steps=min(100, steps // 10)),
                      loss=keras.losses.MeanSquaredError())
        data = (tf.data.Dataset.from_tensor_slices(patches_u8)
                .shuffle(min(len(patches_u8), 4096), seed=seed).repeat()
                .map(lambda p: (tf.cast(p, tf.float32) / 255.0,) * 2)
                .batch(batch_size, drop_remainder=True).prefetch(2))
        log_every = max(1, min(int(log_every), steps))
        start = time.perf_counter()
        hist = model.fit(data, epochs=-(-steps // log_every), steps_per_epoch=log_every, shuffle=False,
                         verbose=verbose)
    finally:
        encoder.trainable = True
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
    latents = run_model(encoder, patches_u8.astype(np.float32) / 255.0, chunk=64)
    inp = keras.Input(latents.shape[1:], name="latent")
    bits = BitsPerImage(name="bits")(prior(UniformNoise(name="noise")(inp)))
    model = keras.Model(inp, bits)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=MeanOfPrediction())
    epochs = max(1, steps * batch_size // len(latents))
    hist = model.fit(latents, np.zeros(len(latents), np.float32), batch_size=batch_size,
                     epochs=epochs, shuffle=True, verbose=0)
    return float(hist.history["loss"][-1]) / float(np.prod(patches_u8.shape[1:3]))


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


def _photo_tables(quality: int) -> dict:
    """The code tables in ``models/photo_q<N>.npz`` as a dict of arrays."""
    with np.load(photo_model_path(quality).with_suffix(".npz")) as npz:
        return {k: npz[k] for k in npz.files}


def _write_photo_tables(quality: int, tables: dict) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **tables)
    atomic_write_bytes(photo_model_path(quality).with_suffix(".npz"), buf.getvalue())
    modelio.CODEC_CACHE.clear()


def add_dc_prediction(quality: int, images=None) -> dict:
    """Add DC prediction (``.cae`` version 2) to the shipped photo codec ``quality``:
    count the residual table on the training photos and store it in its ``.npz``
    (atomically). Returns the tables. The model's weights are unchanged, so its
    fingerprint is too."""
    images = photo_training_images() if images is None else images
    tables = {k: v for k, v in _photo_tables(quality).items() if k != "dc_pmf"}
    base = load_photo_codec(quality)
    plain = PhotoCodec(base.encoder, base.decoder, tables, quality, base.fingerprint, base.card)
    tables["dc_pmf"] = dc_prediction_table(plain, images)
    _write_photo_tables(quality, tables)
    return tables


def photos_at_scales(images, scales=(1.0, 0.75, 0.5)) -> list[np.ndarray]:
    """Every photo at each of ``scales`` (antialiased), as in :func:`photo_patches`:
    the images the context model's tables are counted on. ``uint8`` ``(H, W)`` each."""
    from PIL import Image

    out = []
    for arr in (images.values() if isinstance(images, dict) else images):
        for s in scales:
            h, w = max(1, int(round(arr.shape[0] * s))), max(1, int(round(arr.shape[1] * s)))
            out.append(arr if s == 1.0 else np.asarray(Image.fromarray(arr).resize((w, h), Image.LANCZOS)))
    return out


def add_context_model(quality: int, images=None) -> dict:
    """Fit the context model (:mod:`caecodec.photo_context`, ``.cae`` version 3) of the
    shipped photo codec ``quality`` on the TRAINING photos at three scales, and store its
    tables in the model's ``.npz`` beside the factorized ones (atomically). The weights,
    and so the fingerprint, are unchanged. Returns ``{"seconds", "images", "blocks"}``."""
    import time

    start = time.perf_counter()
    images = photo_training_images() if images is None else images
    tables = {k: v for k, v in _photo_tables(quality).items() if not k.startswith(("ctx_", "dc_ctx_"))}
    base = load_photo_codec(quality)
    plain = PhotoCodec(base.encoder, base.decoder, tables, quality, base.fingerprint, base.card)
    symbols = [plain.symbols_of(img) for img in photos_at_scales(images)]
    tables.update(fit_context_model(symbols, plain.sizes, plain.offsets, plain.pmfs))
    _write_photo_tables(quality, tables)
    return {"seconds": time.perf_counter() - start, "images": len(symbols),
            "blocks": int(sum(s.shape[0] * s.shape[1] for s in symbols))}


def train_digit_classifier(x_train: np.ndarray, y_train: np.ndarray, epochs: int = 3,
                           batch_size: int = 128, seed: int = 42):
    """Train :func:`build_digit_classifier` on clean digits (Adam 1e-3, seeded); returns the model.

    ``x_train``: ``(N, 28, 28, 1)`` float in [0, 1] (or uint8 ``(N, 28, 28)``); ``y_train``:
    labels 0..9. On all 60,000 training digits, 3 epochs take one to two minutes on 2 CPU
    cores and give about 99 % on the clean test digits (quick mode's 2,000 digits need about
    12 epochs for about 96 %).
    """
    epochs = check_int("epochs", epochs, *EPOCH_RANGE)
    x = to_float_images(x_train) if np.asarray(x_train).dtype == np.uint8 else np.asarray(x_train, np.float32)
    set_seed(seed)
    model = build_digit_classifier()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, np.asarray(y_train, np.int64), batch_size=batch_size, epochs=epochs, shuffle=True,
              verbose=0)
    return model
