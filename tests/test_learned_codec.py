"""Tests for the learned codec (section 10), the .cae format v1 (section 11) and the
``--quality`` option of the command line (section 9).

Nearly everything runs on one tiny rate-distortion CAE (4 latent channels, width 16),
trained for a few dozen steps once per session: the tests check the *machinery*
(quantization, code tables, range coding, the v1 header, the CLI), which must be exact
whatever the model's quality. Only ``test_shipped_rate_and_psnr_grow_with_quality`` uses
the shipped ``models/rd_q1..6.keras``; it skips when they are missing, except under CI.

Every check that matters is made against an independent re-implementation written here
(CRC-16/CCITT, LEB128 varints, -log2 of the pmfs, the quantizer's formula), not against
the module's own helpers.
"""
from __future__ import annotations

import os
import shutil
import time
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import cae_utils as cu
from caecodec import paths
from caecodec import cli, codec_training, digit_codec, entropy, formats, images, keras_layers, modelio, models

QUALITY = 3          # the quality the tiny test codec is built and saved as
HEADER_28 = 7        # magic/version, quality, model byte, 28, 28, CRC-16 (2 bytes)
N_DIGITS = 200


# --------------------------------------------------------------------------------------
# Independent helpers
# --------------------------------------------------------------------------------------

def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection), bit by bit."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def leb128(n: int) -> bytes:
    out = []
    while True:
        out.append((n & 0x7F) | (0x80 if n >> 7 else 0))
        n >>= 7
        if not n:
            return bytes(out)


def craft_v1(payload: bytes, *, quality: int = QUALITY, model_byte: int, size_bytes: bytes) -> bytes:
    """A v1 file built by hand, with a *correct* CRC over whatever header we claim."""
    head = bytes([0xC1, quality, model_byte]) + size_bytes
    crc = crc16_ccitt(payload, crc16_ccitt(head))
    return head + crc.to_bytes(2, "big") + payload


def crc_is_valid(data: bytes) -> bool:
    """Does ``data`` (a v1 file) carry a CRC-16 that matches its header and payload?"""
    pos = 3
    for _ in range(2):  # height and width, LEB128
        while pos < len(data) and data[pos] & 0x80:
            pos += 1
        pos += 1
    if len(data) < pos + 2:
        return False
    return crc16_ccitt(data[pos + 2:], crc16_ccitt(data[:pos])) == int.from_bytes(data[pos:pos + 2], "big")


def assert_digits(images: np.ndarray, n: int) -> None:
    assert images.shape == (n, 28, 28, 1)
    assert images.dtype == np.float32
    assert np.all(np.isfinite(images)) and images.min() >= 0.0 and images.max() <= 1.0


def test_independent_helpers():
    # The published check value of CRC-16/CCITT-FALSE for "123456789".
    assert crc16_ccitt(b"123456789") == 0x29B1
    assert [leb128(n) for n in (0, 1, 127, 128, 300)] == [b"\x00", b"\x01", b"\x7f", b"\x80\x01",
                                                          b"\xac\x02"]
    for size_bytes in (bytes([28, 28]), leb128(4096) + leb128(1), leb128(2**20) + leb128(2**20)):
        data = craft_v1(b"xyz", model_byte=7, size_bytes=size_bytes)
        assert crc_is_valid(data)
        assert not crc_is_valid(data[:-1]) and not crc_is_valid(data + b"\x00")


# --------------------------------------------------------------------------------------
# Fixtures: a tiny trained codec, and the same codec saved into a temporary models folder
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def mnist_quick(mnist_dir):
    (x_train, _), (x_test, _) = cu.load_mnist(path=mnist_dir, quick=True)
    return x_train, x_test


@pytest.fixture(scope="session")
def digits(mnist_quick) -> np.ndarray:
    return mnist_quick[1][:N_DIGITS]


@pytest.fixture(scope="session")
def small(mnist_quick):
    """A 7x7x4 rate-distortion CAE trained for 32 steps, and its LearnedCodec."""
    cu.set_seed(3)
    trainer, encoder, decoder, prior = models.build_rd_cae(channels=4, width=16)
    codec_training.train_rd_cae(trainer, mnist_quick[0][:512], digit_codec.QUALITY_LAMBDAS[QUALITY], epochs=1,
                    batch_size=16, learning_rate=3e-3, seed=3)
    tables = keras_layers.build_code_tables(prior)
    fingerprint = modelio.model_fingerprint(trainer)
    codec = digit_codec.LearnedCodec(encoder, decoder, tables, quality=QUALITY, fingerprint=fingerprint)
    return types.SimpleNamespace(trainer=trainer, encoder=encoder, decoder=decoder, prior=prior,
                                 tables=tables, fingerprint=fingerprint, codec=codec)


@pytest.fixture(scope="session")
def small_files(small, digits) -> list[bytes]:
    return small.codec.compress(digits)


@pytest.fixture(scope="session")
def saved(small, tmp_path_factory) -> Path:
    """``save_codec`` of the tiny codec into a temporary models folder; returns the .keras path."""
    folder = tmp_path_factory.mktemp("rd_models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "MODELS_DIR", folder)
        path = digit_codec.save_codec(small.trainer, small.encoder, small.decoder, small.prior, QUALITY,
                             {"purpose": "test_learned_codec"})
    return path


@pytest.fixture
def models_dir(saved, monkeypatch) -> Path:
    """``cu.MODELS_DIR`` pointed at the temporary models folder."""
    monkeypatch.setattr(paths, "MODELS_DIR", saved.parent)
    return saved.parent


@pytest.fixture
def fresh_cache(monkeypatch) -> dict:
    """An empty ``load_codec`` cache for the duration of one test."""
    cache: dict = {}
    monkeypatch.setattr(modelio, "CODEC_CACHE", cache)
    return cache


# --------------------------------------------------------------------------------------
# Entropy coding is lossless
# --------------------------------------------------------------------------------------

def test_symbols_roundtrip_on_200_digits(small, digits):
    produced, read_back = small.codec.symbols_roundtrip(digits)
    assert produced.shape == read_back.shape == (N_DIGITS, 7, 7, 4)
    assert produced.dtype == read_back.dtype == np.int32
    np.testing.assert_array_equal(produced, read_back)


def test_compress_unpack_uncode_gives_back_the_quantized_latents(small, digits, small_files):
    codec, t = small.codec, small.tables
    # The quantizer's formula, written out here: round(y - median) - offset, clipped.
    y = np.asarray(modelio.encode_digits(small.encoder, digits), np.float64)
    expected = np.clip(np.round(y - t["medians"]) - t["offsets"], 0, t["sizes"] - 1).astype(np.int32)
    np.testing.assert_array_equal(codec.quantize(y), expected)
    assert len(small_files) == N_DIGITS
    for i, data in enumerate(small_files):
        quality, model_byte, h, w, payload = formats.unpack_v1(data, small.fingerprint)
        assert (quality, model_byte, h, w) == (QUALITY, small.fingerprint[0], 28, 28)
        np.testing.assert_array_equal(codec._uncode(payload), expected[i], err_msg=f"digit {i}")


def _adversarial_symbols(sizes: np.ndarray, rng) -> dict[str, np.ndarray]:
    """Extreme symbol grids (7, 7, C) for alphabet sizes per channel ``(C,)`` or per latent
    value ``(7, 7, C)``."""
    k = np.asarray(sizes)
    k = np.broadcast_to(k, k.shape if k.ndim == 3 else (7, 7, len(k)))
    grid = np.zeros(k.shape, np.int32)
    out = {
        "all at each channel's min": grid,
        "all at each channel's max": grid + (k - 1),
        "min/max checkerboard": np.where((np.indices((7, 7)).sum(0) % 2)[..., None] == 0, 0, k - 1),
        "one max in a sea of min": grid.copy(),
    }
    out["one max in a sea of min"][3, 4, :] = k[3, 4, :] - 1
    for j in range(40):
        out[f"uniform random {j}"] = (rng.random(k.shape) * k).astype(np.int32)
    for j in range(10):  # mostly the ends, where the probabilities are tiny
        out[f"ends only {j}"] = np.where(rng.random(k.shape) < 0.5, 0, k - 1).astype(np.int32)
    return {name: s.astype(np.int32) for name, s in out.items()}


def test_adversarial_symbols_roundtrip_through_the_bytes(small):
    codec = small.codec
    cases = _adversarial_symbols(codec.sizes, np.random.default_rng(11))
    files = []
    for name, symbols in cases.items():
        assert symbols.min() >= 0 and np.all(symbols < codec.sizes), name
        data = formats.pack_v1(QUALITY, small.fingerprint, 28, 28, codec._code(symbols))
        payload = formats.unpack_v1(data, small.fingerprint, expect_quality=QUALITY)[4]
        np.testing.assert_array_equal(codec._uncode(payload), symbols, err_msg=name)
        files.append(data)
    # ... and every one of them decodes to a valid image.
    assert_digits(codec.decompress(files), len(files))


def test_adversarial_latents_are_clipped_and_still_roundtrip(small):
    codec = small.codec
    low = codec.dequantize(np.zeros((1, 7, 7, 4), np.int32))
    high = codec.dequantize(np.broadcast_to(codec.sizes - 1, (1, 7, 7, 4)))
    for latents, want in [(low, 0), (low - 1e6, 0), (np.full_like(low, -np.inf), 0),
                          (high, codec.sizes - 1), (high + 1e6, codec.sizes - 1),
                          (np.full_like(high, np.inf), codec.sizes - 1)]:
        symbols = codec.quantize(latents)
        np.testing.assert_array_equal(symbols, np.broadcast_to(want, symbols.shape))
        np.testing.assert_array_equal(codec._uncode(codec._code(symbols[0])), symbols[0])


# --------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------

def test_quantize_clips_into_the_alphabet(small):
    codec = small.codec
    rng = np.random.default_rng(5)
    y = rng.normal(0, 1, (300, 7, 7, 4)) * 10.0 ** rng.choice([-3, 0, 3, 9], size=(300, 1, 1, 1))
    symbols = codec.quantize(y)
    assert symbols.dtype == np.int32 and symbols.shape == y.shape
    assert symbols.min() >= 0
    assert np.all(symbols < codec.sizes)
    assert np.all(symbols.max(axis=(0, 1, 2)) == codec.sizes - 1)  # huge values hit the top
    assert np.all(symbols.min(axis=(0, 1, 2)) == 0)                 # ... and the bottom


def test_dequantize_of_quantize_is_within_half_a_step(small):
    codec = small.codec
    rng = np.random.default_rng(6)
    lo = codec.medians + codec.offsets                   # value of symbol 0
    hi = codec.medians + codec.offsets + codec.sizes - 1  # value of the last symbol
    y = lo + rng.random((500, 7, 7, 4)) * (hi - lo)
    y = y.astype(np.float32)
    err = np.abs(codec.dequantize(codec.quantize(y)).astype(np.float64) - y)
    assert err.max() <= 0.5 + 1e-4
    # Symbols are exact fixed points: quantize(dequantize(s)) == s.
    s = (rng.random((50, 7, 7, 4)) * codec.sizes).astype(np.int32)
    np.testing.assert_array_equal(codec.quantize(codec.dequantize(s)), s)
    assert codec.dequantize(s).dtype == np.float32


# --------------------------------------------------------------------------------------
# Code tables
# --------------------------------------------------------------------------------------

def test_code_tables_are_valid_probability_tables(small):
    t = small.tables
    c = small.prior.matrices[0].shape[0]
    assert t["medians"].shape == (c,) and t["medians"].dtype == np.float64
    assert t["offsets"].shape == (c,) and t["offsets"].dtype == np.int32
    assert t["sizes"].shape == (c,) and t["sizes"].dtype == np.int32
    assert t["pmfs"].shape == (c, t["sizes"].max()) and t["pmfs"].dtype == np.float64
    assert np.all(t["sizes"] >= 2) and np.all(t["sizes"] <= 255)
    for ch in range(c):
        k = t["sizes"][ch]
        pmf = t["pmfs"][ch, :k]
        assert abs(pmf.sum() - 1.0) <= 1e-9, ch
        assert np.all(pmf > 0), ch
        assert np.all(t["pmfs"][ch, k:] == 0), ch  # padding only
        assert len(small.codec.pmfs[ch]) == k
        np.testing.assert_array_equal(small.codec.pmfs[ch], pmf)
        # Symbol 0 is round(y - median) == offset: the median's symbol is inside the range.
        assert t["offsets"][ch] <= 0 <= t["offsets"][ch] + k - 1


def test_build_code_tables_is_deterministic(small):
    again, third = keras_layers.build_code_tables(small.prior), keras_layers.build_code_tables(small.prior)
    for key in ("medians", "offsets", "pmfs", "sizes"):
        np.testing.assert_array_equal(again[key], small.tables[key], err_msg=key)
        np.testing.assert_array_equal(third[key], small.tables[key], err_msg=key)
        assert again[key].dtype == small.tables[key].dtype


def test_code_tables_agree_with_the_trained_prior_layer(small, digits):
    """The float64 tables are the Keras prior's own likelihoods of the quantized values."""
    codec = small.codec
    symbols = codec.quantize(modelio.encode_digits(small.encoder, digits[:50]))
    lik = np.asarray(small.prior(codec.dequantize(symbols)), np.float64)
    pmf = np.stack([np.asarray(codec.pmfs[c], np.float64)[symbols[..., c]] for c in range(4)], -1)
    interior = (symbols > 0) & (symbols < codec.sizes - 1) & (pmf > 1e-3)
    assert interior.mean() > 0.5
    np.testing.assert_allclose(pmf[interior], lik[interior], rtol=2e-3)


def test_estimate_bits_is_minus_log2_of_the_pmfs(small, digits):
    codec, t = small.codec, small.tables
    symbols = codec.quantize(modelio.encode_digits(small.encoder, digits))
    expected = np.zeros(len(symbols))
    for i in range(len(symbols)):
        for ch in range(symbols.shape[-1]):
            expected[i] -= np.log2(t["pmfs"][ch, symbols[i, ..., ch].ravel()]).sum()
    np.testing.assert_allclose(codec.estimate_bits(symbols), expected, rtol=1e-12)
    # Adversarial symbols too (tiny probabilities at the ends).
    for name, s in _adversarial_symbols(codec.sizes, np.random.default_rng(2)).items():
        want = -sum(np.log2(t["pmfs"][ch, s[..., ch].ravel()]).sum() for ch in range(s.shape[-1]))
        np.testing.assert_allclose(codec.estimate_bits(s[None])[0], want, rtol=1e-12, err_msg=name)


def test_real_payload_is_within_a_few_bytes_of_the_estimate(small, digits, small_files):
    codec = small.codec
    estimate_bytes = codec.estimate_bits(codec.quantize(modelio.encode_digits(small.encoder, digits))) / 8
    payload = np.array([len(f) - HEADER_28 for f in small_files], np.float64)
    assert payload.mean() <= estimate_bytes.mean() + 4, (payload.mean(), estimate_bytes.mean())
    # A range coder cannot beat the information content by more than rounding.
    assert payload.mean() >= estimate_bytes.mean() - 1, (payload.mean(), estimate_bytes.mean())
    assert np.all(payload <= estimate_bytes + 8)


# --------------------------------------------------------------------------------------
# Determinism, save/load
# --------------------------------------------------------------------------------------

def test_bitstreams_are_deterministic(small, digits, small_files):
    assert small.codec.compress(digits) == small_files
    assert small.codec.compress(digits) == small_files
    first = small.codec.compress(digits[:1])
    assert small.codec.compress(digits[:1]) == first


def test_save_codec_writes_model_card_and_tables(saved, small):
    import json

    assert saved.name == f"rd_q{QUALITY}.keras" and saved.is_file()
    card = json.loads(saved.with_suffix(".json").read_text())
    assert card["quality"] == QUALITY and card["purpose"] == "test_learned_codec"
    assert card["fingerprint"] == small.fingerprint.hex()
    with np.load(saved.with_suffix(".npz")) as npz:
        assert sorted(npz.files) == ["medians", "offsets", "pmfs", "sizes"]
        for key in npz.files:
            np.testing.assert_array_equal(npz[key], small.tables[key], err_msg=key)


def test_load_codec_round_trip_gives_identical_bytes_and_images(models_dir, fresh_cache, small,
                                                                digits, small_files):
    loaded = digit_codec.load_codec(QUALITY)  # the default path: MODELS_DIR / rd_q3.keras
    assert loaded is digit_codec.load_codec(QUALITY) and len(fresh_cache) == 1  # loaded once, cached
    assert loaded.quality == QUALITY
    assert loaded.fingerprint == small.fingerprint
    assert loaded.card["quality"] == QUALITY
    for c in range(4):
        np.testing.assert_array_equal(loaded.pmfs[c], small.codec.pmfs[c])
    np.testing.assert_array_equal(loaded.medians, small.codec.medians)
    np.testing.assert_array_equal(loaded.offsets, small.codec.offsets)
    # Same bytes after save/load ...
    assert loaded.compress(digits) == small_files
    assert loaded.compress(digits[:1]) == small.codec.compress(digits[:1])
    # ... and each codec decodes the other's files to the same images.
    a = small.codec.decompress(small_files[:50])
    b = loaded.decompress(small_files[:50])
    assert_digits(b, 50)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_load_codec_errors(models_dir, fresh_cache, saved, tmp_path):
    with pytest.raises(cu.CAEError, match="quality"):
        digit_codec.load_codec(0)
    with pytest.raises(cu.CAEError, match="quality"):
        digit_codec.load_codec(16)
    with pytest.raises(cu.CAEError, match=r"no shipped model for quality 5; available: 3\b"):
        digit_codec.load_codec(5)
    lonely = tmp_path / "lonely.keras"
    shutil.copy(saved, lonely)  # a model without its .npz tables
    with pytest.raises(cu.CAEError, match="code tables"):
        digit_codec.load_codec(QUALITY, lonely)


# --------------------------------------------------------------------------------------
# The v1 header
# --------------------------------------------------------------------------------------

def test_header_layout_of_a_28x28_file(small, small_files):
    for data in small_files:
        assert data[0] == 0xC1
        assert data[1] == QUALITY
        assert data[2] == small.fingerprint[0]
        assert data[3:5] == bytes([28, 28])
        payload = formats.unpack_v1(data, small.fingerprint)[4]
        assert len(data) == HEADER_28 + len(payload)
        assert data[HEADER_28:] == payload
        assert int.from_bytes(data[5:7], "big") == crc16_ccitt(payload, crc16_ccitt(data[:5]))


@pytest.mark.parametrize("height,width", [(1, 1), (127, 128), (128, 127), (4096, 1), (28, 4096),
                                          (16383, 16384), (2**20, 2**20)])
def test_varint_sizes_roundtrip(small, height, width):
    payload = bytes(range(5))
    data = formats.pack_v1(QUALITY, small.fingerprint, height, width, payload)
    size_bytes = leb128(height) + leb128(width)
    assert data[3:3 + len(size_bytes)] == size_bytes
    assert len(data) == 3 + len(size_bytes) + 2 + len(payload)
    assert data == craft_v1(payload, model_byte=small.fingerprint[0], size_bytes=size_bytes)
    assert formats.unpack_v1(data, small.fingerprint) == (QUALITY, small.fingerprint[0], height, width, payload)
    if (height, width) != (28, 28):
        with pytest.raises(cu.CAEError, match="28x28"):
            small.codec.decompress([data])


@pytest.mark.parametrize("height,width", [(0, 28), (28, 0), (formats.CAE_MAX_DIMENSION + 1, 28),
                                          (28, formats.CAE_MAX_DIMENSION + 1)])
def test_claimed_dimension_out_of_range_is_refused(small, height, width):
    with pytest.raises(cu.CAEError):
        formats.pack_v1(QUALITY, small.fingerprint, height, width, b"\x01\x02")
    data = craft_v1(b"\x01\x02", model_byte=small.fingerprint[0],
                    size_bytes=leb128(height) + leb128(width))
    with pytest.raises(cu.CAEError, match="corrupt|truncated"):
        formats.unpack_v1(data, small.fingerprint)
    with pytest.raises(cu.CAEError):
        small.codec.decompress([data])


@pytest.mark.parametrize("size_bytes", [
    leb128(2**30) + leb128(28),                 # a 5-byte varint
    leb128(28) + leb128(2**30),
    leb128(2**63) + leb128(2**63),              # 10-byte varints
    leb128(2**28 - 1) + leb128(28),             # the largest 4-byte varint: too big
    bytes([0x9C, 0x80, 0x80, 0x80, 0x00]) + leb128(28),  # an over-long 28
    b"\xff" * 40,                               # a varint that never ends
])
def test_crafted_huge_sizes_are_refused_quickly_without_allocating(small, size_bytes):
    data = craft_v1(bytes(64), model_byte=small.fingerprint[0], size_bytes=size_bytes)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        for call in (lambda: formats.unpack_v1(data, small.fingerprint),
                     lambda: small.codec.decompress([data])):
            with pytest.raises(cu.CAEError, match="corrupt|truncated"):
                call()
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1 << 20  # well under a megabyte: nothing sized by the claim was allocated


def test_other_header_refusals(small, small_files):
    good, fp = small_files[0], small.fingerprint
    with pytest.raises(cu.CAEError, match="empty"):
        formats.unpack_v1(b"")
    with pytest.raises(cu.CAEError, match="version-0"):
        formats.unpack_v1(b"CAE\x00" + bytes(20))
    with pytest.raises(cu.CAEError, match="version 2"):
        formats.unpack_v1(b"\xc2" + good[1:])
    with pytest.raises(cu.CAEError, match="not a .cae file"):
        formats.unpack_v1(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(cu.CAEError, match="truncated"):
        formats.unpack_v1(good[:6])
    # A different quality, written correctly, is refused by a codec of another quality.
    q4 = formats.pack_v1(4, fp, 28, 28, formats.unpack_v1(good)[4])
    with pytest.raises(cu.CAEError, match="quality 4"):
        small.codec.decompress([q4])
    # A different model byte (valid CRC) is a different model.
    other = craft_v1(formats.unpack_v1(good)[4], model_byte=fp[0] ^ 0x5A, size_bytes=bytes([28, 28]))
    with pytest.raises(cu.CAEError, match="different model"):
        small.codec.decompress([other])
    assert small.codec.decompress([]).shape == (0, 28, 28, 1)


# --------------------------------------------------------------------------------------
# Range-coder word packing
# --------------------------------------------------------------------------------------

def test_words_to_bytes_roundtrip():
    rng = np.random.default_rng(9)
    cases = [np.zeros(0, np.uint32), np.zeros(1, np.uint32), np.zeros(5, np.uint32),
             np.array([0x01020304], np.uint32), np.array([0xFFFFFFFF, 0], np.uint32),
             np.array([0x0A000000], np.uint32), np.array([0x0A000000, 0, 0], np.uint32),
             np.array([0x00000001], np.uint32), np.array([0, 0x100], np.uint32)]
    masks = [0xFFFFFFFF, 0xFFFFFF00, 0xFFFF0000, 0xFF000000, 0]
    for _ in range(2000):
        words = rng.integers(0, 2**32, rng.integers(0, 12), dtype=np.uint64).astype(np.uint32)
        if len(words):
            words[-1] &= masks[rng.integers(0, len(masks))]  # trailing zero bytes, or a 0 word
            if rng.random() < 0.2 and len(words) > 1:
                words[-2] &= masks[rng.integers(0, len(masks))]
        cases.append(words)
    for words in cases:
        data = entropy.words_to_bytes(words)
        raw = words.astype(">u4").tobytes()
        assert raw.startswith(data) and len(raw) - len(data) <= 3
        assert raw[len(data):] == bytes(len(raw) - len(data))  # only zero bytes were dropped
        back = entropy.bytes_to_words(data)
        assert back.dtype == np.uint32
        np.testing.assert_array_equal(back, words, err_msg=repr(words))
    assert entropy.words_to_bytes(np.array([0x01020304], np.uint32)) == b"\x01\x02\x03\x04"
    assert entropy.words_to_bytes(np.array([0x01020000], np.uint32)) == b"\x01\x02"


# --------------------------------------------------------------------------------------
# Fuzzing decompress: CAEError or a valid image, never anything else
# --------------------------------------------------------------------------------------

def test_fuzz_decompress_raises_only_cae_errors(small, small_files):
    codec, fp0 = small.codec, small.fingerprint[0]
    rng = np.random.default_rng(20240611)
    originals = small_files[:8]

    def rand(n):
        return rng.integers(0, 256, int(n), dtype=np.uint8).tobytes()

    cases: list[tuple[str, bytes, bytes | None]] = [("unchanged", f, f) for f in originals]
    for _ in range(500):
        cases.append(("random", rand(rng.integers(0, 301)), None))
    for _ in range(300):
        cases.append(("random after 0xC1", b"\xc1" + rand(rng.integers(0, 300)), None))
    for _ in range(300):
        cases.append(("random after a plausible header",
                      bytes([0xC1, QUALITY, fp0, 28, 28]) + rand(rng.integers(0, 300)), None))
    for _ in range(1000):
        f = originals[rng.integers(len(originals))]
        b = bytearray(f)
        for pos in rng.choice(len(f), size=rng.integers(1, 5), replace=False):
            b[pos] ^= int(rng.integers(1, 256))  # always a real change
        cases.append(("mutated", bytes(b), f))
    for f in originals[:4]:
        cases.extend(("truncated", f[:n], f) for n in range(len(f)))
    for _ in range(300):
        f = originals[rng.integers(len(originals))]
        cases.append(("extended", f + rand(rng.integers(1, 33)), f))
    for v in range(256):
        if v != 0xC1:
            cases.append(("first byte changed", bytes([v]) + originals[0][1:], originals[0]))
    assert len(cases) >= 3000

    accepted_unchanged, slipped, wrong = 0, [], []
    start = time.perf_counter()
    for kind, data, original in cases:
        try:
            out = codec.decompress([data])
        except cu.CAEError as exc:
            assert str(exc).strip(), kind
            if kind == "unchanged":
                wrong.append((kind, data.hex(), f"refused: {exc}"))
            continue
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - a Rust panic is a BaseException
            wrong.append((kind, data.hex(), f"{type(exc).__name__}: {exc}"))
            continue
        assert_digits(out, 1)
        if data == original:
            accepted_unchanged += 1
        else:
            assert crc_is_valid(data), (kind, data.hex())
            slipped.append((kind, data.hex()))
    elapsed = time.perf_counter() - start
    assert not wrong, wrong[:5]
    assert accepted_unchanged == len(originals)
    assert len(slipped) <= 2, slipped
    assert elapsed < 30


def test_fuzz_payloads_behind_a_valid_crc(small, small_files):
    """What the CRC would let through by chance: random or damaged payloads with a valid
    CRC must still either be refused with CAEError or decode to a valid image."""
    codec, fp = small.codec, small.fingerprint
    rng = np.random.default_rng(77)
    files = []
    for _ in range(200):
        files.append(formats.pack_v1(QUALITY, fp, 28, 28, rng.integers(0, 256, rng.integers(0, 200),
                                                                   dtype=np.uint8).tobytes()))
    for _ in range(200):
        payload = bytearray(formats.unpack_v1(small_files[rng.integers(50)])[4])
        for pos in rng.choice(len(payload), size=rng.integers(1, 5), replace=False):
            payload[pos] ^= int(rng.integers(1, 256))
        cut = int(rng.integers(0, 3))
        files.append(formats.pack_v1(QUALITY, fp, 28, 28, bytes(payload[:len(payload) - cut])))
    decodable, refused, wrong = [], 0, []
    for data in files:
        try:
            symbols = codec._uncode(formats.unpack_v1(data, fp)[4])
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # noqa: BLE001
            try:
                codec.decompress([data])
            except cu.CAEError as exc:
                assert "corrupt" in str(exc)
                refused += 1
            except BaseException as exc:  # noqa: BLE001
                wrong.append(f"{type(exc).__name__}: {exc}")
            else:
                wrong.append("decompress accepted a payload that _uncode refused")
            continue
        assert symbols.shape == (7, 7, 4) and symbols.min() >= 0 and np.all(symbols < codec.sizes)
        decodable.append(data)
    assert not wrong, wrong[:5]
    assert refused + len(decodable) == len(files)
    if decodable:  # one batched call: the same per-file checks, one Keras predict
        assert_digits(codec.decompress(decodable), len(decodable))


# --------------------------------------------------------------------------------------
# The shipped models: rate and quality grow with the quality level
# --------------------------------------------------------------------------------------

SHIPPED_QUALITIES = tuple(digit_codec.QUALITY_LAMBDAS)


@pytest.fixture(scope="module")
def shipped_codecs():
    folder = paths.MODELS_DIR
    missing = [q for q in SHIPPED_QUALITIES
               if not ((folder / f"rd_q{q}.keras").is_file() and (folder / f"rd_q{q}.npz").is_file())]
    if missing:
        reason = (f"shipped learned-codec models missing in {folder}: "
                  + ", ".join(f"rd_q{q}.keras/.npz" for q in missing)
                  + " (train them with scripts/train_codecs.py)")
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI is set, so this is an error, not a skip)")
        pytest.skip(reason)
    return {q: digit_codec.load_codec(q, folder / f"rd_q{q}.keras") for q in SHIPPED_QUALITIES}


def test_shipped_rate_and_psnr_grow_with_quality(shipped_codecs, digits):
    sizes, psnrs = {}, {}
    for q, codec in shipped_codecs.items():
        assert codec.quality == q and codec.card.get("quality") == q
        assert codec.card.get("fingerprint") == codec.fingerprint.hex()
        files = codec.compress(digits)
        assert all(f[0] == 0xC1 and f[1] == q and f[2] == codec.fingerprint[0] for f in files)
        produced, back = codec.symbols_roundtrip(digits)
        np.testing.assert_array_equal(produced, back)
        for name, s in _adversarial_symbols(codec.sizes, np.random.default_rng(q)).items():
            np.testing.assert_array_equal(codec._uncode(codec.payload(s)), s, err_msg=f"q{q}: {name}")
        payload = np.mean([len(f) - HEADER_28 for f in files])
        assert codec.per_position, f"q{q}: the shipped tables are counted per latent value"
        assert payload <= codec.estimate_bits(produced).mean() / 8 + 2, q
        decoded = codec.decompress(files)
        assert_digits(decoded, len(digits))
        sizes[q] = float(np.mean([len(f) for f in files]))
        psnrs[q] = cu.reconstruction_metrics(digits, decoded)["psnr_db"]
    report = ", ".join(f"q{q}: {sizes[q]:.1f} B {psnrs[q]:.2f} dB" for q in SHIPPED_QUALITIES)
    for lo, hi in zip(SHIPPED_QUALITIES, SHIPPED_QUALITIES[1:]):
        assert sizes[lo] < sizes[hi], report
        assert psnrs[lo] < psnrs[hi], report


# --------------------------------------------------------------------------------------
# The command line with --quality
# --------------------------------------------------------------------------------------

def run_cli(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_cli_error(capsys, folder: Path, args, *words) -> str:
    """Exit 1, exactly one stderr line 'error: ...' containing ``words``, folder unchanged."""
    before = snapshot(folder)
    code, out, err = run_cli(capsys, *args)
    lines = err.splitlines()
    assert code == 1, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    message = lines[0].replace(str(folder), "<dir>")
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    assert snapshot(folder) == before  # no output, no temporary file left behind
    return lines[0]


def write_digit_png(path: Path, digit: np.ndarray) -> Path:
    Image.fromarray(cu.to_uint8_images(digit[None])[0], mode="L").save(path)
    return path


@pytest.fixture(scope="session")
def good_cae(small, digits, tmp_path_factory) -> bytes:
    """The v1 file of the first test digit's PNG (what ``encode --quality 3`` writes;
    ``test_cli_encode_decode_round_trip`` checks that the CLI writes exactly this)."""
    png = write_digit_png(tmp_path_factory.mktemp("png") / "digit.png", digits[0])
    return small.codec.compress(images.digit_from_image(png)[0][None])[0]


@pytest.fixture
def work(tmp_path, digits, good_cae) -> Path:
    """A folder holding digit.png and good.cae (its v1 encoding at quality 3, tiny model)."""
    write_digit_png(tmp_path / "digit.png", digits[0])
    (tmp_path / "good.cae").write_bytes(good_cae)
    return tmp_path


def test_cli_encode_decode_round_trip(tmp_path, capsys, digits, saved, small, good_cae):
    png = write_digit_png(tmp_path / "digit.png", digits[0])
    code, out, err = run_cli(capsys, "encode", png, tmp_path / "out.cae", "--quality", QUALITY,
                             "--model", saved)
    data = (tmp_path / "out.cae").read_bytes()
    assert code == 0 and err == "" and f"({len(data)} bytes)" in out
    assert data[0] == 0xC1 and data[1] == QUALITY and data[2] == small.fingerprint[0]
    # The CLI writes exactly what the codec writes for the digit (an MNIST-style PNG is
    # encoded as it is).
    assert data == small.codec.compress(digits[:1])[0] == good_cae

    # decode without --quality: v1 is recognised by its first byte.
    code, out, err = run_cli(capsys, "decode", tmp_path / "out.cae", tmp_path / "back.png",
                             "--model", saved)
    assert code == 0 and err == "" and "wrote" in out
    with Image.open(tmp_path / "back.png") as img:
        assert img.size == (28, 28) and img.mode == "L"
        back = np.asarray(img)
    expected = cu.to_uint8_images(digit_codec.load_codec(QUALITY, saved).decompress([data]))[0]
    np.testing.assert_array_equal(back, expected)

    # ... and with the matching --quality too.
    code, _, err = run_cli(capsys, "decode", tmp_path / "out.cae", tmp_path / "back3.png",
                           "--quality", QUALITY, "--model", saved)
    assert code == 0 and err == ""
    assert (tmp_path / "back3.png").read_bytes() == (tmp_path / "back.png").read_bytes()


def test_cli_default_model_folder_is_used_with_quality(work, models_dir, capsys):
    """Without --model, --quality N uses MODELS_DIR/rd_q<N>.keras."""
    code, _, err = run_cli(capsys, "decode", work / "good.cae", work / "back.png")
    assert code == 0 and err == ""
    code, _, err = run_cli(capsys, "encode", work / "digit.png", work / "again.cae",
                           "--quality", QUALITY)
    assert code == 0 and err == ""
    assert (work / "again.cae").read_bytes() == (work / "good.cae").read_bytes()


def test_cli_decode_with_the_wrong_quality(work, saved, capsys):
    line = assert_cli_error(capsys, work, ["decode", work / "good.cae", work / "o.png",
                                           "--quality", "4", "--model", saved],
                            "quality 3", "quality 4")
    assert "--quality 3" in line


@pytest.mark.parametrize("cut", [1, 2, 5, 10])
def test_cli_truncated_v1_file(work, saved, capsys, cut):
    data = (work / "good.cae").read_bytes()
    (work / "t.cae").write_bytes(data[:len(data) - cut] if cut < len(data) else data[:1])
    assert_cli_error(capsys, work, ["decode", work / "t.cae", work / "o.png", "--model", saved],
                     "t.cae", "truncated")


@pytest.mark.parametrize("where", ["payload", "crc", "size"])
def test_cli_corrupt_v1_file(work, saved, capsys, where):
    data = bytearray((work / "good.cae").read_bytes())
    data[{"payload": -1, "crc": 5, "size": 4}[where]] ^= 0x10
    (work / "c.cae").write_bytes(bytes(data))
    assert_cli_error(capsys, work, ["decode", work / "c.cae", work / "o.png", "--model", saved],
                     "c.cae", "corrupt")


def test_cli_unknown_quality_lists_the_available_ones(work, models_dir, small, capsys):
    assert_cli_error(capsys, work, ["encode", work / "digit.png", work / "o.cae", "--quality", "9"],
                     "quality 9", "available: 3")
    # A valid file written at quality 9 (no model for it) gets the same answer.
    (work / "q9.cae").write_bytes(formats.pack_v1(9, small.fingerprint, 28, 28, b"\x12\x34\x56"))
    assert_cli_error(capsys, work, ["decode", work / "q9.cae", work / "o.png"],
                     "quality 9", "available: 3")
    for bad in ("0", "16"):
        assert_cli_error(capsys, work, ["encode", work / "digit.png", work / "o.cae",
                                        "--quality", bad], "quality", bad)


def test_cli_v0_file_with_quality_is_refused_and_without_it_is_auto_detected(work, saved, capsys):
    # encode without --quality writes a v0 file (the float latent, 7x7x4 = 196 numbers here).
    code, _, err = run_cli(capsys, "encode", work / "digit.png", work / "v0.cae", "--model", saved)
    assert code == 0 and err == "", err
    data = (work / "v0.cae").read_bytes()
    assert data[:4] == b"CAE\x00" and len(data) == 3 + 1 + 4 + 4 * 196 + 4
    assert_cli_error(capsys, work, ["decode", work / "v0.cae", work / "o.png", "--quality", "3",
                                    "--model", saved], "version-0", "without --quality")
    code, _, err = run_cli(capsys, "decode", work / "v0.cae", work / "o.png", "--model", saved)
    assert code == 0 and err == "", err
    with Image.open(work / "o.png") as img:
        assert img.size == (28, 28) and img.mode == "L"


# --------------------------------------------------------------------------------------
# Regressions: bugs found by these tests and fixed in cae_utils
# --------------------------------------------------------------------------------------

def test_cli_unknown_quality_with_a_stray_model_file(work, tmp_path_factory, monkeypatch, capsys):
    folder = tmp_path_factory.mktemp("stray_models")
    for name in ("rd_q3.keras", "rd_q3_old.keras"):
        (folder / name).write_bytes(b"")
    monkeypatch.setattr(paths, "MODELS_DIR", folder)
    monkeypatch.setattr(modelio, "CODEC_CACHE", {})
    assert_cli_error(capsys, work, ["encode", work / "digit.png", work / "o.cae", "--quality", "9"],
                     "quality 9", "available: 3")


def test_compress_refuses_non_finite_latents(small, digits):
    import keras

    broken = keras.models.clone_model(small.encoder)
    broken.set_weights([np.full_like(w, np.nan) for w in small.encoder.get_weights()])
    codec = digit_codec.LearnedCodec(broken, small.decoder, small.tables, QUALITY, small.fingerprint)
    with np.errstate(invalid="ignore"), pytest.raises(cu.CAEError, match="NaN"):
        codec.compress(digits[:1])


def test_codec_refuses_a_model_labelled_with_another_quality(saved, fresh_cache):
    """A model whose card says quality 3 cannot be used as quality 5 (files would be
    labelled wrongly and could decode silently with the real quality-5 model)."""
    with pytest.raises(cu.CAEError, match=rf"model for quality {QUALITY}, not 5"):
        digit_codec.load_codec(5, saved)


# --------------------------------------------------------------------------------------
# Counted code tables (one per latent value) and the shortest payload ending
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def counted(small, mnist_quick):
    """The tiny model with code tables counted on 2,000 training digits, and its codec."""
    train = mnist_quick[0][:2000]
    tables = digit_codec.digit_code_tables(small.encoder, small.prior, train)
    codec = digit_codec.LearnedCodec(small.encoder, small.decoder, tables, QUALITY, small.fingerprint)
    return types.SimpleNamespace(tables=tables, codec=codec, train=train)


def test_counted_tables_are_the_training_histograms(counted, small):
    t, values = counted.tables, 7 * 7 * 4
    assert counted.codec.per_position
    assert t["medians"].shape == t["offsets"].shape == t["sizes"].shape == (values,)
    assert t["pmfs"].shape == (values, t["sizes"].max())
    for i in range(values):
        k = t["sizes"][i]
        assert abs(t["pmfs"][i, :k].sum() - 1) < 1e-9 and np.all(t["pmfs"][i, :k] > 0), i
        assert np.all(t["pmfs"][i, k:] == 0), i
    # Each table is its value's histogram of round(latent - median) on the training digits,
    # plus half a count for every symbol of the alphabet.
    y = modelio.encode_digits(small.encoder, counted.train).reshape(len(counted.train), -1)
    integers = np.round(y - t["medians"]).astype(int)
    for i in (0, 24 * 4 + 1, values - 1):
        counts = np.bincount(integers[:, i] - t["offsets"][i], minlength=t["sizes"][i]) + 0.5
        np.testing.assert_allclose(t["pmfs"][i, :t["sizes"][i]], counts / counts.sum(), rtol=1e-12)
    # The alphabet covers every integer seen in training and the learned tables' range.
    assert np.all(t["offsets"] <= integers.min(axis=0))
    assert np.all(t["offsets"] + t["sizes"] - 1 >= integers.max(axis=0))
    learned = np.broadcast_to(small.tables["offsets"], (7, 7, 4)).reshape(-1)
    assert np.all(t["offsets"] <= learned)


def test_counted_codec_round_trips_and_meets_its_estimate(counted, digits):
    codec = counted.codec
    produced, back = codec.symbols_roundtrip(digits)
    np.testing.assert_array_equal(produced, back)
    files = codec.compress(digits)
    assert_digits(codec.decompress(files), len(digits))
    payload = np.array([len(f) - HEADER_28 for f in files], np.float64)
    estimate = codec.estimate_bits(produced) / 8
    assert payload.mean() <= estimate.mean() + 1.5, (payload.mean(), estimate.mean())
    assert payload.mean() >= estimate.mean() - 1, (payload.mean(), estimate.mean())
    for name, s in _adversarial_symbols(codec.sizes, np.random.default_rng(8)).items():
        np.testing.assert_array_equal(codec._uncode(codec.payload(s)), s, err_msg=name)
        np.testing.assert_allclose(codec.estimate_bits(s[None])[0],
                                   -np.log2(codec.rows[np.arange(s.size), s.ravel()]).sum(), rtol=1e-12)


def test_counted_tables_cost_fewer_bits_than_the_learned_ones(counted, small, digits):
    """Measured: the training histograms per latent value predict the rounded latents of
    new digits better than the prior's per-channel densities (fitted to noisy latents)."""
    y = modelio.encode_digits(small.encoder, digits)
    learned = small.codec.estimate_bits(small.codec.quantize(y)).mean()
    mine = counted.codec.estimate_bits(counted.codec.quantize(y)).mean()
    assert mine < learned, (mine, learned)


def test_shortest_payload_never_grows_and_always_decodes(small, counted, digits):
    for codec in (small.codec, counted.codec):
        saved = []
        for s in codec.quantize(modelio.encode_digits(codec.encoder, digits[:60])):
            full = (entropy.range_code([(s.ravel(), codec._family, codec.rows)]) if codec.per_position
                    else codec._code(s))
            short = codec.payload(s)
            assert len(short) <= len(full)
            np.testing.assert_array_equal(codec._uncode(short), s)
            saved.append(len(full) - len(short))
        assert np.mean(saved) > 0.5, saved  # measured: about 1.5 bytes per file
    # A check that refuses every candidate keeps the payload as it is.
    assert entropy.shortest_payload(b"\x12\x34\x56", lambda p: False) == b"\x12\x34\x56"


def test_save_codec_counts_the_tables_and_load_codec_reads_them(counted, small, digits, tmp_path,
                                                                 monkeypatch, fresh_cache):
    monkeypatch.setattr(paths, "MODELS_DIR", tmp_path)
    path = digit_codec.save_codec(small.trainer, small.encoder, small.decoder, small.prior, QUALITY,
                                  {"purpose": "counted"}, count_on=counted.train)
    loaded = digit_codec.load_codec(QUALITY, path)
    assert loaded.per_position
    for key in ("medians", "offsets", "sizes", "pmfs"):
        np.testing.assert_array_equal(np.load(path.with_suffix(".npz"))[key], counted.tables[key], err_msg=key)
    assert loaded.compress(digits[:20]) == counted.codec.compress(digits[:20])


def test_fuzz_counted_codec_raises_only_cae_errors(counted, digits):
    codec = counted.codec
    originals = codec.compress(digits[:8])
    rng = np.random.default_rng(5)
    wrong = []
    for _ in range(600):
        data = bytearray(originals[rng.integers(len(originals))])
        for pos in rng.choice(len(data), size=rng.integers(1, 4), replace=False):
            data[pos] ^= int(rng.integers(1, 256))
        if rng.random() < 0.3:
            data = data[:rng.integers(0, len(data))]
        try:
            assert_digits(codec.decompress([bytes(data)]), 1)
        except cu.CAEError as exc:
            assert str(exc).strip()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001
            wrong.append(f"{type(exc).__name__}: {exc}")
    # Payloads behind a valid CRC (what a CRC lets through by chance) decode or are refused.
    for _ in range(200):
        payload = rng.integers(0, 256, rng.integers(0, 120), dtype=np.uint8).tobytes()
        try:
            assert_digits(codec.decompress([formats.pack_v1(QUALITY, codec.fingerprint, 28, 28, payload)]), 1)
        except cu.CAEError as exc:
            assert "corrupt" in str(exc)
        except BaseException as exc:  # noqa: BLE001
            wrong.append(f"{type(exc).__name__}: {exc}")
    assert not wrong, wrong[:5]


# --------------------------------------------------------------------------------------
# The user's path: MNIST-style PNGs go through unchanged; foreign images are preprocessed
# --------------------------------------------------------------------------------------

def test_mnist_png_through_the_command_line_equals_the_codec_in_memory(tmp_path, capsys, digits, saved,
                                                                        small):
    """The pass-through rule: an MNIST digit saved as a PNG, encoded and decoded with the
    command line, gives exactly the bytes and pixels (so the PSNR) of the codec in memory."""
    codec = digit_codec.load_codec(QUALITY, saved)
    via_files, in_memory = [], []
    for i in range(12):
        png, cae, out = (tmp_path / f"d{i}{ext}" for ext in (".png", ".cae", "_out.png"))
        write_digit_png(png, digits[i])
        code, stdout, err = run_cli(capsys, "encode", png, cae, "--quality", QUALITY, "--model", saved)
        assert code == 0 and err == "" and "foreign" not in stdout and stdout.count("\n") == 1
        assert cae.read_bytes() == codec.compress(digits[i:i + 1])[0]
        assert run_cli(capsys, "decode", cae, out, "--model", saved)[0] == 0
        via_files.append(np.asarray(Image.open(out)))
        in_memory.append(cu.to_uint8_images(codec.decompress(codec.compress(digits[i:i + 1])))[0])
    np.testing.assert_array_equal(np.stack(via_files), np.stack(in_memory))
    originals = cu.to_uint8_images(digits[:12])
    psnr = lambda d: cu.psnr_from_mse(np.mean((np.stack(d) / 255.0 - originals / 255.0) ** 2))  # noqa: E731
    assert psnr(via_files) == psnr(in_memory)


def test_a_foreign_image_is_preprocessed_and_the_command_line_says_how(tmp_path, capsys, saved):
    img = Image.new("RGB", (300, 400), "white")
    ImageDraw.Draw(img).line([(150, 50), (150, 350)], fill="black", width=30)
    img.save(tmp_path / "one.png")
    code, out, err = run_cli(capsys, "encode", tmp_path / "one.png", tmp_path / "one.cae", "--quality", QUALITY,
                             "--model", saved)
    lines = out.splitlines()
    assert code == 0 and err == "" and len(lines) == 2, out
    note = lines[0]
    for words in ("foreign image", "300x400 RGB", "not 28x28", "inverted", "resized from", "centred"):
        assert words in note, (words, note)
    digit, same_note = images.digit_from_image(tmp_path / "one.png")
    assert same_note == note
    np.testing.assert_array_equal(digit, images.image_to_digit(tmp_path / "one.png"))
    assert (tmp_path / "one.cae").read_bytes() == digit_codec.load_codec(QUALITY, saved).compress(digit[None])[0]


@pytest.mark.parametrize("make, reason", [
    (lambda d: Image.fromarray(255 - d), "light background"),
    (lambda d: Image.fromarray(np.stack([d, d // 2, d], -1)), "in colour"),
    (lambda d: Image.fromarray(d).resize((56, 56)), "not 28x28"),
    (lambda d: Image.fromarray(np.stack([d, d, d, np.full_like(d, 128)], -1)), "transparent"),
])
def test_what_counts_as_foreign(digits, make, reason):
    d = cu.to_uint8_images(digits[:1])[0]
    assert images.mnist_style_problem(Image.fromarray(d)) is None
    assert images.mnist_style_problem(Image.fromarray(np.stack([d] * 3, -1))) is None  # RGB, equal channels
    assert reason in images.mnist_style_problem(make(d))


def test_no_preprocess_encodes_a_28x28_image_as_it_is(tmp_path, capsys, digits, saved):
    codec = digit_codec.load_codec(QUALITY, saved)
    light = 255 - cu.to_uint8_images(digits[:1])[0]          # a foreign (light) 28x28 image
    Image.fromarray(light).save(tmp_path / "light.png")
    code, out, _ = run_cli(capsys, "encode", tmp_path / "light.png", tmp_path / "as_is.cae", "--quality", QUALITY,
                           "--model", saved, "--no-preprocess")
    assert code == 0 and "foreign" not in out
    as_is = (light.astype(np.float32) / 255.0)[None, ..., None]
    assert (tmp_path / "as_is.cae").read_bytes() == codec.compress(as_is)[0]
    code, out, _ = run_cli(capsys, "encode", tmp_path / "light.png", tmp_path / "pre.cae", "--quality", QUALITY,
                           "--model", saved)
    assert code == 0 and "inverted" in out
    assert (tmp_path / "pre.cae").read_bytes() != (tmp_path / "as_is.cae").read_bytes()
    Image.new("L", (40, 30)).save(tmp_path / "big.png")
    assert_cli_error(capsys, tmp_path, ["encode", tmp_path / "big.png", tmp_path / "big.cae", "--quality",
                                        QUALITY, "--model", saved, "--no-preprocess"], "40x30", "28x28")


def test_folders_encode_and_decode_like_single_files(tmp_path, capsys, digits, saved):
    src = tmp_path / "pngs"
    src.mkdir()
    for i in range(30):
        write_digit_png(src / f"{i:03d}.png", digits[i])
    Image.new("RGB", (90, 60), "white").save(src / "zz_blank.png")   # a foreign one among them
    code, out, err = run_cli(capsys, "encode", src, tmp_path / "caes", "--quality", QUALITY, "--model", saved)
    assert code == 0 and err == "" and len(out.splitlines()) == 1
    assert "wrote 31 .cae files" in out and "1 foreign" in out and "zz_blank" in out
    for p in sorted(src.iterdir()):
        single = tmp_path / "single.cae"
        assert run_cli(capsys, "encode", p, single, "--quality", QUALITY, "--model", saved, "--force")[0] == 0
        assert (tmp_path / "caes" / f"{p.stem}.cae").read_bytes() == single.read_bytes(), p.name
    code, out, err = run_cli(capsys, "decode", tmp_path / "caes", tmp_path / "back", "--model", saved)
    assert code == 0 and "wrote 31 PNG files" in out
    for p in sorted((tmp_path / "caes").iterdir()):
        assert run_cli(capsys, "decode", p, tmp_path / "one.png", "--model", saved, "--force")[0] == 0
        assert (tmp_path / "back" / f"{p.stem}.png").read_bytes() == (tmp_path / "one.png").read_bytes()
    # Nothing is overwritten without --force, and nothing is written when one output exists.
    before = {p.name: p.read_bytes() for p in (tmp_path / "back").iterdir()}
    (tmp_path / "caes" / "000.cae").unlink()
    assert_cli_error(capsys, tmp_path / "back", ["decode", tmp_path / "caes", tmp_path / "back", "--model", saved],
                     "already exists")
    assert {p.name: p.read_bytes() for p in (tmp_path / "back").iterdir()} == before
    # A damaged file in the folder: one clear line naming it.
    (tmp_path / "caes" / "001.cae").write_bytes(b"\xc1" + b"\x00" * 10)
    assert_cli_error(capsys, tmp_path / "back", ["decode", tmp_path / "caes", tmp_path / "back2", "--model", saved],
                     "001.cae")
