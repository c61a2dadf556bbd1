"""MNIST from the four standard IDX files (or Keras' download), checked byte by byte.

:func:`load_mnist_u8` finds the data (a folder you pass, ``$CAE_MNIST_DIR``,
``data/mnist``, Keras' cache) and returns raw ``uint8`` arrays; the course's
``cae_utils.load_mnist`` turns them into float images and applies quick mode.
Layer 1: numpy; Keras only for the download fallback, imported when it is needed.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from . import paths
from .errors import CAEError

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def _where_to_put_mnist() -> str:
    names = "\n".join(f"    {n}" for n in MNIST_FILES.values())
    return (f"Put the four MNIST files\n{names}\ninto {paths.DATA_DIR / 'mnist'} (or any folder, then set "
            "CAE_MNIST_DIR=that/folder or call load_mnist(path=...)).")


def _read_idx_bytes(path: Path) -> bytes:
    """Whole contents of an IDX file, gunzipped if it is gzip; clear errors if broken."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CAEError(f"Cannot read MNIST file {path}: {exc.strerror}.") from None
    if raw[:2] != b"\x1f\x8b":  # not gzip: an already-uncompressed IDX file
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise CAEError(
            f"MNIST file {path} is not a valid gzip file ({exc}); it is probably truncated or "
            "corrupt. Download it again.") from None


def _parse_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Parse an IDX file of unsigned bytes, checking its header against its contents.

    Returns a ``uint8`` array shaped ``(count, *item_shape)``.
    """
    data = _read_idx_bytes(path)
    ndim = 1 + len(item_shape)
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise CAEError(f"MNIST file {path} is too short ({len(data)} bytes) to hold an IDX header; "
                       "it is truncated. Download it again.")
    found_magic = struct.unpack(">I", data[:4])[0]
    if found_magic != magic:
        raise CAEError(
            f"MNIST file {path} has magic number 0x{found_magic:08x}, expected 0x{magic:08x}: it is "
            "not the right IDX file (images and labels swapped?) or it is corrupt.")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    if tuple(dims[1:]) != item_shape:
        raise CAEError(f"MNIST file {path} holds items of shape {tuple(dims[1:])}, expected "
                       f"{item_shape} (28x28 digits).")
    count = dims[0]
    expected = count * int(np.prod(item_shape, dtype=np.int64))
    body = len(data) - header_len
    if body != expected:
        raise CAEError(
            f"MNIST file {path} says it holds {count} items ({expected} bytes) but has {body} bytes "
            "of data: it is truncated or corrupt. Download it again.")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape((count, *item_shape)).copy()


def find_idx_file(folder: Path, name: str) -> Path | None:
    """The gzip file ``name`` in ``folder``, or its uncompressed twin, or None."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_mnist_idx(folder: str | os.PathLike) -> tuple[tuple[np.ndarray, np.ndarray],
                                                         tuple[np.ndarray, np.ndarray]]:
    """Read the four MNIST IDX files from ``folder``; raw ``uint8`` images and labels.

    Returns ``(x_train, y_train), (x_test, y_test)`` with images shaped ``(N, 28, 28)``.
    Raises :class:`CAEError` naming the file if one is missing, truncated or corrupt.
    """
    folder = Path(folder)
    paths = {key: find_idx_file(folder, name) for key, name in MNIST_FILES.items()}
    missing = [MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise CAEError(f"MNIST folder {folder} is missing {', '.join(missing)}. "
                       + _where_to_put_mnist())
    arrays = {}
    for key, path in paths.items():
        if key.endswith("images"):
            arrays[key] = _parse_idx(path, _IDX_IMAGES_MAGIC, (28, 28))
        else:
            arrays[key] = _parse_idx(path, _IDX_LABELS_MAGIC, ())
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise CAEError(f"MNIST {split} set in {folder} has {n_img} images but {n_lab} labels; "
                           "one of the two files is from a different download.")
        if n_lab and arrays[f"{split}_labels"].max() > 9:
            raise CAEError(f"MNIST {split} labels in {folder} contain values above 9: the labels "
                           "file is corrupt.")
    return ((arrays["train_images"], arrays["train_labels"]),
            (arrays["test_images"], arrays["test_labels"]))


def _load_mnist_keras():
    """Keras' normal download (cached in ~/.keras/datasets/mnist.npz)."""
    from .backend import keras

    try:
        return keras.datasets.mnist.load_data()
    except Exception as exc:  # offline, proxy, corrupt cache: one clear message instead
        raise CAEError(
            "MNIST is not on this machine and Keras could not download it "
            f"({type(exc).__name__}: {str(exc)[:120]}). " + _where_to_put_mnist()) from None


def mnist_source(path=None) -> str:
    """Which source :func:`load_mnist_u8` reads for ``path`` (same order as its docstring)."""
    chosen = path if path is not None else os.environ.get("CAE_MNIST_DIR") or None
    if chosen is not None:
        return f"IDX files in {chosen}" + ("" if path is not None else " (from $CAE_MNIST_DIR)")
    if all(find_idx_file(paths.DATA_DIR / "mnist", n) for n in MNIST_FILES.values()):
        return f"IDX files in {paths.DATA_DIR / 'mnist'}"
    return "Keras' download cache (~/.keras/datasets/mnist.npz)"


def load_mnist_u8(path: str | os.PathLike | None = None):
    """MNIST as raw arrays: ``(x_train, y_train), (x_test, y_test)``, images ``uint8``
    ``(N, 28, 28)`` in 0..255, labels ``uint8``.

    Where the data comes from, in order:

    1. ``path``, if given: a folder with the four gzip IDX files (it must have them);
    2. the folder in ``$CAE_MNIST_DIR``, if set (it must have them);
    3. ``data/mnist/`` (:data:`caecodec.paths.DATA_DIR`) if it holds the files;
    4. otherwise Keras' normal download and cache.

    Raises :class:`CAEError` with instructions when no source works, or when a file
    is truncated or corrupt.
    """
    chosen = path if path not in (None, "") else os.environ.get("CAE_MNIST_DIR") or None
    if chosen is not None:
        folder = Path(chosen).expanduser()
        if folder.is_file():
            raise CAEError(f"MNIST path {folder} is a file, not a folder. " + _where_to_put_mnist())
        if not folder.is_dir():
            raise CAEError(f"MNIST folder {folder} does not exist. " + _where_to_put_mnist())
        return load_mnist_idx(folder)
    default = paths.DATA_DIR / "mnist"
    if all(find_idx_file(default, n) for n in MNIST_FILES.values()):
        return load_mnist_idx(default)
    return _load_mnist_keras()
