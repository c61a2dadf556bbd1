"""Notebook 07 writes the lossless codec's pieces in cells (tagged ``definition``); the package
holds the same pieces. These tests run the notebook's cells and compare: the pixel groups,
the Keras model (same layers, and the shipped weights give the same outputs), the loss, and
the constriction coding of a digit (the same bytes as the package codec)."""
from __future__ import annotations

import numpy as np
import pytest

from notebook_code import run_definitions

from caecodec import lossless, lossless_model, lossless_net
from caecodec.mnist import load_mnist_u8


@pytest.fixture(scope="module")
def nb():
    return run_definitions("07_lossless.ipynb")


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return load_mnist_u8(mnist_dir)[1][0][:40]


def test_the_pixel_groups_are_the_packages(nb):
    assert nb["LEVELS"] == tuple(tuple(level) for level in lossless_net.LEVELS)


def test_the_notebook_model_is_the_packages_and_runs_the_shipped_weights(nb, digits):
    trainer_nb, _ = nb["build_lossless_model"]()
    trainer_pkg, _ = lossless_model.build_lossless_model()
    assert [(l.name, type(l).__name__) for l in trainer_nb.layers] == \
           [(l.name, type(l).__name__) for l in trainer_pkg.layers]
    assert [w.shape for w in trainer_nb.weights] == [w.shape for w in trainer_pkg.weights]
    shipped = lossless_model.load_lossless_trainer(lossless.lossless_model_path())
    trainer_nb.set_weights(shipped.get_weights())
    x = (digits / 255.0).astype(np.float32)[..., None]
    assert np.allclose(trainer_nb(x).numpy(), shipped(x).numpy(), atol=1e-3)


def test_the_notebook_loss_is_the_models_bits(nb, digits):
    from caecodec.backend import keras

    shipped = lossless_model.load_lossless_trainer(lossless.lossless_model_path())
    x = (digits / 255.0).astype(np.float32)[..., None]
    flags, features = lossless_model.predictor_of(shipped)(x)
    head = shipped.get_layer("bits").head
    value_logits = head(features)
    per_pixel = keras.ops.convert_to_numpy(nb["pixel_bits"](x, flags, value_logits))
    assert per_pixel.shape == (len(x), 28, 28)
    assert np.allclose(per_pixel.sum(axis=(1, 2)), shipped(x).numpy(), rtol=1e-4, atol=0.05)


def test_the_notebook_coder_writes_the_packages_bytes(nb, digits):
    codec = lossless.load_lossless_codec()
    for digit in digits[:12]:
        data = nb["encode_digit"](codec, digit)
        assert data == codec.compress(digit[None])[0]
        assert np.array_equal(nb["decode_digit"](codec, data), digit)
