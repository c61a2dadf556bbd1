"""Tests of the MNIST loader: cae_utils.load_mnist / load_mnist_idx and the image converters.

Three groups:
* the real files in ../shared/data/mnist, checked against the README's md5 sums and an
  independent parse written here (gzip + struct + numpy, no cae_utils code);
* tiny crafted IDX folders, valid and broken in every way the loader claims to detect;
* the Keras-download fallback, faked (offline, or returning arrays).
"""
from __future__ import annotations

import gzip
import hashlib
import re
import struct
from urllib.error import URLError

import keras
import numpy as np
import pytest
from conftest import MNIST_NAMES

import cae_utils
from caecodec import mnist, paths
from cae_utils import CAEError

# --------------------------------------------------------------------------------------
# Real MNIST
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_raw(mnist_dir):
    """The decompressed bytes of the four real files, read without cae_utils."""
    return {key: gzip.decompress((mnist_dir / name).read_bytes()) for key, name in MNIST_NAMES.items()}


@pytest.fixture(scope="module")
def real_parsed(real_raw):
    """An independent IDX parse: header via struct, data via numpy."""
    out = {}
    for key, data in real_raw.items():
        if key.endswith("images"):
            magic, n, rows, cols = struct.unpack(">4I", data[:16])
            assert (magic, rows, cols) == (2051, 28, 28)
            out[key] = np.frombuffer(data[16:], np.uint8).reshape(n, rows, cols)
        else:
            magic, n = struct.unpack(">2I", data[:8])
            assert magic == 2049
            out[key] = np.frombuffer(data[8:], np.uint8)
        assert len(out[key]) == n
    return out


@pytest.fixture(scope="module")
def real_full(mnist_dir):
    """The loader's full-mode result on the real folder (loaded once for this module)."""
    return cae_utils.load_mnist(mnist_dir, quick=False)


def _readme_md5s(readme_text: str) -> dict[str, str]:
    rows = re.findall(r"^\|\s*([\w.-]+\.gz)\s*\|[^|\n]*\|\s*([0-9a-f]{32})\s*\|", readme_text, re.M)
    return dict(rows)


def test_real_files_md5_of_decompressed_bytes_match_readme(mnist_dir, real_raw):
    expected = _readme_md5s((mnist_dir / "README.md").read_text())
    assert set(expected) == set(MNIST_NAMES.values()), "README table should list the four files"
    for key, name in MNIST_NAMES.items():
        assert hashlib.md5(real_raw[key]).hexdigest() == expected[name], name


def test_real_full_sizes_dtypes_ranges(real_full):
    (xtr, ytr), (xte, yte) = real_full
    assert xtr.shape == (60_000, 28, 28, 1)
    assert xte.shape == (10_000, 28, 28, 1)
    assert ytr.shape == (60_000,) and yte.shape == (10_000,)
    for x in (xtr, xte):
        assert x.dtype == np.float32
        assert x.min() == 0.0 and x.max() == 1.0  # MNIST uses the full 0..255 range
    for y in (ytr, yte):
        assert y.dtype == np.uint8
        assert set(np.unique(y).tolist()) == set(range(10))


def test_real_labels_agree_with_published_facts(real_full):
    # Well-known facts about MNIST (LeCun et al.; quoted in countless tutorials).
    (_, ytr), (_, yte) = real_full
    assert ytr[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert yte[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(ytr, minlength=10).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(yte, minlength=10).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_pixels_agree_with_independent_parse(real_full, real_parsed, real_raw):
    (xtr, ytr), (xte, yte) = real_full
    # A few single pixels, read straight from the byte offsets of the IDX layout.
    for (split_x, key), (i, r, c) in [
        ((xtr, "train_images"), (0, 14, 14)),
        ((xtr, "train_images"), (59_999, 10, 20)),
        ((xtr, "train_images"), (12_345, 5, 7)),
        ((xte, "test_images"), (0, 20, 13)),
        ((xte, "test_images"), (9_999, 15, 15)),
    ]:
        byte = real_raw[key][16 + i * 784 + r * 28 + c]
        assert split_x[i, r, c, 0] == np.float32(byte) / np.float32(255), (key, i, r, c)
    # ... and everything, image by image.
    np.testing.assert_array_equal(np.rint(xtr[..., 0] * 255).astype(np.uint8), real_parsed["train_images"])
    np.testing.assert_array_equal(np.rint(xte[..., 0] * 255).astype(np.uint8), real_parsed["test_images"])
    np.testing.assert_array_equal(ytr, real_parsed["train_labels"])
    np.testing.assert_array_equal(yte, real_parsed["test_labels"])
    # The first training digit (a 5) has ink in the middle and blank corners.
    assert xtr[0, 0, 0, 0] == 0.0 and xtr[0, 27, 27, 0] == 0.0
    assert xtr[0, 10:18, 10:18].max() > 0.9


def test_real_load_mnist_idx_returns_raw_uint8(mnist_dir, real_parsed):
    (xtr, ytr), (xte, yte) = mnist.load_mnist_idx(str(mnist_dir))  # a str path works too
    assert xtr.dtype == xte.dtype == ytr.dtype == yte.dtype == np.uint8
    assert xtr.shape == (60_000, 28, 28) and xte.shape == (10_000, 28, 28)
    np.testing.assert_array_equal(xte, real_parsed["test_images"])
    np.testing.assert_array_equal(ytr, real_parsed["train_labels"])


def test_real_quick_gives_quick_sizes_and_the_first_images(mnist_dir, real_parsed):
    (xtr, ytr), (xte, yte) = cae_utils.load_mnist(mnist_dir, quick=True)
    n_train, n_test = cae_utils.QUICK_SIZES
    assert 0 < n_train < 60_000 and 0 < n_test < 10_000
    assert xtr.shape == (n_train, 28, 28, 1) and ytr.shape == (n_train,)
    assert xte.shape == (n_test, 28, 28, 1) and yte.shape == (n_test,)
    assert xtr.dtype == xte.dtype == np.float32 and ytr.dtype == yte.dtype == np.uint8
    np.testing.assert_array_equal(ytr, real_parsed["train_labels"][:n_train])
    np.testing.assert_array_equal(yte, real_parsed["test_labels"][:n_test])
    np.testing.assert_array_equal(np.rint(xte[..., 0] * 255), real_parsed["test_images"][:n_test])


def test_real_path_from_env_var(mnist_dir, real_parsed, no_mnist_sources, monkeypatch):
    monkeypatch.setenv("CAE_MNIST_DIR", str(mnist_dir))
    (xtr, ytr), (xte, yte) = cae_utils.load_mnist(quick=True)
    assert (len(xtr), len(xte)) == cae_utils.QUICK_SIZES
    np.testing.assert_array_equal(ytr, real_parsed["train_labels"][: len(ytr)])
    np.testing.assert_array_equal(np.rint(xtr[:50, ..., 0] * 255), real_parsed["train_images"][:50])
    assert no_mnist_sources == [], "the Keras download must not be tried when CAE_MNIST_DIR is set"


# --------------------------------------------------------------------------------------
# Crafted folders: valid ones
# --------------------------------------------------------------------------------------


def _assert_matches(loaded, crafted):
    (xtr, ytr), (xte, yte) = loaded
    np.testing.assert_array_equal(xtr, crafted.x_train)
    np.testing.assert_array_equal(ytr, crafted.y_train)
    np.testing.assert_array_equal(xte, crafted.x_test)
    np.testing.assert_array_equal(yte, crafted.y_test)


def test_crafted_folder_loads_exactly(crafted_mnist):
    loaded = mnist.load_mnist_idx(crafted_mnist.folder)
    _assert_matches(loaded, crafted_mnist)
    assert loaded[0][0].shape == (12, 28, 28) and loaded[1][0].shape == (10, 28, 28)


def test_load_mnist_on_crafted_folder_gives_floats(crafted_mnist):
    (xtr, ytr), (xte, yte) = cae_utils.load_mnist(crafted_mnist.folder, quick=False)
    assert xtr.shape == (12, 28, 28, 1) and xte.shape == (10, 28, 28, 1)
    assert xtr.dtype == np.float32 and ytr.dtype == np.uint8
    np.testing.assert_allclose(xtr[..., 0], crafted_mnist.x_train / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(yte, crafted_mnist.y_test)


def test_uncompressed_idx_files_load(make_mnist_folder):
    crafted = make_mnist_folder(compress=False)
    assert not list(crafted.folder.glob("*.gz"))
    assert crafted.path("train_images", compress=False).is_file()
    _assert_matches(mnist.load_mnist_idx(crafted.folder), crafted)


def test_mixed_compressed_and_uncompressed_files_load(make_mnist_folder):
    crafted = make_mnist_folder(train_labels={"compress": False}, test_images={"compress": False})
    names = sorted(p.name for p in crafted.folder.iterdir())
    assert "train-labels-idx1-ubyte" in names and "t10k-images-idx3-ubyte" in names
    _assert_matches(mnist.load_mnist_idx(crafted.folder), crafted)


def test_quick_none_follows_module_setting(crafted_mnist, monkeypatch):
    monkeypatch.setattr(cae_utils, "QUICK_SIZES", (5, 3))
    monkeypatch.setattr(cae_utils, "QUICK", True)
    (xtr, ytr), (xte, yte) = cae_utils.load_mnist(crafted_mnist.folder)
    assert (len(xtr), len(ytr), len(xte), len(yte)) == (5, 5, 3, 3)
    np.testing.assert_array_equal(ytr, crafted_mnist.y_train[:5])
    monkeypatch.setattr(cae_utils, "QUICK", False)
    (xtr, _), (xte, _) = cae_utils.load_mnist(crafted_mnist.folder)
    assert (len(xtr), len(xte)) == (12, 10)
    # An explicit argument beats the module setting.
    (xtr, _), _ = cae_utils.load_mnist(crafted_mnist.folder, quick=True)
    assert len(xtr) == 5


def test_env_var_is_used_when_no_path(make_mnist_folder, no_mnist_sources, monkeypatch):
    crafted = make_mnist_folder("from_env")
    monkeypatch.setenv("CAE_MNIST_DIR", str(crafted.folder))
    (xtr, ytr), _ = cae_utils.load_mnist(quick=False)
    np.testing.assert_array_equal(ytr, crafted.y_train)
    np.testing.assert_array_equal(np.rint(xtr[..., 0] * 255), crafted.x_train)
    assert no_mnist_sources == []


def test_path_argument_beats_env_var(make_mnist_folder, no_mnist_sources, monkeypatch, tmp_path):
    crafted = make_mnist_folder("by_argument", seed=1)
    monkeypatch.setenv("CAE_MNIST_DIR", str(tmp_path / "does_not_exist"))
    (xtr, _), _ = cae_utils.load_mnist(path=crafted.folder, quick=False)
    np.testing.assert_array_equal(np.rint(xtr[..., 0] * 255), crafted.x_train)


def test_env_var_pointing_nowhere_is_an_error_not_a_fallback(no_mnist_sources, monkeypatch, tmp_path):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("CAE_MNIST_DIR", str(missing))
    with pytest.raises(CAEError, match="does not exist") as info:
        cae_utils.load_mnist(quick=False)
    assert str(missing) in str(info.value)
    assert no_mnist_sources == []


def test_data_dir_mnist_is_used_when_complete(make_mnist_folder, no_mnist_sources, monkeypatch):
    crafted = make_mnist_folder("project_data/mnist", seed=2)
    monkeypatch.setattr(paths, "DATA_DIR", crafted.folder.parent)
    _, (xte, yte) = cae_utils.load_mnist(quick=False)
    np.testing.assert_array_equal(yte, crafted.y_test)
    np.testing.assert_array_equal(np.rint(xte[..., 0] * 255), crafted.x_test)
    assert no_mnist_sources == []


# --------------------------------------------------------------------------------------
# Crafted folders: broken ones. Each must raise CAEError naming the problem.
# --------------------------------------------------------------------------------------


def _error(folder) -> str:
    with pytest.raises(CAEError) as info:
        mnist.load_mnist_idx(folder)
    return str(info.value)


def test_missing_folder(tmp_path, no_mnist_sources):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(CAEError) as info:
        cae_utils.load_mnist(missing, quick=False)
    msg = str(info.value)
    assert str(missing) in msg and "does not exist" in msg
    assert all(name in msg for name in MNIST_NAMES.values()), "tells the user which files to get"
    assert no_mnist_sources == [], "an explicit path must not fall back to the download"


@pytest.mark.parametrize("key", list(MNIST_NAMES))
def test_folder_missing_one_file(make_mnist_folder, key):
    crafted = make_mnist_folder(omit=(key,))
    msg = _error(crafted.folder)
    first_sentence = msg[: msg.index(". ")]
    assert "missing" in first_sentence and str(crafted.folder) in first_sentence
    assert MNIST_NAMES[key] in first_sentence
    for other in set(MNIST_NAMES) - {key}:
        assert MNIST_NAMES[other] not in first_sentence


def test_folder_missing_two_files_lists_both(make_mnist_folder):
    crafted = make_mnist_folder(omit=("train_labels", "test_images"))
    first_sentence = (msg := _error(crafted.folder))[: msg.index(". ")]
    assert MNIST_NAMES["train_labels"] in first_sentence
    assert MNIST_NAMES["test_images"] in first_sentence
    assert MNIST_NAMES["train_images"] not in first_sentence


def test_empty_folder_lists_all_four(tmp_path):
    (tmp_path / "empty").mkdir()
    first_sentence = (msg := _error(tmp_path / "empty"))[: msg.index(". ")]
    assert all(name in first_sentence for name in MNIST_NAMES.values())


def test_truncated_gzip_stream(make_mnist_folder):
    crafted = make_mnist_folder(test_images={"gzip_cut": 20})
    with pytest.raises(CAEError) as info:
        mnist.load_mnist_idx(crafted.folder)
    msg = str(info.value)
    assert str(crafted.path("test_images")) in msg
    assert "gzip" in msg and "truncated" in msg
    assert info.value.__suppress_context__, "no chained zlib/EOFError traceback for the user"


def test_gzip_of_truncated_idx_body(make_mnist_folder):
    crafted = make_mnist_folder(train_images={"body_cut": 100})
    msg = _error(crafted.folder)
    assert str(crafted.path("train_images")) in msg
    assert "truncated" in msg and "12 items" in msg
    assert f"{12 * 784 - 100} bytes" in msg


def test_images_and_labels_swapped_wrong_magic(make_mnist_folder):
    base = make_mnist_folder("base")
    crafted = make_mnist_folder(
        "swapped", train_images={"array": base.y_train}, train_labels={"array": base.x_train})
    msg = _error(crafted.folder)
    assert "magic" in msg and str(crafted.path("train_images")) in msg
    assert "0x00000801" in msg and "0x00000803" in msg  # found, expected
    assert "swapped" in msg


def test_labels_file_with_images_magic(make_mnist_folder):
    crafted = make_mnist_folder(test_labels={"magic": 0x0803})
    msg = _error(crafted.folder)
    assert "magic" in msg and str(crafted.path("test_labels")) in msg


def test_wrong_item_size_32x32(make_mnist_folder):
    big = np.zeros((10, 32, 32), np.uint8)
    crafted = make_mnist_folder(test_images={"array": big})
    msg = _error(crafted.folder)
    assert str(crafted.path("test_images")) in msg
    assert "(32, 32)" in msg and "(28, 28)" in msg


def test_header_count_bigger_than_data(make_mnist_folder):
    crafted = make_mnist_folder(train_images={"dims": (13, 28, 28)})  # 12 images written
    msg = _error(crafted.folder)
    assert str(crafted.path("train_images")) in msg
    assert "13 items" in msg and "truncated" in msg


def test_header_count_smaller_than_data(make_mnist_folder):
    crafted = make_mnist_folder(test_labels={"dims": (9,)})  # 10 labels written
    msg = _error(crafted.folder)
    assert str(crafted.path("test_labels")) in msg and "corrupt" in msg


def test_image_label_count_mismatch(make_mnist_folder):
    crafted = make_mnist_folder(test_labels={"array": np.arange(9, dtype=np.uint8)})  # 10 images
    msg = _error(crafted.folder)
    assert "test" in msg and "10 images" in msg and "9 labels" in msg


def test_label_value_above_9(make_mnist_folder):
    labels = (np.arange(12) % 10).astype(np.uint8)
    labels[7] = 10
    crafted = make_mnist_folder(train_labels={"array": labels})
    msg = _error(crafted.folder)
    assert "train" in msg and "above 9" in msg


@pytest.mark.parametrize("key", ["train_images", "test_labels"])
def test_empty_file(make_mnist_folder, key):
    crafted = make_mnist_folder(**{key: {"raw": b""}})
    msg = _error(crafted.folder)
    assert str(crafted.path(key)) in msg
    assert "too short" in msg and "0 bytes" in msg and "truncated" in msg


def test_non_gzip_garbage(make_mnist_folder):
    garbage = bytes(np.random.default_rng(5).integers(0, 256, 5000, dtype=np.uint8))
    garbage = b"GARBAGE!" + garbage  # does not start with the gzip magic 1f 8b
    crafted = make_mnist_folder(train_labels={"raw": garbage})
    msg = _error(crafted.folder)
    assert str(crafted.path("train_labels")) in msg
    assert "magic" in msg and "corrupt" in msg


def test_garbage_with_gzip_signature(make_mnist_folder):
    crafted = make_mnist_folder(test_images={"raw": b"\x1f\x8b" + b"\x00" * 300})
    msg = _error(crafted.folder)
    assert str(crafted.path("test_images")) in msg and "gzip" in msg


def test_broken_file_via_load_mnist_does_not_fall_back(make_mnist_folder, no_mnist_sources):
    crafted = make_mnist_folder(train_images={"gzip_cut": 5})
    with pytest.raises(CAEError, match="truncated"):
        cae_utils.load_mnist(crafted.folder, quick=False)
    assert no_mnist_sources == []


# --------------------------------------------------------------------------------------
# Offline fallback (Keras download), faked
# --------------------------------------------------------------------------------------


def _assert_offline_message(msg):
    for name in MNIST_NAMES.values():
        assert name in msg, name
    assert "CAE_MNIST_DIR" in msg


def test_offline_no_sources_gives_clear_error(no_mnist_sources):
    with pytest.raises(CAEError) as info:
        cae_utils.load_mnist(quick=False)
    msg = str(info.value)
    _assert_offline_message(msg)
    assert "URLError" in msg
    assert str(paths.DATA_DIR / "mnist") in msg
    assert len(no_mnist_sources) == 1, "the Keras download is tried exactly once"
    assert info.value.__suppress_context__


@pytest.mark.parametrize("exc", [OSError("Network is unreachable"),
                                 URLError("<urlopen error [Errno -3] Temporary failure>"),
                                 ConnectionError("connection refused")])
def test_offline_various_network_errors(no_mnist_sources, monkeypatch, exc):
    def fail():
        raise exc
    monkeypatch.setattr(keras.datasets.mnist, "load_data", fail)
    with pytest.raises(CAEError) as info:
        cae_utils.load_mnist(quick=True)
    _assert_offline_message(str(info.value))
    assert type(exc).__name__ in str(info.value)


def test_incomplete_data_dir_falls_back_to_download(make_mnist_folder, no_mnist_sources, monkeypatch):
    crafted = make_mnist_folder("partial/mnist", omit=("test_labels",))
    monkeypatch.setattr(paths, "DATA_DIR", crafted.folder.parent)
    with pytest.raises(CAEError) as info:
        cae_utils.load_mnist(quick=False)
    _assert_offline_message(str(info.value))
    assert len(no_mnist_sources) == 1


def test_keras_arrays_are_converted(no_mnist_sources, monkeypatch):
    rng = np.random.default_rng(3)
    xtr = rng.integers(0, 256, (2101, 28, 28), dtype=np.uint8)
    ytr = rng.integers(0, 10, 2101).astype(np.int64)  # labels of another dtype
    xte = rng.integers(0, 256, (600, 28, 28), dtype=np.uint8)
    yte = rng.integers(0, 10, 600).astype(np.int64)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: ((xtr, ytr), (xte, yte)))

    (a, b), (c, d) = cae_utils.load_mnist(quick=False)
    assert a.shape == (2101, 28, 28, 1) and c.shape == (600, 28, 28, 1)
    assert a.dtype == c.dtype == np.float32 and b.dtype == d.dtype == np.uint8
    assert 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_allclose(a[..., 0], xtr / 255.0, atol=1e-7, rtol=0)
    np.testing.assert_array_equal(d, yte)

    (a, b), (c, d) = cae_utils.load_mnist(quick=True)
    n_train, n_test = cae_utils.QUICK_SIZES
    assert (len(a), len(b), len(c), len(d)) == (n_train, n_train, n_test, n_test)
    np.testing.assert_array_equal(b, ytr[: cae_utils.QUICK_SIZES[0]])


# --------------------------------------------------------------------------------------
# to_float_images / to_uint8_images
# --------------------------------------------------------------------------------------


def test_to_float_images():
    u8 = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    f = cae_utils.to_float_images(u8)
    assert f.dtype == np.float32 and f.shape == (1, 16, 16, 1)
    assert f.min() == 0.0 and f.max() == 1.0
    np.testing.assert_allclose(f[0, :, :, 0], np.arange(256).reshape(16, 16) / 255.0, atol=1e-7)


def test_uint8_float_round_trip_is_exact_for_every_value():
    u8 = np.tile(np.arange(256, dtype=np.uint8), 4)[:784 * 1].reshape(1, 28, 28)
    back = cae_utils.to_uint8_images(cae_utils.to_float_images(u8))
    assert back.dtype == np.uint8 and back.shape == (1, 28, 28)  # channel dropped
    np.testing.assert_array_equal(back, u8)
    assert set(np.unique(back).tolist()) == set(range(256))


def test_to_uint8_images_clips_and_rounds():
    x = np.array([[-0.5, -1e-3, 0.0, 0.25, 0.502, 1.0, 1.0001, 7.0]], np.float32)
    out = cae_utils.to_uint8_images(x.reshape(1, 1, 8, 1))
    assert out.dtype == np.uint8 and out.shape == (1, 1, 8)
    assert out.ravel().tolist() == [0, 0, 0, 64, 128, 255, 255, 255]


def test_to_uint8_images_keeps_2d_and_channelless_shapes():
    assert cae_utils.to_uint8_images(np.ones((28, 28))).shape == (28, 28)
    assert cae_utils.to_uint8_images(np.zeros((3, 28, 28))).shape == (3, 28, 28)
