"""Tests for cae_utils section 13: classic codecs, SSIM, the PCA coder, BD-rate, matched sizes."""
from __future__ import annotations

import numpy as np
import pytest

import cae_utils as cu
from caecodec import bdrate, classic, formats, metrics, pca as pca_codec


@pytest.fixture(scope="module")
def digits():
    """A few digit-like uint8 images (strokes on black), deterministic."""
    rng = np.random.default_rng(0)
    imgs = np.zeros((12, 28, 28), np.uint8)
    for i, img in enumerate(imgs):
        img[6:22, 8 + i % 5:11 + i % 5] = 255
        img[6 + i % 7:9 + i % 7, 8:20] = 200
        img[4:24, 4:24] = np.maximum(img[4:24, 4:24], rng.integers(0, 30, (20, 20), dtype=np.uint8))
    return imgs


@pytest.mark.parametrize("fmt,quality", [("png", None), ("webp_lossless", None)])
def test_lossless_formats_round_trip_exactly(digits, fmt, quality):
    for img in digits[:3]:
        assert np.array_equal(classic.classic_decode(classic.classic_encode(img, fmt, quality)), img)


@pytest.mark.parametrize("fmt", ["webp", "jpeg"] + (["avif"] if classic.avif_supported() else []))
def test_lossy_formats_give_gray_28x28_and_grow_with_quality(digits, fmt):
    small, big = classic.classic_encode(digits[0], fmt, 5), classic.classic_encode(digits[0], fmt, 90)
    assert len(small) < len(big)
    out = classic.classic_decode(big)
    assert out.shape == (28, 28) and out.dtype == np.uint8


def test_classic_encode_refuses_bad_input(digits):
    with pytest.raises(cu.CAEError):
        classic.classic_encode(digits[0], "webp")            # lossy without a quality
    with pytest.raises(cu.CAEError):
        classic.classic_encode(digits[0], "gif", 10)
    with pytest.raises(cu.CAEError):
        classic.classic_encode(digits[0].astype(np.float32), "png")


def test_ssim_matches_scikit_image(digits):
    from skimage.metrics import structural_similarity

    decoded = np.stack([classic.classic_decode(classic.classic_encode(d, "jpeg", 20)) for d in digits])
    ours = metrics.ssim_per_image(digits, decoded)
    ref = [structural_similarity(a, b, data_range=255, win_size=7) for a, b in zip(digits, decoded)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert metrics.rd_metrics(digits, digits)["psnr_db"] == float("inf")


def test_pca_codec_round_trips_through_its_files(digits):
    x_train = np.concatenate([digits, digits[:, ::-1], digits[:, :, ::-1]])
    pca = pca_codec.fit_pca(x_train)
    codec = pca_codec.PCACodec(pca, 16, 0.1)
    files = codec.compress(digits)
    assert all(f[0] == formats.CAE_V1_FIRST_BYTE and f[1] == pca_codec.PCA_HEADER_QUALITY for f in files)
    np.testing.assert_array_equal(codec.decompress(files), codec.reconstruct(codec.quantize(digits)))
    est = codec.estimate_bits(codec.quantize(digits)) / 8
    payload = np.array([len(formats.unpack_v1(f)[4]) for f in files])
    assert np.all(payload >= np.floor(est) - 1) and np.all(payload <= est + 8)


def test_bd_rate_of_a_curve_against_itself_with_double_rate():
    r, p = np.array([50, 80, 120, 200.0]), np.array([25, 28, 31, 35.0])
    for method in ("cubic", "pchip"):
        assert bdrate.bd_rate(r, p, 2 * r, p, method) == pytest.approx(-50.0)
        assert bdrate.bd_rate(2 * r, p, r, p, method) == pytest.approx(100.0)
        assert bdrate.bd_psnr(r, p + 1, r, p, method) == pytest.approx(1.0)


def test_bd_without_overlap_is_none_with_a_reason():
    r, p = np.array([50, 80, 120, 200.0]), np.array([25, 28, 31, 35.0])
    res = bdrate.bd_compare(r, p, r * 10, p + 20)
    assert res["bd_rate_percent"] is None and res["bd_psnr_db"] is None
    assert "do not overlap" in res["reason"]


def test_psnr_at_bytes_interpolates_without_extrapolating():
    r, p = [50, 100, 200], [20.0, 30.0, 40.0]
    assert bdrate.psnr_at_bytes(r, p, 100) == pytest.approx(30.0)
    assert bdrate.psnr_at_bytes(r, p, np.sqrt(50 * 100)) == pytest.approx(25.0)   # linear in log bytes
    assert bdrate.psnr_at_bytes(r, p, [40, 250]) == [None, None]
    assert bdrate.bytes_at_psnr(r, p, 35.0) == pytest.approx(np.sqrt(100 * 200))


def test_pareto_front_drops_dominated_points():
    assert bdrate.pareto_front([10, 20, 15, 30], [1.0, 3.0, 2.0, 2.5]).tolist() == [0, 2, 1]


def test_matched_size_table_notes_sizes_a_codec_cannot_make():
    rows = [{"codec": "cae", "mean_bytes": b, "psnr_db": p} for b, p in ((50, 26.0), (150, 33.0))]
    rows += [{"codec": "webp", "mean_bytes": b, "psnr_db": p} for b, p in ((100, 23.0), (250, 40.0))]
    table = {m["bytes"]: m for m in bdrate.matched_size_table(rows, (60, 120, 200), "cae", "webp")}
    assert table[60]["winner"] == "cae" and "cannot go this small" in table[60]["note"]
    assert table[120]["winner"] == "cae" and table[120]["difference_db"] > 0
    assert table[200]["winner"] == "webp" and "no setting this large" in table[200]["note"]


def test_jpeg_header_is_most_of_a_tiny_jpeg(digits):
    data = classic.classic_encode(digits[0], "jpeg", 10)
    assert 100 < classic.jpeg_header_bytes(data) < len(data)
    with pytest.raises(cu.CAEError):
        classic.jpeg_header_bytes(classic.classic_encode(digits[0], "png"))


# --------------------------------------------------------------------------------------
# The digit comparison: JPEG XL, JPEG 2000 and the lossless rows; rivals on the same digits
# --------------------------------------------------------------------------------------

def test_the_comparison_measures_jpeg_xl_jpeg_2000_and_the_lossless_formats(digits):
    from caecodec import compare

    rows = compare.rate_distortion_rows(digits, qualities=[], jpeg_qualities=(10,), webp_qualities=(50,),
                                        avif_qualities=(), jxl_qualities=(10, 60), jxl_images=5,
                                        jpeg2000_levels=(30, 40))
    names = {r["codec"] for r in rows}
    assert {"jxl", "jpeg2000", "jxl_lossless", "jpegls", "png", "webp_lossless", "jpeg", "webp"} <= names
    for r in rows:
        if r["codec"] in ("jxl_lossless", "jpegls", "png", "webp_lossless"):
            assert r["psnr_db"] == float("inf") and r["images"] == len(digits)
    jxl = [r for r in rows if r["codec"] == "jxl"]
    assert [r["setting"] for r in jxl] == [10, 60] and all(r["images"] == 5 for r in jxl)
    assert jxl[0]["mean_bytes"] < jxl[1]["mean_bytes"] and jxl[0]["psnr_db"] < jxl[1]["psnr_db"]
    j2k = [r for r in rows if r["codec"] == "jpeg2000"]
    assert j2k[0]["psnr_db"] < j2k[1]["psnr_db"]
    # The defaults sweep JPEG XL and JPEG 2000 and name every rival of the learned codec.
    import inspect
    defaults = inspect.signature(compare.rate_distortion_rows).parameters
    assert defaults["jxl_qualities"].default == classic.JXL_QUALITIES
    assert defaults["jpeg2000_levels"].default == classic.JPEG2000_LEVELS
    assert set(compare.RIVALS) == {"webp", "jxl", "jpeg", "jpeg2000", "avif", "pca"}
    assert {"jxl_lossless", "jpegls"} <= set(compare.LOSSLESS_FORMATS)


def _row(codec, setting, sizes, psnrs):
    """A comparison row with per-image arrays: ``sizes`` bytes and per-image PSNRs."""
    sizes = np.asarray(sizes, np.float64)
    errors = 10 ** (-np.asarray(psnrs, np.float64) / 10)
    return {"codec": codec, "setting": setting, "images": len(sizes), "mean_bytes": float(sizes.mean()),
            "bpp": float(sizes.mean()) * 8 / 784, "mse": float(errors.mean()),
            "psnr_db": metrics.psnr_from_mse(float(errors.mean())), "ssim": 0.9, "accuracy": None,
            "sizes": sizes, "errors": errors, "ssims": np.full(len(sizes), 0.9), "correct": None}


def test_rivals_measured_on_fewer_digits_are_compared_on_the_same_digits():
    from caecodec import compare

    # The learned codec is better on the first 4 digits than on the others.
    rows = [_row("cae", q, [b] * 4 + [2 * b] * 6, [p + 3] * 4 + [p] * 6)
            for q, b, p in ((1, 40, 25.0), (2, 80, 30.0), (3, 160, 36.0))]
    rows += [_row("jxl", q, [b] * 4, [p] * 4) for q, b, p in ((1, 60, 24.0), (2, 120, 29.0), (3, 240, 34.0))]
    pair = compare.same_digits(rows, "cae", "jxl")
    assert all(r["images"] == 4 for r in pair)
    assert [r["mean_bytes"] for r in pair if r["codec"] == "cae"] == [40.0, 80.0, 160.0]
    np.testing.assert_allclose([r["psnr_db"] for r in pair if r["codec"] == "cae"], [28.0, 33.0, 39.0])
    table = compare.matched_tables(rows, "cae", ("jxl",))["jxl"]
    assert all(m["images"] == 4 for m in table)
    at100 = next(m for m in table if m["bytes"] == 100)
    assert at100["winner"] == "cae" and at100["difference_db"] > 0
    assert compare.bd_table(rows, "cae", ("jxl",))["jxl"]["images"] == 4


def test_the_bars_report_a_loss_against_pca_and_a_win():
    from caecodec import compare

    def rows_with(pca_psnr):
        rows = [_row("cae", q, [b] * 10, [p] * 10) for q, b, p in ((1, 20, 22.0), (2, 60, 28.0), (3, 270, 45.0))]
        rows += [_row("pca", q, [b] * 10, [p + pca_psnr] * 10) for q, b, p in ((1, 20, 19.0), (2, 60, 24.0),
                                                                              (3, 280, 42.0))]
        return rows

    for extra, met in ((0.0, True), (5.0, False)):
        rows = rows_with(extra)
        matched = compare.matched_tables(rows, "cae", ("pca",))
        assert [m["bytes"] for m in matched["pca"]][0] == 25
        bar = next(b for b in compare.rd_bars(rows, {}, matched) if "PCA" in b["bar"])
        assert bar["met"] is met, bar
