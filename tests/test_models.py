"""Tests of the models, losses, metrics and file helpers in cae_utils.

Parameter counts are computed here from the layer specification in the docstrings and
the standard formulas, not read back from Keras.
"""
from __future__ import annotations

import io
import json
import math

import keras
import numpy as np
import pytest

import cae_utils
from caecodec import classic, fileio, keras_layers, modelio, models
from cae_utils import CAEError

# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


def conv_params(k: int, cin: int, cout: int) -> int:
    """Conv2D or Conv2DTranspose with bias: k*k*cin*cout weights + cout biases."""
    return k * k * cin * cout + cout


def dense_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# The layer specs, from the build_* docstrings: (kernel, in channels, out channels).
SEED_ENCODER_SPEC = [(4, 1, 32), (4, 32, 64), (4, 64, 128), (4, 128, 128), (4, 128, 128)]
SEED_DECODER_SPEC = [(3, 128, 128), (3, 128, 64), (7, 64, 32), (3, 32, 1)]


@pytest.fixture(scope="module")
def seed():
    cae_utils.set_seed(0)
    return models.build_seed_cae()


@pytest.fixture(scope="module")
def improved():
    cae_utils.set_seed(0)
    return models.build_improved_cae()


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)


def _np(tensor) -> np.ndarray:
    return keras.ops.convert_to_numpy(tensor)


def _shape(shape) -> tuple:
    return tuple(shape)


def test_seed_shapes(seed):
    ae, enc, dec = seed
    assert _shape(ae.input_shape) == (None, 28, 28, 1)
    assert _shape(ae.output_shape) == (None, 28, 28, 1)
    assert _shape(enc.input_shape) == (None, 28, 28, 1)
    assert _shape(enc.output_shape) == (None, 1, 1, 128)
    assert _shape(dec.input_shape) == (None, 1, 1, 128)
    assert _shape(dec.output_shape) == (None, 28, 28, 1)
    assert 1 * 1 * 128 == models.LATENT_DIM


def test_improved_shapes(improved):
    ae, enc, dec = improved
    assert _shape(ae.input_shape) == (None, 28, 28, 1)
    assert _shape(ae.output_shape) == (None, 28, 28, 1)
    assert _shape(enc.output_shape) == (None, 128)
    assert _shape(dec.input_shape) == (None, 128)
    assert _shape(dec.output_shape) == (None, 28, 28, 1)


def test_improved_latent_dim_argument():
    ae, enc, dec = models.build_improved_cae(latent_dim=16)
    assert _shape(enc.output_shape) == (None, 16) and _shape(dec.input_shape) == (None, 16)
    assert _shape(ae.output_shape) == (None, 28, 28, 1)


@pytest.mark.parametrize("which", ["seed", "improved"])
def test_encoder_decoder_standalone_and_chained(which, seed, improved, batch):
    ae, enc, dec = seed if which == "seed" else improved
    z = _np(enc(batch, training=False))
    assert z.shape == (len(batch), *enc.output_shape[1:])
    assert np.isfinite(z).all() and np.abs(z).max() > 0
    y = _np(dec(z, training=False))
    assert y.shape == batch.shape
    out = _np(ae(batch, training=False))
    assert np.allclose(out, y, rtol=1e-5, atol=1e-6)
    # predict() on a numpy batch gives the same, and different inputs give different codes.
    np.testing.assert_allclose(ae.predict(batch, verbose=0), out, rtol=1e-5, atol=1e-6)
    assert not np.allclose(z[0], z[1])


def test_autoencoder_shares_weights_with_encoder_and_decoder(batch):
    cae_utils.set_seed(1)
    ae, enc, dec = models.build_seed_cae()
    assert len(ae.weights) == len(enc.weights) + len(dec.weights)
    before = _np(ae(batch))
    kernel = enc.get_layer("conv1").kernel
    kernel.assign(kernel * 2.0)  # change the encoder only
    after = _np(ae(batch))
    assert not np.allclose(before, after), "the autoencoder must see the encoder's weights"
    assert np.allclose(after, _np(dec(enc(batch))), rtol=1e-5, atol=1e-6)


def test_seed_encoder_spatial_sizes(seed):
    _, enc, _ = seed
    rows = models.layer_shapes(enc)
    convs = [r for r in rows if r[1] == "Conv2D"]
    assert [r[2][0] for r in convs] == [14, 7, 4, 2, 1]
    assert [r[2][1] for r in convs] == [14, 7, 4, 2, 1]
    assert [r[2][2] for r in convs] == [32, 64, 128, 128, 128]
    assert rows[0][1] == "InputLayer" and rows[0][2] == (28, 28, 1)


def test_layer_shapes_walks_into_nested_models(seed, improved):
    for ae, enc, dec in (seed, improved):
        rows = models.layer_shapes(ae)
        # one input layer (the image) and then every layer of the encoder and decoder
        assert [r[1] for r in rows].count("InputLayer") == 1 and rows[0][1] == "InputLayer"
        n_enc = len(enc.layers) - 1  # without its InputLayer
        n_dec = len(dec.layers) - 1
        assert len(rows) == 1 + n_enc + n_dec
        assert rows[-1][2] == (28, 28, 1)
        assert rows[n_enc][2] == tuple(enc.output_shape[1:])  # the bottleneck


def test_seed_parameter_counts(seed):
    ae, enc, dec = seed
    enc_expected = sum(conv_params(*spec) for spec in SEED_ENCODER_SPEC)
    dec_expected = sum(conv_params(*spec) for spec in SEED_DECODER_SPEC)
    # the same numbers worked out on paper, as a check on the spec above
    assert enc_expected == 544 + 32_832 + 131_200 + 262_272 + 262_272
    assert enc.count_params() == enc_expected
    assert dec.count_params() == dec_expected
    assert ae.count_params() == enc_expected + dec_expected
    for name, spec in zip([f"conv{i}" for i in range(1, 6)], SEED_ENCODER_SPEC):
        assert enc.get_layer(name).count_params() == conv_params(*spec), name
    for name, spec in zip([f"deconv{i}" for i in range(1, 5)], SEED_DECODER_SPEC):
        assert dec.get_layer(name).count_params() == conv_params(*spec), name


def test_improved_parameter_counts(improved):
    ae, enc, dec = improved
    flat = 7 * 7 * 32  # 28 -> 14 -> 7 with stride-2 "same" convolutions, 32 channels
    enc_expected = conv_params(4, 1, 16) + conv_params(4, 16, 32) + dense_params(flat, 128)
    dec_expected = dense_params(128, flat) + conv_params(4, 32, 16) + conv_params(4, 16, 1)
    assert enc.count_params() == enc_expected
    assert dec.count_params() == dec_expected
    assert ae.count_params() == enc_expected + dec_expected


def test_seed_output_layer_is_linear(seed):
    _, _, dec = seed
    last = dec.layers[-1]
    assert last.name == "deconv4"
    assert last.activation in (keras.activations.linear, None)
    # the hidden layers are not linear (leaky ReLU)
    assert dec.get_layer("deconv1").activation not in (keras.activations.linear, None)
    # a linear output can leave [0, 1]: feed a large code and look
    z = np.full((1, 1, 1, 128), 50.0, np.float32)
    y = _np(dec(z))
    assert y.min() < 0.0 or y.max() > 1.0


def test_set_seed_makes_builds_repeatable(batch):
    cae_utils.set_seed(7)
    a = models.build_seed_cae()[0]
    cae_utils.set_seed(7)
    b = models.build_seed_cae()[0]
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(_np(a(batch)), _np(b(batch)))


def test_seed_model_save_and_load_round_trip(seed, batch, tmp_path):
    ae, _, _ = seed
    path = tmp_path / "seed.keras"
    ae.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(_np(loaded(batch)), _np(ae(batch)), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------
# Loss and metrics
# --------------------------------------------------------------------------------------


def _known_pair():
    """A batch of 8 images and 'reconstructions' with a known summed squared error."""
    x = np.zeros((8, 28, 28, 1), np.float32)
    x_hat = np.zeros((8, 28, 28, 1), np.float32)
    for i in range(8):
        x_hat[i, : i + 1, 0, 0] = 0.5  # image i differs by 0.5 in i+1 pixels
    # sum over images of (i+1) * 0.25 = 0.25 * 36 = 9
    return x, x_hat, 9.0


def test_summed_squared_error_known_batch():
    x, x_hat, expected = _known_pair()
    loss = keras_layers.SummedSquaredError()
    assert float(loss(x, x_hat)) == pytest.approx(expected, rel=1e-6)
    assert float(loss(x, x_hat)) == pytest.approx(float(((x - x_hat) ** 2).sum()), rel=1e-6)


def test_summed_squared_error_random_batch_equals_numpy():
    rng = np.random.default_rng(1)
    y = rng.random((8, 28, 28, 1), dtype=np.float32)
    p = rng.random((8, 28, 28, 1), dtype=np.float32)
    expected = ((y.astype(np.float64) - p.astype(np.float64)) ** 2).sum()
    got = float(keras_layers.SummedSquaredError()(y, p))
    assert got == pytest.approx(expected, rel=1e-5)
    # summed, not averaged: half the batch gives about half the loss
    half = float(keras_layers.SummedSquaredError()(y[:4], p[:4]))
    assert half == pytest.approx(((y[:4].astype(np.float64) - p[:4]) ** 2).sum(), rel=1e-5)
    assert half < got


def test_summed_squared_error_config_round_trip():
    loss = keras_layers.SummedSquaredError()
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, keras_layers.SummedSquaredError)
    x, x_hat, expected = _known_pair()
    assert float(again(x, x_hat)) == pytest.approx(expected, rel=1e-6)


def test_reconstruction_metrics_units():
    rng = np.random.default_rng(2)
    x = rng.random((8, 28, 28, 1))
    x_hat = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    mse = ((x - x_hat) ** 2).mean()
    m = cae_utils.reconstruction_metrics(x, x_hat)
    assert set(m) >= {"mse", "psnr_db", "sse_per_8"}
    assert m["mse"] == pytest.approx(mse, rel=1e-12)
    assert m["sse_per_8"] == pytest.approx(mse * 784 * 8, rel=1e-12)
    # with 8 images, sse_per_8 is exactly the summed squared error of the batch
    assert m["sse_per_8"] == pytest.approx(((x - x_hat) ** 2).sum(), rel=1e-12)
    assert m["psnr_db"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-12)


def test_reconstruction_metrics_agree_with_summed_loss():
    x, x_hat, expected = _known_pair()
    assert cae_utils.reconstruction_metrics(x, x_hat)["sse_per_8"] == pytest.approx(expected)


def test_psnr_from_mse():
    assert cae_utils.psnr_from_mse(0) == math.inf
    assert cae_utils.psnr_from_mse(0.0) == math.inf
    assert cae_utils.psnr_from_mse(1.0) == pytest.approx(0.0)
    assert cae_utils.psnr_from_mse(0.01) == pytest.approx(20.0)
    assert cae_utils.psnr_from_mse(1e-3) == pytest.approx(30.0)
    assert isinstance(cae_utils.psnr_from_mse(0.01), float)


def test_mse_per_image():
    x = np.zeros((3, 28, 28, 1))
    x_hat = np.zeros_like(x)
    x_hat[1] = 0.5
    x_hat[2, 0, 0, 0] = 1.0
    np.testing.assert_allclose(cae_utils.mse_per_image(x, x_hat), [0.0, 0.25, 1 / 784])


def test_mse_per_image_clips_reconstructions():
    x = np.ones((2, 28, 28, 1)) * np.array([0.0, 1.0]).reshape(2, 1, 1, 1)
    x_hat = np.ones_like(x) * np.array([-3.0, 5.0]).reshape(2, 1, 1, 1)  # overshoot both ways
    np.testing.assert_allclose(cae_utils.mse_per_image(x, x_hat), [0.0, 0.0])


@pytest.mark.parametrize("shapes", [((2, 28, 28, 1), (2, 28, 28)),
                                    ((2, 28, 28, 1), (3, 28, 28, 1)),
                                    ((1, 28, 28, 1), (1, 14, 14, 1))])
def test_mse_per_image_shape_mismatch(shapes):
    a, b = shapes
    with pytest.raises(CAEError, match="shape"):
        cae_utils.mse_per_image(np.zeros(a), np.zeros(b))


def test_reconstruct_clips_to_unit_range(seed, batch):
    ae, _, _ = seed
    out = modelio.reconstruct(ae, batch, batch_size=2)
    assert out.shape == batch.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    raw = _np(ae(batch))
    np.testing.assert_allclose(out, np.clip(raw, 0, 1), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# Figures, results, PNG sizes
# --------------------------------------------------------------------------------------


@pytest.fixture
def figures_dir(tmp_path, monkeypatch):
    folder = tmp_path / "figures"
    monkeypatch.setattr(cae_utils, "FIGURES_DIR", folder)
    return folder


def _figure(size=(2, 1)):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    ax.plot([0, 1], [0, 1])
    return fig


def test_save_fig_writes_a_valid_png(figures_dir):
    import matplotlib.pyplot as plt
    from PIL import Image

    fig = _figure()
    try:
        path = cae_utils.save_fig("my_plot", fig, dpi=50)
    finally:
        plt.close(fig)
    assert path == figures_dir / "my_plot.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (100, 50)
    assert sorted(p.name for p in figures_dir.iterdir()) == ["my_plot.png"], "no temp files left"


def test_save_fig_replaces_and_accepts_png_suffix(figures_dir):
    import matplotlib.pyplot as plt
    from PIL import Image

    first, second = _figure((2, 1)), _figure((3, 2))
    try:
        p1 = cae_utils.save_fig("same", first, dpi=40)
        with Image.open(p1) as im:
            assert im.size == (80, 40)
        p2 = cae_utils.save_fig("same.png", second, dpi=40)  # '.png' is not doubled
    finally:
        plt.close(first)
        plt.close(second)
    assert p2 == p1 == figures_dir / "same.png"
    with Image.open(p2) as im:
        assert im.size == (120, 80)
    assert sorted(p.name for p in figures_dir.iterdir()) == ["same.png"]


def test_save_fig_uses_current_figure_by_default(figures_dir):
    import matplotlib.pyplot as plt
    from PIL import Image

    fig = _figure((1, 1))
    try:
        path = cae_utils.save_fig("current", dpi=30)
    finally:
        plt.close(fig)
    with Image.open(path) as im:
        assert im.size == (30, 30)


@pytest.mark.parametrize("bad", ["a/b", "", "a\\b", ".hidden", "../escape"])
def test_save_fig_rejects_bad_names(figures_dir, bad):
    import matplotlib.pyplot as plt

    fig = _figure()
    try:
        with pytest.raises(CAEError, match="name"):
            cae_utils.save_fig(bad, fig)
    finally:
        plt.close(fig)
    assert not figures_dir.exists() or not any(figures_dir.rglob("*"))


def test_record_results_writes_valid_json(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    monkeypatch.setattr(cae_utils, "RESULTS_DIR", folder)
    results = {"mse": 0.0123, "psnr_db": 19.1, "epochs": 2, "name": "seed", "sizes": [1, 2, 3],
               "nested": {"a": 1.5}}
    path = cae_utils.record_results("02_seed", results)
    assert path == folder / "02_seed.json"
    assert json.loads(path.read_text()) == results
    # a rerun replaces the file, and leaves no temporary files behind
    path2 = cae_utils.record_results("02_seed", {"mse": 0.5})
    assert path2 == path and json.loads(path.read_text()) == {"mse": 0.5}
    assert [p.name for p in folder.iterdir()] == ["02_seed.json"]


def test_record_results_refuses_unserialisable_values(tmp_path, monkeypatch):
    monkeypatch.setattr(cae_utils, "RESULTS_DIR", tmp_path)
    with pytest.raises(TypeError):
        cae_utils.record_results("bad", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def test_atomic_write_refuses_to_overwrite_when_asked(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old")
    with pytest.raises(CAEError, match="already exists"):
        fileio.atomic_write_bytes(target, b"new", overwrite=False)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_png_size_of_blank_digit():
    size = classic.png_size(np.zeros((28, 28), np.uint8))
    assert isinstance(size, int)
    assert 0 < size < 784


def test_png_size_is_the_real_file_size():
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    size = classic.png_size(noise)
    assert size > classic.png_size(np.zeros((28, 28), np.uint8))  # noise does not compress
    assert size > 784  # incompressible pixels plus PNG overhead
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG", optimize=True)
    assert size == len(buf.getvalue())
    with Image.open(io.BytesIO(buf.getvalue())) as im:  # and it is a lossless 'L' image
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), noise)
