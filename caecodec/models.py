"""The course's networks, layer by layer, as Keras functional models.

* :func:`build_seed_cae`: the 2018 project's CAE (five strided convolutions to 1x1x128);
* :func:`build_improved_cae`: the same 128-number bottleneck, a better design;
* :func:`build_rd_cae`: the rate-distortion CAE of the learned digit codec;
* :func:`build_photo_cae`: the fully convolutional, DCT-started photo codec;
* :func:`build_digit_classifier`: a small CNN that checks decoded digits stay readable.

Notebooks 02, 05 and 06 write the same builders in cells; agreement tests
(``tests/test_agreement_01_03.py`` for notebook 02) prove they give the same layers, and
that the shipped weights load into them.
"""
from __future__ import annotations

import numpy as np
from keras import layers

from .backend import keras
from .keras_layers import GDN, BitsPerImage, FactorizedPrior, UniformNoise

LATENT_DIM = 128  # the original project's bottleneck: 128 numbers per 784-pixel digit
PHOTO_STRIDE = 8           # the photo encoder's stride: one latent vector per 8x8 block


def build_seed_cae():
    """The original 2018 CAE, layer for layer, as Keras models (notebook 02 writes it in a cell).

    Encoder: five ``Conv2D`` (kernel 4, stride 2, ``same``, leaky ReLU with slope 0.2,
    Keras' ``"leaky_relu"``) with 32, 64, 128, 128, 128 filters: 28x28x1 -> 14 -> 7 -> 4
    -> 2 -> 1x1x128.
    Decoder: ``Conv2DTranspose`` 128 (k3, s2) -> 2x2, 64 (k3, s2) -> 4x4, 32 (k7, s7)
    -> 28x28, then 1 (k3, s1) -> 28x28x1 with a *linear* output, clipped to [0, 1] only
    when decoding. (A sigmoid output collapses to an all-black image within a few dozen
    Adam steps and stops learning, with the summed loss and with MSE alike: Adam's first
    steps are large whatever the loss scale, and they push the sigmoid into saturation,
    where its gradient vanishes. Notebook 02 measures it.)

    Returns ``(autoencoder, encoder, decoder)``: image -> image, image ``(N,28,28,1)``
    -> latent ``(N,1,1,128)``, latent -> image. The three share weights.
    """
    act = dict(activation="leaky_relu")  # keras.activations.leaky_relu: negative slope 0.2
    enc_in = keras.Input((28, 28, 1), name="image")
    x = enc_in
    for i, filters in enumerate((32, 64, 128, 128, LATENT_DIM), start=1):
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
    """A better CAE with the same 128-number bottleneck (notebook 02 writes it in a cell and
    argues the design; notebook 03 measures what it buys).

    * Encoder: two strided 4x4 convolutions (16 and 32 filters, ReLU; 28 -> 14 -> 7), then
      a ``Dense`` layer from all 7x7x32 features to the latent, so every latent number
      "sees" the whole digit (the seed squeezes through 2x2 and 1x1 maps instead).
    * Decoder: the mirror image: ``Dense`` back to 7x7x32, then two transposed 4x4
      convolutions with stride 2 (7 -> 14 -> 28); the last has one filter and a *linear*
      output (clipped to [0, 1] when decoding). Kernels of 4 with stride 2 cover every
      output pixel equally often, which avoids checkerboard artefacts.
    * Shallow and cheap at full resolution: about 1.3 million multiply-adds per digit
      against the seed's 7.4 million, so a training step costs little and few steps are
      needed. Trained with per-pixel MSE and Adam (``training.IMPROVED_RECIPE``).

    Returns ``(autoencoder, encoder, decoder)``: the encoder maps ``(N,28,28,1)`` to
    ``(N, latent_dim)``; the decoder maps that back to ``(N,28,28,1)``.
    """
    enc_in = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(16, 4, strides=2, padding="same", activation="relu", name="conv1")(enc_in)
    x = layers.Conv2D(32, 4, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.Flatten(name="flatten")(x)
    z = layers.Dense(latent_dim, name="latent")(x)
    encoder = keras.Model(enc_in, z, name="improved_encoder")

    dec_in = keras.Input((latent_dim,), name="code")
    y = layers.Dense(7 * 7 * 32, activation="relu", name="expand")(dec_in)
    y = layers.Reshape((7, 7, 32), name="reshape")(y)
    y = layers.Conv2DTranspose(16, 4, strides=2, padding="same", activation="relu", name="deconv1")(y)
    y = layers.Conv2DTranspose(1, 4, strides=2, padding="same", name="to_pixels")(y)
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
    06 says what happened); the DCT start puts training straight into a good region.
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

