"""The lossless digit model in Keras: five pixel groups, each predicted from the last.

:func:`build_lossless_model` builds, for every level of :data:`lossless_net.LEVELS`, a
small network that looks at a ``kernel`` x ``kernel`` window of the pixels already known
(one convolution, then 1x1 layers: a little MLP per pixel) and gives each target pixel

* a *flag* logit: the log-odds that the pixel is not zero;
* *value features* that a head shared by all pixels turns into 255 logits for the values
  1..255. The features also see a window of the group's flags, which are decoded first.

The trainer outputs ``bits``: the exact information content ``-log2 p`` of each digit
under the model, summed over its 784 pixels (:class:`PixelBits`). Training minimises it.
:func:`network_weights` hands the trained weights to :func:`lossless_net.quantize_network`.
Notebook 07 writes the same model in cells (tests/test_agreement_07.py compares them).
"""
from __future__ import annotations

import numpy as np
from keras import layers

from .backend import keras, tf
from .lossless_net import LEVELS, SIDE, VALUES

#: The shipped model's architecture (see :func:`build_lossless_model`).
DEFAULT_ARCH = {"widths": (64, 64, 64, 64, 64), "depth": 2, "kernel": 5, "features": 64,
                "embedding": 8}


@keras.saving.register_keras_serializable(package="cae")
class Phases(layers.Layer):
    """Images ``(N, 28, 28, C)`` -> the pixels of some phases of ``block`` x ``block`` tiles,
    ``(N, 28/block, 28/block, len(phases) * C)``: phase ``(r, c)`` is rows ``r::block``,
    columns ``c::block``."""

    def __init__(self, block: int, phases, **kwargs):
        super().__init__(**kwargs)
        self.block, self.phases = int(block), [list(map(int, p)) for p in phases]

    def call(self, x):
        return keras.ops.concatenate([x[:, r::self.block, c::self.block, :] for r, c in self.phases], -1)

    def get_config(self):
        return {**super().get_config(), "block": self.block, "phases": self.phases}


@keras.saving.register_keras_serializable(package="cae")
class PlacePhases(layers.Layer):
    """The inverse of :class:`Phases` for one level's outputs: ``(N, h, w, P * C)`` -> a
    full ``(N, 28, 28, C)`` image holding each phase's values at its pixels, 0 elsewhere.
    Summing the placed outputs of all five levels fills every pixel exactly once."""

    def __init__(self, block: int, phases, **kwargs):
        super().__init__(**kwargs)
        self.block, self.phases = int(block), [list(map(int, p)) for p in phases]

    def call(self, x):
        ops, b = keras.ops, self.block
        side, c = SIDE // b, x.shape[-1] // len(self.phases)
        out = 0.0
        for k, (r, col) in enumerate(self.phases):
            part = ops.reshape(x[..., k * c:(k + 1) * c], (-1, side, 1, side, 1, c))
            part = ops.pad(part, [(0, 0), (0, 0), (r, b - 1 - r), (0, 0), (col, b - 1 - col), (0, 0)])
            out = out + ops.reshape(part, (-1, SIDE, SIDE, c))
        return out

    def get_config(self):
        return {**super().get_config(), "block": self.block, "phases": self.phases}


@keras.saving.register_keras_serializable(package="cae")
class PositionMap(layers.Layer):
    """A learned ``(h, w, C)`` map, the same for every image (level L0 has no context)."""

    def __init__(self, side: int, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.side, self.channels = int(side), int(channels)

    def build(self, input_shape):
        self.map = self.add_weight(name="map", shape=(self.side, self.side, self.channels),
                                   initializer=keras.initializers.RandomUniform(0.0, 0.1))

    def call(self, x):
        return keras.ops.zeros_like(x[:, :self.side, :self.side, :1]) + self.map

    def get_config(self):
        return {**super().get_config(), "side": self.side, "channels": self.channels}


@keras.saving.register_keras_serializable(package="cae")
class PixelEmbedding(layers.Layer):
    """Images in [0, 1] ``(N,28,28,1)`` -> ``(N,28,28,E)``: each pixel value 0..255 looks up
    a learned vector of ``E`` numbers (value 0 always gives zeros).

    A convolution on the plain value can only weigh it linearly, but MNIST's values are not
    a smooth scale: 0 means "no ink", 252-255 "solid stroke", and everything between is an
    anti-aliased edge. With a learned vector per value the first layer sees each of these
    as it needs to (in a short training run this saved about 9 bytes per digit).
    """

    def __init__(self, dim: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)

    def build(self, input_shape):
        self.table = self.add_weight(name="table", shape=(256, self.dim),
                                     initializer=keras.initializers.RandomNormal(0.0, 0.5))

    def call(self, x):
        ops = keras.ops
        values = ops.cast(ops.round(x[..., 0] * 255.0), "int32")
        mask = ops.cast(ops.greater(values, 0), x.dtype)[..., None]
        return ops.take(self.table, values, axis=0) * mask

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


@keras.saving.register_keras_serializable(package="cae")
class NonZero(layers.Layer):
    """1.0 where a pixel is not zero, else 0.0 (the flags)."""

    def call(self, x):
        return keras.ops.cast(keras.ops.greater(x, 0.0), "float32")


@keras.saving.register_keras_serializable(package="cae")
class PixelBits(layers.Layer):
    """``[images, flag_logits, value_features]`` -> bits per image ``(N,)``.

    ``images`` ``(N,28,28,1)`` in [0, 1]; ``flag_logits`` ``(N,28,28,1)``; ``value_features``
    ``(N,28,28,F)``. Each pixel costs ``-log2 p(flag)``, plus ``-log2 p(value | not zero)``
    if it is not zero. The shared value head (``self.head``, F -> 255 logits) runs only on
    the non-zero pixels (a fifth of them), which makes training about twice as fast.
    """

    def build(self, input_shapes):
        self.head = layers.Dense(VALUES, name="value_head")
        self.head.build((None, input_shapes[2][-1]))

    def call(self, inputs):
        images, flag_logits, features = inputs
        pixels = tf.round(images[..., 0] * 255.0)
        nonzero = pixels > 0
        flag = flag_logits[..., 0]
        flag_bits = tf.reduce_sum(tf.nn.softplus(flag) - tf.cast(nonzero, flag.dtype) * flag, [1, 2])
        where = tf.where(nonzero)
        logits = self.head(tf.gather_nd(features, where))
        targets = tf.cast(tf.gather_nd(pixels, where), "int32") - 1
        value_nats = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
        value_bits = tf.math.unsorted_segment_sum(value_nats, where[:, 0], tf.shape(images)[0])
        return (flag_bits + value_bits) / float(np.log(2.0))


def level_network(level, known, flags, width: int, depth: int, kernel: int, features: int):
    """One level: ``(flag logits (N,h,w,P), value features (N,h,w,P*features))``.

    ``known``: the known pixels' phases, ``(N, h, w, K)`` (``None`` for L0); ``flags``: the
    targets' flags ``(N, h, w, P)``.
    """
    name, n_targets = level.name, len(level.targets)
    if known is None:
        h = layers.ReLU(name=f"{name}_map_relu")(PositionMap(SIDE // level.block, width, name=f"{name}_map")(flags))
    else:
        h = layers.Conv2D(width, kernel, padding="same", activation="relu", name=f"{name}_in")(known)
        for i in range(depth):
            h = layers.Add(name=f"{name}_add{i}")(
                [h, layers.Conv2D(width, 1, activation="relu", name=f"{name}_res{i}")(h)])
    flag_logits = layers.Conv2D(n_targets, 1, name=f"{name}_flag")(h)
    g = layers.Add(name=f"{name}_join")([layers.Conv2D(width, 1, name=f"{name}_fh")(h),
                                        layers.Conv2D(width, kernel, padding="same", name=f"{name}_fc")(flags)])
    g = layers.ReLU(name=f"{name}_join_relu")(g)
    value_features = layers.Conv2D(n_targets * features, 1, activation="relu", name=f"{name}_vf")(g)
    return flag_logits, value_features


def build_lossless_model(widths=DEFAULT_ARCH["widths"], depth: int = DEFAULT_ARCH["depth"],
                         kernel: int = DEFAULT_ARCH["kernel"], features: int = DEFAULT_ARCH["features"],
                         embedding: int = DEFAULT_ARCH["embedding"]):
    """The lossless model as ``(trainer, predictor)`` Keras models sharing their weights.

    ``predictor``: images ``(N,28,28,1)`` in [0, 1] -> ``[flag_logits (N,28,28,1),
    value_features (N,28,28,features)]``; every pixel's outputs depend only on the levels
    before its own (and on its own group's flags). ``trainer``: images -> ``bits`` ``(N,)``.
    ``widths``: one per level; ``depth``: 1x1 residual layers per level; ``embedding``: the
    size of each pixel value's learned vector (:class:`PixelEmbedding`).
    """
    image = keras.Input((SIDE, SIDE, 1), name="image")
    nonzero = NonZero(name="flags")(image)
    pixel_features = PixelEmbedding(embedding, name="pixel_embedding")(image)
    flags_out, features_out = [], []
    for level, width in zip(LEVELS, widths):
        known = (Phases(level.block, level.known, name=f"{level.name}_known")(pixel_features)
                 if level.known else None)
        flags = Phases(level.block, level.targets, name=f"{level.name}_flags")(nonzero)
        f, v = level_network(level, known, flags, int(width), int(depth), int(kernel), int(features))
        flags_out.append(PlacePhases(level.block, level.targets, name=f"{level.name}_place_flag")(f))
        features_out.append(PlacePhases(level.block, level.targets, name=f"{level.name}_place_features")(v))
    flag_logits = layers.Add(name="flag_logits")(flags_out)
    value_features = layers.Add(name="value_features")(features_out)
    bits = PixelBits(name="bits")([image, flag_logits, value_features])
    trainer = keras.Model(image, bits, name="lossless_trainer")
    predictor = keras.Model(image, [flag_logits, value_features], name="lossless_predictor")
    return trainer, predictor


def predictor_of(trainer):
    """The ``predictor`` inside a (loaded) trainer: images -> [flag logits, value features]."""
    return keras.Model(trainer.input, [trainer.get_layer("flag_logits").output,
                                      trainer.get_layer("value_features").output])


def network_weights(trainer) -> dict:
    """The trained weights as float64 arrays named for :func:`lossless_net.quantize_network`."""
    get = trainer.get_layer
    head = get("bits").head
    out = {"head_w": head.kernel.numpy(), "head_b": head.bias.numpy(),
           "embedding": get("pixel_embedding").table.numpy()}
    for level in LEVELS:
        p = level.name
        if level.known:
            out[f"{p}/in_w"], out[f"{p}/in_b"] = (w.numpy() for w in get(f"{p}_in").weights)
            i = 0
            while any(layer.name == f"{p}_res{i}" for layer in trainer.layers):
                w, b = get(f"{p}_res{i}").weights
                out[f"{p}/res{i}_w"], out[f"{p}/res{i}_b"] = w.numpy()[0, 0], b.numpy()
                i += 1
        else:
            out[f"{p}/map"] = get(f"{p}_map").map.numpy()
        for name in ("flag", "fh", "vf"):
            w, b = get(f"{p}_{name}").weights
            out[f"{p}/{name}_w"], out[f"{p}/{name}_b"] = w.numpy()[0, 0], b.numpy()
        out[f"{p}/fc_w"], out[f"{p}/fc_b"] = (w.numpy() for w in get(f"{p}_fc").weights)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


class TimeBudget(keras.callbacks.Callback):
    """Train for a wall-clock budget: the learning rate warms up over ``warmup_steps``, then
    follows a cosine from ``peak`` to 0 over the *elapsed share* of ``seconds``, and training
    stops when the time is up. A busy or slow machine gets fewer steps, never more time."""

    def __init__(self, seconds: float, peak: float, warmup_steps: int = 300):
        super().__init__()
        self.seconds, self.peak, self.warmup = float(seconds), float(peak), int(warmup_steps)
        self.steps, self.start = 0, None

    def on_train_batch_begin(self, batch, logs=None):
        import math
        import time

        if self.start is None:      # the first step also builds the graph: not counted
            self.start = time.perf_counter()
            share = 0.0
        else:
            share = min((time.perf_counter() - self.start) / self.seconds, 1.0)
        warm = min(1.0, (self.steps + 1) / max(self.warmup, 1))
        self.model.optimizer.learning_rate.assign(self.peak * warm * 0.5 * (1 + math.cos(math.pi * share)))
        if share >= 1.0:
            self.model.stop_training = True
        self.steps += 1


def train_lossless(trainer, x_train: np.ndarray, *, steps: int | None = None,
                   seconds: float | None = None, batch_size: int = 64, learning_rate: float = 2e-3,
                   seed: int = 42, callbacks=(), verbose: int = 0) -> dict:
    """Train ``trainer`` (loss: mean bits per digit) with Adam, warm-up and cosine decay.

    Give ``steps`` (a fixed schedule) or ``seconds`` (a wall-clock budget, see
    :class:`TimeBudget`). ``x_train``: ``(N,28,28,1)`` float32 in [0, 1]. Returns
    ``{"seconds", "steps", "images", "history"}`` (``loss`` per epoch, bits per digit).
    """
    import time

    from .backend import set_seed
    from .keras_layers import MeanOfPrediction
    from .training import make_optimizer

    if (steps is None) == (seconds is None):
        raise ValueError("give steps or seconds")
    set_seed(seed)
    per_epoch = -(-len(x_train) // batch_size)
    callbacks = list(callbacks)
    if steps is not None:
        epochs = -(-int(steps) // per_epoch)
        steps_per_epoch = -(-int(steps) // epochs)
        optimizer = make_optimizer("adam", learning_rate, epochs * steps_per_epoch,
                                   warmup_steps=min(300, int(steps) // 10))
    else:
        epochs, steps_per_epoch = 10_000, per_epoch
        optimizer = keras.optimizers.Adam(learning_rate)
        callbacks.append(TimeBudget(seconds, learning_rate))
    trainer.compile(optimizer=optimizer, loss=MeanOfPrediction())
    start = time.perf_counter()
    hist = trainer.fit(x_train, np.zeros(len(x_train), np.float32), batch_size=batch_size,
                       epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=True,
                       callbacks=callbacks, verbose=verbose)
    done = int(trainer.optimizer.iterations.numpy())
    return {"seconds": time.perf_counter() - start, "steps": done, "images": done * batch_size,
            "history": hist.history}


def load_lossless_trainer(path):
    """The trained Keras model saved at ``path`` (safe mode, not compiled)."""
    from .errors import CAEError

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # missing, damaged or foreign file
        raise CAEError(f"Could not load the lossless model {path}: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:160] if str(exc) else ''}") from None
