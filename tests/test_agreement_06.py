"""Notebook 06 and the package agree.

Notebook 06 writes in cells (tagged ``definition``) what the package also holds:

* ``pad_to_multiple`` and ``crop_back``: padding to the stride by repeating the edge, and
  cropping the decoded image back (``caecodec.photo_codec.pad_to_multiple`` and the crop in
  ``PhotoCodec.image_of``);
* ``dct_filters``: the DCT basis as convolution filters (``caecodec.models.dct_filters``);
* ``build_photo_cae``: the photo codec's model (``caecodec.models.build_photo_cae``).

``tests/notebook_code.py`` runs those cells in a fresh namespace. The checks below are
functions that return a list of problems (empty = they agree), so that the last tests can
show that each check fails on a definition broken on purpose.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from caecodec import modelio, models, photo_codec
from notebook_code import NOTEBOOKS, run_definitions

NOTEBOOK = NOTEBOOKS / "06_any_size_photos.ipynb"
SIZES = [(1, 1), (1, 9), (9, 1), (7, 8), (8, 8), (15, 17), (97, 101), (256, 256)]


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


def _photo():
    """A 72x104 crop of a photo (scikit-image's camera man), uint8."""
    import skimage.data

    return np.asarray(skimage.data.camera())[200:272, 150:254].copy()


# ---- the checks ------------------------------------------------------------------------

def padding_problems(ns: dict) -> list[str]:
    problems = []
    for h, w in SIZES:
        img = _image(h, w, seed=h * 31 + w)
        mine, theirs = ns["pad_to_multiple"](img), photo_codec.pad_to_multiple(img)
        if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
            problems.append(f"pad_to_multiple differs for a {w}x{h} image")
            continue
        if not np.array_equal(ns["crop_back"](mine, h, w), img):
            problems.append(f"crop_back does not give back the {w}x{h} image")
        # the package's decoder crops the same way (image_of: decode, then cut to size)
        decoded = photo_codec.pad_to_multiple(img)
        if not np.array_equal(ns["crop_back"](decoded, h, w), decoded[:h, :w]):
            problems.append(f"crop_back keeps other pixels than the package for {w}x{h}")
    return problems


def dct_problems(ns: dict) -> list[str]:
    mine, theirs = ns["dct_filters"](), models.dct_filters()
    if mine.shape != theirs.shape or mine.dtype != theirs.dtype:
        return [f"dct_filters: {mine.shape} {mine.dtype} against {theirs.shape} {theirs.dtype}"]
    if not np.array_equal(mine, theirs):
        return [f"dct_filters differ by up to {np.abs(mine - theirs).max():.3g}"]
    return []


def _layer_rows(model) -> list[tuple]:
    """(class, config without the name of the model itself) of every layer, nested models
    walked into, plus every weight's shape."""
    rows = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.__class__.__name__ in ("Functional", "Model"):
            rows.append(("model", layer.name))
            rows.extend(_layer_rows(layer))
        else:
            cfg = json.dumps(layer.get_config(), sort_keys=True, default=str)
            rows.append((type(layer).__name__, cfg, tuple(tuple(w.shape) for w in layer.weights)))
    return rows


def model_problems(ns: dict, qualities=None) -> list[str]:
    """Same layers, configs and weight shapes as the package's builder (for the default
    arguments and a small variant); then every shipped quality's weights load into the
    notebook-built model and give the package codec's latent and image."""
    problems = []
    for kwargs in ({}, {"gain": 3.0, "filters": 8, "patch": 64}):
        mine, theirs = ns["build_photo_cae"](**kwargs), models.build_photo_cae(**kwargs)
        for part, a, b in zip(("trainer", "encoder", "decoder"), mine, theirs):
            ra, rb = _layer_rows(a), _layer_rows(b)
            if ra != rb:
                diff = next((f"{x} / {y}" for x, y in zip(ra, rb) if x != y), f"{len(ra)} against {len(rb)} layers")
                problems.append(f"build_photo_cae({kwargs}) {part}: {diff[:300]}")
        for part, layer in ((1, "analysis"), (2, "synthesis")):  # the DCT starts (the rest is random)
            wa, wb = mine[part].get_layer(layer).get_weights(), theirs[part].get_layer(layer).get_weights()
            if len(wa) != len(wb) or not all(np.array_equal(x, y) for x, y in zip(wa, wb)):
                problems.append(f"build_photo_cae({kwargs}): the {layer} layer starts from other weights")
    if problems:
        return problems
    x = (_photo().astype(np.float32) / 255.0)[None, :, :, None]
    for q in (photo_codec.photo_qualities() if qualities is None else qualities):
        codec = photo_codec.load_photo_codec(q)
        trainer, encoder, decoder, _ = ns["build_photo_cae"]()
        try:
            trainer.load_weights(photo_codec.photo_model_path(q))
        except Exception as exc:  # a layer or a shape that does not match
            problems.append(f"quality {q}: the shipped weights do not load: {str(exc)[:200]}")
            continue
        if modelio.model_fingerprint(trainer) != codec.fingerprint:
            problems.append(f"quality {q}: the loaded weights have another fingerprint")
        y_nb = np.asarray(encoder(x))
        y_pkg = np.asarray(codec.encoder(x))
        if not np.allclose(y_nb, y_pkg, atol=1e-5):
            problems.append(f"quality {q}: latents differ by {np.abs(y_nb - y_pkg).max():.3g}")
        y = codec.dequantize(codec.quantize(y_pkg[0]))[None]
        x_nb, x_pkg = np.asarray(decoder(y)), np.asarray(codec.decoder(y))
        if not np.allclose(x_nb, x_pkg, atol=1e-5):
            problems.append(f"quality {q}: decoded images differ by {np.abs(x_nb - x_pkg).max():.3g}")
        # ... and the codec's own path (tiles, crop) gives the same pixels as the notebook's
        img = _photo()[:70, :101]
        symbols = codec.symbols_of(img)
        padded = ns["pad_to_multiple"](img).astype(np.float32)[None, :, :, None] / 255.0
        nb_symbols = codec.quantize(np.asarray(encoder(padded))[0])
        nb_image = ns["crop_back"](np.asarray(decoder(codec.dequantize(nb_symbols)[None]))[0, :, :, 0], *img.shape)
        nb_u8 = np.round(np.clip(nb_image, 0, 1) * 255).astype(np.uint8)
        if not np.array_equal(nb_symbols, symbols):
            problems.append(f"quality {q}: the notebook's padded latent rounds to other symbols")
        elif np.abs(nb_u8.astype(int) - codec.image_of(codec.dequantize(symbols), *img.shape)).max() > 1:
            problems.append(f"quality {q}: the notebook's decode-and-crop gives other pixels")
    return problems


# ---- the notebook against the package ------------------------------------------------------

@pytest.fixture(scope="module")
def notebook_ns():
    return run_definitions(NOTEBOOK)


def test_the_notebook_defines_what_it_teaches(notebook_ns):
    for name in ("pad_to_multiple", "crop_back", "dct_filters", "build_photo_cae"):
        assert callable(notebook_ns.get(name)), f"notebook 06 does not define {name} in a 'definition' cell"


def test_padding_and_cropping_agree(notebook_ns):
    assert padding_problems(notebook_ns) == []


def test_dct_filters_agree(notebook_ns):
    assert dct_problems(notebook_ns) == []


def test_the_model_agrees_and_the_shipped_weights_load_into_it(notebook_ns):
    assert len(photo_codec.photo_qualities()) >= 4
    assert model_problems(notebook_ns) == []


# ---- each check can fail ---------------------------------------------------------------------

def _broken(tmp_path, old: str, new: str) -> dict:
    """The notebook's definitions with ``old`` replaced by ``new`` in its cells."""
    nb = json.loads(NOTEBOOK.read_text())
    hits = 0
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and "definition" in cell.get("metadata", {}).get("tags", []) and old in src:
            cell["source"] = src.replace(old, new)
            hits += 1
    assert hits, f"{old!r} is not in a definition cell of notebook 06"
    path = tmp_path / "06_broken.ipynb"
    path.write_text(json.dumps(nb))
    return run_definitions(path)


def test_padding_check_fails_on_zero_padding(tmp_path):
    assert padding_problems(_broken(tmp_path, 'mode="edge"', 'mode="constant"'))


def test_padding_check_fails_on_a_wrong_crop(tmp_path):
    assert padding_problems(_broken(tmp_path, "return image[:height, :width]", "return image[:height, :width + 1]"))


def test_dct_check_fails_without_the_dc_normalisation(tmp_path):
    assert dct_problems(_broken(tmp_path, "basis[0] /= np.sqrt(2.0)", "pass"))


def test_dct_check_fails_on_transposed_filters(tmp_path):
    assert dct_problems(_broken(tmp_path, '"ui,vj->ijuv"', '"ui,vj->jiuv"'))


def test_model_check_fails_on_another_layer_shape(tmp_path):
    assert model_problems(_broken(tmp_path, 'layers.Conv2D(filters, 3, padding="same", activation="relu", name="post2")',
                                  'layers.Conv2D(filters, 5, padding="same", activation="relu", name="post2")'),
                          qualities=[photo_codec.photo_qualities()[0]])


def test_model_check_fails_on_another_activation(tmp_path):
    ns = _broken(tmp_path, 'activation="relu", name="post1"', 'activation="elu", name="post1"')
    assert model_problems(ns, qualities=[photo_codec.photo_qualities()[0]])


def test_model_check_fails_when_only_the_pixels_differ(tmp_path):
    """The same model, so configs, shapes and weights all agree; but zero padding makes
    the notebook's path through the shipped weights give other symbols for an odd-size
    photo, and the output comparison says so."""
    ns = _broken(tmp_path, 'mode="edge"', 'mode="constant"')
    problems = model_problems(ns, qualities=[photo_codec.photo_qualities()[0]])
    assert problems and all("symbols" in p or "pixels" in p for p in problems), problems


def test_model_check_fails_when_the_dct_start_is_wrong(tmp_path):
    assert model_problems(_broken(tmp_path, "synthesis.set_weights([dct / float(gain)])",
                                  "synthesis.set_weights([dct * float(gain)])"), qualities=[])
