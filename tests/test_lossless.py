"""The lossless digit codec (issue 14): exact round trips, determinism, the .cae v4 format,
a seeded fuzz of damaged files, the integer network, and `cae encode --lossless`.

Most tests use the shipped model (caecodec/models/lossless.*); it loads without Keras in a
fraction of a second. The 10,000-digit round trip is marked slow.
"""
from __future__ import annotations

import binascii
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from caecodec import cli, formats, lossless, lossless_net
from caecodec.errors import CAEError
from caecodec.mnist import load_mnist_u8


@pytest.fixture(scope="module")
def test_digits(mnist_dir):
    (_, _), (x_test, y_test) = load_mnist_u8(mnist_dir)
    return x_test, y_test


@pytest.fixture(scope="module")
def codec():
    return lossless.load_lossless_codec()


@pytest.fixture(scope="module")
def sample_files(codec, test_digits):
    x = test_digits[0][:60]
    return x, codec.compress(x)


# --------------------------------------------------------------------------------------
# Round trips and determinism
# --------------------------------------------------------------------------------------

def test_round_trip_is_bit_exact_on_300_digits_and_smaller_than_png(codec, test_digits):
    from caecodec.classic import png_size

    x = test_digits[0][:300]
    files = codec.compress(x)
    back = codec.decompress(files)
    assert back.dtype == np.uint8 and back.shape == x.shape
    assert np.array_equal(back, x)
    mean = np.mean([len(f) for f in files])
    assert mean < np.mean([png_size(d) for d in x]) * 0.6, mean
    assert all(f[0] == formats.CAE_V4_FIRST_BYTE for f in files)


@pytest.mark.slow
def test_round_trip_is_bit_exact_on_all_10000_test_digits(codec, test_digits):
    x = test_digits[0]
    assert len(x) == 10_000
    back = codec.decompress(codec.compress(x))
    exact = np.all(back == x, axis=(1, 2))
    assert exact.all(), f"{(~exact).sum()} digits differ, e.g. {np.flatnonzero(~exact)[:5]}"


def test_same_bytes_twice_and_one_at_a_time_as_in_a_batch(codec, sample_files):
    x, files = sample_files
    assert codec.compress(x) == files
    singles = [codec.compress(x[i:i + 1])[0] for i in range(0, len(x), 3)]
    assert singles == files[::3]
    # a batch in another order, and digits mixed with others, give the same bytes
    order = np.random.default_rng(0).permutation(len(x))
    shuffled = codec.compress(x[order])
    assert [shuffled[k] for k in np.argsort(order)] == files


def test_decoding_does_not_depend_on_the_batch(codec, sample_files):
    x, files = sample_files
    order = np.random.default_rng(1).permutation(len(x))
    assert np.array_equal(codec.decompress([files[i] for i in order]), x[order])
    for i in (0, 7, 59):
        assert np.array_equal(codec.decompress([files[i]])[0], x[i])


def test_the_estimate_is_close_to_the_real_payload(codec, sample_files):
    x, files = sample_files
    payload = np.array([len(formats.unpack_v4(f)[4]) for f in files])
    estimate = codec.estimate_bits(x) / 8
    gap = payload - estimate
    assert 0 < gap.mean() < 4, gap.mean()     # the range coder ends on a 32-bit word
    assert np.corrcoef(payload, estimate)[0, 1] > 0.95
    bits = codec.pixel_bits(x)
    assert bits.shape == x.shape and (bits >= 0).all()
    assert np.allclose(bits.sum(axis=(1, 2)), estimate * 8)


def test_inputs_it_takes_and_refuses(codec, test_digits):
    x = test_digits[0][:4]
    as_float = (x / 255.0).astype(np.float32)[..., None]          # what cu.load_mnist gives
    assert codec.compress(as_float) == codec.compress(x)
    with pytest.raises(CAEError, match="multiples of 1/255"):
        codec.compress(as_float + 0.001)
    with pytest.raises(CAEError, match="28x28"):
        codec.compress(np.zeros((2, 32, 32), np.uint8))
    # any 28x28 image is coded exactly, even noise (just not small)
    noise = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    assert np.array_equal(codec.decompress(codec.compress(noise)), noise)
    blank = np.zeros((1, 28, 28), np.uint8)
    assert np.array_equal(codec.decompress(codec.compress(blank)), blank)
    assert len(codec.compress(blank)[0]) < 20


# --------------------------------------------------------------------------------------
# The integer network and its probabilities
# --------------------------------------------------------------------------------------

def test_the_exp_table_is_exact_and_decreasing():
    table = lossless_net.exp_table()
    assert table[0] == 2.0 ** 32 and table[-1] == 0 and table[-2] >= 1
    assert np.all(np.diff(table) <= 0) and np.all(table == np.round(table))
    assert table[64] == round(2 ** 32 / np.e)                       # exp(-1)
    w = lossless_net.softmax_weights(np.array([[0.0, -64.0, 10 ** 6]]))
    assert w[0, 2] == 2.0 ** 32 and w[0, 0] == 0 and w[0, 1] == 0  # far below the max: 0
    f = lossless_net.flag_weights(np.array([0.0, 64.0]))
    assert np.array_equal(f[0], [2.0 ** 32, 2.0 ** 32])
    assert np.array_equal(f[1], [table[64], 2.0 ** 32])


def test_the_integer_network_is_refused_if_a_sum_could_be_inexact(codec):
    q = dict(codec.net.q)
    lossless_net.check_exact(q)                                     # the shipped one is fine
    q["L4/res0_w"] = q["L4/res0_w"] * 2.0 ** 20
    with pytest.raises(CAEError, match="exact"):
        lossless_net.check_exact(q)


def test_the_shipped_integer_network_is_the_quantized_keras_model(codec, test_digits):
    """The .npz the codec runs is exactly quantize(the .keras weights), and it costs almost
    nothing: the float model's bits and the integer network's agree within a bit."""
    from caecodec import lossless_model, modelio

    trainer = lossless_model.load_lossless_trainer(lossless.lossless_model_path())
    q = lossless_net.quantize_network(lossless_model.network_weights(trainer))
    assert sorted(q) == sorted(codec.net.q)
    for key in q:
        assert np.array_equal(q[key], codec.net.q[key]), key
    assert lossless.network_fingerprint(q, codec.net.k) == codec.fingerprint
    x = test_digits[0][:100]
    float_bits = modelio.run_model(trainer, (x / 255.0).astype(np.float32)[..., None])
    assert np.abs(float_bits - codec.estimate_bits(x)).max() < 2.0
    card = codec.card
    assert card["fingerprint_int"] == codec.fingerprint.hex()
    assert [s["stage"] for s in card["stages"]] == ["train", "quantize", "evaluate"]


# --------------------------------------------------------------------------------------
# The .cae v4 format
# --------------------------------------------------------------------------------------

def test_v4_header_fields(sample_files, codec):
    _, files = sample_files
    data = files[0]
    assert formats.sniff(data) == "v4"
    fields = formats.cae_v4_fields(data)
    assert [f[2] for f in fields][:3] == ["magic 0xC + version 4", "model byte (fingerprint[0])", "height (varint)"]
    assert fields[-1][0] == 8 and fields[1][3] == codec.fingerprint[:1]
    assert fields[2][3] == bytes([28]) and fields[3][3] == bytes([28])
    model_byte, h, w, pixels_crc, payload = formats.unpack_v4(data, codec.fingerprint)
    assert (h, w) == (28, 28) and payload == data[8:]
    assert pixels_crc == formats.pixel_crc(sample_files[0][0])


def with_crc(head: bytes, pixels_crc: int, payload: bytes) -> bytes:
    crc = binascii.crc_hqx(payload, binascii.crc_hqx(head, 0xFFFF))
    return head + struct.pack(">HH", crc, pixels_crc) + payload


@pytest.mark.parametrize("make, words", [
    (lambda d: b"", "empty"),
    (lambda d: b"\x89PNG\r\n\x1a\n" + d, "not a .cae file"),
    (lambda d: bytes([0xC1]) + d[1:], "learned digit codec"),
    (lambda d: bytes([0xC2]) + d[1:], "photo codec"),
    (lambda d: b"CAE\x00" + d[4:], "version-0"),
    (lambda d: bytes([0xC9]) + d[1:], "version 9"),
    (lambda d: d[:5], "truncated"),
    (lambda d: d[:10], "checksum"),
    (lambda d: d[:-1], "checksum"),
    (lambda d: d + b"\x00", "checksum"),
    (lambda d: d[:20] + bytes([d[20] ^ 0x10]) + d[21:], "checksum"),
    (lambda d: with_crc(bytes([0xC4, d[1], 30, 28]), 0, d[8:]), "28x28"),
    (lambda d: bytes([0xC4, d[1], 0x80, 0x80, 0x80, 0x80]) + d[6:], "size field"),
    (lambda d: with_crc(bytes([0xC4, d[1] ^ 1, 28, 28]), struct.unpack(">H", d[6:8])[0], d[8:]),
     "different lossless model"),
])
def test_bad_files_get_one_clear_error(sample_files, codec, make, words):
    data = make(sample_files[1][0])
    with pytest.raises(CAEError, match=words) as info:
        codec.decompress([data], source="digit.cae")
    assert "\n" not in str(info.value) and "digit.cae" in str(info.value)


def test_a_wrong_pixel_checksum_is_refused_after_decoding(sample_files, codec):
    data = sample_files[1][0]
    crc = struct.unpack(">H", data[6:8])[0]
    forged = with_crc(data[:4], crc ^ 0x0101, data[8:])
    with pytest.raises(CAEError, match="pixel checksum"):
        codec.decompress([forged])


def test_seeded_fuzz_of_damaged_files_never_crashes_or_returns_a_wrong_digit(sample_files, codec):
    """4,000 damaged files: truncated, bytes flipped, inserted or deleted, garbage, and (to get
    past the file CRC into the range decoder) payloads changed with the CRC recomputed.
    Each must either raise CAEError or decode to exactly the original digit."""
    x, files = sample_files
    rng = np.random.default_rng(2026)
    outcomes = {"error": 0, "exact": 0}
    kinds = ("truncate", "flip", "insert", "delete", "garbage") * 2 + ("payload",)
    for n in range(4000):
        i = int(rng.integers(len(files)))
        data = bytearray(files[i])
        kind = kinds[n % len(kinds)]
        if kind == "truncate":
            data = data[:rng.integers(0, len(data))]
        elif kind == "flip":
            for _ in range(rng.integers(1, 4)):
                data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
        elif kind == "insert":
            at = rng.integers(len(data) + 1)
            data[at:at] = bytes(rng.integers(0, 256, rng.integers(1, 4), dtype=np.uint8))
        elif kind == "delete":
            at = rng.integers(len(data))
            del data[at:at + rng.integers(1, 4)]
        elif kind == "garbage":
            data = bytearray([0xC4]) + bytearray(rng.integers(0, 256, rng.integers(0, 200), dtype=np.uint8))
        else:
            payload = bytearray(data[8:])
            for _ in range(rng.integers(1, 3)):
                payload[rng.integers(len(payload))] ^= int(rng.integers(1, 256))
            if rng.random() < 0.3:
                payload = payload[:rng.integers(0, len(payload))]
            data = bytearray(with_crc(bytes(data[:4]), struct.unpack(">H", bytes(data[6:8]))[0], bytes(payload)))
        try:
            back = codec.decompress([bytes(data)])
        except CAEError as exc:
            assert "\n" not in str(exc)
            outcomes["error"] += 1
            continue
        assert np.array_equal(back[0], x[i]), f"fuzz case {n} ({kind}) decoded to a wrong digit"
        outcomes["exact"] += 1
    assert outcomes["error"] > 3800, outcomes


# --------------------------------------------------------------------------------------
# The command line: cae encode --lossless, decode, info
# --------------------------------------------------------------------------------------

def run_cli(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(capsys, args, *words):
    code, out, err = run_cli(capsys, *args)
    assert code == 1, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def digit_png(tmp_path, test_digits):
    path = tmp_path / "digit.png"
    Image.fromarray(test_digits[0][0], mode="L").save(path)
    return path


def test_cli_lossless_round_trip_gives_back_every_pixel(tmp_path, capsys, digit_png, test_digits):
    cae, png = tmp_path / "digit.cae", tmp_path / "back.png"
    code, out, err = run_cli(capsys, "encode", digit_png, cae, "--lossless")
    assert code == 0 and "lossless" in out and err == ""
    code, out, _ = run_cli(capsys, "info", cae)
    assert code == 0 and "version 4" in out and "28x28" in out and f"{cae.stat().st_size} bytes" in out
    code, out, _ = run_cli(capsys, "decode", cae, png)             # picks the codec from byte 0
    assert code == 0
    with Image.open(png) as img:
        assert img.mode == "L" and np.array_equal(np.asarray(img), test_digits[0][0])
    assert cae.read_bytes() == lossless.load_lossless_codec().compress(test_digits[0][:1])[0]


def test_cli_decode_picks_the_codec_from_the_first_byte(tmp_path, capsys, digit_png):
    lossy, exact = tmp_path / "lossy.cae", tmp_path / "exact.cae"
    assert run_cli(capsys, "encode", digit_png, lossy, "--quality", "2")[0] == 0
    assert run_cli(capsys, "encode", digit_png, exact, "--lossless")[0] == 0
    assert lossy.read_bytes()[0] == 0xC1 and exact.read_bytes()[0] == 0xC4
    for src in (lossy, exact):
        assert run_cli(capsys, "decode", src, tmp_path / f"{src.stem}.png")[0] == 0
    with Image.open(tmp_path / "exact.png") as a, Image.open(digit_png) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with Image.open(tmp_path / "lossy.png") as a, Image.open(digit_png) as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_cli_never_overwrites_without_force(tmp_path, capsys, digit_png):
    cae = tmp_path / "digit.cae"
    cae.write_bytes(b"keep me")
    assert_one_line_error(capsys, ["encode", digit_png, cae, "--lossless"], "already exists", "--force")
    assert cae.read_bytes() == b"keep me"
    assert run_cli(capsys, "encode", digit_png, cae, "--lossless", "--force")[0] == 0
    png = tmp_path / "out.png"
    png.write_bytes(b"mine")
    assert_one_line_error(capsys, ["decode", cae, png], "already exists")
    assert png.read_bytes() == b"mine"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_refuses_what_lossless_cannot_code(tmp_path, capsys, digit_png, test_digits):
    out = tmp_path / "x.cae"
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((56, 56), np.uint8)).save(big)
    assert_one_line_error(capsys, ["encode", big, out, "--lossless"], "56x56", "28x28", "never resizes")
    colour = tmp_path / "colour.png"
    rgb = np.stack([test_digits[0][0]] * 3, -1)
    rgb[5, 5] = (255, 0, 0)
    Image.fromarray(rgb).save(colour)
    assert_one_line_error(capsys, ["encode", colour, out, "--lossless"], "colour")
    clear = tmp_path / "clear.png"
    Image.fromarray(np.zeros((28, 28, 4), np.uint8), mode="RGBA").save(clear)
    assert_one_line_error(capsys, ["encode", clear, out, "--lossless"], "transparent")
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(noise)
    assert_one_line_error(capsys, ["encode", noise, out, "--lossless"], "not like an MNIST digit", "784 raw")
    assert_one_line_error(capsys, ["encode", digit_png, out, "--lossless", "--quality", "3"], "no --quality")
    assert_one_line_error(capsys, ["encode", digit_png, out, "--lossless", "--mode", "photo"], "--mode photo")
    assert_one_line_error(capsys, ["encode", tmp_path / "missing.png", out, "--lossless"], "does not exist")
    assert not out.exists()


def test_cli_takes_gray_stored_as_rgb(tmp_path, capsys, test_digits):
    src, cae, back = tmp_path / "rgb.png", tmp_path / "rgb.cae", tmp_path / "back.png"
    Image.fromarray(np.stack([test_digits[0][1]] * 3, -1)).save(src)
    assert run_cli(capsys, "encode", src, cae, "--lossless")[0] == 0
    assert run_cli(capsys, "decode", cae, back)[0] == 0
    with Image.open(back) as img:
        assert np.array_equal(np.asarray(img), test_digits[0][1])


def test_cli_errors_for_damaged_and_foreign_lossless_files(tmp_path, capsys, digit_png):
    cae = tmp_path / "digit.cae"
    assert run_cli(capsys, "encode", digit_png, cae, "--lossless")[0] == 0
    data = cae.read_bytes()
    (tmp_path / "cut.cae").write_bytes(data[:12])
    assert_one_line_error(capsys, ["decode", tmp_path / "cut.cae", tmp_path / "a.png"], "corrupt or truncated")
    assert_one_line_error(capsys, ["info", tmp_path / "cut.cae"], "checksum")
    assert_one_line_error(capsys, ["decode", cae, tmp_path / "b.png", "--quality", "2"], "without --quality")
    # another model: same architecture, one weight changed, so its fingerprint differs
    other = tmp_path / "other.keras"
    shipped = lossless.lossless_model_path()
    shutil.copy(shipped, other)
    with np.load(shipped.with_suffix(".npz")) as npz:
        arrays = {k: npz[k] for k in npz.files}
    fingerprint = lossless.load_lossless_codec().fingerprint
    for step in range(1, 50):       # a change whose fingerprint differs in the model byte
        changed = {**arrays, "head_b": arrays["head_b"] + step}
        q = {k.replace(".", "/"): v for k, v in changed.items() if k != "kernel"}
        if lossless.network_fingerprint(q, int(arrays["kernel"]))[0] != fingerprint[0]:
            break
    np.savez(other.with_suffix(".npz"), **changed)
    assert_one_line_error(capsys, ["decode", cae, tmp_path / "c.png", "--model", other],
                          "different lossless model")
    assert not list(tmp_path.glob("[abc].png"))


# --------------------------------------------------------------------------------------
# More determinism, atomic writes, and damaged files on disk
# --------------------------------------------------------------------------------------

def test_threads_and_chunk_size_do_not_change_a_byte(codec, sample_files, monkeypatch):
    x, files = sample_files
    monkeypatch.setattr(lossless, "THREADS", 1)
    monkeypatch.setattr(lossless._chunked, "__defaults__", (7,))     # chunks of 7 digits, one thread
    assert codec.compress(x) == files
    assert np.array_equal(codec.decompress(files), x)
    monkeypatch.setattr(lossless, "THREADS", 2)
    assert codec.compress(x) == files
    assert np.array_equal(codec.decompress(files), x)


def test_the_same_bytes_in_a_fresh_process(sample_files, tmp_path):
    """Another interpreter (fresh caches, its own thread timing) writes the same files."""
    import subprocess
    import sys

    x, files = sample_files
    np.save(tmp_path / "x.npy", x[:12])
    code = ("import sys, numpy as np; from caecodec import lossless; "
            "x = np.load(sys.argv[1]); sys.stdout.write(''.join(f.hex() + '\\n' for f in "
            "lossless.load_lossless_codec().compress(x)))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npy")], capture_output=True,
                         text=True, check=True, cwd=str(Path(lossless.__file__).parents[1]))
    assert out.stdout.split() == [f.hex() for f in files[:12]]


def test_cli_writes_by_rename_and_keeps_the_old_file_when_a_write_fails(tmp_path, capsys, digit_png,
                                                                       test_digits, monkeypatch):
    import os

    from caecodec import fileio

    cae = tmp_path / "digit.cae"
    cae.write_bytes(b"old")
    real_replace, renames = os.replace, []

    def spy(src, dst):
        renames.append((os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", spy)
    assert run_cli(capsys, "encode", digit_png, cae, "--lossless", "--force")[0] == 0
    (src, dst), = renames                          # the file appeared whole, by one rename
    assert dst == str(cae) and os.path.dirname(src) == str(tmp_path) and src.endswith(".tmp")
    good = cae.read_bytes()
    assert good == lossless.load_lossless_codec().compress(test_digits[0][:1])[0]

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", disk_full)
    other = tmp_path / "other.png"
    Image.fromarray(test_digits[0][1], mode="L").save(other)
    assert_one_line_error(capsys, ["encode", other, cae, "--lossless", "--force"], "Cannot write", "No space")
    assert cae.read_bytes() == good                # the old file is intact
    png = tmp_path / "back.png"
    png.write_bytes(b"mine")
    assert_one_line_error(capsys, ["decode", cae, png, "--force"], "Cannot write")
    assert png.read_bytes() == b"mine"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_seeded_fuzz_of_damaged_files_on_disk_through_cae_decode(tmp_path, capsys, sample_files):
    """300 damaged .cae files on disk: `cae decode` and `cae info` each end in one line
    naming the problem, and no output image is left behind."""
    _, files = sample_files
    rng = np.random.default_rng(14)
    for n in range(300):
        data = bytearray(files[int(rng.integers(len(files)))])
        if n % 3 == 0:
            data = data[:rng.integers(0, len(data))]
        elif n % 3 == 1:
            data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
        else:
            del data[rng.integers(len(data))]
        cae, png = tmp_path / f"bad{n}.cae", tmp_path / f"bad{n}.png"
        cae.write_bytes(bytes(data))
        line = assert_one_line_error(capsys, ["decode", cae, png])
        assert any(w in line for w in ("empty", "truncated", "corrupt", "checksum", "not a .cae file",
                                        "format version", "written by")), line
        assert not png.exists()
        if n % 10 == 0:
            assert_one_line_error(capsys, ["info", cae])
