"""Shared fixtures for the cae_utils tests.

* ``project_root``: the folder holding ``cae_utils.py``.
* ``mnist_dir``: the real MNIST gzip IDX files in ``../shared/data/mnist``; skipped when
  absent, except under CI (``CI`` set), where a missing data folder is a failure.
* ``make_mnist_folder``: builds tiny, valid (or deliberately broken) MNIST IDX folders in
  ``tmp_path`` from numpy arrays, so that every loader error path can be provoked.
* ``no_mnist_sources``: no ``CAE_MNIST_DIR``, an empty ``data/``, and a Keras download
  that fails like an offline machine; nothing ever reaches the network.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

os.environ.setdefault("MPLBACKEND", "Agg")  # figures without a display

import cae_utils  # noqa: E402
from caecodec import paths  # noqa: E402

# The four file names, written out here rather than taken from cae_utils, so that a
# renamed constant in the module is caught by the tests.
MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (IDX spec)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


# --------------------------------------------------------------------------------------
# Writing IDX files
# --------------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray, *, magic: int | None = None, dims: tuple[int, ...] | None = None,
              body_cut: int = 0) -> bytes:
    """The bytes of an uncompressed IDX file of unsigned bytes holding ``array``.

    magic:    header magic number (default: 0x0803 for 3-D arrays, 0x0801 for 1-D ones).
    dims:     header dimensions (default: ``array.shape``); lie here to fake a bad header.
    body_cut: drop this many bytes from the end of the data (a truncated body).
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    dims = tuple(array.shape) if dims is None else tuple(dims)
    header = struct.pack(f">I{len(dims)}I", magic, *dims)
    body = array.tobytes()
    if body_cut:
        body = body[:-body_cut]
    return header + body


def write_idx(path: Path, array: np.ndarray | None = None, *, magic: int | None = None,
              dims: tuple[int, ...] | None = None, body_cut: int = 0, compress: bool = True,
              gzip_cut: int = 0, raw: bytes | None = None) -> Path:
    """Write ``array`` as an IDX file at ``path``, gzip-compressed unless ``compress=False``.

    gzip_cut: drop this many bytes from the end of the gzip stream (a broken download).
    raw:      write exactly these bytes instead (empty files, garbage).
    The other keywords are those of :func:`idx_bytes`.
    """
    if raw is None:
        data = idx_bytes(array, magic=magic, dims=dims, body_cut=body_cut)
        if compress:
            data = gzip.compress(data, mtime=0)
            if gzip_cut:
                data = data[:-gzip_cut]
    else:
        data = raw
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@dataclasses.dataclass
class CraftedMNIST:
    """A tiny MNIST folder and the arrays that were written into it."""

    folder: Path
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def path(self, key: str, compress: bool = True) -> Path:
        name = MNIST_NAMES[key]
        return self.folder / (name if compress else name.removesuffix(".gz"))


@pytest.fixture
def make_mnist_folder(tmp_path):
    """Factory: ``make(name="mnist", n_train=12, n_test=10, compress=True, omit=(), **corrupt)``.

    Writes four IDX files with random pixels and labels 0..9 into ``tmp_path / name``.
    ``omit`` lists keys (``"train_images"``, ...) whose file is not written. Any other
    keyword named after a key is a dict of :func:`write_idx` keywords for that file, e.g.
    ``train_images={"gzip_cut": 10}`` or ``test_labels={"array": np.array([...])}``.
    At least 8 items per split, so a labels file is long enough to be read as an images
    header (for the swapped-files case).
    """
    def make(name: str = "mnist", *, n_train: int = 12, n_test: int = 10, compress: bool = True,
             omit=(), seed: int = 0, **corrupt) -> CraftedMNIST:
        unknown = set(corrupt) - set(MNIST_NAMES)
        if unknown:
            raise TypeError(f"unknown file keys {unknown}")
        rng = np.random.default_rng(seed)
        arrays = {
            "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
            "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "test_labels": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
        }
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        for key, file_name in MNIST_NAMES.items():
            if key in omit:
                continue
            options = dict(corrupt.get(key, {}))
            array = options.pop("array", arrays[key])
            options.setdefault("compress", compress)
            target = folder / (file_name if options["compress"] else file_name.removesuffix(".gz"))
            write_idx(target, array, **options)
        return CraftedMNIST(folder, arrays["train_images"], arrays["train_labels"],
                            arrays["test_images"], arrays["test_labels"])

    return make


@pytest.fixture
def crafted_mnist(make_mnist_folder) -> CraftedMNIST:
    """One valid tiny MNIST folder (12 training and 10 test digits)."""
    return make_mnist_folder()


# --------------------------------------------------------------------------------------
# The real data and the data sources
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def mnist_dir(project_root) -> Path:
    """The real MNIST folder, ``<project>/../shared/data/mnist``.

    Missing folder or files: skip (a student's laptop), but fail when ``CI`` is set,
    because CI is supposed to test against the real data.
    """
    folder = project_root.parent / "shared" / "data" / "mnist"
    missing = [n for n in MNIST_NAMES.values() if not (folder / n).is_file()]
    if not folder.is_dir() or missing:
        reason = (f"real MNIST not found: {folder} "
                  + ("does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"))
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI is set, so this is an error, not a skip)")
        pytest.skip(reason)
    return folder


class FakeOffline(OSError):
    """What an offline machine's urllib raises (URLError is an OSError subclass too)."""


@pytest.fixture
def no_mnist_sources(monkeypatch, tmp_path):
    """No CAE_MNIST_DIR, an empty ``data/`` (``DATA_DIR`` -> tmp), Keras download offline.

    Returns the list of calls made to the fake ``keras.datasets.mnist.load_data``; a test
    may replace the fake with ``monkeypatch.setattr`` again.
    """
    import keras
    from urllib.error import URLError

    calls = []

    def offline_load_data(*args, **kwargs):
        calls.append((args, kwargs))
        raise URLError(FakeOffline(-3, "Temporary failure in name resolution"))

    data_dir = tmp_path / "empty_data"
    (data_dir / "mnist").mkdir(parents=True)
    monkeypatch.delenv("CAE_MNIST_DIR", raising=False)
    monkeypatch.setattr(paths, "DATA_DIR", data_dir)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline_load_data)
    return calls
