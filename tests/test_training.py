"""Tests for training (section 5), the classroom panel (5b) and saving/loading models (6).

Everything trains tiny improved CAEs for a handful of steps on a few hundred real MNIST
digits, so the whole file runs in well under a minute on 2 CPU cores. Expected numbers
are derived independently (numpy losses of a frozen model, hand-computed conversions),
never read back from the code under test.
"""
from __future__ import annotations

import json
import math
import types
import zipfile

import numpy as np
import pytest

import cae_utils as cu
from caecodec import errors, modelio, models, training
import keras


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist(mnist_dir):
    """Real MNIST in quick mode: 2000 training and 500 test digits, float32 (N,28,28,1)."""
    (x_train, _), (x_test, _) = cu.load_mnist(path=mnist_dir, quick=True)
    assert x_train.shape == (2000, 28, 28, 1) and x_test.shape == (500, 28, 28, 1)
    return x_train, x_test


@pytest.fixture(scope="module")
def x_small(mnist):
    return mnist[0][:256]


@pytest.fixture(scope="module")
def frozen_cae():
    """An untrained improved CAE whose weights can never change (every layer frozen)."""
    cu.set_seed(11)
    autoencoder, _, _ = models.build_improved_cae()
    autoencoder.trainable = False
    return autoencoder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, mnist):
    """A tiny improved CAE trained for 10 steps and saved with save_model.

    Returns (path, autoencoder, encoder, decoder, card passed in).
    """
    cu.set_seed(7)
    autoencoder, encoder, decoder = models.build_improved_cae()
    training.train_autoencoder(autoencoder, mnist[0][:320], steps=10, batch_size=32, seed=7)
    card = {"data": "320 MNIST digits", "note": "tiny test model", "epochs_or_steps": 10}
    path = modelio.save_model(autoencoder, tmp_path_factory.mktemp("tiny") / "tiny.keras", card)
    return path, autoencoder, encoder, decoder, card


def _fresh_cae(seed: int):
    cu.set_seed(seed)
    return models.build_improved_cae()[0]


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


# --------------------------------------------------------------------------------------
# train_autoencoder
# --------------------------------------------------------------------------------------

def test_steps_give_exactly_n_finite_losses_and_same_seed_repeats(x_small):
    runs = []
    for _ in range(2):
        autoencoder = _fresh_cae(3)
        runs.append(training.train_autoencoder(autoencoder, x_small, steps=7, batch_size=16, seed=3))
    first, second = runs
    assert len(first["batch_losses"]) == 7 and first["steps"] == 7
    assert all(math.isfinite(v) and v > 0 for v in first["batch_losses"])
    assert first["diverged"] is False
    assert first["batch_losses"] == second["batch_losses"], "same seed, same model: must repeat"
    assert len(set(first["batch_losses"])) == 7  # a real sequence, not a constant


def test_one_epoch_of_256_images_at_batch_64_is_4_steps(x_small):
    result = training.train_autoencoder(_fresh_cae(5), x_small, epochs=1, batch_size=64)
    assert result["steps"] == 4 and len(result["batch_losses"]) == 4
    assert len(result["epoch_seconds"]) == 1
    assert result["train_images"] == 256 and result["images_per_second"] > 0
    assert np.all(np.isfinite(result["batch_losses"]))


def test_adam_loss_decreases_over_60_steps(mnist):
    x_test = mnist[1][:100]
    autoencoder = _fresh_cae(9)
    before = cu.reconstruction_metrics(x_test, modelio.reconstruct(autoencoder, x_test))["mse"]
    result = training.train_autoencoder(autoencoder, mnist[0][:512], steps=60, batch_size=32,
                                  learning_rate=2e-3, x_test=x_test)
    losses = np.asarray(result["batch_losses"])
    assert len(losses) == 60
    assert losses[-10:].mean() < 0.85 * losses[:10].mean()
    # The returned test metrics are measured on the trained model, and it got better.
    after = cu.reconstruction_metrics(x_test, modelio.reconstruct(autoencoder, x_test))
    assert result["test"]["mse"] == pytest.approx(after["mse"], rel=1e-5)
    assert after["mse"] < before
    assert result["test"]["psnr_db"] == pytest.approx(10 * np.log10(1 / after["mse"]), rel=1e-6)


@pytest.mark.parametrize("settings, words", [
    (dict(epochs=0), "epochs"),
    (dict(epochs=1000), "epochs"),
    (dict(epochs=1.5), "whole number"),
    (dict(epochs=True), "whole number"),
    (dict(steps=0), "steps"),
    (dict(epochs=1, batch_size=0), "batch_size"),
    (dict(epochs=1, batch_size=5000), "batch_size"),
    (dict(epochs=1, optimizer="rmsprop"), "optimizer"),
    (dict(epochs=1, loss="l1"), "loss"),
    (dict(epochs=1, learning_rate=0.0), "learning_rate"),
    (dict(epochs=1, learning_rate=-1e-3), "learning_rate"),
    (dict(epochs=1, steps=5), "exactly one"),
    (dict(), "exactly one"),
], ids=lambda v: str(v) if isinstance(v, str) else "-".join(f"{k}={v[k]}" for k in v) or "none")
def test_invalid_settings_raise_before_training(x_small, settings, words):
    autoencoder = _fresh_cae(1)
    before = _weights(autoencoder)
    with pytest.raises(cu.CAEError, match=words):
        training.train_autoencoder(autoencoder, x_small[:32], **settings)
    assert not getattr(autoencoder, "compiled", False), "compiled although the settings were bad"
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(autoencoder)))


@pytest.mark.parametrize("shape", [(8, 32, 32, 1), (8, 28, 28), (8, 28, 28, 3), (28, 28, 1)])
def test_wrong_image_shape_raises(shape):
    autoencoder = _fresh_cae(1)
    with pytest.raises(cu.CAEError, match="shaped"):
        training.train_autoencoder(autoencoder, np.zeros(shape, np.float32), steps=1)
    assert not getattr(autoencoder, "compiled", False)


def test_sgd_with_huge_rate_on_summed_loss_diverges_without_raising(x_small, mnist):
    result = training.train_autoencoder(_fresh_cae(2), x_small, steps=40, batch_size=32,
                                  optimizer="sgd", learning_rate=1.0, loss="sse",
                                  x_test=mnist[1][:20])
    assert result["diverged"] is True
    # Training stopped early, at the first non-finite loss, and reported it as such.
    assert result["steps"] < 40 and len(result["batch_losses"]) == result["steps"]
    assert not math.isfinite(result["batch_losses"][-1])
    assert all(math.isfinite(v) for v in result["batch_losses"][:-1])
    assert result["test"] is None


# --------------------------------------------------------------------------------------
# Unit conversions and smoothing
# --------------------------------------------------------------------------------------

def test_loss_in_original_unit():
    np.testing.assert_allclose(training.loss_in_original_unit([10.0, 30.0], "sse", 16), [5.0, 15.0])
    np.testing.assert_allclose(training.loss_in_original_unit([10.0, 30.0], "sse", 8), [10.0, 30.0])
    np.testing.assert_allclose(training.loss_in_original_unit([1.0], "sse", 2), [4.0])
    np.testing.assert_allclose(training.loss_in_original_unit([0.01, 0.02], "mse", 128),
                               [0.01 * 6272, 0.02 * 6272])
    # mse of a batch of 8 images in the summed unit: sum of squares over 8 x 784 pixels.
    rng = np.random.default_rng(0)
    err = rng.normal(size=(8, 28, 28, 1))
    sse8 = float((err ** 2).sum())
    assert training.loss_in_original_unit([float((err ** 2).mean())], "mse", 8)[0] == pytest.approx(sse8)
    with pytest.raises(cu.CAEError, match="loss"):
        training.loss_in_original_unit([1.0], "l1", 8)


def test_smooth():
    out = training.smooth(np.full(37, 2.5), window=10)
    assert len(out) == 37
    np.testing.assert_allclose(out, 2.5)
    np.testing.assert_allclose(training.smooth([1.0, 2.0, 3.0, 4.0], window=2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(training.smooth([1.0, 3.0, 5.0], window=50), [1.0, 2.0, 3.0])
    values = np.random.default_rng(1).normal(size=120)
    expected = [values[max(0, i - 4):i + 1].mean() for i in range(120)]
    np.testing.assert_allclose(training.smooth(values, 5), expected, rtol=1e-12, atol=1e-12)
    assert len(training.smooth([], 5)) == 0


# --------------------------------------------------------------------------------------
# BatchLossLogger: per-batch losses recovered from Keras' running mean
# --------------------------------------------------------------------------------------

def test_batch_loss_logger_inverts_a_running_mean():
    logger = training.BatchLossLogger(n_samples=4 * 8, batch_size=8)
    for losses in ([4.0, 2.0, 6.0, 0.5], [1.0, 3.0]):  # two epochs; the mean restarts
        logger.on_epoch_begin(0)
        for i, _ in enumerate(losses):
            logger.on_train_batch_end(i, {"loss": float(np.mean(losses[:i + 1]))})
        logger.on_epoch_end(0)
    np.testing.assert_allclose(logger.batch_losses, [4.0, 2.0, 6.0, 0.5, 1.0, 3.0])
    assert len(logger.epoch_seconds) == 2


def _numpy_batch_losses(model, x, batch_size, loss):
    """Each batch's loss computed with numpy from the model's predictions, in order."""
    pred = np.asarray(model.predict(x, batch_size=500, verbose=0), np.float64)
    err = (pred - np.asarray(x, np.float64)) ** 2
    out = []
    for start in range(0, len(x), batch_size):
        chunk = err[start:start + batch_size]
        out.append(chunk.mean() if loss == "mse" else chunk.sum())
    return np.array(out)


@pytest.mark.parametrize("loss", ["mse", "sse"])
def test_batch_loss_logger_matches_numpy_losses_of_a_frozen_model(frozen_cae, mnist, loss):
    """Keras fit without shuffling on a frozen model: batch i is x[i*b:(i+1)*b] and the
    model never changes, so every logged loss must equal the numpy loss of that batch."""
    x = mnist[0][:128]
    frozen_cae.compile(optimizer=keras.optimizers.SGD(1e-3), loss=training.make_loss(loss))
    logger = training.BatchLossLogger(len(x), 16)
    frozen_cae.fit(x, x, batch_size=16, epochs=1, shuffle=False, callbacks=[logger], verbose=0)
    expected = _numpy_batch_losses(frozen_cae, x, 16, loss)
    assert len(logger.batch_losses) == 8
    assert np.ptp(expected) > 0.05 * expected.mean(), "batches should differ for a real test"
    np.testing.assert_allclose(logger.batch_losses, expected, rtol=1e-3)


def test_batch_loss_logger_last_partial_batch(frozen_cae, mnist):
    x = mnist[0][:100]  # batches of 64 and 36
    frozen_cae.compile(optimizer=keras.optimizers.SGD(1e-3), loss=training.make_loss("mse"))
    logger = training.BatchLossLogger(len(x), 64)
    frozen_cae.fit(x, x, batch_size=64, epochs=1, shuffle=False, callbacks=[logger], verbose=0)
    np.testing.assert_allclose(logger.batch_losses, _numpy_batch_losses(frozen_cae, x, 64, "mse"),
                               rtol=1e-3)


def test_train_autoencoder_steps_log_every_images_loss(frozen_cae, mnist):
    """steps mode, batch 1, steps = number of images: one shuffled pass, so the logged
    losses are the per-image losses in some order (the order is the shuffle's business)."""
    x = mnist[0][:40]
    result = training.train_autoencoder(frozen_cae, x, steps=40, batch_size=1, optimizer="sgd",
                                  learning_rate=1e-3)
    expected = _numpy_batch_losses(frozen_cae, x, 1, "mse")
    np.testing.assert_allclose(np.sort(result["batch_losses"]), np.sort(expected), rtol=1e-3)
    # ...and not in the original order (the data really was shuffled).
    assert not np.allclose(result["batch_losses"], expected, rtol=1e-3)


# --------------------------------------------------------------------------------------
# TrainingPanel
# --------------------------------------------------------------------------------------

def test_panel_defaults_and_optimizer_switch(mnist):
    x_train, x_test = mnist[0][:128], mnist[1][:32]
    panel = cu.TrainingPanel(x_train, x_test)
    cfg = panel.settings()
    assert cfg["epochs"] == 1 and cfg["batch_size"] == 128 and cfg["optimizer"] == "adam"
    assert cfg["learning_rate"] == pytest.approx(cu.PANEL_LEARNING_RATES["adam"], rel=1e-9)
    assert panel.progress.value == 0 and panel.result is None
    panel.optimizer.value = "sgd"
    assert panel.learning_rate.value == pytest.approx(cu.PANEL_LEARNING_RATES["sgd"], rel=1e-9)
    assert panel.settings()["optimizer"] == "sgd"
    assert panel.settings()["learning_rate"] == pytest.approx(cu.PANEL_LEARNING_RATES["sgd"])
    panel.optimizer.value = "adam"
    assert panel.learning_rate.value == pytest.approx(cu.PANEL_LEARNING_RATES["adam"], rel=1e-9)

    custom = cu.TrainingPanel(x_train, x_test, epochs=3, batch_size=32, optimizer="sgd",
                              max_epochs=5)
    assert custom.settings() == {"epochs": 3, "batch_size": 32, "optimizer": "sgd",
                                 "learning_rate": pytest.approx(cu.PANEL_LEARNING_RATES["sgd"])}
    custom.epochs.value = 40  # the slider clamps to its own max
    assert custom.settings()["epochs"] == 5


def test_panel_run_trains_and_reports_psnr(mnist):
    x_train, x_test = mnist[0][:128], mnist[1][:32]
    panel = cu.TrainingPanel(x_train, x_test)
    panel.batch_size.value = 32  # 4 steps
    result = panel.run()
    assert result is panel.result and result is not None
    assert result["steps"] == 4 and len(result["batch_losses"]) == 4
    assert panel.progress.max == 4 and panel.progress.value == 4
    assert "PSNR" in panel.status.value
    # The PSNR shown is the one measured on x_test with the trained model.
    measured = cu.reconstruction_metrics(x_test, modelio.reconstruct(result["model"], x_test))
    assert result["test"]["psnr_db"] == pytest.approx(measured["psnr_db"], abs=1e-3)
    assert f"{measured['psnr_db']:.2f}" in panel.status.value
    assert result["batch_size"] == 32 and result["loss"] == "mse"
    assert panel.button.disabled is False


@pytest.mark.parametrize("name, value, words", [
    ("batch_size", 0, "batch_size must be between"),
    ("batch_size", 2.5, "whole number"),
    ("epochs", 1000, "epochs must be between"),
])
def test_panel_bad_value_shows_error_and_returns_none(mnist, monkeypatch, name, value, words):
    panel = cu.TrainingPanel(mnist[0][:64], mnist[1][:16])
    monkeypatch.setattr(panel, name, types.SimpleNamespace(value=value))
    assert panel.run() is None
    assert words in panel.status.value
    assert "PSNR" not in panel.status.value
    assert panel.result is None and panel.progress.value == 0
    assert panel.button.disabled is False
    with pytest.raises(cu.CAEError):
        panel.settings()


def test_check_int():
    assert errors.check_int("n", 5, 1, 10) == 5 and errors.check_int("n", np.int64(1), 1, 10) == 1
    for bad in (0, 11, -3):
        with pytest.raises(cu.CAEError, match="between 1 and 10"):
            errors.check_int("n", bad, 1, 10)
    for bad in (2.0, "3", None, True):
        with pytest.raises(cu.CAEError, match="whole number"):
            errors.check_int("n", bad, 1, 10)


# --------------------------------------------------------------------------------------
# save_model / load_model
# --------------------------------------------------------------------------------------

def test_save_load_round_trip_gives_identical_predictions(tiny_model, mnist):
    path, autoencoder, encoder, decoder, _ = tiny_model
    x = mnist[1][:50]
    loaded, enc2, dec2, card = modelio.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), autoencoder.predict(x, verbose=0))
    z = encoder.predict(x, verbose=0)
    np.testing.assert_array_equal(enc2.predict(x, verbose=0), z)
    np.testing.assert_array_equal(dec2.predict(z, verbose=0), decoder.predict(z, verbose=0))
    assert enc2.output_shape == (None, models.LATENT_DIM)
    assert modelio.model_fingerprint(loaded) == modelio.model_fingerprint(autoencoder)


def test_saved_card_records_model_facts_and_caller_keys(tiny_model):
    path, autoencoder, _, _, card_in = tiny_model
    card_file = path.with_suffix(".json")
    assert card_file.is_file()
    card = json.loads(card_file.read_text())
    assert modelio.load_model(path)[3] == card
    for key, value in card_in.items():
        assert card[key] == value
    assert card["parameters"] == autoencoder.count_params() > 0
    assert card["fingerprint"] == modelio.model_fingerprint(autoencoder).hex()
    assert len(bytes.fromhex(card["fingerprint"])) == 4
    import PIL
    import tensorflow as tf
    assert card["versions"]["tensorflow"] == tf.__version__
    assert card["versions"]["keras"] == keras.__version__
    assert card["versions"]["numpy"] == np.__version__
    assert card["versions"]["pillow"] == PIL.__version__
    assert card["model"] == autoencoder.name


def test_fingerprint_changes_with_any_weight():
    autoencoder = _fresh_cae(4)
    fp = modelio.model_fingerprint(autoencoder)
    assert fp == modelio.model_fingerprint(autoencoder) and len(fp) == 4
    weights = autoencoder.get_weights()
    weights[-1] = weights[-1] + np.float32(1e-3)
    autoencoder.set_weights(weights)
    assert modelio.model_fingerprint(autoencoder) != fp


def test_save_refuses_to_overwrite_unless_asked(tiny_model, tmp_path):
    _, autoencoder, _, _, _ = tiny_model
    path = modelio.save_model(autoencoder, tmp_path / "m.keras", {"run": 1})
    before = (path.read_bytes(), path.with_suffix(".json").read_bytes())
    with pytest.raises(cu.CAEError, match="already exists"):
        modelio.save_model(autoencoder, path, {"run": 2})
    assert (path.read_bytes(), path.with_suffix(".json").read_bytes()) == before
    other = _fresh_cae(99)
    modelio.save_model(other, path, {"run": 3}, overwrite=True)
    loaded, _, _, card = modelio.load_model(path)
    assert card["run"] == 3
    assert modelio.model_fingerprint(loaded) == modelio.model_fingerprint(other) != modelio.model_fingerprint(autoencoder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.keras"], "temp files left"
    with pytest.raises(cu.CAEError, match=r"\.keras"):
        modelio.save_model(autoencoder, tmp_path / "m.h5", {})


def test_load_model_missing_path(tmp_path):
    with pytest.raises(cu.CAEError, match="not found"):
        modelio.load_model(tmp_path / "nope.keras")
    with pytest.raises(cu.CAEError, match="not found"):
        modelio.load_model(tmp_path)  # a folder is not a model file


def test_load_model_non_zip_keras_file(tmp_path):
    fake = tmp_path / "x.keras"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n not a zip at all" * 10)
    with pytest.raises(cu.CAEError, match="not a Keras model file"):
        modelio.load_model(fake)


def test_load_model_text_file(tmp_path):
    text = tmp_path / "model.txt"
    text.write_text("hello, I am a model\n")
    with pytest.raises(cu.CAEError, match="not a Keras model file"):
        modelio.load_model(text)


def test_load_model_zip_that_is_not_a_keras_model(tmp_path):
    fake = tmp_path / "z.keras"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("hello.txt", "not keras")
    with pytest.raises(cu.CAEError, match="Could not load"):
        modelio.load_model(fake)


def test_load_model_refuses_a_model_without_encoder_and_decoder(tmp_path):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(784), keras.layers.Reshape((28, 28, 1))])
    model.save(tmp_path / "plain.keras")
    with pytest.raises(cu.CAEError, match="encoder and decoder"):
        modelio.load_model(tmp_path / "plain.keras")


def test_load_model_uses_safe_mode(tmp_path):
    """A .keras file with a Python lambda inside would run code when loaded unsafely."""
    encoder = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(128)],
                               name="lambda_encoder")
    decoder = keras.Sequential([keras.Input((128,)), keras.layers.Dense(784),
                                keras.layers.Reshape((28, 28, 1))], name="plain_decoder")
    inp = keras.Input((28, 28, 1))
    model = keras.Model(inp, decoder(encoder(inp)))
    path = tmp_path / "lambda.keras"
    model.save(path)
    # The file itself is fine: Keras loads it when safe mode is switched off...
    assert keras.saving.load_model(path, safe_mode=False, compile=False) is not None
    # ...but load_model refuses it, and says why.
    with pytest.raises(cu.CAEError, match="(?i)lambda"):
        modelio.load_model(path)


# --------------------------------------------------------------------------------------
# The shipped model
# --------------------------------------------------------------------------------------

def test_shipped_model_exists_is_small_loads_is_documented_and_good(mnist):
    path = modelio.DEFAULT_MODEL
    assert path.is_file(), f"the shipped model {path} is missing (scripts/train_pretrained.py)"
    assert path.stat().st_size <= 2 * 1024 * 1024, f"{path.stat().st_size} bytes"
    autoencoder, encoder, decoder, card = modelio.load_model()
    for key in ("data", "recipe", "test", "versions"):
        assert key in card, f"card lacks {key!r}"
    assert card["test"]["psnr_db"] >= 24
    assert card["fingerprint"] == modelio.model_fingerprint(autoencoder).hex()
    assert encoder.output_shape == (None, models.LATENT_DIM)
    # Re-measured here, not taken from the card: the first 500 test digits.
    x_test = mnist[1][:500]
    measured = cu.reconstruction_metrics(x_test, modelio.reconstruct(autoencoder, x_test))
    assert measured["psnr_db"] >= 23, f"shipped model: PSNR {measured['psnr_db']:.2f} dB on 500 test digits"


def test_saved_trained_model_holds_no_optimizer_state(tiny_model):
    """The tiny model was trained with Adam (two extra numbers per weight); the file must
    hold the weights only, not the optimizer's state."""
    path, autoencoder, _, _, _ = tiny_model
    weight_bytes = 4 * autoencoder.count_params()
    with zipfile.ZipFile(path) as zf:
        stored = sum(info.file_size for info in zf.infolist())
    assert weight_bytes < stored < 1.3 * weight_bytes, f"{stored} bytes stored for {weight_bytes} bytes of weights"
