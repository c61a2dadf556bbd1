"""The photo codec: any image size, tiles without seams, .cae v2 headers, bad input.

Geometry tests use a tiny untrained model (a 4-filter deblocking CNN whose last layer is
given random weights, so that it really mixes neighbouring pixels): whether an image
comes back at exactly its own size does not depend on training, and a small model keeps
4096x4096 affordable in a test. The shipped, trained models are tested for rate
and quality in ``test_shipped_photo_models_*`` and through the command line.
"""
from __future__ import annotations

import struct
import binascii
import tracemalloc

import numpy as np
import pytest

import cae_utils as cu
from caecodec import (cli, codec_training, fileio, formats, images, keras_layers, metrics, modelio, models, photo_codec,
                      photo_context, photo_eval)


@pytest.fixture(scope="module")
def tiny():
    """A tiny untrained photo codec (random weights, seeded)."""
    cu.set_seed(7)
    trainer, enc, dec, prior = models.build_photo_cae(gain=4.0, filters=4, patch=32)
    post3 = dec.get_layer("post3")
    rng = np.random.default_rng(7)
    post3.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in post3.get_weights()])
    return photo_codec.PhotoCodec(enc, dec, keras_layers.build_code_tables(prior), 3, modelio.model_fingerprint(trainer))


@pytest.fixture(scope="module")
def tiny_small_tiles(tiny):
    """The same model, cut into 64-pixel tiles (many tiles even on small images)."""
    return photo_codec.PhotoCodec(tiny.encoder, tiny.decoder, _tables(tiny), 3, tiny.fingerprint, tile=64)


def _tables(codec):
    width = max(codec.sizes)
    pmfs = np.zeros((len(codec.pmfs), width))
    for c, p in enumerate(codec.pmfs):
        pmfs[c, :len(p)] = p
    return {"medians": codec.medians, "offsets": codec.offsets, "pmfs": pmfs, "sizes": codec.sizes}


def _photo(h, w, seed=0):
    """A smooth random image with some texture, uint8 (h, w)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 128 + 60 * np.sin(xx / 7.0 + seed) * np.cos(yy / 11.0) + rng.normal(0, 10, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


ODD_SIZES = [(1, 1), (1, 2), (2, 1), (1, 17), (17, 1), (3, 5), (7, 7), (15, 16), (16, 15),
             (16, 16), (17, 17), (31, 33), (97, 101), (127, 131), (256, 256), (1, 1000),
             (1000, 1), (2, 3001), (5, 2039), (251, 241)]


@pytest.mark.parametrize("h,w", ODD_SIZES)
def test_any_size_round_trips_to_exactly_its_size(tiny, h, w):
    img = _photo(h, w, seed=h * 7 + w)
    data = tiny.compress(img)
    assert data[0] == formats.CAE_V2_FIRST_BYTE
    _, _, hh, ww, _ = formats.unpack_v1(data, tiny.fingerprint, first_byte=formats.CAE_V2_FIRST_BYTE)
    assert (hh, ww) == (h, w)
    out = tiny.decompress(data)
    assert out.shape == (h, w) and out.dtype == np.uint8


def test_decoding_gives_back_exactly_the_coded_symbols(tiny):
    img = _photo(70, 45, seed=3)
    symbols = tiny.symbols_of(img)
    assert symbols.shape == (9, 6, 64)
    _, _, h, w, payload = formats.unpack_v1(tiny.compress(img), first_byte=formats.CAE_V2_FIRST_BYTE)
    back = tiny._uncode_shape(payload, symbols.shape)
    np.testing.assert_array_equal(back, symbols)
    # and the decoded pixels are the decoder's output for those symbols, cropped
    expected = photo_codec.decode_tiled(tiny.decoder, tiny.dequantize(symbols))[:70, :45]
    np.testing.assert_array_equal(tiny.decompress(tiny.compress(img)), expected)


def test_4096_square_round_trips(tiny):
    img = _photo(4096, 4096, seed=1)
    data = tiny.compress(img)
    assert data[3:7] == formats.varint(4096) + formats.varint(4096)
    out = tiny.decompress(data)
    assert out.shape == (4096, 4096)


def test_extreme_aspect_ratios(tiny):
    for h, w in [(1, 4096), (4096, 1), (3, 4093)]:
        out = tiny.decompress(tiny.compress(_photo(h, w)))
        assert out.shape == (h, w)


def test_tiles_with_a_halo_match_the_whole_image(tiny, tiny_small_tiles):
    """With the halo, 64-pixel tiles give the same latent and pixels as one big tile."""
    img = _photo(300, 211, seed=5)
    whole = tiny.latent_of(img)
    tiled = tiny_small_tiles.latent_of(img)
    assert whole.shape == tiled.shape == (38, 27, 64)
    np.testing.assert_allclose(tiled, whole, atol=1e-4)
    sym = tiny.quantize(whole)
    a = photo_codec.decode_tiled(tiny.decoder, tiny.dequantize(sym), tile=1024)
    b = photo_codec.decode_tiled(tiny.decoder, tiny.dequantize(sym), tile=64)
    assert np.abs(a.astype(int) - b).max() <= 1  # float rounding may flip a level


def test_tiles_without_a_halo_differ_near_the_seams(tiny):
    """The control: without the halo the deblocking CNN cannot see across a tile border,
    so pixels next to the borders change, and pixels far from them do not."""
    img = _photo(256, 256, seed=9)
    sym = tiny.symbols_of(img)
    whole = photo_codec.decode_tiled(tiny.decoder, tiny.dequantize(sym), tile=1024).astype(int)
    no_halo = photo_codec.decode_tiled(tiny.decoder, tiny.dequantize(sym), tile=64, halo=0).astype(int)
    diff = np.abs(no_halo - whole)
    near = np.zeros_like(diff, bool)
    for b in range(64, 256, 64):
        near[b - 3:b + 3, :] = True
        near[:, b - 3:b + 3] = True
    assert diff[near].max() > 0
    assert diff[~near].max() <= 1


def test_pad_to_multiple_repeats_edges():
    img = np.arange(15, dtype=np.uint8).reshape(3, 5)
    p = photo_codec.pad_to_multiple(img)
    assert p.shape == (8, 8) == (models.PHOTO_STRIDE, models.PHOTO_STRIDE)
    np.testing.assert_array_equal(p[:3, :5], img)
    np.testing.assert_array_equal(p[6, :5], img[-1])
    np.testing.assert_array_equal(p[:3, 7], img[:, -1])
    assert photo_codec.pad_to_multiple(np.zeros((16, 9), np.uint8)).shape == (16, 16)


def test_colour_and_other_inputs_become_gray_u8(tmp_path):
    from PIL import Image

    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 255
    gray = images.photo_to_gray_u8(rgb)
    assert gray.shape == (20, 30) and gray.dtype == np.uint8
    assert int(gray[0, 0]) == 76  # ITU-R 601: 0.299 * 255
    path = tmp_path / "red.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(images.photo_to_gray_u8(path), gray)
    assert images.photo_to_gray_u8(np.ones((4, 4), np.float32)).max() == 255
    assert images.photo_to_gray_u8(np.zeros((4, 4, 1), np.uint8)).shape == (4, 4)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((0, 5), np.uint8), "no pixels"),
    (np.zeros((5, 0), np.uint8), "no pixels"),
    (np.zeros((2, 3, 4, 5), np.uint8), "shape"),
    (np.array([[np.nan, 1.0]]), "NaN"),
])
def test_bad_arrays_are_refused(tiny, bad, match):
    with pytest.raises(cu.CAEError, match=match):
        tiny.compress(bad)


def test_too_many_pixels_is_refused_before_encoding(tiny):
    with pytest.raises(cu.CAEError, match="at most"):
        images.check_photo_size(8193, 8192)
    images.check_photo_size(8192, 8192)  # the limit itself is allowed


def _crafted(height, width, payload=b"\x00\x01", first=formats.CAE_V2_FIRST_BYTE, quality=3,
             model=0):
    head = bytes([first, quality, model]) + formats.varint(height) + formats.varint(width)
    crc = binascii.crc_hqx(payload, binascii.crc_hqx(head, 0xFFFF))
    return head + struct.pack(">H", crc) + payload


@pytest.mark.parametrize("h,w", [(100_000, 100_000), (8193, 8192), (1 << 20, 64),
                                 (65, 1 << 20)])
def test_crafted_huge_header_is_refused_before_any_allocation(tiny, h, w):
    data = _crafted(h, w, model=tiny.fingerprint[0])
    tracemalloc.start()
    try:
        with pytest.raises(cu.CAEError, match="claims an image|corrupt"):
            tiny.decompress(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # under 1 MiB: nothing image-sized was allocated


def test_zero_size_header_is_refused(tiny):
    with pytest.raises(cu.CAEError, match="corrupt"):
        tiny.decompress(_crafted(0, 10, model=tiny.fingerprint[0]))


def test_truncated_and_corrupt_payloads_are_refused(tiny):
    data = tiny.compress(_photo(64, 80))
    for cut in (1, 2, len(data) // 2, len(data) - 1):
        with pytest.raises(cu.CAEError, match="truncated|corrupt"):
            tiny.decompress(data[:cut])
    flipped = bytearray(data)
    flipped[-1] ^= 0x40
    with pytest.raises(cu.CAEError, match="corrupt"):
        tiny.decompress(bytes(flipped))


def test_digit_and_photo_files_are_told_apart(tiny):
    data = tiny.compress(_photo(28, 28))
    with pytest.raises(cu.CAEError, match="photo codec"):
        formats.unpack_v1(data)
    digit_like = _crafted(28, 28, first=formats.CAE_V1_FIRST_BYTE)
    with pytest.raises(cu.CAEError, match="digit codec"):
        tiny.decompress(digit_like)


def test_wrong_model_or_quality_is_refused(tiny):
    data = bytearray(tiny.compress(_photo(40, 40)))
    other = photo_codec.PhotoCodec(tiny.encoder, tiny.decoder, _tables(tiny), 4, tiny.fingerprint)
    with pytest.raises(cu.CAEError, match="quality 3"):
        other.decompress(bytes(data))
    stranger = photo_codec.PhotoCodec(tiny.encoder, tiny.decoder, _tables(tiny), 3,
                             bytes([tiny.fingerprint[0] ^ 1]) + tiny.fingerprint[1:])
    with pytest.raises(cu.CAEError, match="different model"):
        stranger.decompress(bytes(data))


def test_photo_patches_shapes_and_variety():
    images = {"a": _photo(200, 300, 1), "b": _photo(130, 140, 2)}
    p = codec_training.photo_patches(images, 50, size=64, seed=1)
    assert p.shape == (50, 64, 64, 1) and p.dtype == np.uint8
    assert len({x.tobytes() for x in p}) >= 45  # small images allow few distinct crops
    np.testing.assert_array_equal(p, codec_training.photo_patches(images, 50, size=64, seed=1))
    with pytest.raises(cu.CAEError, match="at least"):
        codec_training.photo_patches({"small": _photo(30, 30)}, 5, size=64)


def test_training_images_load_offline_and_exclude_kodak():
    images = codec_training.photo_training_images()
    assert len(images) >= 10
    assert all(a.dtype == np.uint8 and a.ndim == 2 for a in images.values())
    assert not any("kodim" in name for name in images)


def test_photo_folder_loading_errors(tmp_path):
    with pytest.raises(cu.CAEError, match="does not exist"):
        photo_eval.load_photo_folder(tmp_path / "nope")
    with pytest.raises(cu.CAEError, match="holds no images"):
        photo_eval.load_photo_folder(tmp_path)
    (tmp_path / "fake.png").write_bytes(b"not a png")
    with pytest.raises(cu.CAEError, match="not an image"):
        photo_eval.load_photo_folder(tmp_path)


# ---- the shipped models -------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    qualities = photo_codec.photo_qualities()
    assert len(qualities) >= 4, "the photo models must ship in models/"
    return {q: photo_codec.load_photo_codec(q) for q in qualities}


@pytest.fixture(scope="module")
def test_photo():
    """A 200x300 crop of a photo. Monotonic rate and quality do not need unseen data, so
    this is scikit-image's camera man (a training photo); the held-out Kodak evaluation
    lives in notebook 06 and benchmarks/photo_rate_distortion.py."""
    import skimage.data

    return images.photo_to_gray_u8(skimage.data.camera())[100:300, 100:400]


def test_shipped_photo_models_rate_and_psnr_grow_with_quality(shipped, test_photo):
    sizes, psnrs = [], []
    for q, codec in sorted(shipped.items()):
        data = codec.compress(test_photo)
        out = codec.decompress(data)
        assert out.shape == test_photo.shape
        sizes.append(len(data))
        psnrs.append(metrics.photo_metrics(test_photo, out)["psnr_db"])
    assert all(np.diff(sizes) > 0), sizes
    assert all(np.diff(psnrs) > 0), psnrs
    assert psnrs[0] > 20.0


def test_shipped_photo_payload_is_close_to_the_estimate(shipped, test_photo):
    codec = shipped[max(shipped)]
    symbols = codec.symbols_of(test_photo)
    est_bytes = codec.estimate_image_bits(symbols) / 8
    real = len(codec.compress(test_photo)) - 9  # header: 3 + 2 + 2 varint bytes + CRC
    assert abs(real - est_bytes) < 0.01 * est_bytes + 8


def test_shipped_model_cards_record_training_and_metrics(shipped):
    for q, codec in shipped.items():
        card = codec.card
        assert card["kind"] == "photo" and card["quality"] == q
        assert card["lambda"] == photo_codec.PHOTO_QUALITY_LAMBDAS[q]
        assert card["total_train_seconds"] == pytest.approx(
            sum(s.get("train_seconds", s.get("seconds", 0)) for s in card["lineage"]), abs=0.2)
        assert "kodim" not in card["data"]
        stages = [s.get("stage", "train network") for s in card["lineage"]]
        assert stages[0] == "train network"
        assert stages[-3:] == ["dc prediction", "context model", "refine decoder"], stages
        assert card["decoder_refined"] is True
        assert all(s.get("train_seconds", s.get("seconds")) > 0 for s in card["lineage"])


# ---- the command line ---------------------------------------------------------------

def test_cli_photo_mode_round_trip(tmp_path, capsys, shipped):
    from PIL import Image

    q = min(shipped)
    rgb = np.stack([_photo(45, 67, 1), _photo(45, 67, 2), _photo(45, 67, 3)], axis=-1)
    src = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(src, quality=95)
    out = tmp_path / "out.cae"
    assert cli.main(["encode", str(src), str(out), "--mode", "photo", "--quality", str(q)]) == 0
    assert "67x45 grayscale" in capsys.readouterr().out
    png = tmp_path / "back.png"
    assert cli.main(["decode", str(out), str(png)]) == 0
    assert "67x45 PNG" in capsys.readouterr().out
    back = np.asarray(Image.open(png))
    assert back.shape == (45, 67)
    gray = images.photo_to_gray_u8(src)
    assert metrics.photo_metrics(gray, back)["psnr_db"] > 18


def test_cli_photo_mode_errors(tmp_path, capsys, shipped):
    src = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(_photo(20, 20)).save(src)
    out = tmp_path / "o.cae"
    assert cli.main(["encode", str(src), str(out), "--mode", "photo"]) == 1
    assert "needs a quality" in capsys.readouterr().err
    assert cli.main(["encode", str(src), str(out), "--mode", "photo", "--quality", "15"]) == 1
    assert "available photo qualities" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "empty.png").write_bytes(b"")
    assert cli.main(["encode", str(tmp_path / "empty.png"), str(out), "--mode", "photo",
                    "--quality", str(min(shipped))]) == 1
    assert "empty" in capsys.readouterr().err
    huge = tmp_path / "huge.cae"
    huge.write_bytes(_crafted(100_000, 100_000))
    assert cli.main(["decode", str(huge), str(tmp_path / "h.png")]) == 1
    assert "claims an image" in capsys.readouterr().err
    assert not (tmp_path / "h.png").exists()


# ---- DC prediction ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dc(tiny):
    """The tiny codec with a DC prediction table counted on two synthetic images."""
    plain = photo_codec.PhotoCodec(tiny.encoder, tiny.decoder, _tables(tiny), 3, tiny.fingerprint)
    tables = {**_tables(tiny), "dc_pmf": codec_training.dc_prediction_table(plain, [_photo(64, 96, 1), _photo(80, 40, 2)])}
    return photo_codec.PhotoCodec(tiny.encoder, tiny.decoder, tables, 3, tiny.fingerprint)


def test_dc_residuals_invert_exactly(tiny_dc):
    rng = np.random.default_rng(0)
    k = int(tiny_dc.sizes[0])
    for shape in [(1, 1), (1, 7), (7, 1), (5, 9)]:
        s0 = rng.integers(0, k, shape).astype(np.int32)
        res = tiny_dc.dc_residuals(s0)
        assert res.min() >= 0 and res.max() <= 2 * k - 2
        np.testing.assert_array_equal(tiny_dc.dc_from_residuals(res), s0)


@pytest.mark.parametrize("h,w", [(1, 1), (9, 1), (1, 33), (70, 45), (131, 127)])
def test_dc_prediction_round_trips_the_symbols(tiny_dc, h, w):
    img = _photo(h, w, seed=h + w)
    symbols = tiny_dc.symbols_of(img)
    _, _, hh, ww, payload = formats.unpack_v1(tiny_dc.compress(img), first_byte=formats.CAE_V2_FIRST_BYTE)
    np.testing.assert_array_equal(tiny_dc._uncode_shape(payload, symbols.shape), symbols)
    assert tiny_dc.decompress(tiny_dc.compress(img)).shape == (h, w)


def test_dc_prediction_changes_the_bytes_not_the_pixels(tiny, tiny_dc):
    img = _photo(120, 160, seed=4)
    a, b = tiny.compress(img), tiny_dc.compress(img)
    assert a != b
    np.testing.assert_array_equal(tiny.decompress(a), tiny_dc.decompress(b))
    est = tiny_dc.estimate_image_bits(tiny_dc.symbols_of(img)) / 8
    assert abs((len(b) - 9) - est) < 0.01 * est + 8


def test_inconsistent_dc_table_is_refused(tiny):
    tables = {**_tables(tiny), "dc_pmf": np.ones(5) / 5}
    with pytest.raises(cu.CAEError, match="inconsistent"):
        photo_codec.PhotoCodec(tiny.encoder, tiny.decoder, tables, 3, tiny.fingerprint)


def test_shipped_photo_models_use_dc_prediction(shipped):
    for q, codec in shipped.items():
        assert codec.dc_pmf is not None and codec.card.get("dc_prediction") is True
        # the table comes from the training photos: it peaks at a zero residual
        assert int(np.argmax(codec.dc_pmf)) == int(codec.sizes[0]) - 1


# ---- the context model (.cae version 3) ------------------------------------------------

@pytest.fixture(scope="module")
def tiny_ctx(tiny):
    """The tiny codec with a context model counted on a few synthetic images."""
    plain = photo_codec.PhotoCodec(tiny.encoder, tiny.decoder, _tables(tiny), 3, tiny.fingerprint)
    train = [plain.symbols_of(_photo(h, w, seed)) for h, w, seed in ((96, 128, 1), (80, 72, 2), (64, 200, 3))]
    tables = {**_tables(tiny), **photo_context.fit_context_model(train, plain.sizes, plain.offsets, plain.pmfs)}
    return photo_codec.PhotoCodec(tiny.encoder, tiny.decoder, tables, 3, tiny.fingerprint)


@pytest.mark.parametrize("h,w", [(1, 1), (8, 8), (9, 1), (1, 33), (16, 40), (70, 45), (131, 127), (200, 9)])
def test_context_model_round_trips_the_symbols(tiny_ctx, h, w):
    img = _photo(h, w, seed=h * 3 + w)
    data = tiny_ctx.compress(img)
    assert data[0] == formats.CAE_V3_FIRST_BYTE
    symbols = tiny_ctx.symbols_of(img)
    _, _, hh, ww, payload = formats.unpack_v1(data, tiny_ctx.fingerprint, first_byte=formats.CAE_V3_FIRST_BYTE)
    np.testing.assert_array_equal(tiny_ctx.context.decode(payload, symbols.shape), symbols)
    assert tiny_ctx.decompress(data).shape == (h, w)


def test_context_model_changes_the_bytes_not_the_pixels(tiny, tiny_ctx):
    img = _photo(120, 160, seed=4)
    a, b = tiny.compress(img), tiny_ctx.compress(img)
    assert a[0] == formats.CAE_V2_FIRST_BYTE and b[0] == formats.CAE_V3_FIRST_BYTE and a[1:] != b[1:]
    np.testing.assert_array_equal(tiny.decompress(a), tiny_ctx.decompress(b))
    # a version-2 file still decodes with a codec that has a context model ...
    np.testing.assert_array_equal(tiny_ctx.decompress(a), tiny.decompress(a))
    # ... but a version-3 file needs one
    with pytest.raises(cu.CAEError, match="context model"):
        tiny.decompress(b)
    est = tiny_ctx.estimate_image_bits(tiny_ctx.symbols_of(img)) / 8
    assert abs((len(b) - 9) - est) < 0.01 * est + 8


def test_context_model_tables_are_chosen_with_integers_only(tiny_ctx):
    """Encoder and decoder must pick the same table on every machine: the scores are
    integer sums of a lookup table, never floating point."""
    cm = tiny_ctx.context
    assert cm.weights.dtype == cm.edges.dtype == cm.dc_edges.dtype == np.int64
    feats = np.random.default_rng(0).integers(0, 5000, (photo_context.N_FEATURES, 7, 9))
    scores = photo_context.ac_scores(feats, cm.weights[5, 1])
    assert scores.dtype == np.int64
    assert photo_context.LOG2_16.dtype == np.int64 and photo_context.LOG2_16[0] == 0


def test_context_model_decoding_never_leaves_the_alphabet(tiny_ctx):
    """A payload of random bytes (with a correct CRC, so it gets that far) decodes to
    symbols inside every channel's alphabet, or raises CAEError; never a crash."""
    rng = np.random.default_rng(1)
    for n in (0, 3, 40, 400):
        data = _crafted(24, 40, rng.integers(0, 256, n, dtype=np.uint8).tobytes(),
                        first=formats.CAE_V3_FIRST_BYTE, model=tiny_ctx.fingerprint[0])
        try:
            out = tiny_ctx.decompress(data)
        except cu.CAEError:
            continue
        assert out.shape == (24, 40) and out.dtype == np.uint8


def test_inconsistent_context_tables_are_refused(tiny_ctx):
    tables = {**_tables(tiny_ctx), **{k: getattr(tiny_ctx.context, a) for k, a in (
        ("ctx_order", "order"), ("ctx_weights", "weights"), ("ctx_edges", "edges"), ("ctx_pmfs", "pmfs"),
        ("dc_ctx_edges", "dc_edges"), ("dc_ctx_pmfs", "dc_pmfs"))}}
    photo_codec.PhotoCodec(tiny_ctx.encoder, tiny_ctx.decoder, tables, 3, tiny_ctx.fingerprint)  # as it is: fine
    for key, bad in (("ctx_order", tables["ctx_order"][::-1]), ("ctx_pmfs", tables["ctx_pmfs"][:, :, :, :2]),
                     ("dc_ctx_pmfs", tables["dc_ctx_pmfs"][:, :5])):
        with pytest.raises(cu.CAEError, match="context tables"):
            photo_codec.PhotoCodec(tiny_ctx.encoder, tiny_ctx.decoder, {**tables, key: bad}, 3, tiny_ctx.fingerprint)


def test_zigzag_order_and_checkerboard():
    order = photo_context.zigzag_order()
    assert sorted(order) == list(range(64)) and list(order[:6]) == [0, 1, 8, 16, 9, 2]
    board = photo_context.checkerboard(3, 4)
    assert board[0, 0] and not board[0, 1] and not board[1, 0] and board[1, 1] and board.sum() == 6


def test_shipped_photo_models_write_version_3_with_fewer_bits(shipped, test_photo):
    for q, codec in shipped.items():
        assert codec.context is not None, f"quality {q} has no context model"
        data = codec.compress(test_photo)
        assert data[0] == formats.CAE_V3_FIRST_BYTE
        variants = photo_eval.coding_variants(q)
        sizes = {name: len(c.compress(test_photo)) for name, c in variants.items()}
        assert list(sizes) == ["factorized prior", "+ DC prediction (v2)", "context model (v3)"]
        assert sizes["context model (v3)"] < sizes["+ DC prediction (v2)"] < sizes["factorized prior"], sizes
        decoded = [c.decompress(c.compress(test_photo)) for c in variants.values()]
        assert all(np.array_equal(d, decoded[0]) for d in decoded)  # the same pixels every way


def test_speed_test_times_a_real_round_trip(shipped):
    img = photo_eval.speed_test_image((64, 48))
    assert img.shape == (48, 64) and img.dtype == np.uint8
    r = photo_eval.speed_test(min(shipped), img, repeats=1)
    assert r["width"] == 64 and r["height"] == 48 and r["psnr_db"] > 15
    assert r["encode_seconds"] > 0 and r["decode_seconds"] > 0
    assert r["encode_plus_decode_seconds"] == pytest.approx(r["encode_seconds"] + r["decode_seconds"])


def test_no_evaluation_photo_is_a_training_photo():
    """The Kodak evaluation photos are never trained on: none of them is (pixel for
    pixel) one of the training photos at the scales the training and the context
    tables use, or a 256x256 crop of one."""
    folder = photo_eval.photo_eval_folder()
    if folder is None:
        pytest.skip("no evaluation photos here")
    evaluation = photo_eval.load_photo_folder(folder)
    training = codec_training.photos_at_scales(codec_training.photo_training_images())
    keys = {img.tobytes() for img in evaluation.values()}
    for img in training:
        assert img.tobytes() not in keys
        for r in range(0, img.shape[0] - 255, 128):        # a coarse scan for exact crops
            for c in range(0, img.shape[1] - 255, 128):
                assert img[r:r + 256, c:c + 256].tobytes() not in keys
    assert not set(evaluation) & set(photo_codec.PHOTO_TRAINING_IMAGES)


def test_substitute_photos_are_not_training_photos(monkeypatch):
    """Without an evaluation folder (a notebook opened without ../shared), the evaluation
    falls back to scikit-image photos that are not training photos, pixel for pixel."""
    monkeypatch.setattr(photo_eval, "photo_eval_folder", lambda: None)
    photos, folder = photo_eval.evaluation_photos()
    assert folder is None and list(photos) == list(photo_eval.SUBSTITUTE_PHOTOS)
    assert all(p.dtype == np.uint8 and p.ndim == 2 and min(p.shape) >= 256 for p in photos.values())
    assert not set(photos) & set(photo_codec.PHOTO_TRAINING_IMAGES)
    training = codec_training.photos_at_scales(codec_training.photo_training_images())
    shapes = {p.shape for p in photos.values()}
    for img in training:
        if img.shape in shapes:
            assert all(not np.array_equal(img, p) for p in photos.values())
    assert len(photo_eval.evaluation_photos(limit=2)[0]) == 2


def test_evaluation_photos_reads_the_folder_when_there_is_one(monkeypatch, tmp_path):
    from PIL import Image
    Image.fromarray(np.full((9, 11), 77, np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setattr(photo_eval, "photo_eval_folder", lambda: tmp_path)
    photos, folder = photo_eval.evaluation_photos()
    assert list(photos) == ["a.png"] and photos["a.png"].shape == (9, 11) and folder is not None


def test_every_photo_card_records_every_stage_with_its_seconds():
    """Every shipped quality was made the same way: its card lists the four training
    stages (train network, dc prediction, context model, refine decoder), each with its
    wall time and the quality it belongs to, and the total adds them up."""
    rows = photo_eval.photo_card_rows()
    assert rows and [r["quality"] for r in rows] == photo_codec.photo_qualities()
    for r in rows:
        own = [s for s in r["stages"] if s["quality"] == r["quality"]]
        assert [s["stage"] for s in own] == ["train network", "dc prediction", "context model", "refine decoder"]
        assert all(s["seconds"] > 0 for s in r["stages"])
        assert r["total_train_seconds"] == pytest.approx(sum(s["seconds"] for s in r["stages"]), abs=0.2)
        assert photo_codec.load_photo_codec(r["quality"]).fingerprint
        card = fileio.read_card(photo_codec.photo_model_path(r["quality"]))
        assert card["decoder_refined"] is True
