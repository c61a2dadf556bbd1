"""Notebooks 04 and 05 write in cells what the package also holds; these tests prove that
the two agree.

The cells tagged ``definition`` are executed in a fresh namespace
(``tests/notebook_code.py``) and compared with the package:

* notebook 04's ``write_v0`` (the ``.cae`` v0 file written with ``struct``) gives the same
  bytes as ``caecodec.formats.pack_float_latent``;
* notebook 05's ``make_analysis_transform`` / ``make_synthesis_transform`` have the same
  layers (class, configuration) and weight shapes as the encoder and decoder of
  ``caecodec.models.build_rd_cae``;
* the shipped weights load into notebook 05's ``RateDistortionModel`` (``load_shipped``) and
  give the same reconstructions and bits as the shipped model;
* notebook 05's loss (``compile_rd``) is the package's (``codec_training.train_rd_cae``):
  the same value on the same weights and digits;
* notebook 05's ``range_code`` / ``range_decode`` with ``constriction``, cut to the shortest
  ending, give the payload that ``caecodec.digit_codec.LearnedCodec`` writes, and read it back.

Each comparison is a function returning a list of problems (empty: they agree). The last
tests run the same functions on copies of the notebooks with one line changed, and check
that each comparison then reports the difference: none of them can pass by comparing
nothing.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import cae_utils as cu
from caecodec import codec_training, digit_codec, entropy, formats, modelio, models
from notebook_code import NOTEBOOKS, run_definitions

NB04, NB05 = NOTEBOOKS / "04_encode_decode.ipynb", NOTEBOOKS / "05_rate_distortion.ipynb"


@pytest.fixture(scope="module")
def digits(mnist_dir):
    (_, _), (x_test, _) = cu.load_mnist(path=mnist_dir, quick=True)
    return x_test[:64]


@pytest.fixture(scope="module")
def quality():
    qualities = digit_codec.available_qualities()
    if not qualities:
        pytest.skip("no shipped digit codec models")
    return qualities[len(qualities) // 2]


@pytest.fixture(scope="module")
def nb04():
    return run_definitions(NB04)


@pytest.fixture(scope="module")
def nb05():
    return run_definitions(NB05)


# --------------------------------------------------------------------------------------
# The comparisons (each returns a list of problems; empty = the notebook and package agree)
# --------------------------------------------------------------------------------------

def v0_problems(ns) -> list[str]:
    problems = []
    rng = np.random.default_rng(4)
    for size in (128, 1, 49 * 16):
        latent = rng.normal(size=size).astype(np.float32)
        fingerprint = bytes(rng.integers(0, 256, 4, dtype=np.uint8))
        mine, package = ns["write_v0"](latent, fingerprint), formats.pack_float_latent(latent, fingerprint)
        if mine != package:
            problems.append(f"write_v0 differs from pack_float_latent for a latent of {size} numbers")
        elif not np.array_equal(formats.unpack_float_latent(mine, fingerprint, size), latent):
            problems.append(f"the package cannot read write_v0's file of {size} numbers back")
    return problems


def layer_rows(model) -> list[tuple]:
    """(class, configuration without the name of the model, weight shapes) of each layer."""
    rows = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":  # a functional model lists its input, Sequential not
            continue
        config = {k: v for k, v in layer.get_config().items() if k not in ("trainable",)}
        rows.append((type(layer).__name__, json.dumps(config, sort_keys=True, default=str),
                     tuple(tuple(w.shape) for w in layer.weights)))
    return rows


def transform_problems(ns, channels: int = 16, width: int = 64) -> list[str]:
    _, encoder, decoder, _ = models.build_rd_cae(channels, width)
    problems = []
    for name, mine, package in (("analysis", ns["make_analysis_transform"](channels, width), encoder),
                                ("synthesis", ns["make_synthesis_transform"](channels, width), decoder)):
        a, b = layer_rows(mine), layer_rows(package)
        if len(a) != len(b):
            problems.append(f"{name}: {len(a)} layers, the package has {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                problems.append(f"{name} layer {i}: {x[0]} {x[1][:80]}... differs from the package's {y[0]}")
        if tuple(mine.input_shape) != tuple(package.input_shape) or tuple(mine.output_shape) != tuple(package.output_shape):
            problems.append(f"{name}: shapes {mine.input_shape} -> {mine.output_shape}, package "
                            f"{package.input_shape} -> {package.output_shape}")
    return problems


def output_problems(ns, quality: int, digits) -> list[str]:
    model = ns["RateDistortionModel"]()
    model(digits[:1])
    trainer = ns["load_shipped"](model, quality)
    shipped = modelio.load_model(digit_codec.rd_model_path(quality))[0]
    problems = []
    parts = [(model.analysis, shipped.get_layer("rd_encoder")), (model.synthesis, shipped.get_layer("rd_decoder")),
             (model.prior, shipped.get_layer("prior"))]
    for mine, theirs in parts:
        if [tuple(w.shape) for w in mine.weights] != [tuple(w.shape) for w in theirs.weights]:
            problems.append(f"{mine.name}: other weight shapes than the shipped {theirs.name}")
    mine, theirs = model(digits), shipped(digits, training=False)
    for key in ("x_hat", "bits"):
        a, b = np.asarray(mine[key], np.float64), np.asarray(theirs[key], np.float64)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-5):
            problems.append(f"{key} differs from the shipped model's (max difference "
                            f"{np.max(np.abs(a - b)) if a.shape == b.shape else 'shape'})")
    if trainer is None:
        problems.append("load_shipped returned nothing")
    codec = digit_codec.load_codec(quality)
    if not np.allclose(np.asarray(model.analysis(digits)), modelio.encode_digits(codec.encoder, digits), atol=1e-5):
        problems.append("the notebook's analysis transform gives other latents than the codec's encoder")
    return problems


@pytest.fixture(scope="module")
def package_loss(digits):
    """A small package model trained one step by ``codec_training.train_rd_cae`` (which
    compiles it), and its loss on ``digits``: ``(trainer, lambda, loss)``."""
    cu.set_seed(1)
    lam = 0.01
    trainer, _, _, _ = models.build_rd_cae(4, 8)
    codec_training.train_rd_cae(trainer, digits, lam, epochs=1, batch_size=len(digits), learning_rate=1e-6)
    targets = {"x_hat": digits, "bits": np.zeros(len(digits), np.float32)}
    loss = trainer.evaluate(digits, targets, batch_size=len(digits), verbose=0, return_dict=True)["loss"]
    return trainer, lam, loss


def loss_problems(ns, digits, package_loss) -> list[str]:
    """The notebook's compiled loss and the package's training loss, on the same weights."""
    trainer, lam, package = package_loss
    targets = {"x_hat": digits, "bits": np.zeros(len(digits), np.float32)}
    model = ns["compile_rd"](ns["RateDistortionModel"](channels=4, width=8), lam)
    model(digits[:1])
    model.analysis.set_weights(trainer.get_layer("rd_encoder").get_weights())
    model.synthesis.set_weights(trainer.get_layer("rd_decoder").get_weights())
    model.prior.set_weights(trainer.get_layer("prior").get_weights())
    mine = model.evaluate(digits, targets, batch_size=len(digits), verbose=0, return_dict=True)["loss"]
    out = model(digits)
    formula = (float(np.mean(out["bits"])) / 784
               + lam * 255.0 ** 2 * float(np.mean((np.asarray(out["x_hat"]) - digits) ** 2)))
    problems = []
    if not np.isclose(mine, package, rtol=1e-4):
        problems.append(f"the notebook's loss {mine:.6f} differs from the package's {package:.6f}")
    if not np.isclose(mine, formula, rtol=1e-4):
        problems.append(f"the notebook's loss {mine:.6f} is not bits/784 + lambda * MSE_255 = {formula:.6f}")
    return problems


def coder_problems(ns, quality: int, digits) -> list[str]:
    codec = digit_codec.load_codec(quality)
    problems = []
    def decodes_to(data, symbols) -> bool:
        try:
            return bool(np.array_equal(ns["range_decode"](data, codec.rows), symbols.ravel()))
        except Exception:  # constriction refuses data that does not fit the tables
            return False

    for i, symbols in enumerate(codec.quantize(modelio.encode_digits(codec.encoder, digits[:12]))):
        raw = ns["range_code"](symbols, codec.rows)
        same = lambda data, s=symbols: decodes_to(data, s)  # noqa: E731
        if not same(raw):
            problems.append(f"digit {i}: range_decode does not give back range_code's symbols")
            continue
        mine = entropy.shortest_payload(raw, same)
        package = formats.unpack_v1(codec.compress(digits[i:i + 1])[0])[4]
        if mine != package:
            problems.append(f"digit {i}: the notebook's payload ({len(mine)} B) differs from the package's "
                            f"({len(package)} B)")
        if not decodes_to(package, codec._uncode(package)):
            problems.append(f"digit {i}: range_decode reads the package's payload differently")
    return problems


# --------------------------------------------------------------------------------------
# The notebooks agree with the package
# --------------------------------------------------------------------------------------

def test_notebook_04_v0_writer_is_the_package_format(nb04):
    assert v0_problems(nb04) == []


def test_notebook_05_transforms_have_the_package_layers_and_weight_shapes(nb05):
    assert transform_problems(nb05) == []
    assert transform_problems(nb05, channels=4, width=8) == []


def test_shipped_weights_load_into_the_notebook_model_with_the_same_outputs(nb05, quality, digits):
    assert output_problems(nb05, quality, digits) == []


def test_notebook_05_loss_is_the_package_training_loss(nb05, digits, package_loss):
    assert loss_problems(nb05, digits, package_loss) == []


def test_notebook_05_range_coder_writes_the_package_payload(nb05, quality, digits):
    assert coder_problems(nb05, quality, digits) == []


# --------------------------------------------------------------------------------------
# ... and each comparison can fail
# --------------------------------------------------------------------------------------

def changed_copy(tmp_path, notebook, old: str, new: str):
    """``notebook`` with ``old`` replaced by ``new`` in its definition cells, run; its namespace."""
    nb = json.loads(notebook.read_text())
    hits = 0
    for cell in nb["cells"]:
        if "definition" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"])
            hits += source.count(old)
            cell["source"] = source.replace(old, new)
    assert hits, f"{old!r} is not in {notebook.name}'s definition cells"
    path = tmp_path / notebook.name
    path.write_text(json.dumps(nb))
    return run_definitions(path)


@pytest.mark.parametrize("check, notebook, old, new", [
    ("v0", NB04, 'b"CAE", 0, fingerprint', 'b"CAE", 1, fingerprint'),
    ("v0", NB04, 'struct.pack("<I", zlib.crc32(body))', 'struct.pack(">I", zlib.crc32(body))'),
    ("transforms", NB05, 'layers.Conv2D(width, 5, strides=2, padding="same", name="conv2")',
     'layers.Conv2D(width, 3, strides=2, padding="same", name="conv2")'),
    ("transforms", NB05, 'GDN(inverse=True, name="igdn1")', 'GDN(name="igdn1")'),
    ("outputs", NB05, 'GDN(inverse=True, name="igdn2")', 'GDN(name="igdn2")'),
    ("outputs", NB05, "bits = -ops.sum(ops.log(likelihood), axis=(1, 2, 3)) / np.log(2.0)",
     "bits = -ops.sum(ops.log(likelihood), axis=(1, 2, 3))"),
    ("loss", NB05, "lam * 255.0 ** 2", "lam * 255.0"),
    ("loss", NB05, '"bits": 1 / (28 * 28)', '"bits": 1 / 28'),
    ("coder", NB05, '.astype(">u4").tobytes()', '.astype("<u4").tobytes()'),
])
def test_each_comparison_catches_a_changed_line(tmp_path, quality, digits, package_loss, check, notebook,
                                                old, new):
    ns = changed_copy(tmp_path, notebook, old, new)
    problems = {"v0": lambda: v0_problems(ns), "transforms": lambda: transform_problems(ns),
                "outputs": lambda: output_problems(ns, quality, digits),
                "loss": lambda: loss_problems(ns, digits, package_loss),
                "coder": lambda: coder_problems(ns, quality, digits)}[check]()
    assert problems, f"changing {old!r} to {new!r} went unnoticed by the {check} comparison"
