"""Training an autoencoder: losses, optimizers, a per-batch logger and two trainers.

Notebook 03 writes the loss, ``compile`` and ``fit`` in cells; :func:`train_autoencoder`
is the same recipe packaged for the sweeps, the training panel and the shipped model
(a test checks they agree). :func:`train_loop` runs the same recipe with a hand-written,
compiled training step instead of ``fit`` (notebook 03 writes that step in a cell too); the
race benchmark uses it. Bad settings raise :class:`CAEError` before TensorFlow runs.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .backend import keras, set_seed, tf
from .errors import CAEError, check_int
from .keras_layers import SummedSquaredError
from .metrics import reconstruction_metrics
from .modelio import reconstruct

#: Bounds a classroom may choose from (the widgets use them; ``train_autoencoder`` checks them).
EPOCH_RANGE = (1, 50)
BATCH_SIZE_RANGE = (1, 1024)
OPTIMIZERS = ("adam", "sgd")
LOSSES = ("sse", "mse")
#: The 2018 project's recipe: summed squared error, batches of 8, 2000 steps, Adam 1e-3.
SEED_RECIPE = dict(loss="sse", batch_size=8, steps=2000, optimizer="adam", learning_rate=1e-3)
#: The improved model's recipe: per-pixel MSE, batches of 32, Adam 3e-3 from the first step
#: (no warm-up) with a cosine decay to zero over 5 epochs. Notebook 03 measures what each
#: choice buys in the race to the 2018 loss (benchmarks/race_original.py).
IMPROVED_RECIPE = dict(loss="mse", batch_size=32, epochs=5, optimizer="adam", learning_rate=3e-3,
                       schedule=True)
#: What the 2018 project reported for its seed CAE (training loss, SSE per batch of 8)
#: and the value it aimed for. Historical facts, used as reference lines and targets.
ORIGINAL_REPORTED_LOSS = (100.0, 120.0)
ORIGINAL_TARGET_LOSS = 50.0


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


def _checked_run(autoencoder, x_train, epochs, steps, batch_size, optimizer, learning_rate,
                 loss, warmup_steps) -> tuple[np.ndarray, int, int | None, int | None]:
    """Check a trainer's settings before any TensorFlow work; returns ``(x_train as float32,
    batch_size, epochs, total_steps)``."""
    x_train = np.asarray(x_train, np.float32)
    if x_train.ndim != 4 or x_train.shape[1:] != tuple(autoencoder.input_shape[1:]):
        raise CAEError(f"Training images must be shaped (N, {', '.join(map(str, autoencoder.input_shape[1:]))}),"
                       f" got {x_train.shape}.")
    if (epochs is None) == (steps is None):
        raise CAEError("Give exactly one of epochs= or steps=.")
    batch_size = check_int("batch_size", batch_size, *BATCH_SIZE_RANGE)
    if epochs is not None:
        epochs = check_int("epochs", epochs, *EPOCH_RANGE)
        total_steps = epochs * -(-len(x_train) // batch_size)
    else:
        total_steps = check_int("steps", steps, 1, 10_000_000)
    check_int("warmup_steps", warmup_steps, 0, 10_000_000)
    make_loss(loss)
    make_optimizer(optimizer, learning_rate)  # validates both before anything is seeded
    return x_train, batch_size, epochs, total_steps


def train_autoencoder(autoencoder, x_train: np.ndarray, *, epochs: int | None = None,
                      steps: int | None = None, batch_size: int = 128, optimizer: str = "adam",
                      learning_rate: float = 1e-3, loss: str = "mse", schedule: bool = False,
                      warmup_steps: int = 0, x_test: np.ndarray | None = None, callbacks=(),
                      seed: int = 42, verbose: int = 0) -> dict:
    """Train ``autoencoder`` to reproduce ``x_train`` (``(N,28,28,1)`` float32 in [0, 1]).

    Give either ``epochs`` (full passes) or ``steps`` (a fixed number of batches, as the
    2018 project did: 2000 steps of 8). ``loss`` is ``"sse"`` (summed, the original) or
    ``"mse"``; ``optimizer`` is ``"adam"`` or ``"sgd"``; ``schedule=True`` decays the
    learning rate along a cosine to zero over the run, after a linear warm-up over
    ``warmup_steps`` steps (default none). Seeds are set first so that runs repeat.

    Returns a dict: ``batch_losses`` (one per step, in the loss's own unit),
    ``epoch_seconds``, ``seconds`` (total wall time), ``steps``, ``images_per_second``,
    ``diverged`` (True if the loss became NaN/inf), the settings, and, with ``x_test``,
    ``test`` = :func:`reconstruction_metrics` on it. Bad settings raise :class:`CAEError`
    before any TensorFlow work starts.
    """
    import time

    x_train, batch_size, epochs, total_steps = _checked_run(autoencoder, x_train, epochs, steps, batch_size,
                                                            optimizer, learning_rate, loss, warmup_steps)
    loss_fn = make_loss(loss)
    set_seed(seed)
    opt = make_optimizer(optimizer, learning_rate, total_steps if schedule else None,
                         warmup_steps=warmup_steps if schedule else 0)
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
                  schedule=schedule, warmup_steps=warmup_steps if schedule else 0, seed=seed,
                  train_images=len(x_train))
    if x_test is not None:
        result["test"] = (reconstruction_metrics(x_test, reconstruct(autoencoder, x_test))
                          if not nan_guard.diverged else None)
    return result


def train_loop(autoencoder, x_train: np.ndarray, *, epochs: int | None = None,
               steps: int | None = None, batch_size: int = 32, optimizer: str = "adam",
               learning_rate: float = 3e-3, loss: str = "mse", schedule: bool = False,
               warmup_steps: int = 0, x_test: np.ndarray | None = None, check=None,
               check_every: int = 0, seed: int = 42) -> dict:
    """:func:`train_autoencoder`'s recipe with a hand-written training step instead of ``fit``.

    One compiled step (``tf.function``) computes the model's output, the loss and its
    gradient and lets the optimizer update the weights; a Python loop feeds it batches.
    The batches are shuffled passes over ``x_train`` cut into full batches (those of
    ``train_autoencoder(steps=...)``); ``epochs=E`` means ``E x ceil(N / batch_size)``
    steps. What ``fit`` does besides (callbacks, its input pipeline, running means of the
    loss) is left out, and the optimizer creates its slots before the step is traced, so
    TensorFlow traces the step once instead of twice. Notebook 03 measures what it saves.

    ``check(step)`` is called after every ``check_every`` steps and after the last one;
    returning True stops training (the race benchmark evaluates there). Returns a dict
    like :func:`train_autoencoder`'s (``batch_losses``, ``seconds``, ``steps``,
    ``images_per_second``, ``diverged``, the settings, and ``test`` with ``x_test``).
    """
    import time

    x_train, batch_size, epochs, total_steps = _checked_run(autoencoder, x_train, epochs, steps, batch_size,
                                                            optimizer, learning_rate, loss, warmup_steps)
    start = time.perf_counter()
    loss_fn = make_loss(loss)
    set_seed(seed)
    opt = make_optimizer(optimizer, learning_rate, total_steps if schedule else None,
                         warmup_steps=warmup_steps if schedule else 0)
    weights = autoencoder.trainable_variables
    opt.build(weights)  # slots created now, not inside the traced step (which would trace it twice)

    @tf.function
    def train_step(images):
        with tf.GradientTape() as tape:
            value = loss_fn(images, autoencoder(images, training=True))
        opt.apply(tape.gradient(value, weights), weights)
        return value

    order = _step_indices(len(x_train), total_steps, batch_size, seed)
    losses, diverged = [], False
    for step in range(1, total_steps + 1):
        value = float(train_step(x_train[order[(step - 1) * batch_size:step * batch_size]]))
        losses.append(value)
        if not np.isfinite(value):
            diverged = True
            break
        if check is not None and (step == total_steps or (check_every and step % check_every == 0)):
            if check(step):
                break
    seconds = time.perf_counter() - start
    result = dict(batch_losses=losses, seconds=seconds, steps=len(losses),
                  images_per_second=len(losses) * batch_size / seconds if seconds > 0 else float("nan"),
                  diverged=diverged, loss=loss, optimizer=optimizer, learning_rate=learning_rate,
                  batch_size=batch_size, epochs=epochs, schedule=schedule,
                  warmup_steps=warmup_steps if schedule else 0, seed=seed, train_images=len(x_train))
    if x_test is not None:
        result["test"] = None if diverged else reconstruction_metrics(x_test, reconstruct(autoencoder, x_test))
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
