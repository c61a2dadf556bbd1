"""The Keras building blocks of the learned codecs, and the course's summed loss.

* :class:`GDN`: generalized divisive normalization (Ballé et al. 2016);
* :class:`FactorizedPrior`: a learned density per latent channel (Ballé et al. 2018);
* :class:`UniformNoise`: the training-time stand-in for rounding;
* :class:`BitsPerImage` and :class:`MeanOfPrediction`: the rate term as a model output;
* :class:`SummedSquaredError`: the 2018 project's loss.

All are registered as ``cae>Name``, the names the shipped ``.keras`` files refer to, so
they load in Keras' safe mode. Notebook 05 writes the same layers in cells;
``tests/test_notebook_agreement.py`` checks that the two agree.
"""
from __future__ import annotations

import numpy as np
from keras import layers

from .backend import keras
from .entropy import code_tables


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


@keras.saving.register_keras_serializable(package="cae")
class MeanOfPrediction(keras.losses.Loss):
    """A 'loss' that is simply the model output averaged over the batch (the rate term)."""

    def call(self, y_true, y_pred):
        return y_pred


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


def prior_weights_np(prior) -> tuple[list[np.ndarray], int]:
    """The prior's weights in (matrix, bias, factor) order as float64 arrays."""
    n = len(prior.matrices)
    ws = []
    for i in range(n):
        ws.append(np.asarray(prior.matrices[i].numpy(), np.float64))
        ws.append(np.asarray(prior.biases[i].numpy(), np.float64))
        ws.append(np.asarray(prior.factors[i].numpy(), np.float64) if i < n - 1 else None)
    return ws, n


def build_code_tables(prior, tail: float = 1e-7, max_symbols: int = 255) -> dict:
    """Code tables for the range coder from a trained :class:`FactorizedPrior` layer
    (see :func:`caecodec.entropy.code_tables` for the layout)."""
    ws, n = prior_weights_np(prior)
    return code_tables(ws, n, tail=tail, max_symbols=max_symbols)
