"""Trained models on disk and in use: save and load (safe mode), cards, fingerprints.

A model ships as ``name.keras`` (the weights, saved without optimizer state) plus
``name.json`` (its card: training record, metrics, library versions, fingerprint).
:func:`model_fingerprint` identifies a model's weights; ``.cae`` files carry it, so a
file is never decoded with the wrong model. :func:`run_model` runs a model on a batch
without Keras' ``predict`` overhead.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import paths
from .backend import keras, stderr_silenced, tf
from .errors import CAEError
from .fileio import atomic_write_bytes, read_card

#: The shipped pretrained model (trained by ``scripts/train_pretrained.py``).
DEFAULT_MODEL = paths.MODELS_DIR / "improved_cae.keras"


def library_versions() -> dict:
    """Versions of the libraries that shape a trained model's numbers."""
    import platform

    import PIL

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "pillow": PIL.__version__}


def model_fingerprint(model) -> bytes:
    """4 bytes that identify a model's weights: the start of a SHA-256 over all of them.

    Written into every ``.cae`` file so that decoding with a different model is refused
    instead of silently producing a wrong image.
    """
    import hashlib

    h = hashlib.sha256()
    for w in model.weights:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w), dtype="<f4").tobytes())
    return h.digest()[:4]


def save_model(autoencoder, path: str | os.PathLike, card: dict, overwrite: bool = False) -> Path:
    """Save ``autoencoder`` as ``path`` (``.keras``) plus ``path`` with ``.json`` (its card).

    The card records whatever the caller passes (data, epochs, batch size, optimizer,
    test metrics...) plus library versions, parameter count and the weight fingerprint.
    Both files are written atomically; an existing model is kept unless ``overwrite``.
    """
    import json
    import tempfile

    path = Path(path)
    if path.suffix != ".keras":
        raise CAEError(f"Model files must end in .keras, got {path.name}.")
    if path.exists() and not overwrite:
        raise CAEError(f"{path} already exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    card = {**card, "model": autoencoder.name, "parameters": int(autoencoder.count_params()),
            "fingerprint": model_fingerprint(autoencoder).hex(), "versions": library_versions()}
    # Save an uncompiled twin with the same weights: the optimizer's state (Adam keeps two
    # numbers per weight) would triple the file and is of no use for encoding/decoding.
    # (from_config, not clone_model: clone_model recompiles a compiled model.)
    twin = keras.Model.from_config(autoencoder.get_config())
    twin.set_weights(autoencoder.get_weights())
    with tempfile.TemporaryDirectory(dir=path.parent) as tmpdir:
        tmp = Path(tmpdir) / path.name
        twin.save(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    atomic_write_bytes(path.with_suffix(".json"),
                        (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    return path


def update_model_card(path: str | os.PathLike, **fields) -> Path:
    """Add or replace ``fields`` in the JSON card beside model ``path`` (atomically)."""
    import json

    card_path = Path(path).with_suffix(".json")
    card = read_card(Path(path))
    card.update(fields)
    atomic_write_bytes(card_path, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    return Path(path)


def load_model(path: str | os.PathLike | None = None):
    """Load a saved autoencoder in Keras' safe mode (no arbitrary code runs).

    ``path`` defaults to the shipped :data:`DEFAULT_MODEL`. Returns ``(autoencoder,
    encoder, decoder, card)``; ``card`` is the JSON beside the model (``{}`` if absent).
    Raises :class:`CAEError` if the file is missing or not a CAE model.
    """
    import zipfile

    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        raise CAEError(f"Model file {path} not found. Use the shipped {paths.shown(DEFAULT_MODEL)} "
                       "or train one in notebook 03.")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise CAEError(f"{path} is not a Keras model file (.keras).")
    try:
        with stderr_silenced():
            autoencoder = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # a damaged or foreign .keras file
        raise CAEError(f"Could not load the model in {path}: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:160]}") from None
    parts = [layer for layer in autoencoder.layers if isinstance(layer, keras.Model)]
    if len(parts) != 2:
        raise CAEError(f"{path} holds a model without a separate encoder and decoder; it is not "
                       "one of this course's autoencoders.")
    return autoencoder, parts[0], parts[1], read_card(path)


def run_model(model, batch: np.ndarray, chunk: int = 500) -> np.ndarray:
    """``model`` on ``batch`` in chunks, as float32 NumPy. Calling the model directly (not
    ``predict``) avoids building a new traced function for every freshly loaded model."""
    outs = [keras.ops.convert_to_numpy(model(batch[i:i + chunk], training=False))
            for i in range(0, len(batch), chunk)]
    if not outs:
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    return np.concatenate(outs).astype(np.float32)


def encode_digits(encoder, digits: np.ndarray) -> np.ndarray:
    """Latents of ``(N,28,28,1)`` digits: ``(N, latent...)`` float32 from ``encoder``."""
    digits = np.asarray(digits, np.float32)
    if digits.ndim == 3:
        digits = digits[None]
    expected = tuple(encoder.input_shape[1:])
    if digits.shape[1:] != expected:
        raise CAEError(f"The encoder takes images shaped {expected}, got {digits.shape[1:]}.")
    return run_model(encoder, digits)


def decode_latents(decoder, latents: np.ndarray) -> np.ndarray:
    """Images ``(N,28,28,1)`` in [0, 1] from latents shaped for ``decoder``."""
    shape = tuple(decoder.input_shape[1:])
    latents = np.asarray(latents, np.float32).reshape((-1, *shape))
    return np.clip(run_model(decoder, latents), 0, 1).astype(np.float32)


def reconstruct(autoencoder, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Run ``autoencoder`` on ``(N,28,28,1)`` images; output clipped to [0, 1], float32."""
    out = autoencoder.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


#: Loaded codecs, keyed by quality, model path, file time and settings: loading a model
#: takes about a second, so each is loaded once per process (:func:`clear_codec_cache`).
CODEC_CACHE: dict = {}


def clear_codec_cache() -> None:
    """Forget every loaded codec (after retraining, the next load reads the new files)."""
    CODEC_CACHE.clear()
