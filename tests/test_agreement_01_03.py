"""The notebooks' own code agrees with the package (notebooks 02 and 03).

Notebook 02 writes both autoencoders in cells, layer by layer; notebook 03 writes the 2018
loss and the compile/fit recipe in cells. The package (:mod:`caecodec.models`,
:mod:`caecodec.keras_layers`, :mod:`caecodec.training`) holds the same things for the later
notebooks, the scripts and the benchmarks. These tests execute the notebook cells tagged
``definition`` (``tests/notebook_code.py``) and check that:

* the notebook's builders give the same layers as the package's: every layer's
  ``get_config()`` (names included) and every weight's name and shape;
* the shipped weights (``caecodec/models/improved_cae.keras``) load into the notebook's
  improved model and give the same outputs on real MNIST test digits;
* the notebook's summed squared error equals :class:`SummedSquaredError` on random batches;
* the notebook's compile/fit recipe, run for a few steps from a fixed seed, gives the same
  per-batch losses and the same final weights as :func:`train_autoencoder`;
* the learning-rate schedule notebook 03 plots is the one the improved recipe trains with.

Each comparison is against an independent fact as well (a numpy sum, a PSNR well above an
untrained model's), so that a test cannot pass by comparing two empty things.
"""
from __future__ import annotations

import numpy as np
import pytest

import cae_utils as cu
from caecodec import keras_layers, modelio, models, training
from notebook_code import run_definitions

import keras


@pytest.fixture(scope="module")
def nb02():
    return run_definitions("02_architecture.ipynb")


@pytest.fixture(scope="module")
def nb03():
    return run_definitions("03_training.ipynb")


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    (x_train, _), (x_test, _) = cu.load_mnist(path=mnist_dir, quick=True)
    return x_train, x_test


def _layers(model):
    """Every layer of ``model``, nested models (encoder, decoder) walked into, in order."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(_layers(layer))
    return out


def assert_same_architecture(ours, theirs):
    """Same model name and config, same layers (config of each, names included), same weights
    (names and shapes, in order)."""
    assert ours.name == theirs.name
    assert ours.get_config() == theirs.get_config()
    a, b = _layers(ours), _layers(theirs)
    assert [type(x).__name__ for x in a] == [type(x).__name__ for x in b]
    for la, lb in zip(a, b):
        assert la.get_config() == lb.get_config(), f"layer {la.name} differs from {lb.name}"
    assert [(w.path, tuple(w.shape)) for w in ours.weights] == [(w.path, tuple(w.shape)) for w in theirs.weights]
    assert ours.count_params() == theirs.count_params() > 0


@pytest.mark.parametrize("builder, kwargs", [
    ("build_seed_cae", {}),
    ("build_improved_cae", {}),
    ("build_improved_cae", {"latent_dim": 16}),   # notebook 02's exercise 1 changes the latent
])
def test_notebook_02_builders_match_the_package(nb02, builder, kwargs):
    ours = nb02[builder](**kwargs)
    theirs = getattr(models, builder)(**kwargs)
    assert len(ours) == len(theirs) == 3  # (autoencoder, encoder, decoder)
    for a, b in zip(ours, theirs):
        assert_same_architecture(a, b)
    # The three models share one set of weights: the autoencoder holds exactly the encoder's and the decoder's.
    ae, enc, dec = ours
    assert [id(w) for w in ae.weights] == [id(w) for w in enc.weights + dec.weights]


def test_notebook_02_models_compute_like_the_package_models_from_the_same_seed(nb02, mnist):
    """Same seed, same initial weights and outputs: the cells create layers in the same order."""
    x = mnist[1][:16]
    for builder in ("build_seed_cae", "build_improved_cae"):
        cu.set_seed(5)
        ours = nb02[builder]()[0]
        cu.set_seed(5)
        theirs = getattr(models, builder)()[0]
        for wa, wb in zip(ours.get_weights(), theirs.get_weights()):
            np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(theirs(x)))


def test_shipped_weights_load_into_the_notebook_model(nb02, mnist):
    shipped, shipped_enc, _, card = modelio.load_model(modelio.DEFAULT_MODEL)
    ours, ours_enc, _ = nb02["build_improved_cae"]()
    ours.set_weights(shipped.get_weights())
    assert modelio.model_fingerprint(ours) == modelio.model_fingerprint(shipped)
    assert modelio.model_fingerprint(ours).hex() == card["fingerprint"]
    x = mnist[1][:300]  # real MNIST test digits
    np.testing.assert_array_equal(modelio.reconstruct(ours, x), modelio.reconstruct(shipped, x))
    np.testing.assert_array_equal(modelio.run_model(ours_enc, x), modelio.run_model(shipped_enc, x))
    # ...and those outputs are a trained model's, not an untrained one's (about 9 dB).
    psnr = cu.reconstruction_metrics(x, modelio.reconstruct(ours, x))["psnr_db"]
    assert psnr > 22.0


@pytest.mark.parametrize("shape", [(8, 28, 28, 1), (3, 28, 28, 1), (16, 5, 7, 2)])
def test_notebook_03_loss_is_the_package_summed_squared_error(nb03, shape):
    rng = np.random.default_rng(sum(shape))
    y_true = rng.random(shape).astype(np.float32)
    y_pred = (y_true + rng.normal(0, 0.3, shape)).astype(np.float32)
    ours = float(keras.ops.convert_to_numpy(nb03["summed_squared_error"](y_true, y_pred)))
    theirs = float(keras.ops.convert_to_numpy(keras_layers.SummedSquaredError()(y_true, y_pred)))
    expected = float(((y_pred.astype(np.float64) - y_true) ** 2).sum())
    assert ours == pytest.approx(expected, rel=1e-5)
    assert theirs == pytest.approx(expected, rel=1e-5)
    assert ours == pytest.approx(theirs, rel=1e-6)


@pytest.mark.parametrize("optimizer, learning_rate, loss", [
    ("adam", 1e-3, "sse"),    # the 2018 recipe
    ("sgd", 3e-5, "sse"),     # notebook 03's plain SGD
])
def test_notebook_03_fit_recipe_gives_the_same_batches_as_train_autoencoder(nb03, mnist, optimizer,
                                                                             learning_rate, loss):
    x = mnist[0][:400]
    steps, batch_size = 6, 8
    opt = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}[optimizer](learning_rate=learning_rate)
    loss_fn = nb03["summed_squared_error"] if loss == "sse" else "mse"
    cu.set_seed(42)
    ours = models.build_seed_cae()[0]
    ours_losses = nb03["fit_steps"](ours, x, opt, loss_fn, steps=steps, batch_size=batch_size, seed=42)["batch_losses"]
    cu.set_seed(42)
    theirs = models.build_seed_cae()[0]
    result = training.train_autoencoder(theirs, x, steps=steps, batch_size=batch_size, optimizer=optimizer,
                                        learning_rate=learning_rate, loss=loss, seed=42)
    assert len(ours_losses) == steps and len(set(ours_losses)) == steps  # a real sequence
    # The weights end exactly equal: same start, same batches, and the same gradient (the
    # derivative of a sum of squares does not depend on the order of the sum).
    for wa, wb in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    # The reported losses agree to float32 rounding only: the notebook sums all pixels of the
    # batch at once, the package per image and then over the batch, and float32 additions in
    # a different order differ in the last bits (measured: relative 4e-7).
    np.testing.assert_allclose(ours_losses, result["batch_losses"], rtol=2e-6, atol=0)


def test_notebook_03_train_step_gives_the_same_run_as_train_loop(nb03, mnist):
    """Notebook 03's hand-written step (`make_train_step`) and :func:`training.train_loop`
    train the improved CAE the same way: same batches, same losses, same final weights."""
    x = mnist[0][:400]
    steps, batch_size, rate = 8, 32, 3e-3
    cu.set_seed(42)
    ours = models.build_improved_cae()[0]
    step = nb03["make_train_step"](ours, keras.optimizers.Adam(learning_rate=rate))
    order = np.random.default_rng(42).permutation(len(x))[:steps * batch_size]  # one pass is enough
    ours_losses = [float(step(x[order[i * batch_size:(i + 1) * batch_size]])) for i in range(steps)]
    cu.set_seed(42)
    theirs = models.build_improved_cae()[0]
    result = training.train_loop(theirs, x, steps=steps, batch_size=batch_size, optimizer="adam",
                                 learning_rate=rate, loss="mse", seed=42)
    assert result["steps"] == steps and len(set(ours_losses)) == steps  # a real, changing sequence
    assert ours_losses[0] > ours_losses[-1] > 0  # it learns: an independent fact, not only agreement
    # Keras' MeanSquaredError averages per image first, the notebook over all pixels at once:
    # the same number up to float32 rounding.
    np.testing.assert_allclose(ours_losses, result["batch_losses"], rtol=1e-5, atol=0)
    for wa, wb in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-6)
